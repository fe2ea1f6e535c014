"""``clusters``: k-means on the seed vectors; a candidate scores its largest cosine to a centre.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.cluster import MiniBatchKMeans

from lookalike.audience.strategies.base import (
    Expansion,
    ExpansionProblem,
    normalize_rows,
    rank_by_centres,
)
from lookalike.core.config import AudienceConfig
from lookalike.search.neighbours import NeighbourSearch


def score_clusters(
    problem: ExpansionProblem, search: NeighbourSearch, config: AudienceConfig
) -> Expansion:
    """Largest cosine to a normalized k-means centre of the (weighted) seed vectors."""
    n_seeds = len(problem.seed_vectors)
    n_clusters = config.n_clusters or default_cluster_count(n_seeds, config.max_clusters)
    centres = fit_seed_centres(problem.seed_vectors, problem.seed_weights, n_clusters, config.seed)
    return rank_by_centres(problem, centres)


def default_cluster_count(n_seeds: int, cap: int) -> int:
    """clamp(round(sqrt(S / 2)), 1, cap): more seeds, more modes worth separating."""
    return int(np.clip(round(math.sqrt(n_seeds / 2)), 1, cap))


def fit_seed_centres(
    vectors: np.ndarray, weights: np.ndarray, n_clusters: int, seed: int
) -> np.ndarray:
    """Normalized k-means centres of the seed vectors (MiniBatchKMeans with sample weights)."""
    n_clusters = min(n_clusters, len(vectors))
    kmeans = MiniBatchKMeans(n_clusters=n_clusters, n_init=3, random_state=seed, batch_size=4096)
    kmeans.fit(vectors, sample_weight=weights)
    return normalize_rows(kmeans.cluster_centers_)

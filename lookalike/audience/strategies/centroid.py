"""``centroid``: cosine to the mean seed vector; the baseline the other strategies must beat.
"""

from __future__ import annotations

import numpy as np

from lookalike.audience.strategies.base import (
    Expansion,
    ExpansionProblem,
    normalize_rows,
    rank_by_centres,
)
from lookalike.core.config import AudienceConfig
from lookalike.search.neighbours import NeighbourSearch


def score_centroid(
    problem: ExpansionProblem, search: NeighbourSearch, config: AudienceConfig
) -> Expansion:
    """Cosine to the normalized (weighted) mean seed vector."""
    centroid = np.average(problem.seed_vectors, axis=0, weights=problem.seed_weights)
    return rank_by_centres(problem, normalize_rows(centroid[None, :]))

"""What every strategy takes and returns (:class:`ExpansionProblem`, :class:`Expansion`) and the
exact scans over the population that several strategies share.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from lookalike.audience.crossfit import random_halves
from lookalike.audience.propensity import FeatureRows
from lookalike.audience.selection import top_ranked
from lookalike.core.config import AudienceConfig
from lookalike.search.neighbours import NeighbourSearch
from lookalike.core.blocks import float32_rows, row_blocks


@dataclass(frozen=True)
class ExpansionProblem:
    """Everything a strategy needs: the population, the seeds and who may be returned."""

    embeddings: np.ndarray  # float32 [N, d], L2-normalized
    seed_vectors: np.ndarray  # float32 [S, d]
    seed_weights: np.ndarray  # float64 [S], >= 0
    seed_rows: np.ndarray  # int64 [S], the seeds' population rows
    excluded: np.ndarray  # int64 rows that may not be returned (outside eligible, excluded, seeds)
    n_candidates: int
    size: int
    features: FeatureRows | None = None  # the model inputs, rows aligned (hybrid strategy)
    # The unlabeled rows contrast and hybrid fit against, given instead of sampled from the
    # candidates: one half fits one model (the quality estimate's folds, which rank no row of it).
    background_halves: list[np.ndarray] | None = None


@dataclass(frozen=True)
class Expansion:
    """The ``size`` best candidates, best first, and what the strategy did to find them."""

    rows: np.ndarray  # int64 population rows
    scores: np.ndarray  # float64, non-increasing
    effort: dict[str, int]  # {"neighbours_per_seed": 200, "query_rounds": 2}, {"centres": 12}
    # Per row: position of the most similar seed among those whose neighbour lists reached it, and
    # that similarity. Set by knn (its lists already hold them); None means "compute exactly".
    listed_nearest: tuple[np.ndarray, np.ndarray] | None = None

    def head(self, n: int) -> Expansion:
        """The ``n`` best."""
        nearest = None
        if self.listed_nearest is not None:
            nearest = (self.listed_nearest[0][:n], self.listed_nearest[1][:n])
        return Expansion(self.rows[:n], self.scores[:n], self.effort, nearest)


Strategy = Callable[[ExpansionProblem, NeighbourSearch, AudienceConfig], Expansion]


def allowed_mask(problem: ExpansionProblem) -> np.ndarray:
    """Boolean mask of the rows the strategy may return (every row not in ``problem.excluded``)."""
    allowed = np.ones(len(problem.embeddings), dtype=bool)
    allowed[problem.excluded] = False
    return allowed




def background_halves(
    problem: ExpansionProblem, candidates: np.ndarray, config: AudienceConfig
) -> list[np.ndarray]:
    """``problem.background_halves``, else ``config.contrast_background`` sampled ``candidates``
    in two random halves (:func:`~lookalike.audience.crossfit.random_halves`)."""
    if problem.background_halves is not None:
        return problem.background_halves
    return random_halves(candidates, min(config.contrast_background, len(candidates)), config.seed)


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def max_cosine(embeddings: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Largest inner product of every embedding row with any centre (float64 [N])."""
    transposed = np.ascontiguousarray(centres, dtype=np.float32).T
    scores = np.empty(len(embeddings), dtype=np.float64)
    for rows in row_blocks(len(embeddings), embeddings.shape[1] + len(centres)):
        scores[rows] = (float32_rows(embeddings, rows) @ transposed).max(axis=1)
    return scores


def rank_by_centres(problem: ExpansionProblem, centres: np.ndarray) -> Expansion:
    """Top ``size`` candidates by largest cosine to any centre, from one exact pass over all rows.

    A handful of centres needs neighbour lists about ``size / centres`` deep; at that depth HNSW
    (ef >= k) costs more than scanning every row once, and the scan is exact.
    """
    scores = max_cosine(problem.embeddings, centres)
    rows = np.flatnonzero(allowed_mask(problem))
    rows, best = top_ranked(rows, scores[rows], problem.size)
    return Expansion(rows, best, {"centres": len(centres)})

"""``contrast``: cross-fitted logistic regressions of the seeds against sampled candidates in the
embedding space (positive-unlabeled).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.linear_model import LogisticRegression

from lookalike.audience.crossfit import cross_fitted_scores
from lookalike.audience.selection import top_ranked
from lookalike.audience.strategies.base import (
    Expansion,
    ExpansionProblem,
    allowed_mask,
    background_halves,
    max_cosine,
)
from lookalike.core.blocks import float32_rows
from lookalike.core.config import AudienceConfig
from lookalike.search.neighbours import NeighbourSearch


def score_contrast(
    problem: ExpansionProblem, search: NeighbourSearch, config: AudienceConfig
) -> Expansion:
    """Probability of "seed" from logistic regressions of seeds against sampled candidates.

    Seeds and sample are both read from the population embeddings (the candidate tower), so an
    unshared query tower cannot be what separates them. The models are cross-fitted on two halves
    of ``config.contrast_background`` sampled candidates (:func:`contrast_log_odds`).
    """
    candidates = np.flatnonzero(allowed_mask(problem))
    halves = background_halves(problem, candidates, config)
    logits = contrast_log_odds(problem, halves, config.contrast_c)
    rows, best = top_ranked(candidates, _sigmoid(logits[candidates]), problem.size)
    return Expansion(rows, best, {"background": sum(map(len, halves))})


def contrast_log_odds(problem: ExpansionProblem, halves: list[np.ndarray], c: float) -> np.ndarray:
    """Cross-fitted log-odds of "seed" for every population row, in the embedding space.

    Each half trains one logistic regression (seeds weighted by their relative weight, classes
    balanced); a sampled row is scored by the model that did not see it, every other row by the
    mean of both models' log-odds.
    """
    relative_weights = problem.seed_weights / problem.seed_weights.mean()
    halves = [half for half in halves if len(half)]

    def score(directions: Sequence[np.ndarray], rows: np.ndarray | None) -> np.ndarray:
        vectors = problem.embeddings if rows is None else problem.embeddings[rows]
        return _log_odds(vectors, np.mean(directions, axis=0))

    return cross_fitted_scores(
        halves, lambda i: _seed_contrast(problem, halves[i], relative_weights, c), score
    )


def _seed_contrast(
    problem: ExpansionProblem, background: np.ndarray, seed_weights: np.ndarray, c: float
) -> np.ndarray:
    """[coefficients..., intercept] of a balanced logistic regression, seeds against background."""
    seeds = float32_rows(problem.embeddings, problem.seed_rows)
    features = np.concatenate([seeds, float32_rows(problem.embeddings, background)])
    labels = np.r_[np.ones(len(seeds)), np.zeros(len(background))]
    weights = np.r_[seed_weights, np.ones(len(background))]
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=1000, tol=1e-6)
    model.fit(features, labels, sample_weight=weights)
    return np.r_[model.coef_[0], model.intercept_[0]]


def _log_odds(embeddings: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """``embeddings @ coefficients + intercept`` for ``direction`` = [coefficients..., intercept]."""
    return max_cosine(embeddings, direction[None, :-1]) + direction[-1]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))

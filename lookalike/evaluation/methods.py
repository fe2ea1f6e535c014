"""Every method the evaluation compares, each a function from a :class:`ScoringTask` to scores of
the eligible users: random, most active, raw-feature kNN, logistic regression and gradient
boosting baselines, and every two-tower audience strategy (:data:`METHODS`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lookalike.audience.crossfit import cross_fitted_scores, random_halves
from lookalike.audience.propensity import ArrayFeatures
from lookalike.audience.strategies import STRATEGIES, expand_seeds
from lookalike.audience.strategies.base import ExpansionProblem, normalize_rows
from lookalike.core.config import LookalikeConfig
from lookalike.data.spec import (
    EncodedFeatures,
    FeatureSpec,
    encode,
    raw_feature_vectors,
)
from lookalike.encoder.model import embed_encoded, load_model
from lookalike.evaluation.metrics import cutoff_size
from lookalike.search.neighbours import ExactSearch

ACTIVITY_COLUMN = "n_events_total"


TWO_TOWER_STRATEGIES = tuple(STRATEGIES)


@dataclass(frozen=True)
class Population:
    """Everything the scoring methods read, rows aligned with the feature table."""

    user_ids: pl.Series
    raw: np.ndarray  # standardized encoded features (the baselines' space), float32 [N, w]
    activity: np.ndarray | None  # n_events_total, when there are events
    candidates: np.ndarray  # candidate-tower embeddings, float32 [N, d], unit rows
    queries: np.ndarray  # query-tower embeddings of the same rows (the seeds' side)


@dataclass(frozen=True)
class ScoringTask:
    """One type's seeds and eligible users (population rows) under the evaluation settings."""

    population: Population
    seed_rows: np.ndarray
    eligible_rows: np.ndarray
    config: LookalikeConfig
    rng: np.random.Generator


Scorer = Callable[[ScoringTask], np.ndarray]


def score_random(task: ScoringTask) -> np.ndarray:
    """Uniform random scores: the lift-1 reference."""
    return task.rng.random(len(task.eligible_rows))


def score_most_active(task: ScoringTask) -> np.ndarray:
    """Total event count: the audience a marketer gets without any model."""
    assert task.population.activity is not None
    return task.population.activity[task.eligible_rows]


def score_raw_knn(task: ScoringTask) -> np.ndarray:
    """The knn strategy on standardized encoded features instead of embeddings."""
    vectors = normalize_rows(task.population.raw)
    return strategy_scores(task, vectors, vectors[task.seed_rows], "knn")


def score_logistic_regression(task: ScoringTask) -> np.ndarray:
    """Propensity: scikit-learn logistic regression of seeds against a population sample."""
    from sklearn.linear_model import LogisticRegression

    return propensity_scores(task, lambda: LogisticRegression(max_iter=2000))


def score_gradient_boosting(task: ScoringTask) -> np.ndarray:
    """Propensity: scikit-learn histogram gradient boosting, seeds against a population sample."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    seed = task.config.evaluate.seed
    return propensity_scores(task, lambda: HistGradientBoostingClassifier(random_state=seed))


def two_tower_scorer(strategy: str) -> Scorer:
    """An audience strategy of :mod:`lookalike.audience.strategies` on the trained embeddings."""

    def score(task: ScoringTask) -> np.ndarray:
        population = task.population
        return strategy_scores(task, population.candidates, population.queries[task.seed_rows], strategy)

    score.__doc__ = f"Two-tower embeddings, audience strategy {strategy!r}, exact search."
    return score


METHODS: dict[str, Scorer] = {
    "random": score_random,
    "most_active": score_most_active,
    "raw_feature_knn": score_raw_knn,
    "logistic_regression": score_logistic_regression,
    "gradient_boosting": score_gradient_boosting,
    **{f"two_tower_{name}": two_tower_scorer(name) for name in TWO_TOWER_STRATEGIES},
}


def strategy_scores(
    task: ScoringTask, vectors: np.ndarray, seed_vectors: np.ndarray, strategy: str
) -> np.ndarray:
    """Scores of the eligible rows by one audience strategy on exact search.

    ``knn`` scores only the users its neighbour lists reach (at least the largest cutoff's
    audience); the others tie below every scored user.
    """
    n_eligible = len(task.eligible_rows)
    size = n_eligible
    if strategy == "knn":
        size = cutoff_size(max(task.config.evaluate.cutoffs), n_eligible)
    problem = ExpansionProblem(
        embeddings=vectors,
        seed_vectors=seed_vectors,
        seed_weights=np.ones(len(seed_vectors)),
        seed_rows=task.seed_rows,
        excluded=task.seed_rows,
        n_candidates=n_eligible,
        size=size,
        features=ArrayFeatures(task.population.raw),
    )
    expansion = expand_seeds(problem, ExactSearch(vectors), strategy, task.config.audience)
    scores = np.full(len(vectors), -np.inf)
    scores[expansion.rows] = expansion.scores
    return scores[task.eligible_rows]


def propensity_scores(task: ScoringTask, make_model: Callable[[], Any]) -> np.ndarray:
    """Positive-unlabeled propensity: seeds (1) against a sample of eligible users (0).

    Cross-fitted on two halves of the sample (:func:`lookalike.audience.crossfit.cross_fitted_scores`):
    no sampled user is scored by a model that saw it labelled 0; everyone else gets the mean of
    both models' probabilities. ``task.eligible_rows`` is sorted.
    """
    raw = task.population.raw
    size = min(task.config.evaluate.background_sample, len(task.eligible_rows))
    halves = [half for half in random_halves(task.eligible_rows, size, task.rng) if len(half)]

    def fit(i: int) -> Any:
        x = np.vstack([raw[task.seed_rows], raw[halves[i]]])
        y = np.r_[np.ones(len(task.seed_rows)), np.zeros(len(halves[i]))]
        return make_model().fit(x, y)

    def score(models: Sequence[Any], rows: np.ndarray | None) -> np.ndarray:
        return np.mean([m.predict_proba(raw[rows])[:, 1] for m in models], axis=0)

    return cross_fitted_scores(halves, fit, score, task.eligible_rows)


def load_population(features_path: Path, spec_path: Path, model_dir: Path) -> Population:
    """Encode the feature table, standardize it and embed it with both towers."""
    spec = FeatureSpec.load(spec_path)
    frame = pl.read_parquet(features_path, columns=spec.columns)
    encoded: EncodedFeatures = encode(frame, spec)
    model = load_model(model_dir)
    candidates = embed_encoded(model, encoded, "candidate")
    queries = candidates if model.shared else embed_encoded(model, encoded, "query")
    activity = (
        pl.read_parquet(features_path, columns=[ACTIVITY_COLUMN]).get_column(ACTIVITY_COLUMN)
        .fill_null(0).to_numpy().astype(np.float64)
        if ACTIVITY_COLUMN in pl.read_parquet_schema(features_path) else None
    )
    return Population(
        frame.get_column("user_id"), raw_feature_vectors(encoded, spec.cardinalities),
        activity, candidates, queries,
    )

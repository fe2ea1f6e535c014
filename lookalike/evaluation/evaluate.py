"""Offline evaluation of audiences on held-out converters, against baselines on the same split.

Definitions, for an audience A (the top K users by score), the eligible population N (everyone but
the seeds) and the held-out converters P (none of whom were seeds or training positives):

- precision@K = |A ∩ P| / |A|
- recall@K    = |A ∩ P| / |P|
- lift@K      = precision@K / (|P| / |N|): how many times more converters the audience holds than
  a random audience of the same size (1.0 = random).
- AUC         = probability that a held-out converter outscores an eligible non-converter (ties
  count one half); the Mann-Whitney statistic, as ``sklearn.metrics.roc_auc_score``.
- gains curve = share of P inside the top x of N, for x from 0 to 1.

Every figure is a mean over held-out converters (of "is in the top K" or of "share of negatives
ranked below"), so its bootstrap confidence interval resamples held-out converters.

:func:`evaluate` computes features once, holds out converters of every type (the latest ones by
conversion time when every converter of the type has one, else a seeded random share), trains the
encoder on the remaining conversions only, and scores each type's eligible users with every method
in :data:`METHODS` from the type's remaining converters as seeds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lookalike.core.artifacts import atomic_write, write_json
from lookalike.audience.strategies import STRATEGIES, expand_seeds
from lookalike.search.neighbours import ExactSearch
from lookalike.audience.strategies.base import ExpansionProblem, normalize_rows
from lookalike.core.config import EvaluateConfig, LookalikeConfig
from lookalike.encoder.embed import feature_columns
from lookalike.core.errors import InputError
from lookalike.encoder.model import embed_encoded, load_model
from lookalike.audience.propensity import ArrayFeatures
from lookalike.data.spec import EncodedFeatures, FeatureSpec, encode
from lookalike.data.spec import raw_feature_vectors
from lookalike.core.progress import Progress

ACTIVITY_COLUMN = "n_events_total"
TWO_TOWER_STRATEGIES = tuple(STRATEGIES)


@dataclass(frozen=True)
class AudienceHits:
    """Held-out converters found by one audience."""

    audience_size: int
    positives: int
    population: int
    hits: int

    @property
    def precision(self) -> float:
        return self.hits / self.audience_size if self.audience_size else 0.0

    @property
    def recall(self) -> float:
        return self.hits / self.positives if self.positives else 0.0

    @property
    def lift(self) -> float:
        base_rate = self.positives / self.population if self.population else 0.0
        return self.precision / base_rate if base_rate else 0.0


def audience_hits(audience_ids: pl.Series, positive_ids: pl.Series, population: int) -> AudienceHits:
    """Count held-out converters (``positive_ids``) inside an audience of a given population."""
    audience = audience_ids.unique()
    positives = positive_ids.unique()
    hits = int(audience.is_in(positives.implode()).sum())
    return AudienceHits(audience.len(), positives.len(), population, hits)


# --- metrics on scores ---------------------------------------------------------------------------


def ranking_positions(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0-based rank of every candidate by score, best first; ties in a seeded random order."""
    tie_break = rng.permutation(len(scores))
    order = np.lexsort((tie_break, -scores))
    positions = np.empty(len(scores), dtype=np.int64)
    positions[order] = np.arange(len(scores))
    return positions


def cutoff_size(fraction: float, n_eligible: int) -> int:
    """Audience size of a cutoff: ``ceil(fraction * N)``, at least 1."""
    return max(1, math.ceil(fraction * n_eligible))


def negatives_below(scores: np.ndarray, is_positive: np.ndarray) -> np.ndarray:
    """Per positive: share of negatives scoring lower, ties counting one half (its AUC term)."""
    negatives = np.sort(scores[~is_positive])
    positive_scores = scores[is_positive]
    below = np.searchsorted(negatives, positive_scores, side="left")
    tied = np.searchsorted(negatives, positive_scores, side="right") - below
    return (below + 0.5 * tied) / max(len(negatives), 1)


def auc_score(scores: np.ndarray, is_positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the boolean labels ``is_positive`` (Mann-Whitney, ties = 1/2)."""
    return float(negatives_below(scores, is_positive).mean())


def gains_curve(positive_positions: np.ndarray, n_eligible: int, points: int) -> tuple[list[float], list[float]]:
    """Cumulative gains: (share of the eligible population targeted, share of positives found)."""
    fractions = np.linspace(0.0, 1.0, points + 1)
    sizes = np.ceil(fractions * n_eligible)
    found = np.searchsorted(np.sort(positive_positions), sizes, side="left")
    return fractions.tolist(), (found / max(len(positive_positions), 1)).tolist()


@dataclass(frozen=True)
class MethodFigures:
    """One method's figures on one conversion type: point values and bootstrap intervals."""

    auc: float
    auc_ci: tuple[float, float]
    cutoffs: dict[float, AudienceHits]
    lift_ci: dict[float, tuple[float, float]]
    precision_ci: dict[float, tuple[float, float]]
    recall_ci: dict[float, tuple[float, float]]
    gains: tuple[list[float], list[float]]
    # Per held-out converter, in one fixed order shared by every method of a type (for pairing):
    positive_positions: np.ndarray  # 0-based rank among the eligible users
    positive_auc_terms: np.ndarray  # share of eligible non-converters ranked below

    def to_json(self) -> dict[str, Any]:
        return {
            "auc": {"value": self.auc, "ci95": list(self.auc_ci)},
            "cutoffs": {
                f"{fraction:g}": {
                    "k": hits.audience_size, "hits": hits.hits,
                    "precision": {"value": hits.precision, "ci95": list(self.precision_ci[fraction])},
                    "recall": {"value": hits.recall, "ci95": list(self.recall_ci[fraction])},
                    "lift": {"value": hits.lift, "ci95": list(self.lift_ci[fraction])},
                }
                for fraction, hits in self.cutoffs.items()
            },
            "gains": {"fraction": self.gains[0], "captured": self.gains[1]},
        }


def method_figures(
    scores: np.ndarray, is_positive: np.ndarray, config: EvaluateConfig, rng: np.random.Generator
) -> MethodFigures:
    """All figures of one score vector over the eligible users (``is_positive``: held out)."""
    n_eligible, n_positive = len(scores), int(is_positive.sum())
    positions = ranking_positions(scores, rng)[is_positive]
    auc_terms = negatives_below(scores, is_positive)
    resamples = rng.integers(0, n_positive, size=(config.bootstrap, n_positive))
    cutoffs, lift_ci, precision_ci, recall_ci = {}, {}, {}, {}
    for fraction in config.cutoffs:
        k = cutoff_size(fraction, n_eligible)
        inside = positions < k
        cutoffs[fraction] = AudienceHits(k, n_positive, n_eligible, int(inside.sum()))
        recalls = inside[resamples].mean(axis=1) if config.bootstrap else np.array([np.nan])
        recall_ci[fraction] = _interval(recalls)
        precision_ci[fraction] = _interval(recalls * n_positive / k)
        lift_ci[fraction] = _interval(recalls * n_eligible / k)
    aucs = auc_terms[resamples].mean(axis=1) if config.bootstrap else np.array([np.nan])
    return MethodFigures(
        float(auc_terms.mean()), _interval(aucs), cutoffs, lift_ci, precision_ci, recall_ci,
        gains_curve(positions, n_eligible, config.gains_points), positions, auc_terms,
    )


@dataclass(frozen=True)
class Difference:
    """A figure of one method minus the same figure of another, on the same held-out converters."""

    value: float
    ci95: tuple[float, float]

    @property
    def clear(self) -> bool:
        """True when the 95% interval excludes zero (the two methods differ beyond resampling)."""
        return self.ci95[0] > 0 or self.ci95[1] < 0

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "ci95": list(self.ci95)}


def paired_differences(
    first: MethodFigures, second: MethodFigures, n_eligible: int, config: EvaluateConfig,
    rng: np.random.Generator,
) -> dict[str, Difference]:
    """``first`` minus ``second``: AUC and precision at every cutoff, with a paired bootstrap.

    Each resample draws held-out converters once and measures both methods on that draw, so the
    interval is of the difference itself: much narrower than comparing the two methods' own
    intervals, which ignore that both are measured on the same converters.
    """
    n_positive = len(first.positive_positions)
    resamples = rng.integers(0, n_positive, size=(config.bootstrap, n_positive))
    per_positive = {"auc": first.positive_auc_terms - second.positive_auc_terms}
    for fraction in config.cutoffs:
        k = cutoff_size(fraction, n_eligible)
        inside = (first.positive_positions < k).astype(float) - (second.positive_positions < k)
        per_positive[f"precision@{fraction:g}"] = inside * n_positive / k
    return {
        name: Difference(
            float(terms.mean()),
            _interval(terms[resamples].mean(axis=1) if config.bootstrap else np.array([np.nan])),
        )
        for name, terms in per_positive.items()
    }


def _interval(samples: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


# --- the hold-out split ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TypeSplit:
    """One conversion type's seeds and held-out converters (user ids) and how they were split."""

    seeds: pl.Series
    heldout: pl.Series
    method: str  # "time" or "random"


def holdout_split(conversions: pl.DataFrame, fraction: float, seed: int) -> dict[str, TypeSplit]:
    """Hold out ``fraction`` of every type's converters (at least one, never all).

    A type whose converters all have a conversion time holds out its latest converters (by their
    first conversion of that type); otherwise a seeded random share. A user held out for any type
    is a seed of no type, so no held-out converter ever informs the audience it is measured in.
    """
    per_user = conversions.group_by("conversion_type", "user_id").agg(
        pl.col("conversion_time").min(), pl.col("conversion_time").null_count().alias("nulls")
    )
    heldout, methods, converters = {}, {}, {}
    for name in sorted(per_user.get_column("conversion_type").unique().to_list()):
        rows = per_user.filter(pl.col("conversion_type") == name).sort("user_id")
        count = min(rows.height - 1, max(1, round(fraction * rows.height)))
        if rows.get_column("nulls").sum() == 0:
            ordered, methods[name] = rows.sort("conversion_time", "user_id"), "time"
        else:
            ordered, methods[name] = rows.sample(fraction=1.0, shuffle=True, seed=seed), "random"
        ids = ordered.get_column("user_id")
        converters[name], heldout[name] = ids, ids.tail(count)
    heldout_users = pl.concat(list(heldout.values())).unique().implode()
    return {
        name: TypeSplit(ids.filter(~ids.is_in(heldout_users)).sort(), heldout[name].sort(), methods[name])
        for name, ids in converters.items()
    }


def training_conversions(conversions: pl.DataFrame, splits: dict[str, TypeSplit]) -> pl.DataFrame:
    """The conversions of users held out for no type: what the encoder may train on."""
    heldout_users = pl.concat([s.heldout for s in splits.values()]).unique().implode()
    return conversions.filter(~pl.col("user_id").is_in(heldout_users))


# --- the population and the scoring methods --------------------------------------------------------


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

    Two models on the two halves of the sample each score the other half, so no sampled user is
    scored by a model that saw it labelled 0; everyone else gets the mean of both.
    """
    ec = task.config.evaluate
    raw = task.population.raw
    sample = task.rng.choice(
        task.eligible_rows, size=min(ec.background_sample, len(task.eligible_rows)), replace=False
    )
    halves = np.array_split(sample, 2)
    scores = np.zeros(len(raw))
    models = []
    for half in halves:
        x = np.vstack([raw[task.seed_rows], raw[half]])
        y = np.r_[np.ones(len(task.seed_rows)), np.zeros(len(half))]
        models.append(make_model().fit(x, y))
    eligible = raw[task.eligible_rows]
    scores[task.eligible_rows] = np.mean([m.predict_proba(eligible)[:, 1] for m in models], axis=0)
    for half, other in zip(halves, reversed(models), strict=True):
        scores[half] = other.predict_proba(raw[half])[:, 1]
    return scores[task.eligible_rows]


def load_population(features_path: Path, spec_path: Path, model_dir: Path) -> Population:
    """Encode the feature table, standardize it and embed it with both towers."""
    spec = FeatureSpec.load(spec_path)
    frame = pl.read_parquet(features_path, columns=feature_columns(spec))
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


# --- the evaluation run ---------------------------------------------------------------------------

EVALUATION_FOLDER = "evaluations"
TRAINING_CONVERSIONS = "training_conversions.parquet"
MODEL_FOLDER = "heldout_model"
REPORT_JSON, REPORT_MD, GAINS_PNG = "evaluation.json", "evaluation.md", "gains.png"


@dataclass(frozen=True)
class TypeEvaluation:
    """Every method's figures on one conversion type."""

    conversion_type: str
    trained: bool
    split: TypeSplit
    eligible: int
    methods: dict[str, MethodFigures]
    default_method: str
    # The default method minus each other method (random left out), keyed by the other's name.
    comparisons: dict[str, dict[str, Difference]]
    # 5-fold AUC of telling the seeds from the held-out converters, by space ("embedding", "raw")
    memorization: dict[str, float]

    def best_strategies(self) -> dict[str, str]:
        """The two-tower method with the highest AUC and with the highest precision at each cutoff."""
        strategies = {m: f for m, f in self.methods.items() if m.startswith("two_tower_")}
        best = {"auc": max(strategies, key=lambda m: strategies[m].auc)}
        for fraction in next(iter(strategies.values())).cutoffs:
            best[f"precision@{fraction:g}"] = max(
                strategies, key=lambda m: strategies[m].cutoffs[fraction].precision
            )
        return best

    def to_json(self) -> dict[str, Any]:
        return {
            "trained": self.trained, "split": self.split.method, "seeds": self.split.seeds.len(),
            "heldout": self.split.heldout.len(), "eligible": self.eligible,
            "methods": {name: figures.to_json() for name, figures in self.methods.items()},
            "memorization": self.memorization,
            "default_method": self.default_method,
            "best_two_tower": self.best_strategies(),
            "default_minus": {
                other: {figure: d.to_json() for figure, d in differences.items()}
                for other, differences in self.comparisons.items()
            },
        }


@dataclass(frozen=True)
class EvaluationResult:
    """Where the report went and the figures in it."""

    report_json: Path
    report_md: Path
    gains_png: Path
    types: dict[str, TypeEvaluation]
    training: dict[str, Any]


def evaluate(
    workdir: Path,
    conversions: str,
    out_dir: Path,
    *,
    events: str | None = None,
    profiles: str | None = None,
    as_of: str | None = None,
    config: LookalikeConfig = LookalikeConfig(),  # noqa: B008 (frozen)
    progress: Progress | None = print,
) -> EvaluationResult:
    """Hold out converters, train on the rest, and score every method on the held-out ones.

    Features and the held-out model live in ``workdir/evaluations/<build id>`` (never the current
    build, whose model has seen every converter). Writes ``evaluation.json``, ``evaluation.md``
    and ``gains.png`` into ``out_dir``.
    """
    from lookalike.build_steps import BuildRequest, prepare_build, step_features
    from lookalike.encoder.train import train
    from lookalike.core.workdir import Workdir

    say = progress or (lambda _message: None)
    request = BuildRequest(events, profiles, conversions, as_of, config)
    build, _prints = prepare_build(Workdir(Path(workdir) / EVALUATION_FOLDER), request)
    if not (build.features.is_file() and build.spec.is_file() and build.conversions.is_file()):
        step_features(build, request)
    converted = pl.read_parquet(build.conversions)
    splits = evaluable_splits(converted, config)
    training_path = build.root / TRAINING_CONVERSIONS
    with atomic_write(training_path) as tmp:
        training_conversions(converted, splits).write_parquet(tmp)
    say("training on the conversions of users held out for no type")
    trained = train(build.features, build.spec, training_path, build.root / MODEL_FOLDER, config,
                    progress=say)
    population = load_population(build.features, build.spec, trained.model_dir)
    types = {
        name: evaluate_type(population, name, split, name in trained.converters, config, say)
        for name, split in splits.items()
    }
    training = {"best_epoch": trained.best_epoch, "epochs_run": trained.epochs_run,
                "stop_reason": trained.stop_reason, "seconds": round(trained.elapsed_seconds, 1),
                "validation_recall": trained.validation_recall}
    return write_report(Path(out_dir), types, training, config)


def evaluable_splits(conversions: pl.DataFrame, config: LookalikeConfig) -> dict[str, TypeSplit]:
    """The hold-out split of every type with enough converters to train on (others are skipped)."""
    counts = conversions.group_by("conversion_type").agg(pl.col("user_id").n_unique())
    kept = counts.filter(pl.col("user_id") >= config.train.min_converters_per_type)
    if kept.height == 0:
        raise InputError("conversions", "no conversion type has enough converters to evaluate",
                         fix=f"need {config.train.min_converters_per_type} or more per type")
    chosen = conversions.filter(pl.col("conversion_type").is_in(kept.get_column("conversion_type").implode()))
    return holdout_split(chosen, config.evaluate.holdout_fraction, config.evaluate.seed)


def evaluate_type(
    population: Population, name: str, split: TypeSplit, trained: bool, config: LookalikeConfig,
    say: Progress,
) -> TypeEvaluation:
    """Score one type's eligible users with every method and measure them on its held-out users."""
    ids = population.user_ids
    seed_rows = np.flatnonzero(ids.is_in(split.seeds.implode()).to_numpy())
    is_heldout = ids.is_in(split.heldout.implode()).to_numpy()
    eligible = np.ones(len(ids), dtype=bool)
    eligible[seed_rows] = False
    eligible_rows = np.flatnonzero(eligible)
    methods = {}
    for index, (method, scorer) in enumerate(METHODS.items()):
        if method == "most_active" and population.activity is None:
            continue
        rng = np.random.default_rng([config.evaluate.seed, index])
        task = ScoringTask(population, seed_rows, eligible_rows, config, rng)
        methods[method] = method_figures(scorer(task), is_heldout[eligible_rows], config.evaluate, rng)
    first = config.evaluate.cutoffs[0]
    say(f"{name}: " + ", ".join(f"{m} lift@{first:.0%} {f.cutoffs[first].lift:.2f}"
                                for m, f in methods.items()))
    default = f"two_tower_{config.audience.strategy}"
    comparisons = default_comparisons(methods, default, len(eligible_rows), config.evaluate)
    heldout_rows = np.flatnonzero(is_heldout)
    memorization = {
        space: seed_separability(vectors, seed_rows, heldout_rows, config.evaluate.seed)
        for space, vectors in (("embedding", population.candidates), ("raw", population.raw))
    }
    return TypeEvaluation(name, trained, split, len(eligible_rows), methods, default, comparisons,
                          memorization)


def seed_separability(
    vectors: np.ndarray, seed_rows: np.ndarray, heldout_rows: np.ndarray, seed: int,
    max_per_group: int = 5000,
) -> float:
    """5-fold AUC of a logistic regression telling seeds from held-out converters of the same type.

    Both groups are converters of one type, split by time or at random, so a space that treats them
    alike scores about 0.5. On the embedding of a type the encoder trained on, the seeds are its
    training converters: a clearly higher AUC than on the raw features means it memorized them,
    and audiences fitted to those seeds will find fewer new converters than the seeds suggest.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    rng = np.random.default_rng(seed)
    groups = [rng.permutation(rows)[:max_per_group] for rows in (seed_rows, heldout_rows)]
    if min(len(g) for g in groups) < 5:
        return float("nan")
    x = vectors[np.concatenate(groups)]
    y = np.r_[np.ones(len(groups[0])), np.zeros(len(groups[1]))]
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    model = LogisticRegression(max_iter=2000, class_weight="balanced")
    return float(cross_val_score(model, x, y, cv=folds, scoring="roc_auc").mean())


def default_comparisons(
    methods: dict[str, MethodFigures], default: str, n_eligible: int, config: EvaluateConfig
) -> dict[str, dict[str, Difference]]:
    """Paired differences of the default method against every other method but random."""
    if default not in methods:
        return {}
    rng = np.random.default_rng([config.seed, len(METHODS)])  # a stream no method's scoring uses
    return {
        other: paired_differences(methods[default], figures, n_eligible, config, rng)
        for other, figures in methods.items() if other not in (default, "random")
    }


def write_report(
    out_dir: Path, types: dict[str, TypeEvaluation], training: dict[str, Any], config: LookalikeConfig
) -> EvaluationResult:
    """Write the JSON report, the Markdown tables and the gains-curve figure."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "config": config.evaluate.model_dump(mode="json"),
        "training": training,
        "types": {name: t.to_json() for name, t in types.items()},
    }
    report_json = write_json(out_dir / REPORT_JSON, payload)
    report_md = out_dir / REPORT_MD
    with atomic_write(report_md) as tmp:
        tmp.write_text(markdown_report(types, training, config.evaluate))
    gains_png = plot_gains(types, out_dir / GAINS_PNG)
    return EvaluationResult(report_json, report_md, gains_png, types, training)


def markdown_report(
    types: dict[str, TypeEvaluation], training: dict[str, Any], config: EvaluateConfig
) -> str:
    """One table per conversion type: AUC, precision and lift at every cutoff, 95% intervals."""
    lines = ["# Audience quality on held-out converters", "",
             f"Encoder trained without the held-out converters: {training['epochs_run']} epochs "
             f"(best {training['best_epoch']}, {training['stop_reason']}, {training['seconds']}s). "
             f"Brackets: 95% bootstrap intervals over held-out converters ({config.bootstrap} "
             "resamples).", ""]
    for name, t in types.items():
        role = "trained" if t.trained else "never trained on"
        lines += [f"## {name} ({role})", "",
                  f"{t.split.seeds.len()} seeds, {t.split.heldout.len()} held out ({t.split.method} "
                  f"split), {t.eligible} eligible users.", ""]
        header = ["method", "AUC"] + [f"P@{c:.0%}" for c in config.cutoffs] + [
            f"lift@{c:.0%}" for c in config.cutoffs]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for method, f in t.methods.items():
            cells = [method, f"{f.auc:.3f} [{f.auc_ci[0]:.3f}, {f.auc_ci[1]:.3f}]"]
            cells += [f"{f.cutoffs[c].precision:.3f}" for c in config.cutoffs]
            cells += [f"{f.cutoffs[c].lift:.2f} [{f.lift_ci[c][0]:.2f}, {f.lift_ci[c][1]:.2f}]"
                      for c in config.cutoffs]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
        lines += [f"Seeds vs held-out converters of this type, 5-fold AUC of a logistic regression: "
                  f"embedding {t.memorization['embedding']:.3f}, raw features "
                  f"{t.memorization['raw']:.3f} (about 0.5 when the encoder treats the users it "
                  "trained on like new ones).", ""]
        lines += comparison_table(t, config)
        best = t.best_strategies()
        lines += ["Best two-tower strategy on this type: AUC `" + best["auc"] + "`, " + ", ".join(
            f"P@{c:.0%} `{best[f'precision@{c:g}']}`" for c in config.cutoffs
        ) + " (`audience.strategy` chooses; the paired table says whether a gap is clear).", ""]
    return "\n".join(lines)


def comparison_table(t: TypeEvaluation, config: EvaluateConfig) -> list[str]:
    """Markdown rows of the default method minus each other method; * marks an interval clear of 0."""
    if not t.comparisons:
        return []
    figures = ["auc"] + [f"precision@{c:g}" for c in config.cutoffs]
    header = ["other method", "AUC"] + [f"P@{c:.0%}" for c in config.cutoffs]
    lines = [f"{t.default_method} (the default) minus each other method, paired 95% intervals; "
             "`*`: the interval excludes 0.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for other, differences in t.comparisons.items():
        cells = [other] + [_difference_cell(differences[figure]) for figure in figures]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _difference_cell(d: Difference) -> str:
    mark = "*" if d.clear else ""
    return f"{d.value:+.4f}{mark} [{d.ci95[0]:+.4f}, {d.ci95[1]:+.4f}]"


def plot_gains(types: dict[str, TypeEvaluation], target: Path) -> Path:
    """Cumulative gains of every method, one panel per conversion type (PNG, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(types), figsize=(4.5 * len(types), 4.2), squeeze=False)
    for axis, (name, t) in zip(axes[0], types.items(), strict=True):
        for method, f in t.methods.items():
            axis.plot(f.gains[0], f.gains[1], label=method, linewidth=1.2)
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=0.8)
        axis.set(title=name, xlabel="share of eligible users targeted", ylabel="share of held-out converters")
    axes[0][0].legend(fontsize=7, loc="lower right")
    figure.tight_layout()
    with atomic_write(target) as tmp:
        figure.savefig(tmp, format="png", dpi=110)
    plt.close(figure)
    return target

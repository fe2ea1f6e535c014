"""Offline evaluation of audiences on held-out converters, against baselines on the same split.

:func:`evaluate` computes features once, holds out converters of every type (the latest ones by
conversion time when every converter of the type has one, else a seeded random share), trains the
encoder on the remaining conversions only, and scores each type's eligible users with every method
in :data:`METHODS` from the type's remaining converters as seeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lookalike.audience.trust import trusted_config
from lookalike.core.artifacts import atomic_write
from lookalike.core.config import EvaluateConfig, LookalikeConfig
from lookalike.core.errors import InputError
from lookalike.core.progress import Progress
from lookalike.encoder.health import memorization_figures
from lookalike.evaluation.methods import (
    METHODS,
    Population,
    ScoringTask,
    load_population,
)
from lookalike.evaluation.metrics import (
    Difference,
    MethodFigures,
    method_figures,
    paired_differences,
)
from lookalike.evaluation.report import EvaluationResult, TypeEvaluation, write_report
from lookalike.evaluation.split import TypeSplit, holdout_split, training_conversions

EVALUATION_FOLDER = "evaluations"


TRAINING_CONVERSIONS = "training_conversions.parquet"


MODEL_FOLDER = "heldout_model"


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
    from lookalike.core.workdir import Workdir
    from lookalike.encoder.train import train

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
        name: evaluate_type(population, name, split, name in trained.converters,
                            _as_exported(config, trained.model_dir, training_path, split, say), say)
        for name, split in splits.items()
    }
    training = {"best_epoch": trained.best_epoch, "epochs_run": trained.epochs_run,
                "stop_reason": trained.stop_reason, "seconds": round(trained.elapsed_seconds, 1),
                "validation_recall": trained.validation_recall,
                "memorization": trained.memorization}  # the build's own verdict, per type
    return write_report(Path(out_dir), types, training, config)


def _as_exported(
    config: LookalikeConfig, model_dir: Path, training: Path, split: TypeSplit, say: Progress
) -> LookalikeConfig:
    """The config an export of these seeds would score with: the hybrid strategy leaves out the
    embedding when the model memorized the seeds' type (:func:`lookalike.audience.trust.trusted_config`)."""
    audience, warnings = trusted_config(model_dir, training, split.seeds,
                                        config.audience.strategy, config.audience)
    for warning in warnings:
        say(f"warning: {warning}")
    return config.model_copy(update={"audience": audience})


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
    memorization = seed_memorization(population, seed_rows, np.flatnonzero(is_heldout), config)
    return TypeEvaluation(name, trained, split, len(eligible_rows), methods, default, comparisons,
                          memorization)


def seed_memorization(
    population: Population, seed_rows: np.ndarray, heldout_rows: np.ndarray,
    config: LookalikeConfig, max_per_group: int = 5000,
) -> dict[str, Any]:
    """Seeds vs held-out converters of one type, by the build's own memorization measure
    (:func:`lookalike.encoder.health.memorization_figures`: AUC of telling them apart in the
    embedding and on the raw features, the embedding's interval, and whether the build's rule
    would flag it), on up to ``max_per_group`` users of each group.

    Both groups are converters of one type, split by time or at random, so a space that treats them
    alike scores about 0.5. On the embedding of a type the encoder trained on, the seeds are its
    training converters: a clearly higher AUC than on the raw features means it memorized them,
    and audiences fitted to those seeds will find fewer new converters than the seeds suggest.
    ``nan`` figures when a group has fewer than 5 users.
    """
    rng = np.random.default_rng(config.evaluate.seed)
    seeds, heldout = (rng.permutation(rows)[:max_per_group] for rows in (seed_rows, heldout_rows))
    if min(len(seeds), len(heldout)) < 5:
        return {"embedding": float("nan"), "raw": float("nan"), "embedding_low": float("nan"),
                "embedding_high": float("nan"), "seeds": len(seeds), "heldout": len(heldout),
                "flagged": False}
    spaces = [(vectors[seeds], vectors[heldout]) for vectors in (population.candidates, population.raw)]
    return memorization_figures(*spaces, config.train.memorization_limit, config.evaluate.seed)


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

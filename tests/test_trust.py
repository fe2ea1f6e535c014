"""Memorization figures recorded by training, and exports that stop leaning on the embedding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

from lookalike.audience.trust import trusted_config
from lookalike.core.artifacts import read_json
from lookalike.core.config import AudienceConfig
from lookalike.core.workdir import BuildPaths
from lookalike.data.spec import FeatureSpec, raw_feature_vectors
from lookalike.encoder.model import embed_encoded, load_model
from lookalike.encoder.train import (
    MEMORIZATION_STREAM,
    TrainResult,
    load_training_data,
    validation_set,
)
from lookalike.testing.toy_tables import ToyPaths


def naive_auc(first: np.ndarray, second: np.ndarray, seed: int) -> float:
    x = np.concatenate([first, second]).astype(np.float32)
    y = np.r_[np.ones(len(first)), np.zeros(len(second))]
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    model = LogisticRegression(max_iter=2000, class_weight="balanced")
    return float(cross_val_score(model, x, y, cv=folds, scoring="roc_auc").mean())


def test_model_records_memorization_on_its_held_out_converters(
    toy: ToyPaths, trained: TrainResult, make_config
) -> None:
    tc = make_config().train
    spec = FeatureSpec.load(toy.spec)
    data = load_training_data(toy.features, spec, toy.conversions, tc)
    validation = validation_set(data, tc)
    model = load_model(trained.model_dir)
    recorded = read_json(trained.manifest)["memorization"]
    assert sorted(recorded) == data.types
    rng = np.random.default_rng([tc.seed, MEMORIZATION_STREAM, 0])
    judged = 0
    for name, train_rows, heldout in zip(data.types, validation.train, validation.heldout,
                                         strict=True):
        seeds = np.sort(rng.choice(train_rows, min(tc.validation_max_seeds, len(train_rows)),
                                   replace=False))
        heldout = np.sort(rng.choice(heldout, min(tc.validation_max_seeds, len(heldout)),
                                     replace=False))
        if len(heldout) < tc.memorization_min_heldout:
            assert recorded[name] == {"embedding": None, "raw": None, "heldout": len(heldout),
                                      "flagged": False}
            continue
        judged += 1
        encoded = data.features.rows(np.concatenate([seeds, heldout]))
        embedding = embed_encoded(model, encoded, "candidate")
        raw = raw_feature_vectors(encoded, spec.cardinalities)
        runs = {space: [naive_auc(x[: len(seeds)], x[len(seeds):], tc.seed + r) for r in range(5)]
                for space, x in (("embedding", embedding), ("raw", raw))}
        expected = {space: float(np.mean(aucs)) for space, aucs in runs.items()}
        assert recorded[name]["embedding"] == pytest.approx(expected["embedding"], abs=1e-9)
        assert recorded[name]["raw"] == pytest.approx(expected["raw"], abs=1e-9)
        assert (recorded[name]["seeds"], recorded[name]["heldout"]) == (len(seeds), len(heldout))
        # Hanley & McNeil's standard error, written out, with the spread over the 5 splits
        a, n1, n2 = expected["embedding"], len(seeds), len(heldout)
        q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
        se = np.sqrt((a * (1 - a) + (n1 - 1) * (q1 - a * a) + (n2 - 1) * (q2 - a * a)) / (n1 * n2)
                     + np.var(runs["embedding"]))
        assert recorded[name]["embedding_high"] == pytest.approx(min(1.0, a + 1.96 * se), abs=1e-9)
        assert recorded[name]["embedding_low"] == pytest.approx(max(0.0, a - 1.96 * se), abs=1e-9)
        flagged = a + 1.96 * se > tc.memorization_limit and a > expected["raw"]
        assert recorded[name]["flagged"] is flagged
    assert judged > 0  # the toy tables hold out enough converters of some type


@pytest.fixture
def flagged_build(tmp_path: Path) -> BuildPaths:
    """A build folder whose model flagged 'buy' (users 0-99) as memorized, not 'join' (100-199)."""
    build = BuildPaths(tmp_path)
    build.model_dir.mkdir(parents=True)
    figures = {"buy": {"embedding": 0.95, "raw": 0.52, "heldout": 30, "flagged": True},
               "join": {"embedding": 0.55, "raw": 0.50, "heldout": 30, "flagged": False}}
    (build.model_dir / "model.json").write_text(json.dumps({"memorization": figures}))
    pl.DataFrame({"user_id": np.arange(200),
                  "conversion_type": ["buy"] * 100 + ["join"] * 100}).write_parquet(build.conversions)
    return build


@pytest.mark.parametrize(("buyers", "others", "leans"), [(60, 40, False), (40, 60, True)])
def test_hybrid_drops_the_embedding_for_memorized_seeds(
    flagged_build: BuildPaths, buyers: int, others: int, leans: bool
) -> None:
    seeds = pl.Series("user_id", np.r_[np.arange(buyers), np.arange(1000, 1000 + others)])
    config, warnings = trusted_config(flagged_build.model_dir, flagged_build.conversions, seeds, "hybrid", AudienceConfig())
    assert (config.hybrid_embedding_weight == AudienceConfig().hybrid_embedding_weight) is leans
    assert (config.hybrid_embedding_weight == 0.0) is not leans
    assert bool(warnings) is not leans
    if warnings:
        assert "60% of the seeds are 'buy' converters" in warnings[0]


def test_unflagged_types_and_other_strategies(flagged_build: BuildPaths) -> None:
    joiners = pl.Series("user_id", np.arange(100, 200))
    assert trusted_config(flagged_build.model_dir, flagged_build.conversions, joiners, "hybrid", AudienceConfig()) == (AudienceConfig(), [])
    buyers = pl.Series("user_id", np.arange(100))
    config, warnings = trusted_config(flagged_build.model_dir, flagged_build.conversions, buyers, "contrast", AudienceConfig())
    assert config == AudienceConfig() and "scores in the embedding only" in warnings[0]


def test_evaluation_scores_the_default_as_an_export_would(flagged_build: BuildPaths) -> None:
    from lookalike.core.config import LookalikeConfig
    from lookalike.evaluation.evaluate import _as_exported
    from lookalike.evaluation.split import TypeSplit

    said: list[str] = []
    buyers = TypeSplit(pl.Series("user_id", np.arange(80)), pl.Series("user_id", [80]), "random")
    config = _as_exported(LookalikeConfig(), flagged_build.model_dir, flagged_build.conversions,
                          buyers, said.append)
    assert config.audience.hybrid_embedding_weight == 0.0 and "memorized" in said[0]
    joiners = TypeSplit(pl.Series("user_id", np.arange(100, 180)), pl.Series("user_id", [180]),
                        "random")
    assert _as_exported(LookalikeConfig(), flagged_build.model_dir, flagged_build.conversions,
                        joiners, said.append) == LookalikeConfig()

"""Batch composition: converters per trained type, sampled non-converters, determinism."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from lookalike.core.config import TrainConfig
from lookalike.encoder.sampler import ConverterBatchSampler
from lookalike.data.spec import FeatureSpec
from lookalike.testing.toy_tables import ToyPaths
from lookalike.encoder.train import load_training_data

POOLS = [np.arange(0, 100), np.arange(80, 300), np.array([400, 401, 402])]  # type 2 is tiny
NEGATIVES = np.arange(1000, 5000)


def sampler(per_type: int = 16, negatives: int = 64) -> ConverterBatchSampler:
    return ConverterBatchSampler(POOLS, NEGATIVES, per_type, negatives)


def test_every_batch_has_exact_counts_per_type_and_negatives() -> None:
    s = sampler()
    for batch in s.batches(20, np.random.default_rng(0)):
        assert len(batch.rows) == 3 * 16 + 64 and batch.n_anchors == 3 * 16
        for t, pool in enumerate(POOLS):
            assert (batch.anchor_types == t).sum() == 16
            assert np.isin(batch.rows[: batch.n_anchors][batch.anchor_types == t], pool).all()
        assert np.isin(batch.rows[batch.n_anchors :], NEGATIVES).all()


def test_large_types_without_replacement_small_types_with_replacement() -> None:
    batch = sampler().sample(np.random.default_rng(1))
    anchors = batch.rows[: batch.n_anchors]
    for t in (0, 1):
        assert len(np.unique(anchors[batch.anchor_types == t])) == 16
    assert set(anchors[batch.anchor_types == 2]) <= {400, 401, 402}
    assert len(np.unique(batch.rows[batch.n_anchors :])) == 64


def test_deterministic_given_the_generator() -> None:
    first = [b.rows for b in sampler().batches(5, np.random.default_rng(7))]
    again = [b.rows for b in sampler().batches(5, np.random.default_rng(7))]
    other = [b.rows for b in sampler().batches(5, np.random.default_rng(8))]
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_default_steps_cover_the_training_pairs_once() -> None:
    assert sampler(per_type=16).default_steps() == -(-(100 + 220 + 3) // 48)


def test_empty_type_or_pool_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one converter"):
        ConverterBatchSampler([np.arange(3), np.array([], dtype=np.int64)], NEGATIVES, 4, 4)
    with pytest.raises(ValueError, match="negative pool is empty"):
        ConverterBatchSampler(POOLS, np.array([], dtype=np.int64), 4, 4)


def test_held_back_types_are_never_anchors_and_negatives_never_converted(toy: ToyPaths) -> None:
    tc = TrainConfig(held_back_types=["upgrade"])
    spec = FeatureSpec.load(toy.spec)
    data = load_training_data(toy.features, spec, toy.conversions, tc)
    assert data.types == ["purchase", "signup"]
    ids = pl.read_parquet(toy.features, columns=["user_id"]).get_column("user_id").to_numpy()
    conversions = pl.read_parquet(toy.conversions)
    converted = {
        name: set(conversions.filter(pl.col("conversion_type") == name)["user_id"].to_list())
        for name in ("purchase", "signup", "upgrade")
    }
    upgrade_only = converted["upgrade"] - converted["purchase"] - converted["signup"]
    s = ConverterBatchSampler(data.converters_by_type(), data.negative_pool(), 32, 256)
    saw_upgrade_only_negative = False
    for batch in s.batches(30, np.random.default_rng(0)):
        anchor_ids = ids[batch.rows[: batch.n_anchors]]
        for t, name in enumerate(data.types):
            assert set(anchor_ids[batch.anchor_types == t]) <= converted[name]
        assert not set(anchor_ids) & upgrade_only
        negative_ids = set(ids[batch.rows[batch.n_anchors :]])
        assert not negative_ids & (converted["purchase"] | converted["signup"])
        saw_upgrade_only_negative |= bool(negative_ids & upgrade_only)
    assert saw_upgrade_only_negative  # a held-back type's converters are ordinary population

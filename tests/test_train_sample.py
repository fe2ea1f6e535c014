"""Training reads every converter of the trained types and a seeded sample of the other users
(``train.population_sample``); up to that many others it reads the whole table, as before."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from lookalike.core.config import LookalikeConfig, TrainConfig
from lookalike.core.errors import InputError
from lookalike.data.spec import FeatureSpec, encode
from lookalike.encoder.train import (
    TrainingData,
    _run_fingerprint,
    load_training_data,
    train,
    validation_set,
)
from lookalike.testing.toy_tables import ToyPaths

ConfigFactory = Callable[..., LookalikeConfig]
SAMPLE = 1000


def load(toy: ToyPaths, features: Path | None = None, **train: object) -> TrainingData:
    tc = TrainConfig(**train)  # type: ignore[arg-type]
    return load_training_data(features or toy.features, FeatureSpec.load(toy.spec),
                              toy.conversions, tc)


def expected_labels(toy: ToyPaths, types: list[str]) -> np.ndarray:
    """Multi-hot labels of every feature-table row, straight from the conversions."""
    ids = pl.read_parquet(toy.features, columns=["user_id"]).get_column("user_id")
    conversions = pl.read_parquet(toy.conversions)
    return np.column_stack([
        ids.is_in(conversions.filter(pl.col("conversion_type") == name)
                  .get_column("user_id").implode()).to_numpy()
        for name in types
    ])


@pytest.fixture(scope="module")
def full(toy: ToyPaths) -> TrainingData:
    return load(toy)


@pytest.fixture(scope="module")
def sampled(toy: ToyPaths) -> TrainingData:
    return load(toy, population_sample=SAMPLE)


def test_a_population_within_the_sample_is_read_whole(toy: ToyPaths, full: TrainingData) -> None:
    frame = pl.read_parquet(toy.features)
    encoded = encode(frame, FeatureSpec.load(toy.spec))
    assert not full.sampled and full.population == len(full.features) == frame.height
    np.testing.assert_array_equal(full.features.numeric, encoded.numeric)
    np.testing.assert_array_equal(full.features.categorical, encoded.categorical)
    np.testing.assert_array_equal(full.labels, expected_labels(toy, full.types))
    np.testing.assert_array_equal(full.rows, np.arange(frame.height))
    np.testing.assert_array_equal(full.population_rows, np.arange(frame.height))
    assert full.ignored_converters == 3


def test_the_sample_size_at_the_count_of_others_still_reads_every_row(
    toy: ToyPaths, full: TrainingData
) -> None:
    others = int((~full.labels.any(axis=1)).sum())
    at_limit = load(toy, population_sample=others)
    assert not at_limit.sampled
    np.testing.assert_array_equal(at_limit.features.numeric, full.features.numeric)
    assert load(toy, population_sample=others - 1).sampled


def test_a_sample_holds_every_converter_and_the_sampled_others(
    full: TrainingData, sampled: TrainingData
) -> None:
    converters = np.flatnonzero(full.labels.any(axis=1))
    assert sampled.sampled and sampled.population == full.population
    assert len(sampled.features) == len(converters) + SAMPLE
    assert np.all(np.diff(sampled.rows) > 0)
    assert np.isin(converters, sampled.rows).all()
    np.testing.assert_array_equal(sampled.features.numeric, full.features.numeric[sampled.rows])
    np.testing.assert_array_equal(
        sampled.features.categorical, full.features.categorical[sampled.rows]
    )
    np.testing.assert_array_equal(sampled.labels, full.labels[sampled.rows])
    assert len(sampled.negative_pool()) == SAMPLE
    assert sampled.types == full.types and sampled.ignored_converters == full.ignored_converters
    for by_type_sampled, by_type_full in zip(
        sampled.converters_by_type(), full.converters_by_type(), strict=True
    ):
        np.testing.assert_array_equal(sampled.rows[by_type_sampled], by_type_full)


def test_the_sample_is_seeded(toy: ToyPaths, sampled: TrainingData) -> None:
    np.testing.assert_array_equal(load(toy, population_sample=SAMPLE).rows, sampled.rows)
    assert not np.array_equal(load(toy, population_sample=SAMPLE, seed=1).rows, sampled.rows)


def test_population_samples_do_not_over_represent_converters(
    full: TrainingData, sampled: TrainingData
) -> None:
    population_share = full.labels.any(axis=1).mean()
    rows = sampled.population_rows
    assert np.all(np.diff(rows) > 0) and rows[-1] < len(sampled.features)
    assert sampled.labels[rows].any(axis=1).mean() == pytest.approx(population_share, abs=0.005)
    assert (~sampled.labels[rows].any(axis=1)).sum() == SAMPLE  # every sampled other
    tc = TrainConfig(population_sample=SAMPLE, validation_background=500)
    validation = validation_set(sampled, tc)
    for background in validation.background:
        assert np.isin(background, rows).all()


def test_the_converter_split_is_the_same_users_with_or_without_a_sample(
    full: TrainingData, sampled: TrainingData
) -> None:
    whole = validation_set(full, TrainConfig())
    part = validation_set(sampled, TrainConfig(population_sample=SAMPLE))
    for name in ("train", "seeds", "heldout"):
        for rows_full, rows_sampled in zip(getattr(whole, name), getattr(part, name), strict=True):
            np.testing.assert_array_equal(sampled.rows[rows_sampled], rows_full)


def test_a_directory_of_parts_reads_as_the_file(
    toy: ToyPaths, sampled: TrainingData, tmp_path: Path
) -> None:
    frame = pl.read_parquet(toy.features)
    parts = tmp_path / "features"
    parts.mkdir()
    half = frame.height // 2
    frame.head(half).write_parquet(parts / "part-0.parquet")
    frame.tail(frame.height - half).write_parquet(parts / "part-1.parquet")
    from_parts = load(toy, parts, population_sample=SAMPLE)
    np.testing.assert_array_equal(from_parts.rows, sampled.rows)
    np.testing.assert_array_equal(from_parts.features.numeric, sampled.features.numeric)
    np.testing.assert_array_equal(from_parts.labels, sampled.labels)


def test_the_run_fingerprint_names_the_sample_size(toy: ToyPaths) -> None:
    def fingerprint(size: int) -> dict[str, object]:
        config = LookalikeConfig.model_validate({"train": {"population_sample": size}})
        return _run_fingerprint(config, toy.spec, toy.features, toy.conversions)

    assert fingerprint(SAMPLE) != fingerprint(2 * SAMPLE)


def test_training_on_a_sample_says_so(
    toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path, full: TrainingData
) -> None:
    messages: list[str] = []
    result = train(toy.features, toy.spec, toy.conversions, tmp_path,
                   make_config(epochs=1, population_sample=SAMPLE), progress=messages.append)
    converters = int(full.labels.any(axis=1).sum())
    (line,) = [m for m in messages if m.startswith("training on")]
    assert line.startswith(f"training on {converters + SAMPLE} of {full.population} users")
    manifest = json.loads(result.manifest.read_text())
    assert manifest["population"] == {"users": full.population, "read": converters + SAMPLE}
    assert manifest["train_config"]["population_sample"] == SAMPLE


def test_a_feature_table_without_a_spec_column_is_refused(toy: ToyPaths, tmp_path: Path) -> None:
    features = tmp_path / "features.parquet"
    pl.read_parquet(toy.features).drop("noise_3").write_parquet(features)
    with pytest.raises(InputError, match="a column of the feature spec is missing \\(noise_3\\)"):
        load(toy, features)

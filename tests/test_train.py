"""Training: quality against raw features, exact resume, artifacts, input errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from lookalike.artifacts import sha256_file
from lookalike.config import LookalikeConfig, TrainConfig
from lookalike.errors import ArtifactError, InputError, TrainingError
from lookalike.model import embed_encoded, load_model
from lookalike.spec import FeatureSpec, encode
from lookalike.toy_features import ToyPaths, write_toy_tables
from lookalike.train import TrainResult, load_training_data, train, validation_recalls, validation_set
from lookalike.validation import heldout_recall, raw_feature_vectors

ConfigFactory = Callable[..., LookalikeConfig]


def hold_out_converters(toy: ToyPaths, fraction: float, seed: int, folder: Path) -> tuple[Path, pl.DataFrame]:
    """Remove ``fraction`` of the converting users from the conversions; return the rest's path."""
    conversions = pl.read_parquet(toy.conversions)
    users = conversions.get_column("user_id").unique().sort()
    heldout_users = users.sample(fraction=fraction, seed=seed)
    kept = conversions.filter(~pl.col("user_id").is_in(heldout_users.implode()))
    path = folder / "training_conversions.parquet"
    kept.write_parquet(path)
    return path, conversions.filter(pl.col("user_id").is_in(heldout_users.implode()))


def mean_recall(vectors_seed: np.ndarray, vectors_candidate: np.ndarray, types: dict, top_m: int) -> float:
    recalls = [
        heldout_recall(
            vectors_seed[seeds], vectors_candidate[heldout], vectors_candidate[background],
            top_fraction=0.01, top_m=top_m,
        )
        for seeds, heldout, background in types.values()
    ]
    return float(np.mean(recalls))


def test_trained_space_beats_raw_features_on_held_out_converters(tmp_path: Path) -> None:
    toy = write_toy_tables(tmp_path / "data", 20_000, seed=5)
    training_conversions, heldout = hold_out_converters(toy, 0.15, seed=5, folder=tmp_path)
    config = LookalikeConfig(train=TrainConfig(epochs=8, threads=1, validation_background=5000))
    result = train(toy.features, toy.spec, training_conversions, tmp_path / "model", config, progress=None)

    frame = pl.read_parquet(toy.features)
    encoded = encode(frame, FeatureSpec.load(toy.spec))
    row_of = dict(zip(frame.get_column("user_id").to_list(), range(frame.height), strict=True))
    all_conversions = pl.read_parquet(toy.conversions)
    types = {}
    for name in ("purchase", "signup", "upgrade"):
        def rows(table: pl.DataFrame) -> np.ndarray:
            ids = table.filter(pl.col("conversion_type") == name).get_column("user_id").to_list()
            return np.array(sorted(row_of[i] for i in ids))
        seeds, heldout_rows = rows(pl.read_parquet(training_conversions)), rows(heldout)
        background = np.setdiff1d(np.arange(frame.height), rows(all_conversions))
        types[name] = (seeds, heldout_rows, background)

    model = load_model(result.model_dir)
    query, candidate = embed_encoded(model, encoded, "query"), embed_encoded(model, encoded, "candidate")
    model_recall = mean_recall(query, candidate, types, top_m=10)
    raw = raw_feature_vectors(encoded, FeatureSpec.load(toy.spec).cardinalities)
    raw_recall = mean_recall(raw, raw, types, top_m=10)
    print(f"held-out recall in top 1%: model {model_recall:.3f}, raw features {raw_recall:.3f}")
    assert model_recall >= 2 * raw_recall


def _weights_and_embeddings(model_dir: Path, toy: ToyPaths) -> tuple[str, np.ndarray]:
    encoded = encode(pl.read_parquet(toy.features), FeatureSpec.load(toy.spec))
    return sha256_file(model_dir / "model.safetensors"), embed_encoded(load_model(model_dir), encoded)


def test_resumed_run_reproduces_an_uninterrupted_run(toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path) -> None:
    train(toy.features, toy.spec, toy.conversions, tmp_path / "straight", make_config(epochs=2), progress=None)
    messages: list[str] = []
    train(toy.features, toy.spec, toy.conversions, tmp_path / "resumed", make_config(epochs=1), progress=None)
    train(
        toy.features, toy.spec, toy.conversions, tmp_path / "resumed", make_config(epochs=2),
        progress=messages.append,
    )
    assert any("resuming after epoch 1" in m for m in messages)
    assert sum(m.startswith("epoch ") for m in messages) == 1  # only epoch 2 was trained again
    straight, resumed = (_weights_and_embeddings(tmp_path / d, toy) for d in ("straight", "resumed"))
    assert straight[0] == resumed[0]
    np.testing.assert_array_equal(straight[1], resumed[1])


def test_checkpoints_of_other_settings_are_not_resumed(toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path) -> None:
    train(toy.features, toy.spec, toy.conversions, tmp_path / "a", make_config(epochs=1), progress=None)
    messages: list[str] = []
    other = make_config(epochs=1, temperature=0.2)
    train(toy.features, toy.spec, toy.conversions, tmp_path / "a", other, progress=messages.append)
    train(toy.features, toy.spec, toy.conversions, tmp_path / "fresh", other, progress=None)
    assert any("ignoring checkpoints" in m for m in messages)
    assert sha256_file(tmp_path / "a" / "model.safetensors") == sha256_file(tmp_path / "fresh" / "model.safetensors")


def test_tampered_checkpoint_is_refused(toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path) -> None:
    train(toy.features, toy.spec, toy.conversions, tmp_path, make_config(epochs=1), progress=None)
    (checkpoint,) = (tmp_path / "checkpoints").glob("epoch-*.safetensors")
    checkpoint.write_bytes(checkpoint.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        train(toy.features, toy.spec, toy.conversions, tmp_path, make_config(epochs=2), progress=None)


def test_manifest_describes_the_shipped_weights(trained: TrainResult, toy: ToyPaths) -> None:
    manifest = json.loads(trained.manifest.read_text())
    weights_sha256 = sha256_file(trained.weights)
    assert manifest["weights_sha256"] == weights_sha256
    assert manifest["model_build_id"] == trained.model_build_id == weights_sha256[:16]
    assert manifest["spec_sha256"] == sha256_file(toy.spec)
    assert manifest["ignored_converters"] == trained.ignored_converters == 3
    conversions = pl.read_parquet(toy.conversions).filter(pl.col("user_id") >= 0)
    for name, counts in manifest["converters"].items():
        n = conversions.filter(pl.col("conversion_type") == name).height
        assert counts["train"] + counts["heldout"] == n and counts["heldout"] >= 0.1 * n
    assert manifest["health"]["effective_rank"] == pytest.approx(trained.health.effective_rank)
    assert manifest["metrics"]["validation_recall"] == trained.validation_recall


def test_shipped_weights_are_the_best_epoch(toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path) -> None:
    config = make_config(epochs=4, patience=4)
    result = train(toy.features, toy.spec, toy.conversions, tmp_path, config, progress=None)
    history = json.loads(result.manifest.read_text())["metrics"]["history"]
    assert result.validation_recall == max(h["recall"] for h in history)
    data = load_training_data(toy.features, FeatureSpec.load(toy.spec), toy.conversions, config.train)
    recalls = validation_recalls(load_model(tmp_path), data.features, validation_set(data, config.train), config.train)
    assert float(np.mean(recalls)) == pytest.approx(result.validation_recall, abs=1e-9)


def test_held_back_types_are_not_trained(toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path) -> None:
    config = make_config(epochs=1, held_back_types=["signup"])
    result = train(toy.features, toy.spec, toy.conversions, tmp_path, config, progress=None)
    manifest = json.loads(result.manifest.read_text())
    assert manifest["conversion_types"] == ["purchase", "upgrade"]
    assert set(result.converters) == {"purchase", "upgrade"}


def test_progress_reports_loss_recall_and_time(toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path) -> None:
    messages: list[str] = []
    train(toy.features, toy.spec, toy.conversions, tmp_path, make_config(epochs=1), progress=messages.append)
    (line,) = [m for m in messages if m.startswith("epoch 1/1")]
    assert "loss" in line and "recall" in line and line.endswith("s")


def test_time_budget_stops_between_epochs(toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path) -> None:
    config = make_config(epochs=5, time_budget_seconds=1e-3)
    result = train(toy.features, toy.spec, toy.conversions, tmp_path, config, progress=None)
    assert result.epochs_run == 1 and "time budget" in result.stop_reason


def test_conversion_ids_of_another_type_are_refused(toy: ToyPaths, tmp_path: Path) -> None:
    conversions = pl.read_parquet(toy.conversions).with_columns(pl.col("user_id").cast(pl.String))
    conversions.write_parquet(tmp_path / "c.parquet")
    with pytest.raises(InputError, match="user_id"):
        train(toy.features, toy.spec, tmp_path / "c.parquet", tmp_path / "m", progress=None)


def test_too_few_converters_is_a_training_error(toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path) -> None:
    with pytest.raises(TrainingError, match="no conversion type has 10000 or more"):
        train(toy.features, toy.spec, toy.conversions, tmp_path, make_config(min_converters_per_type=10_000), progress=None)

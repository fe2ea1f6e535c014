"""Training: quality against raw features, exact resume, artifacts, input errors."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from sklearn.linear_model import RidgeCV
from sklearn.metrics import roc_auc_score

from lookalike.core.artifacts import sha256_file
from lookalike.core.config import LookalikeConfig, TrainConfig
from lookalike.core.errors import ArtifactError, InputError, TrainingError
from lookalike.encoder.model import embed_encoded, load_model
from lookalike.data.spec import FeatureSpec, encode
from lookalike.testing.toy_tables import ToyPaths, write_toy_tables
from lookalike.encoder.health import separability_auc
from lookalike.encoder.train import (
    _type_weights,
    TrainResult,
    load_training_data,
    train,
    validation_recalls,
    validation_set,
)
from lookalike.data.spec import raw_feature_vectors
from lookalike.encoder.heldout import heldout_recall

ConfigFactory = Callable[..., LookalikeConfig]
PerType = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]  # seeds, held out, background


def run(
    toy: ToyPaths,
    out: Path,
    config: LookalikeConfig,
    progress: Callable[[str], None] | None = None,
    conversions: Path | None = None,
) -> TrainResult:
    conversions = conversions or toy.conversions
    return train(toy.features, toy.spec, conversions, out, config, progress=progress)


def hold_out_users(toy: ToyPaths, fraction: float, folder: Path) -> tuple[Path, pl.DataFrame]:
    """Remove ``fraction`` of the converting users from the conversions.

    Returns the path of the remaining conversions and the held-out users' conversions.
    """
    conversions = pl.read_parquet(toy.conversions)
    users = conversions.get_column("user_id").unique().sort()
    chosen = users.sample(fraction=fraction, seed=5)
    heldout = conversions.get_column("user_id").is_in(chosen.implode())
    path = folder / "training_conversions.parquet"
    conversions.filter(~heldout).write_parquet(path)
    return path, conversions.filter(heldout)


def rows_per_type(toy: ToyPaths, training: pl.DataFrame, heldout: pl.DataFrame) -> PerType:
    """Seed rows (training converters), held-out rows and background rows (non-converters of the
    type) of every conversion type."""
    ids = pl.read_parquet(toy.features, columns=["user_id"]).get_column("user_id")
    every = pl.read_parquet(toy.conversions)

    def rows(table: pl.DataFrame, name: str) -> np.ndarray:
        users = table.filter(pl.col("conversion_type") == name).get_column("user_id")
        return np.flatnonzero(ids.is_in(users.implode()).to_numpy())

    return {
        name: (
            rows(training, name),
            rows(heldout, name),
            np.setdiff1d(np.arange(len(ids)), rows(every, name)),
        )
        for name in every.get_column("conversion_type").unique().sort()
    }


def mean_recall(seed_space: np.ndarray, candidate_space: np.ndarray, per_type: PerType) -> float:
    recalls = [
        heldout_recall(
            seed_space[seeds],
            candidate_space[heldout],
            candidate_space[background],
            top_fraction=0.01,
            top_m=10,
        )
        for seeds, heldout, background in per_type.values()
    ]
    return float(np.mean(recalls))


def test_trained_space_beats_raw_features_on_held_out_converters(tmp_path: Path) -> None:
    toy = write_toy_tables(tmp_path / "data", 20_000, seed=5)
    training, heldout = hold_out_users(toy, 0.15, tmp_path)
    config = LookalikeConfig(train=TrainConfig(epochs=8, threads=1, validation_background=5000))
    result = run(toy, tmp_path / "model", config, conversions=training)

    per_type = rows_per_type(toy, pl.read_parquet(training), heldout)
    spec = FeatureSpec.load(toy.spec)
    encoded = encode(pl.read_parquet(toy.features), spec)
    model = load_model(result.model_dir)
    query, candidate = (embed_encoded(model, encoded, tower) for tower in ("query", "candidate"))
    model_recall = mean_recall(query, candidate, per_type)
    raw = raw_feature_vectors(encoded, spec.cardinalities)
    raw_recall = mean_recall(raw, raw, per_type)
    print(f"held-out recall in top 1%: model {model_recall:.3f}, raw features {raw_recall:.3f}")
    assert model_recall >= 2 * raw_recall


@pytest.mark.parametrize("seed", [1, 2])
def test_self_supervised_term_keeps_what_the_one_trained_type_does_not_need(
    make_config: ConfigFactory, tmp_path: Path, seed: int
) -> None:
    """With one conversion type the labels teach one latent direction; the SCARF term must keep
    more of the other three (linear read-out of the whole toy latent from the embedding)."""
    toy = write_toy_tables(tmp_path / "data", 6000, seed=seed, conversion_types=("purchase",))
    latent = np.random.default_rng(seed).standard_normal((6000, 4))  # toy_tables' first draw
    encoded = encode(pl.read_parquet(toy.features), FeatureSpec.load(toy.spec))
    explained = {}
    for weight in (0.0, 1.0):
        config = make_config(epochs=3, self_supervised_weight=weight)
        result = run(toy, tmp_path / f"model-{weight}", config)
        embeddings = embed_encoded(load_model(result.model_dir), encoded)
        probe = RidgeCV().fit(embeddings[:3000], latent[:3000])
        explained[weight] = probe.score(embeddings[3000:], latent[3000:])
    print(f"latent R^2 without / with the self-supervised term: {explained}")
    assert explained[1.0] > explained[0.0] + 0.08


@pytest.mark.parametrize("seed", [1, 2])
def test_training_converters_are_not_memorized(
    make_config: ConfigFactory, tmp_path: Path, seed: int
) -> None:
    """The converters trained on must not sit much closer to their own centroid than held-out
    converters of the same type (seed lists are usually those converters). Before a converter
    counted at most once an epoch, the gap was above 0.15 without corrupted anchors on these
    tables; now it stays small with or without them."""
    toy = write_toy_tables(tmp_path / "data", 6000, seed=seed, conversion_types=("purchase",))
    training, heldout = hold_out_users(toy, 0.3, tmp_path)
    ids = pl.read_parquet(toy.features, columns=["user_id"]).get_column("user_id")
    trained_rows = np.flatnonzero(ids.is_in(pl.read_parquet(training)["user_id"].implode()).to_numpy())
    heldout_rows = np.flatnonzero(ids.is_in(heldout["user_id"].implode()).to_numpy())
    encoded = encode(pl.read_parquet(toy.features), FeatureSpec.load(toy.spec))
    gaps = {}
    for rate in (0.0, 0.3):
        config = make_config(epochs=8, anchor_corruption_rate=rate)
        result = run(toy, tmp_path / f"model-{rate}", config, conversions=training)
        embeddings = embed_encoded(load_model(result.model_dir), encoded)
        centroid = embeddings[trained_rows].mean(axis=0)
        centroid /= np.linalg.norm(centroid)
        gaps[rate] = float(np.mean(embeddings[trained_rows] @ centroid)
                           - np.mean(embeddings[heldout_rows] @ centroid))
    print(f"cosine gap, trained minus held-out converters, by anchor corruption rate: {gaps}")
    assert gaps[0.0] < 0.15 and gaps[0.3] < 0.15


def test_a_type_with_few_converters_is_not_memorized(
    make_config: ConfigFactory, tmp_path: Path
) -> None:
    """80 converters to train on (72 after the build's hold-out): at the full converter loss the
    encoder tells them from the type's other converters (separability AUC 0.78 on these tables);
    with the loss scaled by 72 / ``train.converter_loss_full_at`` it does not (0.57)."""
    toy = write_toy_tables(tmp_path / "data", 6000, seed=1, conversion_types=("purchase",))
    conversions = pl.read_parquet(toy.conversions)
    users = np.random.default_rng(1).permutation(conversions.get_column("user_id").unique().sort())
    training = tmp_path / "training.parquet"
    conversions.filter(pl.col("user_id").is_in(users[:80])).write_parquet(training)
    ids = pl.read_parquet(toy.features, columns=["user_id"]).get_column("user_id").to_numpy()
    trained_rows, heldout_rows = np.isin(ids, users[:80]), np.isin(ids, users[80:])
    encoded = encode(pl.read_parquet(toy.features), FeatureSpec.load(toy.spec))
    auc = {}
    for full_at in (0, TrainConfig().converter_loss_full_at):
        config = make_config(epochs=10, patience=10, converter_loss_full_at=full_at)
        result = run(toy, tmp_path / f"model-{full_at}", config, conversions=training)
        embeddings = embed_encoded(load_model(result.model_dir), encoded)
        auc[full_at] = separability_auc(embeddings[trained_rows], embeddings[heldout_rows], 5, 0)
    print(f"training vs held-out converters, AUC by converter_loss_full_at: {auc}")
    assert auc[0] > 0.7 and auc[TrainConfig().converter_loss_full_at] < 0.6


def test_converter_loss_weight_per_type() -> None:
    weights = _type_weights([np.arange(50), np.arange(2000)], 1000)
    np.testing.assert_allclose(weights.numpy(), [0.05, 1.0])
    assert _type_weights([np.arange(50)], 0) is None
    assert _type_weights([np.arange(1000)], 1000) is None


def weights_and_embeddings(model_dir: Path, toy: ToyPaths) -> tuple[str, np.ndarray]:
    encoded = encode(pl.read_parquet(toy.features), FeatureSpec.load(toy.spec))
    embeddings = embed_encoded(load_model(model_dir), encoded)
    return sha256_file(model_dir / "model.safetensors"), embeddings


@pytest.mark.parametrize("propensity_weight", [0.0, 1.0])
def test_resumed_run_reproduces_an_uninterrupted_run(
    toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path, propensity_weight: float
) -> None:
    settings = {"propensity_weight": propensity_weight}
    run(toy, tmp_path / "straight", make_config(epochs=2, **settings))
    run(toy, tmp_path / "resumed", make_config(epochs=1, **settings))
    messages: list[str] = []
    run(toy, tmp_path / "resumed", make_config(epochs=2, **settings), progress=messages.append)
    assert any("resuming after epoch 1" in m for m in messages)
    assert sum(m.startswith("epoch ") for m in messages) == 1  # only epoch 2 was trained again
    straight = weights_and_embeddings(tmp_path / "straight", toy)
    resumed = weights_and_embeddings(tmp_path / "resumed", toy)
    assert straight[0] == resumed[0]
    np.testing.assert_array_equal(straight[1], resumed[1])


def test_propensity_head_learns_the_trained_types(
    toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path
) -> None:
    # the head alone is under test: without the SCARF term or corrupted anchors competing for
    # three short epochs
    config = make_config(epochs=3, propensity_weight=1.0, self_supervised_weight=0.0,
                         anchor_corruption_rate=0.0)
    result = run(toy, tmp_path / "head", config)
    spec = FeatureSpec.load(toy.spec)
    data = load_training_data(toy.features, spec, toy.conversions, make_config().train)
    model = load_model(result.model_dir)
    assert model.architecture.propensity_types == len(data.types)
    embeddings = torch.from_numpy(embed_encoded(model, data.features))
    with torch.inference_mode():
        logits = model.propensity(embeddings).numpy()
    for t, name in enumerate(data.types):
        auc = roc_auc_score(data.labels[:, t], logits[:, t])
        assert auc > 0.75, f"{name}: head AUC {auc:.3f} on its own training labels"


def test_propensity_weight_zero_trains_no_head(
    toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path
) -> None:
    result = run(toy, tmp_path / "plain", make_config(epochs=1, propensity_weight=0.0))
    model = load_model(result.model_dir)
    assert model.propensity is None and model.architecture.propensity_types == 0


def test_checkpoints_of_other_settings_are_not_resumed(
    toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path
) -> None:
    run(toy, tmp_path / "a", make_config(epochs=1))
    other = make_config(epochs=1, temperature=0.3)
    messages: list[str] = []
    run(toy, tmp_path / "a", other, progress=messages.append)
    run(toy, tmp_path / "fresh", other)
    assert any("ignoring checkpoints" in m for m in messages)
    weights = [sha256_file(tmp_path / d / "model.safetensors") for d in ("a", "fresh")]
    assert weights[0] == weights[1]


def test_tampered_checkpoint_is_refused(
    toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path
) -> None:
    run(toy, tmp_path, make_config(epochs=1))
    (checkpoint,) = (tmp_path / "checkpoints").glob("epoch-*.safetensors")
    checkpoint.write_bytes(checkpoint.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        run(toy, tmp_path, make_config(epochs=2))


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


def test_shipped_weights_are_the_best_epoch(
    toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path
) -> None:
    config = make_config(epochs=4, patience=4)
    result = run(toy, tmp_path, config)
    history = json.loads(result.manifest.read_text())["metrics"]["history"]
    assert result.validation_recall == max(h["recall"] for h in history)
    spec = FeatureSpec.load(toy.spec)
    data = load_training_data(toy.features, spec, toy.conversions, config.train)
    validation = validation_set(data, config.train)
    recalls = validation_recalls(load_model(tmp_path), data.features, validation, config.train)
    assert float(np.mean(recalls)) == pytest.approx(result.validation_recall, abs=1e-9)


def test_held_back_types_are_not_trained(
    toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path
) -> None:
    result = run(toy, tmp_path, make_config(epochs=1, held_back_types=["signup"]))
    manifest = json.loads(result.manifest.read_text())
    assert manifest["conversion_types"] == ["purchase", "upgrade"]
    assert set(result.converters) == {"purchase", "upgrade"}


def test_progress_reports_loss_recall_and_time(
    toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path
) -> None:
    messages: list[str] = []
    run(toy, tmp_path, make_config(epochs=1), progress=messages.append)
    (line,) = [m for m in messages if m.startswith("epoch 1/1")]
    assert "loss" in line and "recall" in line and line.endswith("s")


def test_progress_gives_an_eta_at_the_pace_of_the_epochs_so_far(
    toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path
) -> None:
    messages: list[str] = []
    run(toy, tmp_path, make_config(epochs=3, patience=3), progress=messages.append)
    epochs = [m for m in messages if m.startswith("epoch ")]
    first = re.search(r"\), ([0-9.]+)s, ETA ([0-9]+)s$", epochs[0])
    assert first, epochs[0]
    assert abs(int(first[2]) - 2 * float(first[1])) <= 0.6  # 2 more epochs at the first one's pace
    assert "ETA" not in epochs[-1] and epochs[-1].startswith("epoch 3/3")


def test_time_budget_stops_between_epochs(
    toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path
) -> None:
    result = run(toy, tmp_path, make_config(epochs=5, time_budget_seconds=1e-3))
    assert result.epochs_run == 1 and "time budget" in result.stop_reason


def test_conversion_ids_of_another_type_are_refused(toy: ToyPaths, tmp_path: Path) -> None:
    conversions = pl.read_parquet(toy.conversions)
    conversions = conversions.with_columns(pl.col("user_id").cast(pl.String))
    conversions.write_parquet(tmp_path / "c.parquet")
    with pytest.raises(InputError, match="user_id"):
        run(toy, tmp_path / "m", LookalikeConfig(), conversions=tmp_path / "c.parquet")


def test_too_few_converters_is_a_training_error(
    toy: ToyPaths, make_config: ConfigFactory, tmp_path: Path
) -> None:
    with pytest.raises(TrainingError, match="no conversion type has 10000 or more"):
        run(toy, tmp_path, make_config(min_converters_per_type=10_000))

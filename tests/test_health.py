"""Embedding health statistics against hand-computed values and naive loops; collapse detection."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from lookalike.core.config import LookalikeConfig, ModelConfig
from lookalike.core.errors import TrainingError
from lookalike.data.spec import EncodedFeatures
from lookalike.encoder.health import (
    alignment,
    auc_standard_error,
    check_not_collapsed,
    effective_rank,
    embedding_health,
    mean_pairwise_cosine,
    memorization_figures,
    uniformity,
)
from lookalike.encoder.model import Architecture, TwoTowerEncoder, embed_encoded
from lookalike.encoder.train import TrainResult, train
from lookalike.testing.toy_tables import ToyPaths


def unit_rows(n: int, d: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("rank", [1, 2, 5, 10])
def test_effective_rank_of_orthonormal_rows_is_their_count(rank: int) -> None:
    q, _ = np.linalg.qr(np.random.default_rng(rank).standard_normal((10, 10)))
    assert effective_rank(q[:rank]) == pytest.approx(rank, rel=1e-9)


def test_effective_rank_hand_computed() -> None:
    # Singular values 3 and 1: p = (0.75, 0.25), entropy 0.56233, exp -> 1.75476.
    assert effective_rank(np.diag([3.0, 1.0])) == pytest.approx(1.75476, rel=1e-5)


def test_mean_pairwise_cosine_matches_loop() -> None:
    x = unit_rows(30, 8)
    pairs = [float(x[i] @ x[j]) for i, j in itertools.permutations(range(30), 2)]
    assert mean_pairwise_cosine(x) == pytest.approx(np.mean(pairs), abs=1e-6)


def test_uniformity_matches_loop() -> None:
    x = unit_rows(25, 6)
    terms = [
        math.exp(-2 * float(np.sum((x[i] - x[j]) ** 2)))
        for i, j in itertools.combinations(range(25), 2)
    ]
    assert uniformity(x) == pytest.approx(math.log(np.mean(terms)), abs=1e-5)


def test_alignment_matches_loop() -> None:
    x, y = unit_rows(20, 4, seed=1), unit_rows(20, 4, seed=2)
    expected = np.mean([float(np.sum((x[i] - y[i]) ** 2)) for i in range(20)])
    assert alignment(x, y) == pytest.approx(expected, rel=1e-6)


def _constant_encoder() -> TwoTowerEncoder:
    """An encoder whose last layer ignores its input: every user gets the same embedding."""
    model = TwoTowerEncoder(Architecture(ModelConfig(embedding_dim=8, hidden_dims=[16]), 5, [4]))
    last = model.tower("candidate").mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(0.3)
    return model


def _random_features(n: int) -> EncodedFeatures:
    rng = np.random.default_rng(0)
    return EncodedFeatures(rng.random((n, 5), dtype=np.float32), rng.integers(0, 4, (n, 1)))


def test_collapsed_model_is_rejected() -> None:
    embeddings = embed_encoded(_constant_encoder(), _random_features(500))
    health = embedding_health(embeddings)
    assert health.effective_rank == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(TrainingError, match="collapsed.*effective rank.*mean pairwise cosine"):
        check_not_collapsed(health, min_effective_rank=2.0, max_mean_cosine=0.95)


def test_directional_collapse_is_rejected_by_mean_cosine() -> None:
    # Spread in all dimensions, but all within a narrow cone: rank looks fine, cosine does not.
    x = unit_rows(400, 8) * 0.05 + np.eye(8, dtype=np.float32)[0]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    health = embedding_health(x)
    assert health.effective_rank >= 1.0 and health.mean_pairwise_cosine > 0.95
    with pytest.raises(TrainingError, match="mean pairwise cosine"):
        check_not_collapsed(health, min_effective_rank=1.0, max_mean_cosine=0.95)


def test_healthy_embeddings_pass(trained: TrainResult) -> None:
    health = trained.health
    assert health.effective_rank > 2.0 and health.mean_pairwise_cosine < 0.95
    check_not_collapsed(health, min_effective_rank=2.0, max_mean_cosine=0.95)
    check_not_collapsed(embedding_health(unit_rows(500, 16)), 2.0, 0.95)


def test_training_refuses_to_ship_a_collapsed_model(
    toy: ToyPaths, make_config: Callable[..., LookalikeConfig], tmp_path: Path
) -> None:
    config = make_config(epochs=1, min_effective_rank=1000.0)
    with pytest.raises(TrainingError, match="collapsed"):
        train(toy.features, toy.spec, toy.conversions, tmp_path, config, progress=None)
    assert not (tmp_path / "model.safetensors").exists()


def test_auc_standard_error_matches_the_spread_over_many_draws() -> None:
    """The build's group sizes on UCI Bank, 5,000 clients (355 seeds, 39 held out), true AUC 0.6:
    the standard deviation of the AUC over 2,000 independent draws is the standard error."""
    rng = np.random.default_rng(3)
    shift = math.sqrt(2) * norm.ppf(0.6)  # binormal, unit variances: AUC = Phi(shift / sqrt 2)
    y = np.r_[np.ones(355), np.zeros(39)]
    aucs = [roc_auc_score(y, np.r_[rng.normal(shift, 1, 355), rng.normal(0, 1, 39)])
            for _ in range(2000)]
    assert np.mean(aucs) == pytest.approx(0.6, abs=0.005)
    assert auc_standard_error(0.6, 355, 39) == pytest.approx(np.std(aucs), rel=0.1)


def test_memorization_interval_covers_the_true_auc() -> None:
    """Seeds shifted along one of 4 directions (true AUC 0.62), 300 seeds and 40 held out, 30
    draws: the cross-validated figure runs low (0.59 on average: the classifier learns the
    direction from few users) and the point figure alone passes 0.6 in about half the draws; the
    95% interval holds the true AUC in most of them and flags most of them."""
    rng = np.random.default_rng(4)
    shift = math.sqrt(2) * norm.ppf(0.62)
    covered = flagged = point_flagged = 0
    for _ in range(30):
        seeds, heldout = rng.standard_normal((300, 4)), rng.standard_normal((40, 4))
        seeds[:, 0] += shift
        raw = (rng.standard_normal((300, 4)), rng.standard_normal((40, 4)))
        figures = memorization_figures((seeds, heldout), raw, 0.6, seed=0, repeats=2)
        covered += figures["embedding_low"] <= 0.62 <= figures["embedding_high"]
        flagged += figures["flagged"]
        point_flagged += figures["embedding"] > max(0.6, figures["raw"])
    assert covered >= 24 and flagged >= 22 and point_flagged <= 18


def test_memorization_is_not_flagged_where_groups_are_alike_and_large() -> None:
    rng = np.random.default_rng(5)
    alike = (rng.standard_normal((2000, 8)), rng.standard_normal((2000, 8)))
    figures = memorization_figures(alike, alike, 0.6, seed=0)
    assert figures["embedding"] == figures["raw"] == pytest.approx(0.5, abs=0.03)
    assert figures["embedding_high"] < 0.6 and not figures["flagged"]
    # separable in the embedding, but as much on the raw features: the data's, not the encoder's
    apart = (alike[0] + 0.5, alike[1])
    figures = memorization_figures(apart, apart, 0.6, seed=0)
    assert figures["embedding_low"] > 0.6 and not figures["flagged"]

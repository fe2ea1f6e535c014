"""The encoder: piecewise-linear encoding, tower shapes, shared towers, save and checked load."""

from __future__ import annotations

import json

from pathlib import Path

import numpy as np
import pytest
import torch

from lookalike.core.config import ModelConfig
from lookalike.core.errors import ArtifactError
from lookalike.encoder.model import (
    Architecture,
    PiecewiseLinearEncoding,
    TwoTowerEncoder,
    categorical_embedding_dim,
    embed_encoded,
    load_model,
    save_model,
)
from lookalike.data.spec import EncodedFeatures


def naive_ple(x: float, n_bins: int) -> list[float]:
    """Gorishniy et al. 2022, eq. for PLE with bin edges b_0 < ... < b_T on [0, 1]."""
    edges = [t / n_bins for t in range(n_bins + 1)]
    out = []
    for t in range(1, n_bins + 1):
        low, high = edges[t - 1], edges[t]
        if x < low and t > 1:
            out.append(0.0)
        elif x >= high and t < n_bins:
            out.append(1.0)
        else:
            out.append((x - low) / (high - low))
    return out


@pytest.mark.parametrize("n_bins", [1, 4, 7])
def test_piecewise_linear_encoding_matches_the_paper(n_bins: int) -> None:
    values = np.array([[0.0, 1.0, 0.5], [0.13, 0.999, 0.25], [0.6, 0.01, 0.75]], dtype=np.float32)
    encoded = PiecewiseLinearEncoding(n_bins)(torch.from_numpy(values))
    expected = [[b for x in row for b in naive_ple(float(x), n_bins)] for row in values]
    torch.testing.assert_close(encoded, torch.tensor(expected), atol=1e-6, rtol=0)


def test_categorical_embedding_width_grows_with_cardinality_and_is_capped() -> None:
    assert categorical_embedding_dim(2, cap=16) == 2  # round(1.6 * 2 ** 0.56) = 2
    assert categorical_embedding_dim(50, cap=16) == 14  # round(1.6 * 8.94) = 14
    assert categorical_embedding_dim(1000, cap=16) == 16


def features(n: int) -> EncodedFeatures:
    """Rows for an encoder with 6 numeric features and categorical cardinalities 5 and 30."""
    rng = np.random.default_rng(0)
    codes = np.stack([rng.integers(0, c, n) for c in (5, 30)], axis=1)
    return EncodedFeatures(rng.random((n, 6), dtype=np.float32), codes)


def encoder(share: bool, seed: int = 0) -> TwoTowerEncoder:
    torch.manual_seed(seed)
    config = ModelConfig(embedding_dim=12, hidden_dims=[32, 16], share_towers=share)
    return TwoTowerEncoder(Architecture(config, 6, [5, 30]))


def test_towers_output_unit_vectors_of_the_embedding_dim() -> None:
    out = embed_encoded(encoder(share=False), features(100), "query")
    assert out.shape == (100, 12) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)


def test_shared_towers_are_one_module_and_separate_towers_differ() -> None:
    rows = features(50)
    shared, separate = encoder(share=True), encoder(share=False)
    np.testing.assert_array_equal(
        embed_encoded(shared, rows, "query"), embed_encoded(shared, rows, "candidate")
    )
    assert not np.allclose(
        embed_encoded(separate, rows, "query"), embed_encoded(separate, rows, "candidate")
    )
    n_shared = sum(p.numel() for p in shared.parameters())
    assert sum(p.numel() for p in separate.parameters()) == 2 * n_shared


def test_embedding_is_in_eval_mode_without_dropout() -> None:
    model = encoder(share=True).train()
    rows = features(40)
    np.testing.assert_array_equal(embed_encoded(model, rows), embed_encoded(model, rows))
    assert model.training  # restored afterwards


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = encoder(share=False)
    manifest = save_model(model, tmp_path, spec_sha256="ab" * 32, metadata={"note": "x"})
    loaded = load_model(tmp_path)
    rows = features(64)
    for tower in ("query", "candidate"):
        expected = embed_encoded(model, rows, tower)
        np.testing.assert_array_equal(embed_encoded(loaded, rows, tower), expected)
    assert manifest["model_build_id"] == manifest["weights_sha256"][:16]
    assert not loaded.training


def test_model_saved_before_the_propensity_head_still_loads(tmp_path: Path) -> None:
    model = encoder(share=True)
    save_model(model, tmp_path, spec_sha256="ab" * 32, metadata={})
    manifest_path = tmp_path / "model.json"
    manifest = json.loads(manifest_path.read_text())
    del manifest["architecture"]["propensity_types"]
    manifest_path.write_text(json.dumps(manifest))
    loaded = load_model(tmp_path)
    assert loaded.propensity is None
    rows = features(16)
    np.testing.assert_array_equal(embed_encoded(loaded, rows), embed_encoded(model, rows))


def test_load_refuses_tampered_weights(tmp_path: Path) -> None:
    save_model(encoder(share=True), tmp_path, spec_sha256="ab" * 32, metadata={})
    weights = tmp_path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        load_model(tmp_path)

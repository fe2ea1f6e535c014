"""Compact embeddings: float16 storage (``model.embedding_storage``), read by every reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from audience_fixtures import clustered_embeddings, write_build, write_ids
from test_index import naive_top_k

from lookalike.audience.export import export_audience
from lookalike.core.artifacts import sha256_file
from lookalike.core.config import AudienceConfig, IndexConfig, LookalikeConfig, ModelConfig
from lookalike.data.spec import FeatureSpec
from lookalike.encoder.embed import embed_population
from lookalike.encoder.model import Architecture, TwoTowerEncoder, save_model
from lookalike.search.exact import exact_search
from lookalike.search.index import build_index
from lookalike.search.neighbours import ExactSearch
from lookalike.search.vectors import open_embeddings
from lookalike.testing.toy_tables import write_toy_tables

FLOAT16_HALF_SPACING_BELOW_1 = 2.0**-12  # rounding bound of a float16 value in (-1, 1)


def test_float16_storage_round_trips_within_its_rounding(tmp_path: Path) -> None:
    toy = write_toy_tables(tmp_path / "toy", 700, seed=5)
    spec = FeatureSpec.load(toy.spec)
    torch.manual_seed(0)
    config = ModelConfig(embedding_dim=8, hidden_dims=[16], embedding_storage="float16")
    model_dir = tmp_path / "model"
    save_model(TwoTowerEncoder(Architecture.for_spec(spec, config)), model_dir,
               spec_sha256=sha256_file(toy.spec), metadata={})
    half = embed_population(toy.features, toy.spec, model_dir, tmp_path / "half", batch_size=256)
    full = embed_population(toy.features, toy.spec, model_dir, tmp_path / "full",
                            storage="float32")
    stored, reference = open_embeddings(half.embeddings), open_embeddings(full.embeddings)
    assert (stored.dtype, reference.dtype) == (np.float16, np.float32)
    assert stored.nbytes * 2 == reference.nbytes
    error = np.abs(stored.astype(np.float64) - reference.astype(np.float64))
    assert error.max() <= FLOAT16_HALF_SPACING_BELOW_1
    manifest = json.loads(half.manifest.read_text())
    assert manifest["dtype"] == "float16"
    assert manifest["embeddings_sha256"] == sha256_file(half.embeddings)


def float16_exact(n: int, d: int) -> np.ndarray:
    """Clustered unit-ish float32 vectors whose values float16 holds exactly (norms within 5e-4)."""
    return clustered_embeddings(n, d, clusters=8).astype(np.float16).astype(np.float32)


STRATEGIES = ["knn", "clusters", "centroid", "density", "contrast", "hybrid"]


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_an_export_on_float16_embeddings_equals_the_float32_one(
    tmp_path: Path, strategy: str
) -> None:
    """The same values stored as float16 and float32: every reader (index build, seed vectors,
    strategies, nearest seeds, quality estimate) must compute the same audience."""
    vectors = float16_exact(900, 8)
    config = LookalikeConfig(audience=AudienceConfig(
        min_audience_size=10, min_seed_size=20, tiers=[0.05, 0.1], strategy=strategy))
    seeds = None
    audiences, qualities = {}, {}
    for dtype in (np.float32, np.float16):
        build = write_build(tmp_path / np.dtype(dtype).name, vectors.astype(dtype))
        build_index(build.embeddings, build.users, build.index_dir, IndexConfig(threads=1),
                    "model-123")
        ids = pl.read_parquet(build.users).get_column("user_id")
        seeds = seeds or write_ids(tmp_path / "seeds.csv", ids[np.arange(3, 900, 8)[:60]])
        result = export_audience(build, seeds, tmp_path / f"{dtype.__name__}.parquet", size=100,
                                 config=config, progress=lambda _: None)
        audiences[dtype] = pl.read_parquet(result.audience)
        qualities[dtype] = json.loads(result.audience.with_suffix(".report.json").read_text())[
            "quality"]
    for column in ("user_id", "nearest_seed"):
        assert audiences[np.float16][column].equals(audiences[np.float32][column])
    np.testing.assert_allclose(audiences[np.float16]["score"], audiences[np.float32]["score"],
                               rtol=1e-5, atol=1e-6)
    assert qualities[np.float16] == qualities[np.float32]


def test_exact_search_reads_float16_rows_as_float32() -> None:
    vectors = float16_exact(700, 16)
    queries = vectors[::50]
    labels, sims = exact_search(vectors.astype(np.float16), queries, 15, exclude=np.arange(5))
    expected_labels, expected_sims = naive_top_k(vectors, queries, 15, exclude=np.arange(5))
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(sims, expected_sims, atol=1e-6)


def test_exact_search_over_float16_rows_in_the_neighbour_search() -> None:
    vectors = float16_exact(500, 8)
    search = ExactSearch(vectors.astype(np.float16), np.arange(100, 500))
    labels, _ = search.query(vectors[:3], 10, exclude=np.arange(100, 150))
    expected, _ = naive_top_k(vectors[150:500], vectors[:3], 10)
    np.testing.assert_array_equal(labels, expected + 150)

"""Small clustered populations and on-disk builds for the audience and export tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from lookalike.core.artifacts import write_json
from lookalike.testing.toy_tables import toy_spec
from lookalike.core.workdir import BuildPaths, Workdir


def clustered_embeddings(
    n: int, d: int = 8, clusters: int = 6, noise: float = 0.35, seed: int = 0
) -> np.ndarray:
    """Unit float32 vectors around ``clusters`` random directions; row i in cluster i % clusters."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = centres[np.arange(n) % clusters] + noise * rng.normal(size=(n, d))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)


def population_ids(n: int, id_kind: str) -> pl.Series:
    """Ids 1000, 1001, ... as int64, or "u1000", ... as strings."""
    ids = np.arange(1000, 1000 + n, dtype=np.int64)
    values = ids if id_kind == "int" else [f"u{i}" for i in ids]
    return pl.Series("user_id", values)


def write_build(
    root: Path, embeddings: np.ndarray, id_kind: str = "int", *, with_features: bool = True
) -> BuildPaths:
    """A build folder in a workdir: embeddings, users, model.json and (optionally) features and
    their spec."""
    build = Workdir(root).build("b1")
    build.embeddings_dir.mkdir(parents=True)
    np.save(build.embeddings, embeddings)
    ids = population_ids(len(embeddings), id_kind)
    pl.DataFrame({"user_id": ids}).write_parquet(build.users)
    write_json(build.model_dir / "model.json", {"model_build_id": "model-123"})
    if with_features:
        rng = np.random.default_rng(1)
        cluster = np.arange(len(embeddings)) % 6
        features = pl.DataFrame(
            {
                "user_id": ids,
                "purchases_30d": cluster * 2.0 + rng.normal(size=len(ids)),
                "sessions_7d": rng.poisson(3, size=len(ids)).astype(np.int64),
                "country": [["fr", "de", "es"][c % 3] for c in cluster],
            }
        )
        features.write_parquet(build.features)
        toy_spec(features).save(build.spec)
    return build


def write_ids(path: Path, ids: pl.Series, weights: np.ndarray | None = None) -> Path:
    """A user list as Parquet or CSV (by suffix), with an optional weight column."""
    frame = pl.DataFrame({"user_id": ids})
    if weights is not None:
        frame = frame.with_columns(pl.Series("weight", weights))
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return path

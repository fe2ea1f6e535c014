"""Reading and checking the vectors the index and exact search take: the memory-mapped
``embeddings.npy``, its ``users.parquet`` ids, and query or insert vectors (dimension, finite,
L2-normalized).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from lookalike.core.errors import ArtifactError

NORM_TOLERANCE = 1e-3  # float16 storage rounds a unit row's norm by at most 2**-11 (4.9e-4)
EMBEDDING_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))


def open_embeddings(path: Path) -> np.ndarray:
    """Memory-map ``embeddings.npy`` (float32 or float16 [N, d], see ``model.embedding_storage``);
    :class:`ArtifactError` if it is not that. Compute on float32 blocks of it
    (:func:`lookalike.core.blocks.float32_rows`), never on the whole matrix at once.
    """
    try:
        embeddings = np.load(path, mmap_mode="r")
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path} is missing; embed the population first") from exc
    except ValueError as exc:
        raise ArtifactError(f"{path} is not a readable .npy file ({exc}); re-embed") from exc
    if embeddings.ndim != 2 or embeddings.dtype not in EMBEDDING_DTYPES:
        raise ArtifactError(
            f"{path} holds {embeddings.dtype} {embeddings.shape}, expected float32 or float16 "
            "[users, dim]; re-embed"
        )
    return embeddings


def read_user_ids(users_path: Path, expected_rows: int) -> pl.Series:
    try:
        user_ids = pl.read_parquet(users_path, columns=["user_id"])["user_id"]
    except FileNotFoundError as exc:
        raise ArtifactError(f"{users_path} is missing; embed the population first") from exc
    if len(user_ids) != expected_rows:
        raise ArtifactError(
            f"{users_path} has {len(user_ids)} rows but the embeddings have {expected_rows}: they "
            "come from different embedding runs; re-embed"
        )
    return user_ids


def unit_vectors(vectors: np.ndarray, dim: int, what: str) -> np.ndarray:
    vectors = checked_vectors(vectors, dim, what)
    norms = np.linalg.norm(vectors, axis=1)
    off = np.flatnonzero(np.abs(norms - 1.0) > NORM_TOLERANCE)
    if len(off):
        raise ArtifactError(
            f"{what}: row {off[0]} has L2 norm {norms[off[0]]:.4f}; the index needs L2-normalized "
            "vectors (as the encoder writes them); re-embed"
        )
    return vectors


def checked_vectors(vectors: np.ndarray, dim: int, what: str = "queries") -> np.ndarray:
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2 or vectors.shape[1] != dim:
        raise ArtifactError(
            f"{what} have shape {vectors.shape} but the index holds {dim}-dim vectors: they come "
            "from another model; use that model's embeddings or rebuild the index"
        )
    if not np.isfinite(vectors).all():
        raise ArtifactError(f"{what} contain NaN or infinite values; re-embed")
    return vectors

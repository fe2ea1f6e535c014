"""Embedding users with a trained encoder.

:func:`embed_population` streams the feature table through the candidate tower into
``embeddings.npy`` (row i = row i of ``users.parquet``), with bounded memory. :func:`embed_users`
embeds given users (seeds) with the query tower.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lookalike.core.artifacts import atomic_write, sha256_file, write_json
from lookalike.core.config import EmbeddingStorage
from lookalike.core.errors import ArtifactError, InputError
from lookalike.encoder.model import Tower, TwoTowerEncoder, embed_encoded, load_model, read_manifest
from lookalike.data.spec import FeatureSpec, encode

EMBEDDINGS_FILE = "embeddings.npy"
USERS_FILE = "users.parquet"
MANIFEST_FILE = "embeddings.json"


@dataclass(frozen=True)
class EmbeddingPaths:
    """Files written by :func:`embed_population`."""

    embeddings: Path
    users: Path
    manifest: Path


@dataclass(frozen=True)
class UserEmbeddings:
    """Embeddings of requested users; ``missing`` lists requested ids absent from the features."""

    user_ids: pl.Series
    embeddings: np.ndarray  # float32 [len(user_ids), d]
    missing: pl.Series


def embed_population(
    features_path: Path,
    spec_path: Path,
    model_dir: Path,
    out_dir: Path,
    *,
    batch_size: int = 65_536,
    progress: Callable[[str], None] | None = None,
    storage: EmbeddingStorage | None = None,
) -> EmbeddingPaths:
    """Embed every row of the feature table with the candidate tower.

    Writes ``embeddings.npy`` ([N, d], L2-normalized, in ``storage``: default the model's
    ``model.embedding_storage``, float32 or float16), ``users.parquet`` (``user_id`` in row order,
    dtype preserved) and ``embeddings.json`` (model_build_id, count, dim, dtype, sha256 of both
    files), each atomically. Memory stays at about one batch of features. Readers open the file
    with :func:`lookalike.search.vectors.open_embeddings`, which accepts either dtype.

    Example::

        paths = embed_population(features, spec, model_dir, out_dir, storage="float16")
    """
    say = progress or (lambda _message: None)
    spec, model, build_id = _load_checked(spec_path, model_dir)
    parquet = pq.ParquetFile(features_path)
    n, dim = parquet.metadata.num_rows, model.architecture.model.embedding_dim
    dtype = np.dtype(storage or model.architecture.model.embedding_storage)
    paths = EmbeddingPaths(out_dir / EMBEDDINGS_FILE, out_dir / USERS_FILE, out_dir / MANIFEST_FILE)
    with atomic_write(paths.embeddings) as emb_tmp, atomic_write(paths.users) as users_tmp:
        matrix = np.lib.format.open_memmap(emb_tmp, mode="w+", dtype=dtype, shape=(n, dim))
        id_schema = pa.schema([parquet.schema_arrow.field("user_id")])
        with pq.ParquetWriter(users_tmp, id_schema) as users_writer:
            start = 0
            batches = parquet.iter_batches(batch_size=batch_size, columns=spec.columns)
            for record_batch in batches:
                frame = cast(pl.DataFrame, pl.from_arrow(record_batch))
                matrix[start : start + frame.height] = embed_frame(frame, spec, model, "candidate")
                users_writer.write_table(pa.table({"user_id": record_batch.column("user_id")}))
                start += frame.height
                say(f"embedded {start}/{n} users")
        matrix.flush()
        del matrix  # closes the memory map before the rename
    manifest = {
        "model_build_id": build_id,
        "count": n,
        "dim": dim,
        "dtype": dtype.name,
        "embeddings_sha256": sha256_file(paths.embeddings),
        "users_sha256": sha256_file(paths.users),
    }
    write_json(paths.manifest, manifest)
    return paths


def embed_frame(
    frame: pl.DataFrame, spec: FeatureSpec, model: TwoTowerEncoder, tower: Tower = "query"
) -> np.ndarray:
    """Embed rows of a feature table (raw values) with one tower: float32 [frame.height, d]."""
    return embed_encoded(model, encode(frame, spec), tower)


def embed_users(
    user_ids: pl.Series | Sequence[Any],
    features_path: Path,
    spec_path: Path,
    model_dir: Path,
    *,
    tower: Tower = "query",
) -> UserEmbeddings:
    """Embed the given users' feature rows (default: the query tower, for seeds).

    Ids are deduplicated, in first-seen order; ids absent from the feature table are returned in
    ``missing`` rather than raising, so callers can decide how many missing seeds are acceptable.
    """
    spec, model, _build_id = _load_checked(spec_path, model_dir)
    features = pl.scan_parquet(features_path).select(spec.columns)
    id_dtype = features.collect_schema()["user_id"]
    requested = pl.Series("user_id", user_ids).unique(maintain_order=True)
    same_kind = requested.dtype.is_integer() and id_dtype.is_integer()
    if requested.dtype != id_dtype and requested.len() and not same_kind:
        raise InputError(
            "user ids",
            "their type differs from the feature table's user_id",
            expected=str(id_dtype),
            examples=[str(requested.dtype)],
        )
    found = (
        pl.LazyFrame({"user_id": requested.cast(id_dtype)})
        .join(features, on="user_id", how="inner", maintain_order="left")
        .collect()
    )
    missing = requested.filter(~requested.is_in(found.get_column("user_id").implode()))
    embeddings = embed_frame(found, spec, model, tower)
    return UserEmbeddings(found.get_column("user_id"), embeddings, missing)


def _load_checked(spec_path: Path, model_dir: Path) -> tuple[FeatureSpec, TwoTowerEncoder, str]:
    """Load spec and model, refusing a spec other than the one the model was trained with."""
    manifest = read_manifest(model_dir)
    spec_sha256 = sha256_file(spec_path)
    if spec_sha256 != manifest.get("spec_sha256"):
        raise ArtifactError(
            f"{spec_path} is not the feature spec model {model_dir} was trained with "
            "(sha256 differs); embed with the build's own spec or retrain the model"
        )
    return FeatureSpec.load(spec_path), load_model(model_dir), manifest["model_build_id"]

"""Embedding users with a trained encoder.

:func:`embed_population` streams the feature table through the candidate tower into
``embeddings.npy`` (row i = row i of ``users.parquet``), with bounded memory. The same files in
pieces: :func:`embed_partition` embeds one population partition (the users of one index shard,
:func:`lookalike.data.partitions.shard_of`) into ``parts/``, so partitions can be embedded in
separate processes, and :func:`assemble_embeddings` scatters the parts into the files
:func:`embed_population` writes, byte for byte. :func:`embed_users` embeds given users (seeds)
with the query tower.
"""

from __future__ import annotations

import shutil
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lookalike.core.artifacts import atomic_write, sha256_file, write_json
from lookalike.core.config import EmbeddingStorage
from lookalike.core.errors import ArtifactError, InputError
from lookalike.data.parquet_rows import read_rows
from lookalike.data.spec import FeatureSpec, encode
from lookalike.encoder.model import (
    Tower,
    TwoTowerEncoder,
    embed_encoded,
    load_model,
    read_manifest,
)

EMBEDDINGS_FILE = "embeddings.npy"
USERS_FILE = "users.parquet"
MANIFEST_FILE = "embeddings.json"
PARTS_DIR = "parts"


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
    with atomic_write(paths.embeddings) as emb_tmp:
        matrix = np.lib.format.open_memmap(emb_tmp, mode="w+", dtype=dtype, shape=(n, dim))
        start = 0
        frames = (cast(pl.DataFrame, pl.from_arrow(record_batch))
                  for record_batch in parquet.iter_batches(batch_size=batch_size, columns=spec.columns))
        for vectors in embed_batches(frames, spec, model):
            matrix[start : start + len(vectors)] = vectors
            start += len(vectors)
            say(f"embedded {start}/{n} users")
        matrix.flush()
        del matrix  # closes the memory map before the rename
    _write_users(parquet, paths.users, batch_size)
    _write_manifest(paths, build_id, n, dim, dtype)
    return paths


def _write_users(parquet: pq.ParquetFile, path: Path, batch_size: int) -> None:
    """``users.parquet``: the feature table's ``user_id`` column, one row group per batch."""
    with atomic_write(path) as users_tmp:
        id_schema = pa.schema([parquet.schema_arrow.field("user_id")])
        with pq.ParquetWriter(users_tmp, id_schema) as users_writer:
            for record_batch in parquet.iter_batches(batch_size=batch_size, columns=["user_id"]):
                users_writer.write_table(pa.table({"user_id": record_batch.column("user_id")}))


def _write_manifest(paths: EmbeddingPaths, build_id: str, n: int, dim: int,
                    dtype: np.dtype) -> None:
    manifest = {
        "model_build_id": build_id,
        "count": n,
        "dim": dim,
        "dtype": dtype.name,
        "embeddings_sha256": sha256_file(paths.embeddings),
        "users_sha256": sha256_file(paths.users),
    }
    write_json(paths.manifest, manifest)


@dataclass(frozen=True)
class PartPaths:
    """Files of one population partition written by :func:`embed_partition`."""

    embeddings: Path  # [rows of the partition, d], in feature-table order
    rows: Path  # int64 global row numbers (feature-table positions), ascending


def part_paths(out_dir: Path, part: int) -> PartPaths:
    """Where :func:`embed_partition` writes partition ``part`` under ``out_dir``."""
    folder = Path(out_dir) / PARTS_DIR
    return PartPaths(folder / f"part-{part}.npy", folder / f"part-{part}.rows.npy")


def embed_partition(
    features_path: Path,
    spec_path: Path,
    model_dir: Path,
    out_dir: Path,
    part: int,
    rows: np.ndarray,
    *,
    batch_size: int = 65_536,
    progress: Callable[[str], None] | None = None,
    storage: EmbeddingStorage | None = None,
) -> PartPaths:
    """Embed the feature-table rows ``rows`` (global row numbers, ascending: the users of index
    shard ``part``, :func:`lookalike.build_steps.partition_rows`) into
    ``out_dir/parts/part-<part>.npy``, with the row numbers in ``part-<part>.rows.npy``.

    Only the row groups holding ``rows`` are read (the feature table keeps each partition in its
    own row groups), ``batch_size`` rows at a time, so memory is one batch plus the partition's
    memory-mapped output. Each row's
    embedding is the one :func:`embed_population` computes (inference is row by row), which
    :func:`assemble_embeddings` relies on.
    """
    say = progress or (lambda _message: None)
    spec, model, _build_id = _load_checked(spec_path, model_dir)
    parquet = pq.ParquetFile(features_path)
    dim = model.architecture.model.embedding_dim
    dtype = np.dtype(storage or model.architecture.model.embedding_storage)
    rows = np.asarray(rows, dtype=np.int64)
    if np.any(np.diff(rows) <= 0):
        raise ValueError("rows must be ascending row numbers without repeats")
    paths = part_paths(out_dir, part)
    with atomic_write(paths.embeddings) as emb_tmp:
        matrix = np.lib.format.open_memmap(emb_tmp, mode="w+", dtype=dtype, shape=(len(rows), dim))
        frames = (cast(pl.DataFrame, pl.from_arrow(batch))
                  for batch in read_rows(parquet, rows, spec.columns, batch_size))

        done = 0
        for vectors in embed_batches(frames, spec, model):
            matrix[done : done + len(vectors)] = vectors
            done += len(vectors)
            say(f"embedded {done}/{len(rows)} users of partition {part}")
        matrix.flush()
        del matrix
    with atomic_write(paths.rows) as rows_tmp, open(rows_tmp, "wb") as fh:
        np.save(fh, rows)
    return paths


def assemble_embeddings(
    features_path: Path,
    spec_path: Path,
    model_dir: Path,
    out_dir: Path,
    n_parts: int,
    *,
    batch_size: int = 65_536,
    block_rows: int = 65_536,
) -> EmbeddingPaths:
    """Write :func:`embed_population`'s files from the ``n_parts`` partitions that
    :func:`embed_partition` wrote: each part is scattered, ``block_rows`` at a time, into a
    memory-mapped ``embeddings.npy`` at its global rows, so memory stays at one block. The
    result is byte-identical to :func:`embed_population`'s. The parts are left in place (an index
    shard may still be reading one): :func:`remove_parts` deletes them."""
    _spec, model, build_id = _load_checked(spec_path, model_dir)
    parquet = pq.ParquetFile(features_path)
    n, dim = parquet.metadata.num_rows, model.architecture.model.embedding_dim
    parts = [part_paths(out_dir, p) for p in range(n_parts)]
    dtypes = {np.load(p.embeddings, mmap_mode="r").dtype for p in parts}
    if len(dtypes) != 1:
        raise ArtifactError(f"the embedding parts in {out_dir / PARTS_DIR} mix dtypes {dtypes}")
    dtype = dtypes.pop()
    paths = EmbeddingPaths(out_dir / EMBEDDINGS_FILE, out_dir / USERS_FILE, out_dir / MANIFEST_FILE)
    filled = 0
    with atomic_write(paths.embeddings) as emb_tmp:
        matrix = np.lib.format.open_memmap(emb_tmp, mode="w+", dtype=dtype, shape=(n, dim))
        for part in parts:
            vectors, rows = np.load(part.embeddings, mmap_mode="r"), np.load(part.rows, mmap_mode="r")
            if vectors.shape != (len(rows), dim):
                raise ArtifactError(f"{part.embeddings} holds {vectors.shape}, expected "
                                    f"({len(rows)}, {dim}); re-embed")
            for start in range(0, len(rows), block_rows):
                matrix[rows[start : start + block_rows]] = vectors[start : start + block_rows]
            filled += len(rows)
        matrix.flush()
        del matrix
        if filled != n:
            raise ArtifactError(f"the {n_parts} embedding parts hold {filled} rows, the feature "
                                f"table {n}; re-embed")
    _write_users(parquet, paths.users, batch_size)
    _write_manifest(paths, build_id, n, dim, dtype)
    return paths


def remove_parts(out_dir: Path) -> None:
    """Delete the partitions :func:`embed_partition` wrote under ``out_dir``."""
    shutil.rmtree(Path(out_dir) / PARTS_DIR, ignore_errors=True)


def embed_batches(frames: Iterable[pl.DataFrame], spec: FeatureSpec, model: TwoTowerEncoder,
                  tower: Tower = "candidate") -> Iterator[np.ndarray]:
    """:func:`embed_frame` of each frame, in order, each computed on one torch thread.

    torch's matrix products round differently with another thread count (MKL splits the work
    differently: about 1 ulp on every row between 1 and 2 threads), and a Dask worker runs torch
    on one thread (``OMP_NUM_THREADS=1``) where the flow's process uses every core. On one thread
    per batch the embeddings are the same bytes in any process; the cores are used by embedding
    up to as many batches at once as torch had threads.
    """
    lanes = torch.get_num_threads()
    model.eval()  # once, before any thread: embed_encoded then leaves the mode alone
    torch.set_num_threads(1)
    try:
        if lanes <= 1:
            for frame in frames:
                yield embed_frame(frame, spec, model, tower)
            return
        with ThreadPoolExecutor(lanes, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            pending: deque[Future[np.ndarray]] = deque()
            for frame in frames:
                pending.append(pool.submit(embed_frame, frame, spec, model, tower))
                if len(pending) >= lanes:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    finally:
        torch.set_num_threads(lanes)


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
    (embeddings,) = embed_batches([found], spec, model, tower)  # the population's rounding
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

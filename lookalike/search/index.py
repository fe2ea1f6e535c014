"""HNSW index over the population embeddings (hnswlib), and the exact-search oracle it is judged by.

An index folder holds one hnswlib file per shard and a manifest written last::

    index/
      shard-0000-of-0001.bin   hnswlib index; labels are row positions in embeddings.npy
      index.json               dim, space, parameters, counts, sha256 per shard, measured recall,
                               the model build id, suppressed and removed labels

Similarity is the inner product of L2-normalized float32 vectors (hnswlib space ``"ip"``, whose
distance is ``1 - ip``), the same similarity the encoder was trained with.

Users are split into shards by a stable hash of ``user_id`` (:func:`shard_of`), so a user lands in
the same shard in every process, on every machine and with every library version. A query is sent
to every shard and the per-shard results are merged into the exact top-k of their union.

Building: :func:`build_shard` builds one shard from the saved embeddings (an orchestrator may run
the shards in parallel, one task each), inserting users cluster by cluster
(:func:`locality_order`) so the build stays cache-friendly, then :func:`write_index_manifest`
measures recall@10 and recall@100 against :func:`exact_search`, refuses an index below
``IndexConfig.recall_floor`` and writes ``index.json``. :func:`build_index` does both in one
process. ``random_seed`` is passed to hnswlib, but with more than one thread the insertion order
(and so the graph) varies from run to run: builds are reproducible bit for bit only with
``IndexConfig.threads = 1``.

Loading (:meth:`AnnIndex.load`) checks every shard file's sha256 and hnswlib header against the
manifest before hnswlib reads it: hnswlib files record neither space nor dimension and load
silently with wrong ones.

Updates: :meth:`AnnIndex.add` appends users, :meth:`AnnIndex.suppress` tombstones users so they are
never returned (their vectors stay in the files), :func:`compact` rebuilds without them so their
vectors are physically gone. Threads: one lock serializes queries, adds, suppressions and saves
on an :class:`AnnIndex` (hnswlib must not be queried while it is being added to).
"""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import replace
from pathlib import Path

import hnswlib
import numpy as np
import polars as pl
from sklearn.cluster import MiniBatchKMeans

from lookalike.core.artifacts import (
    atomic_write,
    sha256_file,
    verify_checksum,
)
from lookalike.core.blocks import float32_rows
from lookalike.core.config import IndexConfig
from lookalike.core.errors import ArtifactError, LookalikeError
from lookalike.core.parallel import usable_cores
from lookalike.core.progress import Progress, eta
from lookalike.data.partitions import shard_count, shard_of
from lookalike.search.exact import exact_search
from lookalike.search.manifest import (
    SPACE,
    IndexManifest,
    ShardInfo,
    checked_shard_set,
    read_index_manifest,
    shard_file_name,
)
from lookalike.search.vectors import (
    checked_vectors,
    open_embeddings,
    read_user_ids,
    unit_vectors,
)

RECALL_CUTOFFS = (10, 100)


# When the build misses the recall floor, recall is measured again at this multiple of ef to tell
# whether raising ef (query time) is enough or the graph itself (M, ef_construction) is too poor.
FLOOR_DIAGNOSTIC_EF_FACTOR = 4


LOCALITY_ROWS_PER_CLUSTER = 1000


_KMEANS_LOCK = threading.Lock()


# hnswlib's file starts with six size_t fields; these are the ones checked before loading.
_HEADER = struct.Struct("<6Q")


def build_shard(
    embeddings_path: Path,
    users_path: Path,
    shard: int,
    n_shards: int,
    out_dir: Path,
    config: IndexConfig,
    exclude_labels: np.ndarray | None = None,
    progress: Progress | None = None,
) -> ShardInfo:
    """Build and save the hnswlib index of one shard; labels are global embedding row positions.

    Reads ``add_batch_rows`` embedding rows at a time (the file is memory-mapped), so memory stays
    at the index plus one batch. ``exclude_labels`` are rows left out (erased users, see
    :func:`compact`). Independent per shard: shards may be built in parallel processes, then
    :func:`write_index_manifest` is called once with all the returned infos. ``progress`` gets a
    line with users added and an ETA about every tenth of the shard.
    """
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside [0, {n_shards})")
    embeddings = open_embeddings(embeddings_path)
    user_ids = read_user_ids(users_path, expected_rows=len(embeddings))
    rows = np.flatnonzero(shard_of(user_ids, n_shards) == shard)
    if exclude_labels is not None:
        rows = rows[~np.isin(rows, exclude_labels)]
    return _build_rows(embeddings, rows, rows, shard, n_shards, Path(out_dir), config,
                       f"{embeddings_path}", progress)


def build_shard_from_part(
    part_path: Path,
    labels_path: Path,
    shard: int,
    n_shards: int,
    out_dir: Path,
    config: IndexConfig,
    progress: Progress | None = None,
) -> ShardInfo:
    """:func:`build_shard` from the shard's own embedding part instead of the whole matrix.

    ``part_path`` holds the embeddings of exactly the users of shard ``shard`` of ``n_shards``, in
    feature-table order, and ``labels_path`` their global row positions, ascending
    (:func:`lookalike.encoder.embed.embed_partition`). The shard file is byte-identical to
    :func:`build_shard`'s on the assembled ``embeddings.npy`` (same vectors, same insertion order,
    same labels); memory is the index plus the part's memory map.
    """
    if not 0 <= shard < n_shards:
        raise ValueError(f"shard {shard} is outside [0, {n_shards})")
    part = open_embeddings(part_path)
    labels = np.load(labels_path)
    if len(labels) != len(part):
        raise ArtifactError(f"{labels_path} has {len(labels)} rows but {part_path} has {len(part)}: "
                            "they come from different embedding runs; re-embed")
    return _build_rows(part, np.arange(len(part)), labels, shard, n_shards, Path(out_dir), config,
                       f"{part_path}", progress)


def _build_rows(embeddings: np.ndarray, rows: np.ndarray, labels: np.ndarray, shard: int,
                n_shards: int, out_dir: Path, config: IndexConfig, what: str,
                progress: Progress | None) -> ShardInfo:
    """Index ``embeddings[rows]`` under ``labels`` (one per row of ``rows``, ascending with it)."""
    index = hnswlib.Index(space=SPACE, dim=embeddings.shape[1])
    index.init_index(
        max_elements=len(rows),
        M=config.M,
        ef_construction=config.ef_construction,
        random_seed=config.seed,
    )
    threads = _threads(config)
    # locality_order draws and sorts by position only, so it orders the users the same whether
    # ``rows`` are global rows of the whole matrix or 0..n-1 of a shard's part.
    ascending = rows
    rows = locality_order(embeddings, rows, config)
    started, next_report = time.monotonic(), len(rows) / 10
    for start in range(0, len(rows), config.add_batch_rows):
        batch = rows[start : start + config.add_batch_rows]
        vectors = unit_vectors(embeddings[batch], embeddings.shape[1], what)
        index.add_items(vectors, labels[np.searchsorted(ascending, batch)], num_threads=threads)
        added = start + len(batch)
        if progress is not None and next_report <= added < len(rows):
            next_report = added + len(rows) / 10
            seconds = time.monotonic() - started
            progress(f"index: shard {shard + 1}/{n_shards}, {added:,} of {len(rows):,} users added "
                     f"in {seconds:.1f}s{eta(added, len(rows), seconds)}")
    return _save_shard(index, out_dir, shard, n_shards)


def locality_order(embeddings: np.ndarray, rows: np.ndarray, config: IndexConfig) -> np.ndarray:
    """``rows`` reordered cluster by cluster, so that users inserted one after another are similar.

    hnswlib stores vectors in insertion order. Each insertion searches the graph around the new
    vector; once the graph outgrows the CPU cache those visits are cache misses, and the build grows
    faster than N log N. Inserting similar users together keeps the visited neighbourhood in
    recently touched memory. The clusters come from mini-batch k-means on a seeded sample of
    ``config.locality_sample`` rows: one cluster per ``LOCALITY_ROWS_PER_CLUSTER`` rows, at most
    ``config.locality_clusters``; within a cluster, rows keep their order. With
    ``config.locality_clusters`` 0, or too few rows for two clusters, ``rows`` is returned as it is.

    A seeded random ``config.locality_skeleton`` share of the rows goes first, in random order.
    Inserted cluster by cluster alone, each cluster is linked while the others are far away, and
    on tightly clustered embeddings the graph lacks the long links between them: recall@100 fell
    to 0.90 at 1M users (0.98 with a 10% skeleton, which costs nothing measurable: the graph is
    small and cache-resident while it is inserted).
    """
    n_clusters = min(config.locality_clusters, len(rows) // LOCALITY_ROWS_PER_CLUSTER)
    if n_clusters < 2:
        return rows
    rng = np.random.default_rng(config.seed)
    sample = np.sort(rng.choice(rows, size=min(config.locality_sample, len(rows)), replace=False))
    # scikit-learn's k-means runs OpenMP loops that call BLAS; run from several threads at once
    # (shards built in parallel) OpenBLAS detects the nesting and may hang, so one at a time.
    with _KMEANS_LOCK:
        kmeans = MiniBatchKMeans(
            n_clusters, random_state=config.seed, n_init=1, batch_size=4096
        ).fit(float32_rows(embeddings, sample))
        clusters = np.concatenate([
            kmeans.predict(float32_rows(embeddings, rows[start : start + config.add_batch_rows]))
            for start in range(0, len(rows), config.add_batch_rows)
        ])
    ordered = rows[np.argsort(clusters, kind="stable")]
    first = np.zeros(len(rows), dtype=bool)
    first[rng.choice(len(rows), size=round(config.locality_skeleton * len(rows)), replace=False)] = True
    skeleton = ordered[first]
    rng.shuffle(skeleton)
    return np.concatenate([skeleton, ordered[~first]])


def write_index_manifest(
    out_dir: Path,
    shards: list[ShardInfo],
    config: IndexConfig,
    model_build_id: str,
    embeddings_path: Path,
) -> IndexManifest:
    """Measure recall of the built shards against exact search and write ``index.json``.

    Recall@10 and recall@100 are measured on ``recall_queries`` embedding rows (seeded sample of the
    indexed users) with ef = ``config.ef``. Below ``recall_floor`` no manifest is written (the index
    cannot be loaded) and an :class:`ArtifactError` says whether raising ``ef`` is enough or ``M`` /
    ``ef_construction`` must be raised.
    """
    out_dir = Path(out_dir)
    shards = checked_shard_set(shards)
    if not sum(s.count for s in shards):
        raise ArtifactError(f"the shards in {out_dir} are empty: there are no users to index")
    n_rows, dim = open_embeddings(embeddings_path).shape
    manifest = IndexManifest(
        model_build_id=model_build_id,
        dim=dim,
        M=config.M,
        ef_construction=config.ef_construction,
        ef=config.ef,
        seed=config.seed,
        n_shards=len(shards),
        element_count=sum(s.count for s in shards),
        label_bound=n_rows,
        shards=shards,
    )
    views = [_ShardView(out_dir, manifest, info, config.threads) for info in shards]
    indexed = np.zeros(n_rows, dtype=bool)
    for view in views:
        if len(view.labels) and (view.labels[0] < 0 or view.labels[-1] >= n_rows):
            raise ArtifactError(
                f"the shards in {out_dir} hold labels outside the {n_rows} rows of "
                f"{embeddings_path}; they were built from other embeddings"
            )
        indexed[view.labels] = True
    if indexed.sum() != sum(len(view.labels) for view in views):
        raise ArtifactError(f"the shards in {out_dir} share labels; rebuild the index")
    recall = _measure_recall(views, embeddings_path, indexed, config, config.ef)
    _enforce_recall_floor(recall, views, embeddings_path, indexed, config)
    manifest = replace(
        manifest,
        removed=np.flatnonzero(~indexed).tolist(),
        recall_at_10=recall[10],
        recall_at_100=recall[100],
        recall_queries=min(config.recall_queries, int(indexed.sum())),
    )
    manifest.save(out_dir)
    return manifest


class _ShardView:
    """One shard of an index being measured: its labels (ascending), and the shard loaded only
    while it is queried, so measuring holds one shard at a time (all of them at 10M users:
    about 3 GiB, 2026-12-07)."""

    def __init__(self, out_dir: Path, manifest: IndexManifest, info: ShardInfo, threads: int | None):
        self._open = lambda: AnnIndex._open(out_dir, replace(manifest, shards=[info], n_shards=1),
                                            spare_elements=0, threads=threads)
        index = self._open()
        self.labels = np.sort(np.asarray(index._shards[0].get_ids_list(), dtype=np.int64))

    def query(self, queries: np.ndarray, k: int, ef: int) -> tuple[np.ndarray, np.ndarray]:
        return self._open().query(queries, k, ef=ef)


def build_index(
    embeddings_path: Path,
    users_path: Path,
    out_dir: Path,
    config: IndexConfig,
    model_build_id: str,
    exclude_labels: np.ndarray | None = None,
) -> IndexManifest:
    """Build every shard (:func:`shard_count`) in this process, one by one, then write the manifest.

    Example::

        manifest = build_index(paths.embeddings, paths.users, paths.index_dir, IndexConfig(), "b1")
        index = AnnIndex.load(paths.index_dir, expected_model_build_id="b1")
    """
    n_shards = shard_count(len(open_embeddings(embeddings_path)), config)
    infos = [
        build_shard(embeddings_path, users_path, s, n_shards, out_dir, config, exclude_labels)
        for s in range(n_shards)
    ]
    return write_index_manifest(out_dir, infos, config, model_build_id, embeddings_path)


def compact(
    index_dir: Path,
    embeddings_path: Path,
    users_path: Path,
    remove_labels: np.ndarray,
    out_dir: Path,
    config: IndexConfig,
    model_build_id: str,
) -> IndexManifest:
    """Rebuild the index at ``index_dir`` without its suppressed, removed and ``remove_labels``.

    Their vectors are then absent from every file written to ``out_dir`` (suppression alone leaves
    them in the files). ``embeddings_path`` must hold every indexed user, added ones included; the
    erased rows stay in it (labels are row positions), so erase them there separately. ``out_dir``
    may be ``index_dir``: shard files are replaced first and the manifest last, so a reader in
    between gets an :class:`ArtifactError`, never a wrong index.
    """
    old = read_index_manifest(index_dir)
    if old.model_build_id != model_build_id:
        raise _build_id_error(index_dir, old.model_build_id, model_build_id)
    n_rows = len(open_embeddings(embeddings_path))
    if n_rows < old.label_bound:
        raise ArtifactError(
            f"{embeddings_path} has {n_rows} rows but the index at {index_dir} holds labels up to "
            f"{old.label_bound - 1}: append the embeddings of added users before compacting"
        )
    dropped = np.unique(
        np.concatenate([old.suppressed, old.removed, remove_labels]).astype(np.int64)
    )
    return build_index(embeddings_path, users_path, out_dir, config, model_build_id, dropped)


def _save_shard(index: hnswlib.Index, out_dir: Path, shard: int, n_shards: int) -> ShardInfo:
    path = out_dir / shard_file_name(shard, n_shards)
    with atomic_write(path) as tmp:
        index.save_index(str(tmp))
        digest = sha256_file(tmp)
    return ShardInfo(shard, n_shards, path.name, digest, index.element_count)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each row of ``truth`` labels present in the same row of ``found``."""
    if truth.size == 0:
        return 1.0
    n_rows = len(truth)
    stride = int(max(found.max(initial=0), truth.max(initial=0))) + 1
    offsets = np.arange(n_rows, dtype=np.int64)[:, None] * stride
    hits = np.isin(truth + offsets, found + offsets).sum()
    return float(hits / truth.size)


def _measure_recall(
    views: list[_ShardView], embeddings_path: Path, indexed: np.ndarray, config: IndexConfig,
    ef: int,
) -> dict[int, float]:
    """Recall of the merged shards' top-k against exact search over the indexed rows, measured one
    shard at a time: each shard's HNSW top-k and its exact top-k (over that shard's rows only,
    read with a fresh memory map, so at most one shard's embeddings are resident), each merged
    across shards as :meth:`AnnIndex.query` merges them."""
    rng = np.random.default_rng(config.seed)
    live = np.flatnonzero(indexed)
    sample = np.sort(rng.choice(live, size=min(config.recall_queries, len(live)), replace=False))
    queries = float32_rows(open_embeddings(embeddings_path), sample)
    k = min(max(RECALL_CUTOFFS), len(live))
    found, truth = [], []
    for view in views:
        if not len(view.labels):
            continue
        found.append(view.query(queries, k, ef))
        positions, sims = exact_search(float32_rows(open_embeddings(embeddings_path), view.labels),
                                       queries, k)
        truth.append((view.labels[positions], sims))
    found_labels, _ = top_k_of_union(found, k)
    truth_labels, _ = top_k_of_union(truth, k)
    return {c: recall_at_k(found_labels[:, :c], truth_labels[:, :c]) for c in RECALL_CUTOFFS}


def top_k_of_union(results: list[tuple[np.ndarray, np.ndarray]], k: int,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar of the ``(labels, sims)`` results of each query row, most similar
    first (ties kept in the results' order)."""
    labels = np.concatenate([labels for labels, _ in results], axis=1)
    sims = np.concatenate([sims for _, sims in results], axis=1)
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(labels, order, 1), np.take_along_axis(sims, order, 1)


def _enforce_recall_floor(
    recall: dict[int, float],
    views: list[_ShardView],
    embeddings_path: Path,
    indexed: np.ndarray,
    config: IndexConfig,
) -> None:
    if recall[100] >= config.recall_floor:
        return
    used_ef = max(config.ef, *RECALL_CUTOFFS)
    wider_ef = FLOOR_DIAGNOSTIC_EF_FACTOR * used_ef
    wider = _measure_recall(views, embeddings_path, indexed, config, wider_ef)[100]
    if wider >= config.recall_floor:
        advice = f"raise index.ef (ef={wider_ef} reaches recall@100 {wider:.3f})"
    else:
        advice = (
            f"raise index.ef_construction (now {config.ef_construction}) and/or index.M (now "
            f"{config.M}) and rebuild; even ef={wider_ef} only reaches recall@100 {wider:.3f}"
        )
    raise ArtifactError(
        f"index recall@100 is {recall[100]:.3f} at ef={used_ef}, below "
        f"index.recall_floor={config.recall_floor}: {advice}"
    )


class AnnIndex:
    """A loaded, possibly sharded hnswlib index: batched top-k queries with exclusion, and updates.

    Labels are embedding row positions (int64). Create it with :meth:`load`. Thread-safe: one lock
    serializes :meth:`query`, :meth:`add`, :meth:`suppress` and :meth:`save`, so hnswlib is never
    searched while it is being added to (each query batch still runs on ``threads`` threads).
    Sharding multiplies query work (every shard is searched for the full k): use it for build
    parallelism and memory per process, not for query speed.

    Example::

        index = AnnIndex.load(paths.index_dir, expected_model_build_id=build_id)
        labels, sims = index.query(embeddings[seed_rows], k=100, exclude=seed_rows)
    """

    def __init__(self, manifest: IndexManifest, shards: list[hnswlib.Index], threads: int) -> None:
        self.manifest = manifest
        self._shards = shards
        self._threads = threads
        self._lock = threading.Lock()
        shard_labels = [np.asarray(s.get_ids_list(), dtype=np.int64) for s in shards]
        bound = max([manifest.label_bound] + [int(ids.max(initial=-1)) + 1 for ids in shard_labels])
        self._label_shard = np.full(bound, -1, dtype=np.int32)
        for number, ids in enumerate(shard_labels):
            self._label_shard[ids] = number
        self._suppressed = np.zeros(bound, dtype=bool)
        self._suppressed[manifest.suppressed] = True
        self._shard_live = np.array(
            [s.element_count for s in shards], dtype=np.int64
        ) - np.bincount(self._label_shard[manifest.suppressed], minlength=len(shards))

    @classmethod
    def load(
        cls,
        index_dir: Path,
        expected_model_build_id: str | None = None,
        max_extra_elements: int = 0,
        threads: int | None = None,
    ) -> AnnIndex:
        """Verify and load the index at ``index_dir``.

        Refuses (:class:`ArtifactError`), before hnswlib reads any file, an index made from another
        model build, a shard whose sha256 differs from the manifest, or a file whose vector size is
        not the manifest's dim. ``max_extra_elements`` reserves room for :meth:`add` in each shard
        (it grows on demand anyway). ``threads`` defaults to all cores.
        """
        manifest = read_index_manifest(index_dir)
        expected = expected_model_build_id
        if expected is not None and manifest.model_build_id != expected:
            raise _build_id_error(index_dir, manifest.model_build_id, expected)
        return cls._open(Path(index_dir), manifest, max_extra_elements, threads)

    @classmethod
    def _open(
        cls, index_dir: Path, manifest: IndexManifest, spare_elements: int, threads: int | None
    ) -> AnnIndex:
        for info in manifest.shards:
            verify_checksum(index_dir / info.file, info.sha256)
            _check_header(index_dir / info.file, manifest.dim, info.count)
        shards = []
        for info in manifest.shards:
            shard = hnswlib.Index(space=SPACE, dim=manifest.dim)
            shard.load_index(str(index_dir / info.file), max_elements=info.count + spare_elements)
            shards.append(shard)
        return cls(manifest, shards, threads or usable_cores())

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def live_count(self) -> int:
        """Elements a query can return (added, not suppressed)."""
        return int(self._shard_live.sum())

    def query(
        self,
        queries: np.ndarray,
        k: int,
        exclude: np.ndarray | None = None,
        batch_size: int = 4096,
        ef: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` labels (int64) and similarities (float32) per query, most similar first.

        ``k`` is capped to the live elements not in ``exclude``, so the result is ``[q, k']`` with
        ``k' = min(k, live_count - excluded live)``. Excluded labels are filtered from an
        over-fetch; rows left short are searched again with a larger k (hnswlib's filter callback
        is far slower). ``ef`` (default: the manifest's) is raised to the k asked of each shard.
        """
        queries = checked_vectors(queries, self.dim)
        if k < 1 or batch_size < 1:
            raise ValueError(f"k and batch_size must be >= 1, got {k} and {batch_size}")
        with self._lock:
            excluded = self._live_among(exclude)
            k_out = min(k, self.live_count - len(excluded))
            labels = np.empty((len(queries), k_out), dtype=np.int64)
            sims = np.empty((len(queries), k_out), dtype=np.float32)
            if k_out == 0:
                return labels, sims
            for start in range(0, len(queries), batch_size):
                rows = slice(start, start + batch_size)
                labels[rows], sims[rows] = self._query_batch(
                    queries[rows], k_out, excluded, ef or self.manifest.ef
                )
        return labels, sims

    def add(
        self, vectors: np.ndarray, labels: np.ndarray, user_ids: np.ndarray | pl.Series
    ) -> None:
        """Add new users (unit vectors, new labels = their rows in the appended embeddings).

        Each goes to the shard of its user id; shards grow as needed. A label already in the index
        (suppressed included: hnswlib would silently bring it back) is refused.
        """
        labels = np.asarray(labels, dtype=np.int64)
        vectors = unit_vectors(vectors, self.dim, "added vectors")
        shards = shard_of(user_ids, len(self._shards))
        if not len(labels) == len(vectors) == len(shards):
            raise ValueError("vectors, labels and user_ids must have the same length")
        if len(np.unique(labels)) != len(labels) or (labels < 0).any():
            raise LookalikeError("added labels must be distinct non-negative row positions")
        with self._lock:
            present = labels[self._has_label(labels)]
            if len(present):
                raise LookalikeError(
                    f"labels {present[:5].tolist()} are already in the index (suppressed ones "
                    "included); new users need new rows"
                )
            self._grow_label_arrays(int(labels.max(initial=-1)) + 1)
            for number in np.unique(shards):
                mine = shards == number
                self._add_to_shard(int(number), vectors[mine], labels[mine])

    def suppress(self, labels: np.ndarray) -> None:
        """Never return these labels again (tombstones: the vectors stay until :func:`compact`)."""
        labels = np.unique(np.asarray(labels, dtype=np.int64))
        with self._lock:
            unknown = labels[~self._has_label(labels)]
            if len(unknown):
                raise LookalikeError(
                    f"cannot suppress labels not in the index: {unknown[:5].tolist()}"
                )
            for label in labels[~self._suppressed[labels]]:
                self._shards[self._label_shard[label]].mark_deleted(int(label))
                self._suppressed[label] = True
                self._shard_live[self._label_shard[label]] -= 1

    def save(self, index_dir: Path, model_build_id: str) -> IndexManifest:
        """Save every shard and then ``index.json`` (build-time recall carried over)."""
        index_dir = Path(index_dir)
        with self._lock:
            n_shards = len(self._shards)
            infos = [_save_shard(s, index_dir, i, n_shards) for i, s in enumerate(self._shards)]
            manifest = replace(
                self.manifest,
                model_build_id=model_build_id,
                shards=infos,
                element_count=self.live_count,
                label_bound=len(self._label_shard),
                suppressed=np.flatnonzero(self._suppressed).tolist(),
            )
            manifest.save(index_dir)
            self.manifest = manifest
        return manifest

    def _query_batch(
        self, queries: np.ndarray, k: int, excluded: np.ndarray, ef: int
    ) -> tuple[np.ndarray, np.ndarray]:
        bound = k + len(excluded)
        fetch = k + min(len(excluded), k)
        labels, sims, short = self._search_filtered(queries, k, fetch, excluded, ef)
        while short.any():
            if fetch == bound:
                raise RuntimeError("hnswlib returned fewer results than requested")
            fetch = min(bound, fetch * 4)
            rows = np.flatnonzero(short)
            labels[rows], sims[rows], short[rows] = self._search_filtered(
                queries[rows], k, fetch, excluded, ef
            )
        return labels, sims

    def _search_filtered(
        self, queries: np.ndarray, k: int, fetch: int, excluded: np.ndarray, ef: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exact top-k of the union of each shard's top-``fetch`` minus ``excluded``.

        A row is short when some shard returned only part of its elements and fewer than k of them
        survive the exclusion: that shard may hold better unseen candidates.
        """
        all_labels, all_sims = [], []
        short = np.zeros(len(queries), dtype=bool)
        for shard, live in zip(self._shards, self._shard_live):
            if live == 0:
                continue
            k_shard = int(min(fetch, live))
            labels, distances = self._knn(shard, queries, k_shard, ef)
            labels = labels.astype(np.int64)
            sims = 1.0 - distances
            if len(excluded):
                kept = ~np.isin(labels, excluded)
                sims[~kept] = -np.inf
                if k_shard < live:
                    short |= kept.sum(axis=1) < k
            all_labels.append(labels)
            all_sims.append(sims)
        if len(all_labels) == 1 and not len(excluded):
            return all_labels[0][:, :k], all_sims[0][:, :k], short
        return *top_k_of_union(list(zip(all_labels, all_sims, strict=True)), k), short

    def _knn(
        self, shard: hnswlib.Index, queries: np.ndarray, k: int, ef: int
    ) -> tuple[np.ndarray, np.ndarray]:
        shard.set_ef(max(ef, k))
        try:
            return shard.knn_query(queries, k=k, num_threads=self._threads)
        except RuntimeError as exc:
            raise ArtifactError(
                f"hnswlib could not find {k} live neighbours ({exc}): suppressed users degrade the "
                "graph; compact the index"
            ) from exc

    def _add_to_shard(self, number: int, vectors: np.ndarray, labels: np.ndarray) -> None:
        shard = self._shards[number]
        needed = shard.element_count + len(labels)
        if needed > shard.get_max_elements():
            shard.resize_index(max(needed, shard.get_max_elements() * 5 // 4))
        shard.add_items(vectors, labels, num_threads=self._threads)
        self._label_shard[labels] = number
        self._shard_live[number] += len(labels)

    def _grow_label_arrays(self, bound: int) -> None:
        extra = bound - len(self._label_shard)
        if extra > 0:
            self._label_shard = np.concatenate([self._label_shard, np.full(extra, -1, np.int32)])
            self._suppressed = np.concatenate([self._suppressed, np.zeros(extra, bool)])

    def _has_label(self, labels: np.ndarray) -> np.ndarray:
        inside = (labels >= 0) & (labels < len(self._label_shard))
        present = np.zeros(len(labels), dtype=bool)
        present[inside] = self._label_shard[labels[inside]] >= 0
        return present

    def _live_among(self, labels: np.ndarray | None) -> np.ndarray:
        if labels is None:
            return np.empty(0, dtype=np.int64)
        labels = np.unique(np.asarray(labels, dtype=np.int64))
        live = self._has_label(labels)
        live[live] = ~self._suppressed[labels[live]]
        return labels[live]


def _check_header(path: Path, dim: int, count: int) -> None:
    """Refuse a shard whose stored vector size or element count contradicts the manifest."""
    with open(path, "rb") as fh:
        header = fh.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise ArtifactError(f"{path} is too short to be an hnswlib index; rebuild the index")
    _, _, stored, _, label_offset, data_offset = _HEADER.unpack(header)
    file_dim = (label_offset - data_offset) // np.dtype(np.float32).itemsize
    if file_dim != dim or stored != count:
        raise ArtifactError(
            f"{path} holds {stored} vectors of {file_dim} dims but its manifest says {count} of "
            f"{dim}: the manifest belongs to another index; rebuild it"
        )


def _build_id_error(index_dir: Path, found: str, expected: str) -> ArtifactError:
    return ArtifactError(
        f"{index_dir} was built from model build {found!r}, not {expected!r}: its labels and "
        "similarities belong to other embeddings; rebuild the index for this model"
    )


def _threads(config: IndexConfig) -> int:
    return config.threads or usable_cores()

"""HNSW index: judged against exact brute-force search, hand-checked hash values and file bytes."""

from __future__ import annotations

import json
from pathlib import Path

import hnswlib
import numpy as np
import polars as pl
import pytest

import lookalike.core.blocks as blocks_module
import lookalike.search.exact as exact_module
import lookalike.search.index as index_module
from lookalike.core.config import IndexConfig
from lookalike.core.errors import ArtifactError, LookalikeError
from lookalike.data.partitions import shard_count, shard_of
from lookalike.search.exact import exact_search
from lookalike.search.index import (
    AnnIndex,
    build_index,
    compact,
    locality_order,
    recall_at_k,
)
from lookalike.search.manifest import read_index_manifest

BUILD = "build-1"
# One thread makes hnswlib builds reproducible; recall_queries small keeps builds fast.
CONFIG = IndexConfig(threads=1, recall_queries=200)
POPULATION_FILES = ("embeddings.npy", "users.parquet")
EXACT_EF = 1000  # with ef >= the number of elements the search is exhaustive on this data


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def random_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    return unit_rows(np.random.default_rng(seed).standard_normal((n, dim)))


def clustered_vectors(n: int, dim: int, seed: int, clusters: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((clusters, dim)))
    noise = rng.standard_normal((n, dim)) * (0.5 / np.sqrt(dim))
    return unit_rows(centres[rng.integers(0, clusters, n)] + noise)


def write_population(
    folder: Path, embeddings: np.ndarray, user_ids: np.ndarray | None = None
) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    if user_ids is None:
        user_ids = np.arange(len(embeddings), dtype=np.int64) * 7919 + 11
    emb_path, users_path = (folder / name for name in POPULATION_FILES)
    np.save(emb_path, embeddings)
    pl.DataFrame({"user_id": user_ids}).write_parquet(users_path)
    return emb_path, users_path


def build(
    tmp: Path,
    embeddings: np.ndarray,
    config: IndexConfig = CONFIG,
    user_ids: np.ndarray | None = None,
) -> Path:
    emb_path, users_path = write_population(tmp / "population", embeddings, user_ids)
    build_index(emb_path, users_path, tmp / "index", config, BUILD)
    return tmp / "index"


def naive_top_k(
    embeddings: np.ndarray, queries: np.ndarray, k: int, exclude: np.ndarray = ()
) -> tuple[np.ndarray, np.ndarray]:
    """Full float64 similarity matrix, stable descending sort."""
    sims = queries.astype(np.float64) @ embeddings.astype(np.float64).T
    sims[:, np.asarray(exclude, dtype=np.int64)] = -np.inf
    order = np.argsort(-sims, axis=1, kind="stable")[:, : min(k, len(embeddings) - len(exclude))]
    return order, np.take_along_axis(sims, order, 1)


def shard_labels(index_dir: Path, dim: int) -> list[np.ndarray]:
    """Labels stored in each shard file, read with hnswlib directly."""
    labels = []
    for info in read_index_manifest(index_dir).shards:
        shard = hnswlib.Index(space="ip", dim=dim)
        shard.load_index(str(index_dir / info.file))
        labels.append(np.sort(np.asarray(shard.get_ids_list(), dtype=np.int64)))
    return labels


# ---------------------------------------------------------------------------------------------
# Stable hashing


def splitmix64_reference(x: int) -> int:
    """Python-integer splitmix64 (Vigna), written independently of the numpy version."""
    mask = (1 << 64) - 1
    z = (x + 0x9E3779B97F4A7C15) & mask
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
    return z ^ (z >> 31)


def as_int64(x: int) -> int:
    x &= (1 << 64) - 1
    return x - (1 << 64) if x >= 1 << 63 else x


@pytest.mark.parametrize("n_shards", [2, 3, 1000, 2**31 - 1])
def test_shard_of_reproduces_published_hash_values(n_shards: int) -> None:
    # SplitMix64 seeded with 1234567 yields these (Rosetta Code "Pseudo-random numbers/Splitmix64");
    # output i is the finalizer applied to seed + i * gamma, i.e. our hash of that id.
    gamma = 0x9E3779B97F4A7C15
    ids = np.array([as_int64(1234567 + i * gamma) for i in range(3)], dtype=np.int64)
    published = [6457827717110365317, 3203168211198807973, 9817491932198370423]
    assert shard_of(ids, n_shards).tolist() == [h % n_shards for h in published]
    # RFC 7693 appendix A: BLAKE2b-512("abc") starts ba 80 a5 3f 98 1c 4d 0d.
    abc = 0x0D4D1C983FA580BA
    assert shard_of(np.array(["abc"]), n_shards).tolist() == [abc % n_shards]
    assert shard_of(pl.Series(["abc"]), n_shards).tolist() == [abc % n_shards]


@pytest.mark.parametrize(
    ("users", "shards", "max_users", "expected"),
    [(1000, 1, 1000, 1), (1001, 1, 1000, 2), (2_500_000, 1, 1_000_000, 3), (10, 4, 1000, 4)],
)
def test_shard_count_bounds_users_per_shard(
    users: int, shards: int, max_users: int, expected: int
) -> None:
    assert shard_count(users, IndexConfig(shards=shards, max_shard_users=max_users)) == expected


def test_shard_of_matches_reference_for_any_integer_width() -> None:
    ids = np.random.default_rng(0).integers(-(2**62), 2**62, 300)
    expected = [splitmix64_reference(int(i) & ((1 << 64) - 1)) % 7 for i in ids]
    assert shard_of(ids, 7).tolist() == expected
    small = np.array([-5, 0, 7, 2**31 - 1], dtype=np.int32)
    assert shard_of(pl.Series(small), 7).tolist() == shard_of(small.astype(np.int64), 7).tolist()


# ---------------------------------------------------------------------------------------------
# Exact search oracle


def test_exact_search_matches_naive_sort_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exact_module, "QUERY_BATCH", 7)
    monkeypatch.setattr(blocks_module, "BLOCK_VALUES", 23 * 90)  # 90 rows x (7 queries + 16 dims)
    embeddings, queries = random_vectors(1000, 16, 1), random_vectors(20, 16, 2)
    exclude = np.arange(0, 1000, 3)
    for k in (1, 25, 10_000):
        labels, sims = exact_search(embeddings, queries, k, exclude=exclude)
        expected_labels, expected_sims = naive_top_k(embeddings, queries, k, exclude)
        np.testing.assert_array_equal(labels, expected_labels)
        np.testing.assert_allclose(sims, expected_sims, atol=1e-5)
        assert labels.dtype == np.int64 and sims.dtype == np.float32


# ---------------------------------------------------------------------------------------------
# Building and recall


@pytest.mark.parametrize(
    "make_vectors",
    [lambda s: random_vectors(3000, 16, s), lambda s: clustered_vectors(3000, 48, s)],
    ids=["random-d16", "clustered-d48"],
)
def test_default_parameters_reach_recall_against_exact_search(tmp_path: Path, make_vectors) -> None:
    embeddings = make_vectors(0)
    index = AnnIndex.load(build(tmp_path, embeddings), expected_model_build_id=BUILD)
    queries = make_vectors(1)[:200]  # not indexed
    found, sims = index.query(queries, k=100)
    truth, truth_sims = exact_search(embeddings, queries, 100)
    assert recall_at_k(found[:, :10], truth[:, :10]) >= 0.95
    assert recall_at_k(found, truth) >= 0.95
    assert (np.diff(sims, axis=1) <= 1e-6).all()
    assert (sims <= truth_sims + 1e-5).all()  # the j-th found can't beat the j-th best overall
    manifest = read_index_manifest(tmp_path / "index")
    assert manifest.recall_at_100 >= 0.95 and manifest.recall_at_10 >= 0.95


def test_locality_order_puts_similar_users_next_to_each_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(index_module, "LOCALITY_ROWS_PER_CLUSTER", 50)
    embeddings = clustered_vectors(6000, 16, 0, clusters=30)  # rows in random cluster order
    rows = np.arange(5, 6000, 2)
    ordered = locality_order(embeddings, rows, CONFIG)
    np.testing.assert_array_equal(np.sort(ordered), rows)
    skeleton = round(CONFIG.locality_skeleton * len(rows))

    def neighbour_cosine(order: np.ndarray) -> float:
        return float(np.mean(np.sum(embeddings[order[1:]] * embeddings[order[:-1]], axis=1)))

    # Random order: consecutive users share a cluster 1 time in 30; in locality order almost always,
    # after the random skeleton that goes first.
    assert neighbour_cosine(rows) < 0.2
    assert neighbour_cosine(ordered[:skeleton]) < 0.2
    assert neighbour_cosine(ordered[skeleton:]) > 0.7
    unchanged = CONFIG.model_copy(update={"locality_clusters": 0})
    np.testing.assert_array_equal(locality_order(embeddings, rows, unchanged), rows)
    np.testing.assert_array_equal(locality_order(embeddings, rows[:99], CONFIG), rows[:99])


def test_locality_order_keeps_the_recall_of_row_order_on_tight_clusters(tmp_path: Path) -> None:
    """Inserted cluster by cluster only, a sparse graph misses the links between clusters; the
    random skeleton inserted first restores most of them (row order is the reference)."""
    embeddings = clustered_vectors(40_000, 16, 0, clusters=200)
    sparse = CONFIG.model_copy(update={"M": 4, "ef_construction": 20, "ef": 50, "recall_floor": 0.0})

    def recall(**settings: float) -> float:
        folder = tmp_path / "-".join(f"{k}{v}" for k, v in settings.items())
        index = build(folder, embeddings, sparse.model_copy(update=settings))
        return json.loads((index / "index.json").read_text())["recall_at_100"]

    row_order = recall(locality_clusters=0)  # 0.80 here; without the skeleton 0.43, with it 0.72
    assert recall() > row_order - 0.1
    assert recall(locality_skeleton=0.0) < row_order - 0.25  # what the skeleton is for


def test_recall_at_k_counts_hits_per_row() -> None:
    found = np.array([[1, 2, 3], [4, 5, 6]])
    truth = np.array([[3, 9, 1], [7, 8, 4]])
    assert recall_at_k(found, truth) == pytest.approx(3 / 6)


@pytest.mark.parametrize("shards", [1, 3])
def test_manifest_recall_measured_shard_by_shard_equals_the_whole_index_against_exact_search(
    tmp_path: Path, shards: int
) -> None:
    """The build measures recall one shard at a time; the figures are the loaded index's (all
    shards merged) against exact search over everyone, on the same seeded queries. A small
    ef_construction and ef keep recall below 1, so a wrong merge would show."""
    embeddings = random_vectors(3000, 16, 0)
    config = CONFIG.model_copy(update={"shards": shards, "M": 4, "ef_construction": 10, "ef": 10,
                                       "recall_floor": 0.0, "recall_queries": 300})
    manifest = read_index_manifest(build(tmp_path, embeddings, config))
    index = AnnIndex.load(tmp_path / "index")
    rng = np.random.default_rng(config.seed)
    queries = embeddings[np.sort(rng.choice(3000, size=300, replace=False))]
    found, _ = index.query(queries, k=100, ef=config.ef)
    truth, _ = naive_top_k(embeddings, queries, 100)
    assert manifest.recall_at_10 == pytest.approx(recall_at_k(found[:, :10], truth[:, :10]))
    assert manifest.recall_at_100 == pytest.approx(recall_at_k(found, truth))
    assert manifest.recall_at_100 < 0.99


@pytest.mark.parametrize(
    ("dim", "config", "advice"),
    [
        (64, IndexConfig(M=2, ef_construction=10, ef=10), "raise index.ef_construction"),
        (32, IndexConfig(M=8, ef_construction=40, ef=10), "raise index.ef "),
    ],
)
def test_build_below_recall_floor_fails_naming_the_parameter(
    tmp_path: Path, dim: int, config: IndexConfig, advice: str
) -> None:
    config = config.model_copy(update={"recall_floor": 0.99, "threads": 1, "recall_queries": 200})
    with pytest.raises(ArtifactError, match=advice):
        build(tmp_path, random_vectors(2000, dim, 0), config)
    assert not (tmp_path / "index" / "index.json").exists()


def test_shards_hold_global_row_labels_split_by_user_id_hash(tmp_path: Path) -> None:
    embeddings = clustered_vectors(1500, 16, 0)
    user_ids = np.array([f"user-{i}" for i in range(1500)])
    index_dir = build(tmp_path, embeddings, CONFIG.model_copy(update={"shards": 3}), user_ids)
    expected = [np.flatnonzero(shard_of(user_ids, 3) == s) for s in range(3)]
    for stored, wanted in zip(shard_labels(index_dir, 16), expected, strict=True):
        np.testing.assert_array_equal(stored, wanted)


def test_shard_build_reports_users_added_with_an_eta(tmp_path: Path) -> None:
    emb_path, users_path = write_population(tmp_path / "population", clustered_vectors(1000, 8, 0))
    lines: list[str] = []
    config = CONFIG.model_copy(update={"add_batch_rows": 50})
    index_module.build_shard(emb_path, users_path, 0, 1, tmp_path / "index", config,
                             progress=lines.append)
    added = [int(line.split(", ")[1].split(" of ")[0].replace(",", "")) for line in lines]
    assert added == list(range(100, 1000, 100))
    assert all(line.startswith("index: shard 1/1, ") and " of 1,000 users added " in line
               and ", ETA " in line for line in lines)


def test_sharded_search_equals_one_index_and_exact_search(tmp_path: Path) -> None:
    embeddings = clustered_vectors(2000, 24, 0)
    queries = clustered_vectors(40, 24, 5)
    results = []
    for shards in (1, 3):
        config = CONFIG.model_copy(update={"shards": shards})
        index = AnnIndex.load(build(tmp_path / f"s{shards}", embeddings, config))
        results.append(index.query(queries, k=50, ef=EXACT_EF))
    truth_labels, truth_sims = exact_search(embeddings, queries, 50)
    for labels, sims in results:
        np.testing.assert_array_equal(labels, truth_labels)
        np.testing.assert_allclose(sims, truth_sims, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Queries: exclusion, suppression, k capping


def test_exclusion_by_over_fetch_matches_brute_force(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embeddings = clustered_vectors(3000, 24, 0)
    index = AnnIndex.load(build(tmp_path, embeddings, CONFIG.model_copy(update={"shards": 2})))
    queries = embeddings[:40]
    # The 150 nearest rows of the first 20 queries are excluded, so their first over-fetch
    # (2k = 60 per shard) comes back short and must be searched again.
    exclude = np.unique(exact_search(embeddings, queries[:20], 150)[0])
    searches: list[int] = []
    knn_query = hnswlib.Index.knn_query

    def counted_knn_query(self: hnswlib.Index, queries: np.ndarray, **kwargs: object):
        searches.append(len(queries))
        return knn_query(self, queries, **kwargs)

    monkeypatch.setattr(hnswlib.Index, "knn_query", counted_knn_query)
    labels, sims = index.query(queries, k=30, exclude=exclude, ef=EXACT_EF)
    truth_labels, truth_sims = naive_top_k(embeddings, queries, 30, exclude)
    np.testing.assert_array_equal(labels, truth_labels)
    np.testing.assert_allclose(sims, truth_sims, atol=1e-5)
    assert len(searches) > 2, "the short rows were never searched again"


def test_suppressed_users_are_never_returned_even_after_reload(tmp_path: Path) -> None:
    embeddings = clustered_vectors(2500, 16, 0)
    index = AnnIndex.load(build(tmp_path, embeddings, CONFIG.model_copy(update={"shards": 2})))
    queries = embeddings[:20]
    suppressed = np.unique(exact_search(embeddings, queries, 10)[0])  # queries and their neighbours
    index.suppress(suppressed)
    assert index.live_count == 2500 - len(suppressed)
    truth_labels, _ = exact_search(embeddings, queries, 100, exclude=suppressed)
    index.save(tmp_path / "saved", BUILD)
    for candidate in (index, AnnIndex.load(tmp_path / "saved", BUILD)):
        labels, _ = candidate.query(queries, k=100)
        assert not np.isin(labels, suppressed).any()
        assert recall_at_k(labels, truth_labels) >= 0.95
        assert candidate.live_count == 2500 - len(suppressed)


def test_k_above_live_count_returns_every_live_unexcluded_user(tmp_path: Path) -> None:
    embeddings = random_vectors(60, 16, 0)
    index = AnnIndex.load(build(tmp_path, embeddings, CONFIG.model_copy(update={"shards": 2})))
    index.suppress(np.arange(10))
    exclude = np.array([10, 11, 12, 13, 14, 999])  # 999 is not in the index
    labels, sims = index.query(embeddings[20:25], k=500, exclude=exclude)
    truth_labels, truth_sims = naive_top_k(embeddings, embeddings[20:25], 500, np.arange(15))
    assert labels.shape == (5, 45)
    np.testing.assert_array_equal(labels, truth_labels)
    np.testing.assert_allclose(sims, truth_sims, atol=1e-5)


def test_queries_of_another_dimension_are_refused(tmp_path: Path) -> None:
    index = AnnIndex.load(build(tmp_path, random_vectors(200, 16, 0)))
    with pytest.raises(ArtifactError, match="16-dim"):
        index.query(random_vectors(3, 32, 1), k=5)


# ---------------------------------------------------------------------------------------------
# Loading safety


def flip_a_byte(index_dir: Path) -> None:
    path = index_dir / read_index_manifest(index_dir).shards[0].file
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def edit_manifest(index_dir: Path, **changes: object) -> None:
    path = index_dir / "index.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (flip_a_byte, "does not match its manifest"),
        (lambda d: None, "model build 'build-1', not 'build-2'"),
        (lambda d: edit_manifest(d, dim=8), "vectors of 16 dims but its manifest says .* of 8"),
    ],
)
def test_bad_index_is_refused_before_hnswlib_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tamper, message: str
) -> None:
    index_dir = build(tmp_path, random_vectors(300, 16, 0))
    expected_build = "build-2" if "build-2" in message else BUILD
    tamper(index_dir)

    def hnswlib_must_not_read(self, *args, **kwargs):
        raise AssertionError("hnswlib read an unverified file")

    monkeypatch.setattr(hnswlib.Index, "load_index", hnswlib_must_not_read)
    with pytest.raises(ArtifactError, match=message):
        AnnIndex.load(index_dir, expected_model_build_id=expected_build)


def test_intact_index_does_reach_hnswlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control for the test above: its patched loader is what an intact index calls."""
    index_dir = build(tmp_path, random_vectors(300, 16, 0))
    calls: list[str] = []
    load_index = hnswlib.Index.load_index

    def recorded_load_index(self: hnswlib.Index, path: str, **kwargs: object) -> None:
        calls.append(path)
        load_index(self, path, **kwargs)

    monkeypatch.setattr(hnswlib.Index, "load_index", recorded_load_index)
    AnnIndex.load(index_dir, expected_model_build_id=BUILD)
    assert calls == [str(index_dir / read_index_manifest(index_dir).shards[0].file)]


# ---------------------------------------------------------------------------------------------
# Updates, erasure, persistence


def shard_bytes(index_dir: Path) -> bytes:
    shards = read_index_manifest(index_dir).shards
    return b"".join((index_dir / s.file).read_bytes() for s in shards)


def test_compaction_physically_erases_vectors_that_suppression_keeps(tmp_path: Path) -> None:
    embeddings = random_vectors(1500, 16, 0)
    index_dir = build(tmp_path, embeddings)
    emb_path, users_path = (tmp_path / "population" / name for name in POPULATION_FILES)
    suppressed, erased = 77, 123
    assert embeddings[suppressed].tobytes() in shard_bytes(index_dir)
    index = AnnIndex.load(index_dir, BUILD)
    index.suppress(np.array([suppressed]))
    index.save(index_dir, BUILD)
    assert embeddings[suppressed].tobytes() in shard_bytes(index_dir)  # a tombstone is not erasure

    compacted, again = tmp_path / "compacted", tmp_path / "again"
    compact(index_dir, emb_path, users_path, np.array([erased]), compacted, CONFIG, BUILD)
    manifest = compact(compacted, emb_path, users_path, np.array([], int), again, CONFIG, BUILD)

    assert manifest.removed == [suppressed, erased] and manifest.element_count == 1498
    for folder in (compacted, again):
        data = shard_bytes(folder)
        assert embeddings[suppressed].tobytes() not in data
        assert embeddings[erased].tobytes() not in data
        assert embeddings[500].tobytes() in data
    labels, _ = AnnIndex.load(again, BUILD).query(embeddings[[suppressed, erased, 500]], k=1)
    assert labels[:, 0].tolist()[2] == 500 and not np.isin(labels, [suppressed, erased]).any()


def test_compacting_another_builds_index_is_refused(tmp_path: Path) -> None:
    index_dir = build(tmp_path, random_vectors(200, 16, 0))
    emb_path, users_path = (tmp_path / "population" / name for name in POPULATION_FILES)
    with pytest.raises(ArtifactError, match="model build"):
        compact(index_dir, emb_path, users_path, np.array([1]), tmp_path / "c", CONFIG, "other")


def test_added_users_are_found_and_routed_to_their_hash_shard(tmp_path: Path) -> None:
    embeddings = clustered_vectors(2000, 16, 0)
    user_ids = np.arange(2000, dtype=np.int64) * 13 - 5000
    config = CONFIG.model_copy(update={"shards": 3})
    index_dir = build(tmp_path, embeddings[:1800], config, user_ids[:1800])
    index = AnnIndex.load(index_dir, BUILD, max_extra_elements=10)  # shards must grow past this
    index.add(embeddings[1800:], np.arange(1800, 2000), user_ids[1800:])
    assert index.live_count == 2000
    labels, _ = index.query(embeddings[1800:1850], k=20, ef=EXACT_EF)
    np.testing.assert_array_equal(labels, exact_search(embeddings, embeddings[1800:1850], 20)[0])

    index.save(tmp_path / "saved", BUILD)
    expected = [np.flatnonzero(shard_of(user_ids, 3) == s) for s in range(3)]
    for stored, wanted in zip(shard_labels(tmp_path / "saved", 16), expected, strict=True):
        np.testing.assert_array_equal(stored, wanted)


def test_adding_a_present_or_suppressed_label_is_refused(tmp_path: Path) -> None:
    embeddings = random_vectors(300, 16, 0)
    index = AnnIndex.load(build(tmp_path, embeddings))
    index.suppress(np.array([5]))
    for label in (5, 6):  # hnswlib itself would silently revive 5 and overwrite 6
        with pytest.raises(LookalikeError, match="already in the index"):
            index.add(embeddings[[label]], np.array([label]), np.array([label]))
    labels, _ = index.query(embeddings[[5]], k=300)
    assert 5 not in labels


def test_save_and_load_round_trip_gives_identical_results(tmp_path: Path) -> None:
    embeddings = clustered_vectors(2200, 16, 0)
    index_dir = build(tmp_path, embeddings[:2000], CONFIG.model_copy(update={"shards": 2}))
    index = AnnIndex.load(index_dir, BUILD)
    index.add(embeddings[2000:], np.arange(2000, 2200), np.arange(2000, 2200))
    index.suppress(np.arange(0, 2200, 10))
    queries, exclude = clustered_vectors(50, 16, 9), np.arange(1, 2200, 10)
    before = index.query(queries, k=40, exclude=exclude, batch_size=16)
    manifest = index.save(tmp_path / "saved", "build-2")
    after = AnnIndex.load(tmp_path / "saved", "build-2").query(queries, k=40, exclude=exclude)
    np.testing.assert_array_equal(before[0], after[0])
    np.testing.assert_array_equal(before[1], after[1])
    assert manifest.element_count == 2200 - 220 and manifest.label_bound == 2200


def test_a_shard_built_from_its_embedding_part_is_the_same_file(tmp_path: Path) -> None:
    # 6000 users, 2 shards: about 3000 per shard, so locality_order clusters (and samples) them.
    embeddings = clustered_vectors(6000, 16, 2)
    emb_path, users_path = write_population(tmp_path / "population", embeddings)
    user_ids = pl.read_parquet(users_path).get_column("user_id")
    config = CONFIG.model_copy(update={"add_batch_rows": 700, "locality_sample": 2000})
    for shard in range(2):
        rows = np.flatnonzero(shard_of(user_ids, 2) == shard)
        np.save(tmp_path / f"part-{shard}.npy", embeddings[rows])
        np.save(tmp_path / f"part-{shard}.rows.npy", rows)
        whole = index_module.build_shard(emb_path, users_path, shard, 2, tmp_path / "whole",
                                         config)
        part = index_module.build_shard_from_part(tmp_path / f"part-{shard}.npy",
                                                  tmp_path / f"part-{shard}.rows.npy", shard, 2,
                                                  tmp_path / "part", config)
        assert part == whole
        assert (tmp_path / "part" / part.file).read_bytes() == (
            tmp_path / "whole" / whole.file).read_bytes()

"""Benchmark the HNSW index against exact search on clustered, embedding-like unit vectors.

Generates ``--users`` L2-normalized vectors drawn from a mixture of gaussian clusters of uneven
sizes and spreads, builds the index with :func:`lookalike.search.index.build_index`, then measures:

- build time, peak RSS of the process, index bytes per user (file size, and RSS growth on load);
- queries/s at k=``--k`` for each ef of ``--ef-grid`` until recall@k reaches ``--target-recall``
  (recall against :func:`lookalike.search.exact.exact_search` on the same queries);
- queries/s of exact search on the same queries (the baseline) and the speed-up ratio.

The queries are ``--queries`` more vectors from the same mixture, not in the index (a seed list is
rarely the population's own rows, and a user's own row is its easiest neighbour). Exact search and
every ef are timed alike: one untimed warm-up run, then the median of ``--repeats`` runs.

Prints Markdown tables and writes every figure as JSON to ``--out``. Targets at 1M users, d=64
(context for the full-size run): >= 20x exact throughput at recall@100 >= 0.95, build < 3 min,
< 600 bytes/user.

Example::

    python benchmarks/bench_index.py --users 20000 --dim 64 --out bench_index.json
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from lookalike.core.artifacts import write_json
from lookalike.core.config import IndexConfig
from lookalike.search.index import AnnIndex, build_index, recall_at_k
from lookalike.search.exact import exact_search
from lookalike.testing.peak_rss import peak_rss_mib

GENERATION_CHUNK = 100_000
TARGETS_AT_1M = {"speedup": 20.0, "build_seconds": 180.0, "bytes_per_user": 600.0}


def parse_args() -> argparse.Namespace:
    defaults = IndexConfig()
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=300, help="gaussian mixture clusters")
    parser.add_argument("--queries", type=int, default=2000,
                        help="query vectors from the same mixture, outside the index")
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--target-recall", type=float, default=0.95)
    parser.add_argument("--ef-grid", default="100,128,160,200,256,320,400,512,640,800")
    parser.add_argument("--M", type=int, default=defaults.M)
    parser.add_argument("--ef-construction", type=int, default=defaults.ef_construction)
    parser.add_argument("--ef", type=int, default=defaults.ef, help="ef of the build recall check")
    parser.add_argument("--recall-floor", type=float, default=defaults.recall_floor)
    parser.add_argument("--shards", type=int, default=defaults.shards)
    parser.add_argument("--threads", type=int, default=None, help="default: all cores")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs after a warm-up; the median counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--out", type=Path, required=True, help="JSON results file")
    return parser.parse_args()


def write_clustered_population(
    folder: Path, users: int, queries: int, dim: int, clusters: int, seed: int
) -> tuple[Path, Path, np.ndarray]:
    """Unit vectors from uneven gaussian clusters: ``users`` written in chunks to embeddings.npy,
    then ``queries`` more from the same mixture, returned (not in the index)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.dirichlet(np.ones(clusters))
    spreads = rng.uniform(0.3, 0.9, clusters) / np.sqrt(dim)

    def draw(n: int) -> np.ndarray:
        members = rng.choice(clusters, size=n, p=weights)
        vectors = centres[members] + rng.standard_normal((n, dim)) * spreads[members, None]
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    emb_path = folder / "embeddings.npy"
    embeddings = np.lib.format.open_memmap(emb_path, "w+", np.float32, shape=(users, dim))
    for start in range(0, users, GENERATION_CHUNK):
        embeddings[start : start + GENERATION_CHUNK] = draw(min(GENERATION_CHUNK, users - start))
    embeddings.flush()
    del embeddings
    users_path = folder / "users.parquet"
    user_ids = rng.permutation(users).astype(np.int64) * 31 + 7
    pl.DataFrame({"user_id": user_ids}).write_parquet(users_path)
    return emb_path, users_path, draw(queries)


def current_rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    return int(peak_rss_mib() * 2**20)


def load_rss_growth(index_dir: Path, threads: int | None) -> int:
    """RSS added by loading the index, measured in a fresh process (free lists of the build's
    allocations in this process would hide it)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_rss_growth_of_load, (index_dir, threads))


def _rss_growth_of_load(index_dir: Path, threads: int | None) -> int:
    before = current_rss_bytes()
    index = AnnIndex.load(index_dir, "bench", threads=threads)
    growth = current_rss_bytes() - before
    del index
    return growth


def median_time(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """One untimed warm-up run, then the median seconds of ``repeats`` runs, and the result."""
    result = run()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), result


def sweep_ef(
    index: AnnIndex, queries: np.ndarray, truth: np.ndarray, args: argparse.Namespace
) -> list[dict[str, float]]:
    """Queries/s and recall per ef, stopping at the first ef that reaches the target recall."""
    rows = []
    for ef in (int(e) for e in args.ef_grid.split(",")):
        seconds, (labels, _) = median_time(
            lambda ef=ef: index.query(queries, args.k, ef=ef), args.repeats
        )
        rows.append({
            "ef": ef,
            "recall_at_10": recall_at_k(labels[:, :10], truth[:, :10]),
            "recall_at_k": recall_at_k(labels, truth),
            "queries_per_second": len(queries) / seconds,
        })
        if rows[-1]["recall_at_k"] >= args.target_recall:
            break
    return rows


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    start = time.perf_counter()
    emb_path, users_path, queries = write_clustered_population(
        folder, args.users, args.queries, args.dim, args.clusters, args.seed
    )
    generate_seconds = time.perf_counter() - start
    config = IndexConfig(
        M=args.M, ef_construction=args.ef_construction, ef=args.ef, shards=args.shards,
        threads=args.threads, recall_floor=args.recall_floor, seed=args.seed,
    )
    start = time.perf_counter()
    manifest = build_index(emb_path, users_path, folder / "index", config, "bench")
    build_seconds = time.perf_counter() - start
    build_peak_rss = peak_rss_bytes()
    file_bytes = sum((folder / "index" / s.file).stat().st_size for s in manifest.shards)

    rss_delta = load_rss_growth(folder / "index", args.threads)
    index = AnnIndex.load(folder / "index", "bench", threads=args.threads)

    embeddings = np.load(emb_path)
    exact_seconds, (truth, _) = median_time(
        lambda: exact_search(embeddings, queries, args.k), args.repeats
    )
    sweep = sweep_ef(index, queries, truth, args)
    chosen = sweep[-1]
    exact_qps = len(queries) / exact_seconds
    return {
        "users": args.users, "dim": args.dim, "clusters": args.clusters, "queries": len(queries),
        "k": args.k, "M": args.M, "ef_construction": args.ef_construction, "shards": args.shards,
        "threads": args.threads or len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "generate_seconds": generate_seconds,
        "build_seconds": build_seconds,
        "build_recall_at_10": manifest.recall_at_10,
        "build_recall_at_100": manifest.recall_at_100,
        "peak_rss_bytes": build_peak_rss,
        "index_file_bytes": file_bytes,
        "bytes_per_user_file": file_bytes / args.users,
        "bytes_per_user_rss": rss_delta / args.users,
        "exact_queries_per_second": exact_qps,
        "ef_sweep": sweep,
        "chosen_ef": chosen["ef"],
        "target_recall": args.target_recall,
        "target_reached": chosen["recall_at_k"] >= args.target_recall,
        "ann_queries_per_second": chosen["queries_per_second"],
        "ann_recall_at_k": chosen["recall_at_k"],
        "speedup_vs_exact": chosen["queries_per_second"] / exact_qps,
        "targets_at_1m": TARGETS_AT_1M,
    }


def markdown(r: dict[str, Any]) -> str:
    """The figures as two Markdown tables: summary against the 1M targets, then the ef sweep."""
    targets = TARGETS_AT_1M
    bytes_target = f"< {targets['bytes_per_user']:.0f}"
    summary = [
        ("build (s)", f"{r['build_seconds']:.1f}", f"< {targets['build_seconds']:.0f}"),
        (
            "build-time recall@10 / @100",
            f"{r['build_recall_at_10']:.4f} / {r['build_recall_at_100']:.4f}",
            "",
        ),
        ("peak RSS (MiB)", f"{r['peak_rss_bytes'] / 2**20:.0f}", ""),
        ("bytes/user, index files", f"{r['bytes_per_user_file']:.0f}", bytes_target),
        ("bytes/user, RSS growth on load", f"{r['bytes_per_user_rss']:.0f}", bytes_target),
        (f"exact queries/s (k={r['k']})", f"{r['exact_queries_per_second']:,.0f}", "baseline"),
        (
            f"index, queries/s at ef={r['chosen_ef']} (recall@{r['k']} {r['ann_recall_at_k']:.4f})",
            f"{r['ann_queries_per_second']:,.0f}",
            "",
        ),
        ("speed-up vs exact", f"{r['speedup_vs_exact']:.1f}x", f">= {targets['speedup']:.0f}x"),
    ]
    lines = [
        f"## HNSW index: {r['users']:,} users, d={r['dim']}, M={r['M']}, "
        f"ef_construction={r['ef_construction']}, shards={r['shards']}, threads={r['threads']}",
        "",
        "| metric | value | target at 1M |",
        "|---|---|---|",
        *(f"| {metric} | {value} | {target} |" for metric, value, target in summary),
        "",
        f"| ef | recall@10 | recall@{r['k']} | queries/s |",
        "|---|---|---|---|",
        *(
            f"| {row['ef']} | {row['recall_at_10']:.4f} | {row['recall_at_k']:.4f} "
            f"| {row['queries_per_second']:,.0f} |"
            for row in r["ef_sweep"]
        ),
    ]
    if not r["target_reached"]:
        lines += ["", f"**recall@{r['k']} >= {r['target_recall']} not reached on the ef grid**"]
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_index_") as tmp:
            result = run(args, Path(tmp))
    print(markdown(result))
    write_json(args.out, result)


if __name__ == "__main__":
    main()

"""Refresh of the HNSW index: update in place for the changed users, or rebuild it?

A daily refresh changes the embedding of some users. Two ways to bring the index up to date:

- in place: load the previous index and ``add_items`` the changed users' new vectors under their
  existing labels (hnswlib then moves the element and repairs its links), then save;
- rebuild: :func:`lookalike.search.index.build_shard` from the new embeddings (what a build does).

Generates ``--users`` clustered unit vectors (:func:`bench_index.write_clustered_population`),
builds the day-1 index, then for each share in ``--changes`` moves that share of users (their
vector plus gaussian noise of ``--move`` / sqrt(dim), renormalized) and measures the wall time of
both ways and the recall@10/@100 of both indexes against exact search on the new embeddings
(``--queries`` rows drawn from all users, and as many from the changed users only).

How many users does a daily refresh move? ``--refresh-users`` synthetic users are built, then
refreshed from the same events with the as-of time one day later (no new event at all): the
share of users whose embedding moved by more than a few cosine distances is printed.

Prints a Markdown table and writes every figure as JSON to ``--out``.

Example::

    flock /tmp/lookalike-heavy.lock python benchmarks/bench_refresh.py --users 50000 --out r.json
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import hnswlib
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_index import write_clustered_population

from lookalike.build_steps import BuildRequest, run_build
from lookalike.core.artifacts import read_json, write_json
from lookalike.core.config import IndexConfig
from lookalike.core.workdir import Workdir
from lookalike.data.features import parse_as_of
from lookalike.data.synthetic import generate
from lookalike.search.exact import exact_search
from lookalike.search.index import build_shard, recall_at_k
from lookalike.search.manifest import SPACE
from lookalike.testing.fixtures import fast_config

K = 100


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=32, help="the encoder's default embedding_dim")
    parser.add_argument("--clusters", type=int, default=300)
    parser.add_argument("--changes", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--move", type=float, default=0.5,
                        help="noise scale of a changed user's move, times 1/sqrt(dim)")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refresh-users", type=int, default=5000,
                        help="users of the one-day-later refresh (0 skips it)")
    parser.add_argument("--out", type=Path, required=True)
    return parser.parse_args()


def moved_embeddings(base: Path, target: Path, rows: np.ndarray, move: float,
                     rng: np.random.Generator) -> np.ndarray:
    """Copy ``base`` to ``target`` with ``rows`` moved; returns the new embeddings (memory map)."""
    shutil.copyfile(base, target)
    embeddings = np.load(target, mmap_mode="r+")
    dim = embeddings.shape[1]
    moved = embeddings[rows] + rng.standard_normal((len(rows), dim)) * move / np.sqrt(dim)
    embeddings[rows] = (moved / np.linalg.norm(moved, axis=1, keepdims=True)).astype(np.float32)
    embeddings.flush()
    return embeddings


def update_in_place(index_file: Path, out_file: Path, embeddings: np.ndarray, rows: np.ndarray,
                    dim: int, threads: int) -> tuple[float, hnswlib.Index]:
    """Load, update ``rows`` under their labels, save: seconds and the updated index."""
    started = time.perf_counter()
    index = hnswlib.Index(space=SPACE, dim=dim)
    index.load_index(str(index_file))
    index.add_items(np.asarray(embeddings[rows]), rows, num_threads=threads)
    index.save_index(str(out_file))
    return time.perf_counter() - started, index


def recalls(index: hnswlib.Index, embeddings: np.ndarray, queries: np.ndarray,
            ef: int) -> dict[str, float]:
    """recall@10 and @100 of ``index`` against exact search for the rows ``queries``."""
    vectors = np.asarray(embeddings[queries])
    truth, _ = exact_search(embeddings, vectors, K)
    index.set_ef(max(ef, K))
    found, _ = index.knn_query(vectors, k=K)
    return {f"recall_at_{c}": round(recall_at_k(found[:, :c], truth[:, :c]), 4) for c in (10, K)}


def run(args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    config = IndexConfig(max_shard_users=max(args.users, 1000))
    threads = hnswlib.Index(space=SPACE, dim=1).num_threads if config.threads is None else config.threads
    base_emb, users, _ = write_clustered_population(folder, args.users, 0, args.dim, args.clusters,
                                                    args.seed)
    started = time.perf_counter()
    info = build_shard(base_emb, users, 0, 1, folder / "index-day1", config)
    results: dict[str, Any] = {"users": args.users, "dim": args.dim, "threads": threads,
                               "day1_build_seconds": round(time.perf_counter() - started, 1),
                               "changes": []}
    rng = np.random.default_rng(args.seed + 1)
    for share in args.changes:
        rows = np.sort(rng.choice(args.users, size=int(share * args.users), replace=False))
        emb = moved_embeddings(base_emb, folder / f"embeddings-{share}.npy", rows, args.move, rng)
        seconds_inplace, updated = update_in_place(folder / "index-day1" / info.file,
                                                   folder / f"inplace-{share}.bin", emb, rows,
                                                   args.dim, threads)
        started = time.perf_counter()
        rebuilt_info = build_shard(folder / f"embeddings-{share}.npy", users, 0, 1,
                                   folder / f"rebuild-{share}", config)
        seconds_rebuild = time.perf_counter() - started
        rebuilt = hnswlib.Index(space=SPACE, dim=args.dim)
        rebuilt.load_index(str(folder / f"rebuild-{share}" / rebuilt_info.file))
        everyone = np.sort(rng.choice(args.users, size=args.queries, replace=False))
        changed = np.sort(rng.choice(rows, size=min(args.queries, len(rows)), replace=False))
        results["changes"].append({
            "share": share, "changed_users": len(rows),
            "inplace_seconds": round(seconds_inplace, 1), "rebuild_seconds": round(seconds_rebuild, 1),
            "inplace": recalls(updated, emb, everyone, IndexConfig().ef),
            "rebuild": recalls(rebuilt, emb, everyone, IndexConfig().ef),
            "inplace_changed_queries": recalls(updated, emb, changed, IndexConfig().ef),
            "rebuild_changed_queries": recalls(rebuilt, emb, changed, IndexConfig().ef),
        })
        print(markdown_row(results["changes"][-1]), flush=True)
    return results


def moved_after_one_day(users: int, folder: Path) -> dict[str, float]:
    """Share of users whose embedding moved by more than each cosine distance when the same
    events are refreshed with the as-of time one day later."""
    data = generate(folder / "data", users, events_per_user=20, seed=0)
    workdir = Workdir(folder / "work")
    request = BuildRequest(str(data.events), str(data.profiles), str(data.conversions),
                           config=fast_config())
    first = run_build(workdir, request, progress=lambda _: None)
    as_of = parse_as_of(read_json(first.manifest)["steps"]["features"]["features"]["as_of"])
    later = replace(request, as_of=(as_of + timedelta(days=1)).isoformat(), mode="refresh")
    second = run_build(workdir, later, progress=lambda _: None)
    shift = 1 - np.sum(np.load(first.embeddings) * np.load(second.embeddings), axis=1)
    return {f"moved_over_{eps:g}": round(float((shift > eps).mean()), 3)
            for eps in (1e-6, 1e-4, 1e-3, 1e-2)}


def markdown_row(c: dict[str, Any]) -> str:
    return (f"| {c['share']:.0%} ({c['changed_users']:,}) | {c['inplace_seconds']} | "
            f"{c['rebuild_seconds']} | {c['inplace']['recall_at_10']:.3f} / "
            f"{c['inplace']['recall_at_100']:.3f} | {c['rebuild']['recall_at_10']:.3f} / "
            f"{c['rebuild']['recall_at_100']:.3f} | "
            f"{c['inplace_changed_queries']['recall_at_100']:.3f} / "
            f"{c['rebuild_changed_queries']['recall_at_100']:.3f} |")


def main() -> None:
    args = parse_args()
    print("| changed | in place s | rebuild s | in place R@10 / R@100 | rebuild R@10 / R@100 "
          "| changed-user queries R@100 in place / rebuild |\n|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="bench-refresh-") as tmp:
        results = run(args, Path(tmp))
        print(f"day-1 build {results['day1_build_seconds']} s, {results['threads']} threads")
        if args.refresh_users:
            results["one_day_later"] = moved_after_one_day(args.refresh_users, Path(tmp) / "refresh")
            print(f"refresh one day later, {args.refresh_users:,} users: {results['one_day_later']}")
    write_json(args.out, results)


if __name__ == "__main__":
    main()

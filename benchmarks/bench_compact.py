"""Compact embeddings: float16 storage (``model.embedding_storage``) against float32.

For each storage (float32 = the reference, float16) it measures

- bytes per user of ``embeddings.npy``;
- recall@100 of ``--queries`` population rows against float32 exact search, and the shortfall:
  the largest gap, over queries, between the 100th float32 similarity and the float32 similarity
  of the worst user returned (float16 rounds each side of a cosine by at most 2**-11 relative,
  so moves it by at most about 1e-3: misses below that are ties at float16's precision);
- audience overlap: the top K = 1% and 5% users by cosine to a seed centroid (the ``--seeds`` users
  nearest a random user, excluded), shared with float32's top K, and the same shortfall;
- scan time (best of ``--repeats``): ``--queries`` queries with k = 100 (knn on exact search), and
  the centroid's top 5% (the centre strategies' one exact pass).

Queries and the centroid are read from the storage under test, as an export reads seed vectors.
Population: clustered unit vectors (``bench_audience.clustered_embeddings``), or a build's
``embeddings.npy`` with ``--embeddings``. Run alone (``flock /tmp/lookalike-heavy.lock``):

    OMP_NUM_THREADS=1 python benchmarks/bench_compact.py --users 1000000 \
        --out benchmarks/out/compact-1m.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_audience import clustered_embeddings  # noqa: E402

from lookalike.core.blocks import float32_rows  # noqa: E402
from lookalike.search.exact import exact_search  # noqa: E402
from lookalike.search.index import recall_at_k  # noqa: E402

K_RECALL = 100
AUDIENCE_FRACTIONS = (0.01, 0.05)

def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--embeddings", type=Path, default=None, help="a build's embeddings.npy")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return parser.parse_args()


def population(args: argparse.Namespace, rng: np.random.Generator) -> np.ndarray:
    if args.embeddings is not None:
        return float32_rows(np.load(args.embeddings, mmap_mode="r"), slice(None))
    return clustered_embeddings(args.users, args.dim, args.clusters, rng)[0]


def storages(vectors: np.ndarray) -> dict[str, np.ndarray]:
    """storage name -> the population as that storage holds it."""
    return {"float32": vectors, "float16": vectors.astype(np.float16)}


def shortfall(
    vectors: np.ndarray, queries: np.ndarray, found: np.ndarray, truth_sims: np.ndarray
) -> float:
    """Largest (over queries) k-th true similarity minus float32 similarity of the worst found."""
    found_sims = np.einsum("qd,qkd->qk", queries, vectors[found])
    return float((truth_sims[:, -1] - found_sims.min(axis=1)).max())


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def best_time(run: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        times.append(time.perf_counter() - started)
    return min(times), result


def seed_rows(vectors: np.ndarray, count: int) -> np.ndarray:
    """``count`` users nearest to one random user: a seed list from one region of the space."""
    sims = vectors @ vectors[0]
    return np.argsort(-sims, kind="stable")[:count]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    vectors = population(args, rng)
    n = len(vectors)
    query_rows = np.sort(rng.choice(n, min(args.queries, n), replace=False))
    seeds = seed_rows(vectors, args.seeds)
    reference_queries = vectors[query_rows]
    truth, truth_sims = exact_search(vectors, reference_queries, K_RECALL)
    reference_centroid = unit(vectors[seeds].mean(axis=0, keepdims=True))
    audiences = {
        fraction: exact_search(vectors, reference_centroid, round(fraction * n), seeds)
        for fraction in AUDIENCE_FRACTIONS
    }
    rows: list[dict[str, Any]] = []
    for name, stored in storages(vectors).items():
        queries = float32_rows(stored, query_rows)
        scan_s, (found, _) = best_time(
            lambda: exact_search(stored, queries, K_RECALL), args.repeats
        )
        centroid = unit(float32_rows(stored, seeds).mean(axis=0, keepdims=True))
        row = {
            "storage": name,
            "bytes_per_user": stored.itemsize * stored.shape[1],
            "recall_at_100": recall_at_k(found, truth),
            "shortfall_at_100": shortfall(vectors, reference_queries, found, truth_sims),
            "scan_s_knn": round(scan_s, 3),
        }
        for fraction in AUDIENCE_FRACTIONS:
            k = round(fraction * n)
            run = lambda k=k: exact_search(stored, centroid, k, seeds)  # noqa: E731
            seconds, (top, _) = best_time(run, args.repeats)
            reference, reference_sims = audiences[fraction]
            row[f"overlap_{fraction:g}"] = len(np.intersect1d(top[0], reference[0])) / k
            row[f"shortfall_{fraction:g}"] = shortfall(
                vectors, reference_centroid, top, reference_sims
            )
            row[f"scan_s_centroid_{fraction:g}"] = round(seconds, 3)
        print(json.dumps(row), flush=True)
        rows.append(row)
    return {"users": n, "dim": vectors.shape[1], "queries": len(query_rows), "seeds": len(seeds),
            "source": str(args.embeddings or "clustered"), "threads": torch.get_num_threads(),
            "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| storage | B/user | recall@100 | overlap 1% / 5% | knn scan s | 5% scan s |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in result["rows"]:
        lines.append(
            f"| {r['storage']} | {r['bytes_per_user']} | {r['recall_at_100']:.4f} | "
            f"{r['overlap_0.01']:.4f} / {r['overlap_0.05']:.4f} | {r['scan_s_knn']:.2f} | "
            f"{r['scan_s_centroid_0.05']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    result = measure(args)
    print(markdown(result))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

"""Insertion order of the HNSW build on tightly clustered embeddings: build time and recall@100.

Builds the same index (default ``IndexConfig`` but for the insertion-order settings) over
``bench_audience.clustered_embeddings`` three ways: row order (``locality_clusters`` 0, the
baseline), cluster-by-cluster order without a skeleton, and with the default skeleton. Recall is
the build's own check (500 sampled queries against exact search, ef 200).

    python benchmarks/bench_locality.py --users 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_audience import clustered_embeddings  # noqa: E402

from lookalike.core.config import IndexConfig  # noqa: E402
from lookalike.search.index import build_index

VARIANTS = {
    "row order (baseline)": {"locality_clusters": 0},
    "locality, no skeleton": {"locality_skeleton": 0.0},
    "locality, default skeleton": {},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=300_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=500)
    args = parser.parse_args()
    embeddings, _ = clustered_embeddings(args.users, args.dim, args.clusters, np.random.default_rng(0))
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        np.save(root / "embeddings.npy", embeddings)
        pl.DataFrame({"user_id": np.arange(args.users)}).write_parquet(root / "users.parquet")
        baseline = None
        for name, settings in VARIANTS.items():
            config = IndexConfig(recall_floor=0.0, **settings)
            start = time.perf_counter()
            out = root / f"index-{len(settings)}-{name[:3]}"
            build_index(root / "embeddings.npy", root / "users.parquet", out, config, "bench")
            seconds = time.perf_counter() - start
            recall = json.loads((out / "index.json").read_text())["recall_at_100"]
            baseline = baseline or seconds
            print(f"{name}: build {seconds:.1f} s ({seconds / baseline:.2f}x row order), "
                  f"recall@100 {recall:.4f}", flush=True)


if __name__ == "__main__":
    main()

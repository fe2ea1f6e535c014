"""Seed expansion speed: wall time and peak RSS of ``export_audience`` per strategy and seed count.

Builds a synthetic build folder (clustered, L2-normalized 64-d embeddings, users, a feature table
as wide as the synthetic generator's and its spec) and its HNSW index (:func:`lookalike.search.index.build_index`, default IndexConfig). Seeds of
1,000 and 50,000 users (at most a quarter of the population) come from a few clusters; the audience
is 5% of the eligible users. Each export runs in a fresh process so its peak RSS is its own. The
"search" column says what answered the queries: AnnIndex (HNSW), ExactSearch (brute force) or scan
(the centre strategies score every row exactly and never query). The baseline, measured in the same
run, is the knn export of the smallest seed list with exact search: the ratio column is wall time
over that baseline.

    python benchmarks/bench_audience.py --users 20000 --out benchmarks/out/audience.json

Target (issue 5): under 20 s for 50,000 seeds at 1M users.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from lookalike.core.artifacts import write_json  # noqa: E402
from lookalike.core.config import AudienceConfig, IndexConfig, LookalikeConfig  # noqa: E402
from lookalike.search.index import build_index
from lookalike.testing.toy_tables import toy_spec  # noqa: E402
from lookalike.core.workdir import BuildPaths, Workdir  # noqa: E402
from lookalike.testing.peak_rss import peak_rss_mib  # noqa: E402

STRATEGIES = ("knn", "clusters", "centroid")
MODEL_BUILD_ID = "bench"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--clusters", type=int, default=500)
    parser.add_argument("--seeds", default="1000,50000", help="comma-separated seed list sizes")
    parser.add_argument("--fraction", type=float, default=0.05, help="audience / eligible users")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--numeric-features", type=int, default=100)
    parser.add_argument("--categorical-features", type=int, default=10, help="50 values each")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def clustered_embeddings(
    n: int, dim: int, clusters: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around random cluster directions (embedding-like, not uniform noise)."""
    centres = rng.normal(size=(clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, clusters, n)
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 1_000_000):
        block = slice(start, start + 1_000_000)
        noise = rng.normal(scale=0.6 / np.sqrt(dim), size=(len(labels[block]), dim))
        vectors[block] = centres[labels[block]] + noise.astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors, labels


def write_synthetic_build(
    root: Path, args: argparse.Namespace
) -> tuple[BuildPaths, np.ndarray, float]:
    """Embeddings, users, model.json, features and the HNSW index (and its build seconds)."""
    rng = np.random.default_rng(0)
    build = Workdir(root).build("bench")
    build.embeddings_dir.mkdir(parents=True, exist_ok=True)
    embeddings, labels = clustered_embeddings(args.users, args.dim, args.clusters, rng)
    np.save(build.embeddings, embeddings)
    ids = np.arange(args.users, dtype=np.int64) + 10_000_000
    pl.DataFrame({"user_id": ids}).write_parquet(build.users)
    write_json(build.model_dir / "model.json", {"model_build_id": MODEL_BUILD_ID})
    features = synthetic_features(ids, labels, args, rng)
    features.write_parquet(build.features)
    toy_spec(features).save(build.spec)
    start = time.perf_counter()
    build_index(build.embeddings, build.users, build.index_dir, IndexConfig(), MODEL_BUILD_ID)
    return build, labels, time.perf_counter() - start


def synthetic_features(
    ids: np.ndarray, labels: np.ndarray, args: argparse.Namespace, rng: np.random.Generator
) -> pl.DataFrame:
    """A feature table as wide as the synthetic generator's (about 110 columns): numeric columns
    and string categoricals of 50 values, each partly set by the user's cluster."""
    columns: dict[str, object] = {"user_id": ids}
    for j in range(args.numeric_features):
        signal = (labels % (j + 3)).astype(np.float32)
        columns[f"num_{j:03d}"] = signal + rng.gamma(2.0, 1.0, len(ids)).astype(np.float32)
    values = np.array([f"v{v:02d}" for v in range(50)])
    for j in range(args.categorical_features):
        noise = rng.integers(0, 50, len(ids))
        codes = np.where(rng.random(len(ids)) < 0.5, (labels * (j + 1)) % 50, noise)
        columns[f"cat_{j:02d}"] = values[codes]
    return pl.DataFrame(columns)


def write_seeds(folder: Path, labels: np.ndarray, count: int) -> Path:
    """``count`` users from the smallest set of clusters (in order) that holds twice as many."""
    sizes = np.bincount(labels)
    needed = int(np.searchsorted(np.cumsum(sizes), 2 * count)) + 1
    rows = np.flatnonzero(labels < needed)
    chosen = np.random.default_rng(count).choice(rows, count, replace=False)
    path = folder / f"seeds-{count}.parquet"
    pl.DataFrame({"user_id": chosen.astype(np.int64) + 10_000_000}).write_parquet(path)
    return path


def run_child(spec_path: Path) -> None:
    """One export in this process; prints wall time, peak RSS and stage timings as JSON."""
    from lookalike.search.neighbours import ExactSearch
    from lookalike.audience.export import export_audience

    spec = json.loads(spec_path.read_text())
    build = BuildPaths(Path(spec["build"]))
    config = LookalikeConfig(audience=AudienceConfig(min_audience_size=1))
    rss_before = peak_rss_mib()
    start = time.perf_counter()
    exact = spec["search"] == "exact"
    search = ExactSearch(np.load(build.embeddings, mmap_mode="r")) if exact else None
    result = export_audience(
        build,
        spec["seeds"],
        spec["out"],
        fraction=spec["fraction"],
        strategy=spec["strategy"],
        config=config,
        search=search,
        progress=lambda _: None,
    )
    wall = time.perf_counter() - start
    print(json.dumps({
        "wall_s": wall,
        "peak_rss_mib": peak_rss_mib(),
        "rss_after_imports_mib": rss_before,
        "size": result.summary["size"],
        "timings_s": result.summary["timings_s"],
        "searched_with": _search_used(result.audience),
    }))


def _search_used(audience: Path) -> str:
    from lookalike.audience.export import read_audience_metadata

    return json.loads(read_audience_metadata(audience)["parameters"])["search"] or "scan"


def measure(
    build: BuildPaths, seeds: Path, strategy: str, search: str, fraction: float, folder: Path
) -> dict:
    spec = folder / f"spec-{seeds.stem}-{strategy}-{search}.json"
    out = folder / f"audience-{seeds.stem}-{strategy}-{search}.parquet"
    spec.write_text(json.dumps({
        "build": str(build.root), "seeds": str(seeds), "out": str(out),
        "strategy": strategy, "search": search, "fraction": fraction,
    }))
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(spec)], check=True, capture_output=True, text=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def markdown(rows: list[dict], baseline_s: float) -> str:
    lines = [
        "| seeds | strategy | search | audience | wall s | x baseline | peak RSS MiB "
        "| RSS after imports MiB | expand s | nearest seed s | seeds s | report s |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = r["timings_s"]
        lines.append(
            f"| {r['seeds']} | {r['strategy']} | {r['searched_with']} | {r['size']} "
            f"| {r['wall_s']:.2f} | {r['wall_s'] / baseline_s:.2f} | {r['peak_rss_mib']:.0f} "
            f"| {r['rss_after_imports_mib']:.0f} | {t['expand']:.2f} | "
            f"{t['nearest_seed']:.2f} | {t['seeds']:.2f} | {t['report']:.2f} |"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace, root: Path) -> dict:
    """Build the synthetic population, then time every (seed count, strategy) export."""
    start = time.perf_counter()
    build, labels, index_s = write_synthetic_build(root, args)
    elapsed = time.perf_counter() - start
    print(f"synthetic build: {args.users} users x {args.dim} dims in {elapsed:.1f} s")
    print(f"HNSW index (lookalike.search.index, default IndexConfig) built in {index_s:.1f} s")
    asked = sorted(int(s) for s in args.seeds.split(","))
    counts = sorted({min(count, args.users // 4) for count in asked})
    if counts != asked:
        print(f"seed counts capped at a quarter of the population: {counts}")
    seed_files = {count: write_seeds(root, labels, count) for count in counts}
    baseline = measure(build, seed_files[counts[0]], "knn", "exact", args.fraction, root)
    rows = [{"seeds": counts[0], "strategy": "knn (baseline)", **baseline}]
    for count in counts:
        for strategy in args.strategies.split(","):
            result = measure(build, seed_files[count], strategy, "index", args.fraction, root)
            rows.append({"seeds": count, "strategy": strategy, **result})
            wall, rss = result["wall_s"], result["peak_rss_mib"]
            print(f"  {count} seeds, {strategy}: {wall:.2f} s, {rss:.0f} MiB")
    return {
        "users": args.users,
        "dim": args.dim,
        "clusters": args.clusters,
        "fraction": args.fraction,
        "index_build_s": index_s,
        "baseline_s": baseline["wall_s"],
        "rows": rows,
        "markdown": markdown(rows, baseline["wall_s"]),
    }


def main() -> None:
    args = parse_args()
    if args.child is not None:
        run_child(args.child)
        return
    with tempfile.TemporaryDirectory() as scratch:
        results = run(args, args.workdir or Path(scratch))
    print()
    print(results["markdown"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()

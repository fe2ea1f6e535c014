"""Sharded index on the Dask task runner against one shard on the default runner (issue 8).

Reuses the data of an ``e2e.py`` run (its ``--work`` folder: ``data/``, the training conversions
and the 10,000 seeds) and, in this one process, runs the build flow twice from empty workdirs:

- 1 index shard on Prefect's default runner (the baseline);
- ``--shards`` index shards (``index.shards``) on a local Dask cluster of as many workers.

Then it checks that both builds give the same audience: the embeddings must be identical (training
is seeded), the seeds' top-100 neighbour lists are compared at a high query ``ef`` (against exact
search on a sample of seeds too), and the export of 5% of the population from the same seeds,
queried at that ``ef``, must list the same users in the same order (``--compare-only`` repeats
the comparison on the builds a previous run left, e.g. at a higher ``--ef``). Example::

    python benchmarks/e2e.py --users 1000000 --work /tmp/e2e1m --out /tmp/e2e1m.json
    python benchmarks/bench_shards.py --work /tmp/e2e1m --shards 4 --out benchmarks/out/shards-1m.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import polars as pl
import yaml

import flows  # noqa: F401  (Prefect settings for the embedded mode, before prefect is imported)
from lookalike.search.index import AnnIndex
from lookalike.search.exact import exact_search
from lookalike.search.vectors import open_embeddings
from lookalike.core.workdir import BuildPaths, Workdir

NEIGHBOURS = 100
EXACT_SAMPLE = 200
AUDIENCE_FRACTION = 0.05


class HighEfSearch:
    """An :class:`AnnIndex` queried at a fixed, high ``ef`` (the audience then hardly depends on
    how the graph was split)."""

    def __init__(self, index: AnnIndex, ef: int) -> None:
        self.index, self.ef = index, ef

    @property
    def live_count(self) -> int:
        return self.index.live_count

    def query(
        self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self.index.query(queries, k, exclude, ef=self.ef)


def sharded_config(work: Path, shards: int) -> Path:
    config = yaml.safe_load((work / "data" / "config.yaml").read_text())
    config.setdefault("index", {})["shards"] = shards
    path = work / f"config-{shards}-shards.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def timed_build(work: Path, runner: str, shards: int) -> tuple[float, BuildPaths]:
    """Build from an empty workdir with ``shards`` index shards on ``runner``; wall seconds."""
    from flows.build import build_flow
    from flows.common import task_runner_options

    workdir = work / f"w-{runner}-{shards}"
    shutil.rmtree(workdir, ignore_errors=True)
    as_of = json.loads((work / "data" / "truth.json").read_text())["as_of"]
    flow = build_flow.with_options(**task_runner_options(runner, workers=shards))
    started = time.perf_counter()
    flow(workdir=str(workdir), conversions=str(work / "train_conversions.parquet"),
         events=str(work / "data" / "events.parquet"),
         profiles=str(work / "data" / "profiles.parquet"), as_of=as_of,
         config_path=str(sharded_config(work, shards)))
    return time.perf_counter() - started, Workdir(workdir).current()


def seed_rows(build: BuildPaths, seeds: Path) -> np.ndarray:
    users = pl.read_parquet(build.users, columns=["user_id"]).with_row_index("row")
    chosen = pl.read_parquet(seeds, columns=["user_id"]).join(users, on="user_id")
    return chosen.get_column("row").to_numpy().astype(np.int64)


def neighbour_agreement(builds: list[BuildPaths], rows: np.ndarray, ef: int) -> dict:
    """Top-100 lists of the seeds in each build at ``ef``, against each other and exact search."""
    queries = np.asarray(open_embeddings(builds[0].embeddings)[rows], dtype=np.float32)
    lists = []
    for build in builds:
        index = AnnIndex.load(build.index_dir, build.model_build_id())
        lists.append(index.query(queries, NEIGHBOURS, ef=ef)[0])
    sample = np.random.default_rng(0).choice(len(rows), min(EXACT_SAMPLE, len(rows)), replace=False)
    exact, _ = exact_search(open_embeddings(builds[0].embeddings), queries[sample], NEIGHBOURS)
    return {
        "seeds": int(len(rows)),
        "identical_lists": float(np.mean([np.array_equal(a, b) for a, b in zip(*lists, strict=True)])),
        "same_neighbour_sets": float(np.mean([set(a) == set(b) for a, b in zip(*lists, strict=True)])),
        "recall_vs_exact": [
            float(np.mean([len(set(found[i]) & set(exact[j])) / NEIGHBOURS
                           for j, i in enumerate(sample)]))
            for found in lists
        ],
    }


def export_with(build: BuildPaths, work: Path, out: Path, ef: int) -> pl.Series:
    from lookalike.core.config import load_config
    from lookalike.audience.export import export_audience

    index = AnnIndex.load(build.index_dir, build.model_build_id())
    result = export_audience(build, work / "seeds.parquet", out, fraction=AUDIENCE_FRACTION,
                             config=load_config(work / "data" / "config.yaml"),
                             search=HighEfSearch(index, ef), progress=lambda _: None)
    return pl.read_parquet(result.audience, columns=["user_id"]).get_column("user_id")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, required=True, help="an e2e.py --work folder")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--ef", type=int, default=1000, help="query ef of the comparison")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--compare-only", action="store_true",
                        help="compare the builds a previous run left in --work (no timings)")
    args = parser.parse_args()

    if args.compare_only:
        one = Workdir(args.work / "w-default-1").current()
        many = Workdir(args.work / f"w-dask-{args.shards}").current()
        one_s = many_s = float("nan")
    else:
        one_s, one = timed_build(args.work, "default", 1)
        print(f"1 shard, default runner: {one_s:.1f} s")
        many_s, many = timed_build(args.work, "dask", args.shards)
        print(f"{args.shards} shards, Dask: {many_s:.1f} s")
    same_embeddings = bool(np.array_equal(open_embeddings(one.embeddings),
                                          open_embeddings(many.embeddings)))
    seeds = args.work / "seeds.parquet"
    agreement = neighbour_agreement([one, many], seed_rows(one, seeds), args.ef)
    audiences = [export_with(b, args.work, args.work / f"audience-{n}.parquet", args.ef)
                 for b, n in ((one, 1), (many, args.shards))]
    figures = {
        "users": len(open_embeddings(one.embeddings)), "shards": args.shards, "ef": args.ef,
        "build_default_1_shard_s": round(one_s, 1),
        f"build_dask_{args.shards}_shards_s": round(many_s, 1),
        "ratio": round(many_s / one_s, 3),
        "identical_embeddings": same_embeddings,
        "neighbours": agreement,
        "audience_size": len(audiences[0]),
        "identical_audience": bool(audiences[0].equals(audiences[1])),
        "audience_overlap": len(set(audiences[0]) & set(audiences[1])) / max(len(audiences[0]), 1),
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""Flows benchmark: what Prefect costs on top of the library, and what Dask shards buy.

On synthetic data of ``--users`` users (``lookalike.data.synthetic``), each in a fresh workdir:

- library: the build steps of ``lookalike.build_steps`` and ``lookalike.audience.export.export_audience``
  called directly, no Prefect;
- flows: ``pipeline_flow`` (build flow + export flow) on the same inputs and config, after a
  trivial flow has started Prefect (its start-up, embedded mode or server, is reported apart);
- sharding: ``build_flow`` with ``--shards`` index shards on a local Dask cluster of as many
  worker processes, against 1 shard on the default (thread) runner.

Prefect overhead = flows / library (ratio) and flows - library (seconds). Example::

    python benchmarks/bench_flows.py --users 20000
    python benchmarks/bench_flows.py --users 1000000 --epochs 5 --out bench_flows.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import yaml

import flows  # noqa: F401  (Prefect settings for the embedded mode, before prefect is imported)
from lookalike import build_steps as steps
from lookalike.core.config import load_config
from lookalike.audience.export import export_audience
from lookalike.data.synthetic import HELD_BACK_TYPE, generate
from lookalike.core.workdir import Workdir

AUDIENCE_FRACTION = 0.05


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--events-per-user", type=float, default=30.0)
    parser.add_argument("--epochs", type=int, default=5, help="fixed training length")
    parser.add_argument("--shards", type=int, default=2, help="index shards (and Dask workers)")
    parser.add_argument("--dir", type=Path, default=None, help="working folder (default: temp)")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    return parser.parse_args()


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def write_inputs(folder: Path, args: argparse.Namespace) -> Path:
    """Data, a held-back type's converters as seeds, and a config with a fixed training length."""
    data = generate(folder / "data", args.users, events_per_user=args.events_per_user, seed=0)
    seeds = (pl.read_parquet(data.conversions).filter(pl.col("conversion_type") == HELD_BACK_TYPE)
             .select("user_id").unique().sort("user_id"))
    seeds.write_csv(folder / "seeds.csv")
    config = yaml.safe_load(data.config.read_text()) or {}
    config["train"] = {**config.get("train", {}), "epochs": args.epochs, "patience": args.epochs}
    config["audience"] = {"min_seed_size": 20, "min_audience_size": 10}
    config["schedule"] = {
        "workdir": "work-flows", "events": str(data.events), "profiles": str(data.profiles),
        "conversions": str(data.conversions),
        "audiences": [{"name": "bench", "seeds": "seeds.csv", "fraction": AUDIENCE_FRACTION,
                       "out": "out/flows.parquet"}],
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def request_for(config_path: Path) -> steps.BuildRequest:
    config = load_config(config_path)
    schedule = config.schedule
    return steps.BuildRequest(events=schedule.events, profiles=schedule.profiles,
                              conversions=str(schedule.conversions), config=config)


def library_pipeline(folder: Path, config_path: Path) -> Path:
    """Every build step and the export, called in order without Prefect."""
    request = request_for(config_path)
    workdir = Workdir(folder / "work-library")
    build, fingerprints = steps.prepare_build(workdir, request)
    reports: dict[str, Any] = {"features": steps.step_features(build, request)}
    reports["train"] = steps.step_train(build, request, progress=lambda _: None)
    n_shards = steps.partition_count(build, request)
    reports["embed"] = steps.step_embed(build, progress=lambda _: None, n_parts=n_shards)
    shards = [steps.step_index_shard(build, request, s, n_shards) for s in range(n_shards)]
    steps.remove_embedding_parts(build)
    reports["index"] = steps.step_index_manifest(build, request, shards)
    steps.finalize_build(workdir, build, request, fingerprints, reports)
    out = folder / "out" / "library.parquet"
    return export_audience(workdir.current(), folder / "seeds.csv", out,
                           fraction=AUDIENCE_FRACTION, config=request.config,
                           progress=lambda _: None).audience


def sharded_build_config(config_path: Path, shards: int) -> Path:
    config = yaml.safe_load(config_path.read_text())
    config.setdefault("index", {})["shards"] = shards
    path = config_path.with_name(f"config-{shards}-shards.yaml")
    path.write_text(yaml.safe_dump(config))
    return path


def build_with_runner(folder: Path, config_path: Path, runner: str, shards: int) -> float:
    from flows.build import build_flow
    from flows.common import task_runner_options

    schedule = load_config(config_path).schedule
    flow = build_flow.with_options(**task_runner_options(runner, workers=shards))
    seconds, result = timed(lambda: flow(
        workdir=str(folder / f"work-{runner}-{shards}"), conversions=str(schedule.conversions),
        events=schedule.events, profiles=schedule.profiles,
        config_path=str(sharded_build_config(config_path, shards))))
    assert not result["reused"], "a benchmark build must start from an empty workdir"
    return seconds


def warm_up_flow() -> None:
    """Start Prefect (the temporary server in embedded mode) outside the timed pipelines."""
    from prefect import flow

    flow(name="bench-warm-up")(lambda: None)()


def same_audience(a: Path, b: Path) -> bool:
    return pl.read_parquet(a, columns=["user_id"]).equals(pl.read_parquet(b, columns=["user_id"]))


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-flows-") as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        config_path = write_inputs(folder, args)

        from flows.pipeline import pipeline_flow

        startup, _ = timed(warm_up_flow)
        library_s, library_audience = timed(lambda: library_pipeline(folder, config_path))
        flows_s, result = timed(lambda: pipeline_flow(config_path=str(config_path)))
        flows_audience = Path(result["exports"][0]["audience"])
        one_shard_s = build_with_runner(folder, config_path, "default", 1)
        dask_s = build_with_runner(folder, config_path, "dask", args.shards)
        identical = same_audience(library_audience, flows_audience)

    figures = {
        "users": args.users, "epochs": args.epochs, "shards": args.shards,
        "prefect_startup_s": round(startup, 2),
        "library_pipeline_s": round(library_s, 2), "flows_pipeline_s": round(flows_s, 2),
        "prefect_overhead_s": round(flows_s - library_s, 2),
        "prefect_overhead_ratio": round(flows_s / library_s, 3),
        "same_audience": identical,
        "build_default_1_shard_s": round(one_shard_s, 2),
        f"build_dask_{args.shards}_shards_s": round(dask_s, 2),
        "dask_speedup": round(one_shard_s / dask_s, 3),
    }
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The build flow's mapped stages on the default runner and on local Dask clusters of 1 and 2 workers.

On synthetic data of ``--users`` users (generated once into ``--dir``), with ``--shards`` index
shards (= embedding partitions) and ``features.partition_events`` set so that the feature table
has ``--feature-parts`` user partitions, each runner builds from an empty workdir in its own
process (so peak memory is that run's alone), against one temporary Prefect server whose address
the Dask workers inherit. Per runner it prints the wall time of each mapped stage (first task
start to last task end, from the Prefect API: the feature partitions, their merge, the embedding
partitions, the assembly, the index shards), the whole build, and the peak RSS (VmHWM) of the
flow's process and of the largest Dask worker process. The builds must be the same: identical
``embeddings.npy``, ``users.parquet`` and feature table. Example::

    python benchmarks/bench_dask.py --users 300000 --dir /tmp/bench-dask --out benchmarks/out/dask-300k.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

import psutil

import flows  # noqa: F401  (Prefect settings for the embedded mode, before prefect is imported)

RUNNERS = {"default": ("default", 0), "dask-1": ("dask", 1), "dask-2": ("dask", 2)}
STAGES = {  # stage -> task run name pattern
    "features: partitions": r"ingest-and-features-part-\d+$",
    "features: merge + spec": r"ingest-and-features-merge-",
    "embed: partitions": r"embed-population-\d+$",
    "embed: assemble": r"embed-population-assemble-",
    "index: shards": r"index-shard-\d+$",
}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=300_000)
    parser.add_argument("--events-per-user", type=float, default=20.0)
    parser.add_argument("--shards", type=int, default=2, help="index shards = embedding partitions")
    parser.add_argument("--feature-parts", type=int, default=4, help="feature table partitions")
    parser.add_argument("--epochs", type=int, default=1, help="training is not a mapped stage")
    parser.add_argument("--dir", type=Path, required=True, help="working folder (data is reused)")
    parser.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--child", choices=list(RUNNERS), help=argparse.SUPPRESS)
    return parser.parse_args()


def prepare(args: argparse.Namespace) -> Path:
    """Generate the data once; write the config of every run; return the config path."""
    import polars as pl
    import yaml

    from lookalike.data.synthetic import generate

    data = args.dir / "data"
    if not (data / "truth.json").is_file():
        generate(data, args.users, events_per_user=args.events_per_user, seed=0)
    n_events = pl.scan_parquet(data / "events.parquet").select(pl.len()).collect().item()
    config = yaml.safe_load((data / "config.yaml").read_text()) or {}
    config.setdefault("train", {}).update({"epochs": args.epochs, "patience": args.epochs})
    config.setdefault("features", {})["partition_events"] = max(
        1000, math.ceil(n_events / args.feature_parts))
    config.setdefault("index", {})["shards"] = args.shards
    path = args.dir / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def vm_hwm_mib(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process in MiB; 0 when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class WorkerPeaks:
    """Samples VmHWM of this process's Dask worker processes (children started by
    multiprocessing) until stopped; the Prefect server's process is not among them."""

    def __init__(self, every: float = 0.5) -> None:
        self.peaks: dict[int, float] = {}
        self._every, self._stop = every, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            for child in me.children(recursive=True):
                try:
                    command = " ".join(child.cmdline())
                except psutil.Error:
                    continue
                if "multiprocessing" in command:
                    self.peaks[child.pid] = max(self.peaks.get(child.pid, 0.0), vm_hwm_mib(child.pid))
            time.sleep(self._every)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def stage_windows(flow_run_id: Any) -> dict[str, float]:
    """Seconds from the first start to the last end of each stage's task runs."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    seconds = {}
    for stage, pattern in STAGES.items():
        matching = [r for r in runs if re.match(pattern, r.name) and r.start_time and r.end_time]
        if matching:
            seconds[stage] = round(max(r.end_time.timestamp() for r in matching)
                                   - min(r.start_time.timestamp() for r in matching), 1)
            seconds[f"{stage} (tasks)"] = len(matching)
    return seconds


def child(args: argparse.Namespace) -> None:
    """One build on one runner, in this process; prints its figures as JSON on the last line."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    name = args.child
    runner, workers = RUNNERS[name]
    data, workdir = args.dir / "data", args.dir / f"w-{name}"
    shutil.rmtree(workdir, ignore_errors=True)  # an existing build would be reused, not timed
    with prefect_test_harness(server_startup_timeout=180):
        os.environ["PREFECT_API_URL"] = PREFECT_API_URL.value()  # inherited by the Dask workers
        from flows.build import build_flow
        from flows.common import task_runner_options
        from lookalike.core.workdir import Workdir

        options = task_runner_options(runner, workers=workers) if runner == "dask" else {}
        as_of = json.loads((data / "truth.json").read_text())["as_of"]
        with WorkerPeaks() as peaks:
            started = time.perf_counter()
            state = build_flow.with_options(**options)(
                workdir=str(workdir), conversions=str(data / "conversions.parquet"),
                events=str(data / "events.parquet"), profiles=str(data / "profiles.parquet"),
                as_of=as_of, config_path=str(args.dir / "config.yaml"), return_state=True)
            state.result()
            build_s = time.perf_counter() - started
        build = Workdir(workdir).current()
        figures = {
            "runner": name, "build_s": round(build_s, 1),
            **stage_windows(state.state_details.flow_run_id),
            "flow_process_peak_rss_mib": round(vm_hwm_mib(os.getpid())),
            "worker_peak_rss_mib": round(max(peaks.peaks.values(), default=0.0)),
            "workers_seen": len(peaks.peaks),
            "sha256": {f: hashlib.sha256((build.root / f).read_bytes()).hexdigest()[:16]
                       for f in ("features.parquet", "embeddings/embeddings.npy",
                                 "embeddings/users.parquet")},
        }
    print(json.dumps(figures))


def table(results: list[dict[str, Any]]) -> str:
    rows = ["build_s", *[s for s in STAGES], "flow_process_peak_rss_mib", "worker_peak_rss_mib"]
    lines = ["| | " + " | ".join(r["runner"] for r in results) + " |",
             "|---|" + "---|" * len(results)]
    for row in rows:
        tasks = next((r.get(f"{row} (tasks)") for r in results if f"{row} (tasks)" in r), None)
        label = f"{row} ({tasks} tasks)" if tasks else row
        lines.append(f"| {label} | " + " | ".join(str(r.get(row, "-")) for r in results) + " |")
    return "\n".join(lines)


def main() -> None:
    args = parse_args()
    if args.child:
        child(args)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    prepare(args)
    results = []
    for name in args.runners:
        command = [sys.executable, __file__, "--child", name, "--dir", str(args.dir)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr[-4000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"{name}: build {results[-1]['build_s']} s", flush=True)
    same = len({json.dumps(r["sha256"], sort_keys=True) for r in results}) == 1
    print(table(results))
    print(f"identical features.parquet, embeddings.npy and users.parquet: {same}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"users": args.users, "shards": args.shards,
                                        "identical": same, "runs": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()

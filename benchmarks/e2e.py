"""End to end through the real flows: per-stage wall time and peak RSS, plus audience quality.

    python benchmarks/e2e.py --users 1000000 --events-per-user 50 --out benchmarks/out/e2e-1m.json

Generates synthetic data (not timed), holds 30% of one trained conversion type's converters out of
the training conversions, runs the build flow (ingest + features, training, embedding, index) and
the export flow (10,000 seeds from the rest of that type, an audience of 5% of the population), all
in Prefect's embedded mode. Stage times come from the Prefect task runs; memory is the process RSS
sampled every 0.2 s, its peak taken within each task's time window. Quality is the lift at 5% of
the held-out converters, so speed is never bought with quality.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

import flows  # noqa: F401  (Prefect settings before prefect is imported)

STAGES = {
    "ingest + features": "ingest-and-features",
    "training": "train-encoder",
    "embedding": "embed-population",
    "index build": "index-",
    "export": "export-audience",
}
HELD_OUT_SHARE = 0.3


class RssSampler:
    """Samples this process's RSS in a background thread: (timestamp, bytes) pairs."""

    def __init__(self, every: float = 0.2) -> None:
        self.samples: list[tuple[float, int]] = []
        self._every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._process = psutil.Process(os.getpid())

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.time(), self._process.memory_info().rss))
            time.sleep(self._every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def peak_between(self, start: float, end: float) -> int:
        inside = [rss for t, rss in self.samples if start <= t <= end]
        return max(inside, default=0)


def prepare(data: Path, users: int, events_per_user: float, work: Path) -> dict:
    """Generate the data (once) and split one trained type's converters into train/held-out."""
    import polars as pl

    from lookalike.data.synthetic import generate

    if not (data / "truth.json").is_file():
        started = time.perf_counter()
        generate(data, users, events_per_user=events_per_user, seed=0)
        print(f"generated {users} users in {time.perf_counter() - started:.0f} s (not timed)")
    truth = json.loads((data / "truth.json").read_text())
    conversions = pl.read_parquet(data / "conversions.parquet")
    target = "subscribe"
    converters = (conversions.filter(pl.col("conversion_type") == target).get_column("user_id")
                  .unique().sort().shuffle(seed=1))
    n_held = int(converters.len() * HELD_OUT_SHARE)
    held_out, rest = converters.head(n_held), converters.tail(converters.len() - n_held)
    work.mkdir(parents=True, exist_ok=True)
    conversions.filter(~pl.col("user_id").is_in(held_out.implode())).write_parquet(work / "train_conversions.parquet")
    rest.head(10_000).to_frame().write_parquet(work / "seeds.parquet")
    held_out.to_frame().write_parquet(work / "held_out.parquet")
    return {"as_of": truth["as_of"], "held_out": n_held, "seeds": min(10_000, rest.len())}


def task_windows(flow_run_ids: list) -> dict[str, tuple[float, float]]:
    """Start and end time of each stage from the Prefect API (a stage may span several tasks)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def fetch() -> list:
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=flow_run_ids)))

    import asyncio

    runs = asyncio.run(fetch())
    windows = {}
    for stage, prefix in STAGES.items():
        matching = [r for r in runs if r.name.startswith(prefix) and r.start_time and r.end_time]
        if matching:
            windows[stage] = (min(r.start_time.timestamp() for r in matching),
                              max(r.end_time.timestamp() for r in matching))
    return windows


def run(args: argparse.Namespace) -> dict:
    import polars as pl

    from flows.build import build_flow
    from flows.export import export_flow
    from lookalike.evaluation.metrics import audience_hits

    work = args.work or Path(tempfile.mkdtemp(prefix="e2e-"))
    data = args.data or work / "data"
    split = prepare(data, args.users, args.events_per_user, work)
    config = data / "config.yaml"
    with RssSampler() as rss:
        started = time.time()
        build_state = build_flow(workdir=str(work / "w"), conversions=str(work / "train_conversions.parquet"),
                                 events=str(data / "events.parquet"), profiles=str(data / "profiles.parquet"),
                                 as_of=split["as_of"], config_path=str(config), return_state=True)
        build_state.result()
        export_state = export_flow(workdir=str(work / "w"), seeds=str(work / "seeds.parquet"),
                                   out=str(work / "audience.parquet"), fraction=0.05,
                                   config_path=str(config), return_state=True)
        export = export_state.result()
        total = time.time() - started
    windows = task_windows([build_state.state_details.flow_run_id, export_state.state_details.flow_run_id])
    audience = pl.read_parquet(export["audience"]).get_column("user_id")
    held_out = pl.read_parquet(work / "held_out.parquet").get_column("user_id")
    hits = audience_hits(audience, held_out, export["summary"]["eligible_users"])
    stages = {
        stage: {"seconds": round(end - start, 1), "peak_rss_gib": round(rss.peak_between(start, end) / 2**30, 2)}
        for stage, (start, end) in windows.items()
    }
    return {
        "users": args.users, "events_per_user": args.events_per_user,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "total_seconds": round(total, 1),
        "peak_rss_gib": round(max(r for _, r in rss.samples) / 2**30, 2),
        "stages": stages,
        "quality": {"seeds": split["seeds"], "held_out": split["held_out"], "audience": hits.audience_size,
                    "hits": hits.hits, "lift_at_5pct": round(hits.lift, 3), "recall_at_5pct": round(hits.recall, 4)},
    }


def markdown(result: dict) -> str:
    lines = [f"e2e at {result['users']:,} users x {result['events_per_user']:g} events/user: "
             f"{result['total_seconds']:.0f} s end to end, peak RSS {result['peak_rss_gib']} GiB",
             "", "| stage | wall s | peak RSS GiB |", "|---|---|---|"]
    lines += [f"| {stage} | {s['seconds']} | {s['peak_rss_gib']} |" for stage, s in result["stages"].items()]
    q = result["quality"]
    lines += ["", f"quality: lift at 5% = {q['lift_at_5pct']}x ({q['hits']} of {q['held_out']} held-out "
                  f"converters; {q['seeds']} seeds)"]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events-per-user", type=float, default=50.0)
    parser.add_argument("--data", type=Path, help="reuse generated data in this folder")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--out", type=Path, help="JSON results file")
    args = parser.parse_args()
    result = run(args)
    print(markdown(result))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

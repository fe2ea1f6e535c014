"""Ingest + point-in-time features: lookalike (polars, streaming) against the same event features
written with pandas, in the same run.

    python benchmarks/bench_features.py --users 1000000 --events-per-user 50

Generates the synthetic data first (not timed), then runs each variant in a fresh process so its
peak RSS is its own. Prints a Markdown table and writes JSON (--out). The pandas variant computes
the event features (counts per type and window, recency, tenure, active days, value statistics,
distinct items and categories, category shares) in idiomatic vectorized pandas; the lookalike
variant does all of ingest (validation, UTC normalization, duplicate removal), event and profile
features, scaling and writing, so the ratio favours pandas. Both report wall and CPU seconds (CPU:
every thread; on shared cores the fairer comparison of the work done).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from lookalike.testing.peak_rss import peak_rss_mib

WINDOWS_DAYS = (7, 30, 90, 365)  # the config's features.windows_days


def clock() -> tuple[float, float]:
    """Wall and CPU (every thread of this process) seconds, to pass to :func:`since`."""
    return time.perf_counter(), time.process_time()


def since(started: tuple[float, float]) -> dict[str, float]:
    """Wall and CPU seconds since ``started``: on shared cores CPU seconds compare the work done."""
    return {"seconds": time.perf_counter() - started[0], "cpu_seconds": time.process_time() - started[1]}


def run_lookalike(data: Path, out: Path, partition_events: int | None) -> dict:
    from lookalike.core.config import load_config
    from lookalike.data.features import compute_features, parse_as_of
    from lookalike.data.ingest import load_events, load_profiles

    truth = json.loads((data / "truth.json").read_text())
    config = load_config(data / "config.yaml")
    if partition_events is not None:
        features = {**config.features.model_dump(), "partition_events": partition_events}
        config = config.model_validate({**config.model_dump(), "features": features})
    started = clock()
    events = load_events(str(data / "events.parquet"))
    profiles = load_profiles(str(data / "profiles.parquet"))
    result = compute_features(events, profiles, out / "features.parquet", out / "spec.json",
                              as_of=truth["as_of"], config=config)
    return {**since(started), "users": result.n_users,
            "features": result.n_numeric + result.n_categorical, "events": events.report.rows}


def run_pandas(data: Path, out: Path, partition_events: int | None) -> dict:
    """The event features in idiomatic, vectorized pandas: categorical event types and
    categories, one named aggregation per user, window flags summed in one group-by per key,
    day numbers from ``dt.floor``, category shares from one ``size().unstack()``."""
    import pandas as pd

    truth = json.loads((data / "truth.json").read_text())
    as_of = pd.Timestamp(truth["as_of"])
    started = clock()
    events = pd.read_parquet(data / "events.parquet")
    rows = len(events)
    events = events[events["event_time"] < as_of].drop_duplicates()
    events = events.astype({"event_type": "category", "category": "category"})
    age = as_of - events["event_time"]
    flags = pd.DataFrame({f"{days}d": (age < pd.Timedelta(days=days)).to_numpy()
                          for days in WINDOWS_DAYS}, index=events.index)
    flags[["user_id", "event_type"]] = events[["user_id", "event_type"]]
    per_window = flags.drop(columns="event_type").groupby("user_id").sum()
    per_window.columns = [f"n_events_{c}" for c in per_window.columns]
    per_type = flags.groupby(["user_id", "event_type"], observed=True).sum().unstack(fill_value=0)
    per_type.columns = [f"n_{kind}_{window}" for window, kind in per_type.columns]
    features = events.groupby("user_id").agg(
        n_events_total=("event_time", "size"), first=("event_time", "min"),
        last=("event_time", "max"), value_sum=("value", "sum"), value_mean=("value", "mean"),
        value_max=("value", "max"), n_items=("item_id", "nunique"),
        n_categories=("category", "nunique"),
    )
    day = pd.Timedelta(days=1)
    features["recency_days"] = (as_of - features.pop("last")) / day
    features["tenure_days"] = (as_of - features.pop("first")) / day
    features["active_days"] = events["event_time"].dt.floor("D").groupby(events["user_id"]).nunique()
    counts = events.groupby(["user_id", "category"], observed=True).size().unstack(fill_value=0)
    shares = counts.div(counts.sum(axis=1), axis=0).add_prefix("cat_share_")
    counted = pd.concat([per_window, per_type, shares], axis=1)
    features = features.join(counted.reindex(features.index, fill_value=0))
    features.reset_index().to_parquet(out / "pandas_features.parquet")
    return {**since(started), "users": len(features), "features": features.shape[1],
            "events": rows}


VARIANTS = {"lookalike": run_lookalike, "pandas": run_pandas}


def child(variant: str, data: Path, out: Path, partition_events: int | None) -> None:
    result = VARIANTS[variant](data, out, partition_events)
    result["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(result))


def measure(variant: str, data: Path, out: Path, partition_events: int | None) -> dict:
    extra = [] if partition_events is None else ["--partition-events", str(partition_events)]
    completed = subprocess.run(
        [sys.executable, __file__, "--child", variant, "--data", str(data), "--work", str(out), *extra],
        check=True, capture_output=True, text=True,
    )
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--events-per-user", type=float, default=50.0)
    parser.add_argument("--data", type=Path, help="reuse generated data in this folder")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--out", type=Path, help="JSON results file")
    parser.add_argument("--child", choices=sorted(VARIANTS))
    parser.add_argument("--skip-pandas", action="store_true")
    parser.add_argument("--partition-events", type=int,
                        help="override features.partition_events (default: the config's); "
                        "a number above the event count computes event features in one partition")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.data, args.work, args.partition_events)
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-features-"))
    data = args.data or work / "data"
    if not (data / "truth.json").is_file():
        from lookalike.data.synthetic import generate

        started = time.perf_counter()
        generate(data, args.users, events_per_user=args.events_per_user, seed=0)
        print(f"generated {args.users} users in {time.perf_counter() - started:.1f} s (not timed)")
    variants = ["lookalike"] + ([] if args.skip_pandas else ["pandas"])
    results = {v: measure(v, data, work, args.partition_events) for v in variants}
    rows = results["lookalike"]["events"]
    print(f"\n{args.users} users, {rows:,} events\n")
    print("| variant | wall s | CPU s | events/s | peak RSS MiB | users | features |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | {rows / r['seconds']:,.0f} "
              f"| {r['peak_rss_mib']:.0f} | {r['users']:,} | {r['features']} |")
    if "pandas" in results:
        ratio = results["pandas"]["seconds"] / results["lookalike"]["seconds"]
        cpu_ratio = results["pandas"]["cpu_seconds"] / results["lookalike"]["cpu_seconds"]
        print(f"\nlookalike is {ratio:.1f}x faster than pandas ({cpu_ratio:.1f}x less CPU time)")
        results["speedup_vs_pandas"] = ratio
        results["cpu_ratio_vs_pandas"] = cpu_ratio
    if args.out:
        args.out.write_text(json.dumps({"users": args.users, "events": rows,
                                        "partition_events": args.partition_events, **results}, indent=2))


if __name__ == "__main__":
    main()

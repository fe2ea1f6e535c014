"""Scaling series: e2e.py at several population sizes, a plot of time and memory against users, and
the fitted growth exponent of each stage (the slope of log time against log users).

    python benchmarks/scaling.py --users 100000 300000 1000000 3000000 --events-per-user 50

Each size runs in its own process (fresh memory); results already in --out-dir are reused, so a
series can be extended one size at a time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def run_size(users: int, events_per_user: float, out_dir: Path) -> dict:
    out = out_dir / f"e2e-{users}.json"
    if not out.is_file():
        subprocess.run(
            [sys.executable, str(HERE / "e2e.py"), "--users", str(users), "--events-per-user",
             str(events_per_user), "--work", str(out_dir / f"work-{users}"), "--out", str(out)],
            check=True, env={**os.environ, "PREFECT_HOME": str(out_dir / "prefect-home")},
        )
    return json.loads(out.read_text())


def growth_exponents(results: list[dict]) -> dict[str, float]:
    """Least-squares slope of log(seconds) on log(users) per stage, and for the total."""
    users = np.log([r["users"] for r in results])
    series = {stage: [r["stages"][stage]["seconds"] for r in results] for stage in results[0]["stages"]}
    series["total"] = [r["total_seconds"] for r in results]
    return {stage: float(np.polyfit(users, np.log(np.maximum(seconds, 0.05)), 1)[0])
            for stage, seconds in series.items()}


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    users = [r["users"] for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for stage in results[0]["stages"]:
        left.plot(users, [r["stages"][stage]["seconds"] for r in results], marker="o", label=stage)
    left.plot(users, [r["total_seconds"] for r in results], marker="s", color="black", label="total")
    right.plot(users, [r["peak_rss_gib"] for r in results], marker="o", color="black")
    for axis, label in ((left, "wall time (s)"), (right, "peak RSS (GiB)")):
        axis.set_xscale("log")
        axis.set_xlabel("users")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    left.set_yscale("log")
    left.legend(fontsize=8)
    fig.suptitle("lookalike end to end on 2 cores (synthetic data)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--events-per-user", type=float, default=50.0)
    parser.add_argument("--out-dir", type=Path, default=HERE / "out" / "scaling")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    results = [run_size(n, args.events_per_user, args.out_dir) for n in sorted(args.users)]
    exponents = growth_exponents(results) if len(results) > 1 else {}
    print("| users | " + " | ".join(results[0]["stages"]) + " | total s | peak RSS GiB | lift@5% |")
    print("|---" * (len(results[0]["stages"]) + 4) + "|")
    for r in results:
        cells = [str(r["stages"][s]["seconds"]) for s in r["stages"]]
        print(f"| {r['users']:,} | " + " | ".join(cells)
              + f" | {r['total_seconds']} | {r['peak_rss_gib']} | {r['quality']['lift_at_5pct']} |")
    if exponents:
        print("\ngrowth exponents: " + ", ".join(f"{k} {v:.2f}" for k, v in exponents.items()))
        plot(results, args.out_dir / "scaling.png")
    (args.out_dir / "scaling.json").write_text(json.dumps({"results": results, "exponents": exponents}, indent=2))


if __name__ == "__main__":
    main()

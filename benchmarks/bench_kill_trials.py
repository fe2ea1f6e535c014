"""Crash-safety benchmark (issues 9 and 22): SIGKILL each writer inside its write window, count
the kills that landed before the job finished and the states that survived.

Writers (``lookalike.testing.kill_harness``): ``build`` (a whole build), ``switch`` (the build's
manifest and ``current.json`` rename), ``export`` (the audience's publish) and ``erase`` (an
erasure). A dry run records each job's writes; every trial kills the job at a write drawn from the
writer's window, just before it or after a random delay up to the next write. After each kill the
harness checks that the current build verifies against its manifest and loads and that the last
audience reads with its row count; then it runs the killed job again and checks that it finishes
(a build with a training checkpoint must resume from it; an erasure must leave no erased user and
no other build). Prints one line per trial, then the counts as JSON (also written to ``--out``)
and a Markdown table; exits non-zero when under 90% of a writer's kills landed before the job
finished or any state was corrupt. Example::

    python benchmarks/bench_kill_trials.py --trials 50 --users 2000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from lookalike.testing.fixtures import reliability_config, small_data, write_seeds
from lookalike.testing.kill_harness import (
    JOB_OF,
    WRITERS,
    kill_trial,
    prepare,
    record_timeline,
    summary,
)

MIN_LANDED_SHARE = 0.9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50, help="Kill trials per writer.")
    parser.add_argument("--users", type=int, default=2000, help="Synthetic users.")
    parser.add_argument("--writers", nargs="+", choices=WRITERS, default=list(WRITERS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the figures.")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = small_data(root / "data", args.users)
        write_seeds(data, root / "seeds.parquet", count=40)
        setup = prepare(root, data, reliability_config(), root / "seeds.parquet")
        timelines = {job: record_timeline(setup, job) for job in {JOB_OF[w] for w in args.writers}}
        for job, timeline in timelines.items():
            print(f"{job}: {len(timeline.events)} writes in {timeline.done_seconds:.1f}s", flush=True)
        trials = []
        for writer in args.writers:
            for number in range(args.trials):
                trial = kill_trial(setup, writer, timelines[JOB_OF[writer]], rng)
                trials.append(trial)
                print(f"{writer:6s} {number + 1:3d} at {trial.event[:40]:40s} +{trial.delay_s:6.3f}s "
                      f"{'landed' if trial.landed else 'AFTER FINISH'} survived={trial.survived} "
                      f"restart_ok={trial.restarted} checkpoint={trial.checkpoint_left} "
                      f"resumed={trial.resumed} {trial.problem}", flush=True)
    figures = {**summary(trials), "seconds": round(time.perf_counter() - started, 1),
               "args": {k: str(v) for k, v in vars(args).items()}}
    print(json.dumps(figures, indent=2))
    print("| writer | trials | kills before the job finished | state intact after the kill | "
          "restart finished and intact |\n|---|---|---|---|---|")
    for writer in args.writers:
        row = figures[writer]
        print(f"| {writer} | {row['trials']} | {row['landed_before_finish']} "
              f"({row['landed_share']:.0%}) | {row['survived']} | {row['restarted_ok']} |")
    if args.out:
        args.out.write_text(json.dumps({**figures, "trials": [asdict(t) for t in trials]}, indent=2))
    short = [w for w in args.writers if figures[w]["landed_share"] < MIN_LANDED_SHARE]
    if short or figures["corrupt_states"]:
        sys.exit(f"landed share under {MIN_LANDED_SHARE:.0%}: {short}; "
                 f"corrupt states: {figures['corrupt_states']}")


if __name__ == "__main__":
    main()

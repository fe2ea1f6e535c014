"""Crash-safety benchmark (issue 9): SIGKILL builds and exports at random moments, count survivals.

Half of ``--trials`` kill a build (features, training, embedding, index, manifest: whichever is
running after a delay drawn uniformly from [0, ``--build-delay``] s after the child's imports), half
kill an export (delay in [0, ``--export-delay``] s). After each kill the harness
(``tests/kill_harness.py``) checks that the current build verifies against its manifest and loads,
and that the last audience reads with its row count; then it restarts the killed job and checks
that it finishes (a build with a training checkpoint must resume from it). Prints one line per
trial, then the counts as JSON (also written to ``--out``).

Example::

    python benchmarks/bench_kill_trials.py --trials 50 --users 2000
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # this checkout's package

from lookalike.testing.kill_harness import build_trial, export_trial, prepare, summary  # noqa: E402
from lookalike.testing.fixtures import reliability_config, small_data, write_seeds  # noqa: E402


def last_step(line: str) -> str:
    """The job's last progress line, shortened to its kind ("epoch", "embedded", "done", ...)."""
    words = line.split()
    return words[0] if words else "(nothing)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50, help="Kill trials, half builds.")
    parser.add_argument("--users", type=int, default=2000, help="Synthetic users.")
    parser.add_argument("--build-delay", type=float, default=5.0, help="Longest kill delay, build.")
    parser.add_argument("--export-delay", type=float, default=1.0,
                        help="Longest kill delay, export.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON file for the figures.")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = small_data(root / "data", args.users)
        write_seeds(data, root / "seeds.parquet", count=40)
        setup = prepare(root, data, reliability_config(), root / "seeds.parquet")
        trials = []
        start = time.perf_counter()
        for number in range(args.trials):
            if number % 2 == 0:
                trial = build_trial(setup, rng, args.build_delay)
            else:
                trial = export_trial(setup, rng, args.export_delay)
            trials.append(trial)
            print(f"{number + 1:3d} {trial.kind:6s} kill at {trial.delay_s:5.2f}s "
                  f"({'running' if trial.killed else 'finished'}; last: {trial.last_line[:50]!r}) "
                  f"survived={trial.survived} restart_ok={trial.restarted} "
                  f"checkpoint={trial.checkpoint_left} resumed={trial.resumed} {trial.problem}",
                  flush=True)
    figures = {**summary(trials), "seconds": round(time.perf_counter() - start, 1),
               "args": {k: str(v) for k, v in vars(args).items()}}
    figures["last_line_before_kill"] = dict(
        Counter(f"{t.kind}: {last_step(t.last_line)}" for t in trials).most_common()
    )
    survived = sum(t.survived and t.restarted for t in trials)
    figures["survived_total"] = f"{survived}/{len(trials)}"
    print(json.dumps(figures, indent=2))
    if args.out:
        everything = {**figures, "trials": [asdict(t) for t in trials]}
        args.out.write_text(json.dumps(everything, indent=2))


if __name__ == "__main__":
    main()

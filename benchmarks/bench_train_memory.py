"""Training memory and time on a large feature table: does training follow the sample, not the
population (``train.population_sample``)?

Writes a latent-variable toy table (lookalike.testing.toy_tables; ``--noise-columns`` widens it)
of ``--users`` users under ``--data`` unless one is there, then trains on it in a fresh process and
reports that process's peak RSS (``VmHWM``), the set-up seconds (reading and encoding the rows,
splitting converters), the epochs' seconds, the whole run's wall seconds and the held-out recall.
The training process imports ``lookalike`` from ``PYTHONPATH`` when set, so the same command
measures another checkout::

    python benchmarks/bench_train_memory.py --users 5000000 --data /tmp/train5m
    PYTHONPATH=/path/to/other/checkout python benchmarks/bench_train_memory.py --users 5000000 \\
        --data /tmp/train5m --no-sample-setting
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=5_000_000)
    parser.add_argument("--noise-columns", type=int, default=40)
    parser.add_argument("--conversion-rate", type=float, default=0.02, help="converters per type")
    parser.add_argument("--data", type=Path, required=True, help="folder of the toy tables")
    parser.add_argument("--population-sample", type=int, default=None,
                        help="train.population_sample (default: the config's)")
    parser.add_argument("--no-sample-setting", action="store_true",
                        help="set no train.population_sample (a checkout without the setting)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps", type=int, default=200, help="train.steps_per_epoch")
    parser.add_argument("--seed", type=int, default=0, help="train.seed")
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    parser.add_argument("--train-only", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args()


def ensure_data(args: argparse.Namespace) -> None:
    from lookalike.testing.toy_tables import write_toy_tables

    if (args.data / "features.parquet").is_file():
        return
    args.data.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    write_toy_tables(args.data, args.users, seed=3, n_noise=args.noise_columns,
                     conversion_rate=args.conversion_rate)
    print(f"wrote {args.users:,} users to {args.data} in {time.monotonic() - started:.0f}s")


def train_once(args: argparse.Namespace) -> dict[str, object]:
    import tempfile

    import lookalike
    from lookalike.core.config import LookalikeConfig
    from lookalike.encoder.train import train
    from lookalike.testing.peak_rss import peak_rss_mib

    raw = {"epochs": args.epochs, "steps_per_epoch": args.steps, "seed": args.seed}
    if not args.no_sample_setting and args.population_sample is not None:
        raw["population_sample"] = args.population_sample
    config = LookalikeConfig.model_validate({"train": raw})
    messages: list[str] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as out:
        result = train(args.data / "features.parquet", args.data / "feature_spec.json",
                       args.data / "conversions.parquet", Path(out), config,
                       progress=messages.append)
    wall = time.monotonic() - started
    setup = next(float(m.split()[-1].rstrip("s")) for m in messages if m.startswith("set-up took"))
    return {
        "lookalike": str(Path(lookalike.__file__).parent),
        "population_sample": getattr(config.train, "population_sample", None),
        "data_line": next(m for m in messages if m.startswith("training on")),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "setup_s": setup,
        "epochs_s": round(result.elapsed_seconds, 1),
        "wall_s": round(wall, 1),
        "validation_recall": result.validation_recall,
    }


def main() -> None:
    args = parse_args()
    if args.train_only:
        print(json.dumps(train_once(args)))
        return
    ensure_data(args)
    child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--train-only"],
                           check=True, capture_output=True, text=True)
    figures = json.loads(child.stdout.strip().splitlines()[-1])
    print(json.dumps(figures, indent=2))
    if args.out:
        args.out.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()

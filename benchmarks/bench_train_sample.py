"""Does training on a population sample (``train.population_sample``) cost quality?

On a latent-variable toy table (lookalike.testing.toy_tables) of ``--users`` users, for each train
seed: train once on every row and once per ``--sample`` size, then score every model on the same
held-out converters and background (the validation set of the run on every row; the converter split
is the same users either way). Reports held-out recall in the top ``validation_top_fraction`` per
run, the users read and the training wall seconds::

    python benchmarks/bench_train_sample.py --users 1000000 --sample 300000 --seeds 2 \\
        --data /tmp/train1m --out bench_train_sample.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.core.config import LookalikeConfig
from lookalike.data.spec import FeatureSpec
from lookalike.encoder.model import load_model
from lookalike.encoder.train import (
    load_training_data,
    train,
    validation_recalls,
    validation_set,
)
from lookalike.testing.toy_tables import write_toy_tables


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, action="append", help="population_sample (repeat)")
    parser.add_argument("--seeds", type=int, default=1, help="train seeds 0..seeds-1")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--data", type=Path, required=True, help="folder of the toy tables")
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    return parser.parse_args()


def config_for(args: argparse.Namespace, seed: int, sample: int) -> LookalikeConfig:
    return LookalikeConfig.model_validate({"train": {
        "seed": seed, "epochs": args.epochs, "patience": args.epochs,
        "time_budget_seconds": 1e6, "population_sample": sample,
    }})


def main() -> None:
    args = parse_args()
    paths = args.data / "features.parquet", args.data / "feature_spec.json"
    conversions = args.data / "conversions.parquet"
    if not paths[0].is_file():
        args.data.mkdir(parents=True, exist_ok=True)
        write_toy_tables(args.data, args.users, seed=3)
    spec = FeatureSpec.load(paths[1])
    rows: list[dict[str, Any]] = []
    for seed in range(args.seeds):
        every = config_for(args, seed, args.users)  # at least the population: every row
        data = load_training_data(paths[0], spec, conversions, every.train)
        validation = validation_set(data, every.train)
        for sample in [args.users, *(args.sample or [])]:
            config = config_for(args, seed, sample)
            messages: list[str] = []
            started = time.monotonic()
            with tempfile.TemporaryDirectory() as out:
                result = train(*paths, conversions, Path(out), config, progress=messages.append)
                recalls = validation_recalls(load_model(Path(out)), data.features, validation,
                                             config.train)
            rows.append({
                "seed": seed, "population_sample": sample,
                "read": next(m for m in messages if m.startswith("training on")).split(";")[0],
                "recall_on_full_validation": float(np.mean(recalls)),
                "recall_by_type": dict(zip(data.types, recalls, strict=True)),
                "own_validation_recall": result.validation_recall,
                "best_epoch": result.best_epoch,
                "wall_s": round(time.monotonic() - started, 1),
            })
            print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

"""Encoder benchmark: training throughput and quality, population embedding throughput.

On a latent-variable toy table (lookalike.testing.toy_tables) of ``--users`` users, for each variant and
train seed: train with the default config (plus the variant's overrides), then report

- training: wall time of the whole run, steps/s and (anchor, positive, negative) tuples/s over the
  training steps, epochs run;
- quality: the best held-out recall in the top ``validation_top_fraction`` against the raw-feature
  kNN baseline on the same split and seeds (standardized encoded features, same seed aggregation);
- embedding (first variant): ``embed_population`` users/s, against reading + encoding alone.

Example::

    python benchmarks/bench_encoder.py --users 50000 --dim 64 --out bench_encoder.json
    python benchmarks/bench_encoder.py --users 50000 --seeds 3 \\
        --variant shared:model.share_towers=true --variant separate:model.share_towers=false
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import polars as pl

from lookalike.core.config import LookalikeConfig
from lookalike.encoder.embed import embed_population
from lookalike.data.spec import FeatureSpec, encode
from lookalike.testing.toy_tables import ToyPaths, write_toy_tables
from lookalike.encoder.train import TrainResult, load_training_data, train, validation_set
from lookalike.data.spec import raw_feature_vectors
from lookalike.encoder.heldout import heldout_recall


def parse_variant(text: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """``name:section.field=json,section.field=json`` -> (name, {section: {field: value}})."""
    name, _, assignments = text.partition(":")
    overrides: dict[str, dict[str, Any]] = {}
    for assignment in filter(None, assignments.split(",")):
        key, _, value = assignment.partition("=")
        section, _, field = key.partition(".")
        overrides.setdefault(section, {})[field] = json.loads(value)
    return name, overrides


def make_config(
    overrides: dict[str, dict[str, Any]], args: argparse.Namespace, seed: int
) -> LookalikeConfig:
    raw: dict[str, dict[str, Any]] = {"model": {"embedding_dim": args.dim}, "train": {"seed": seed}}
    if args.epochs:
        raw["train"]["epochs"] = args.epochs
    for section, fields in overrides.items():
        raw.setdefault(section, {}).update(fields)
    return LookalikeConfig.model_validate(raw)


def raw_baseline_recall(paths: ToyPaths, config: LookalikeConfig) -> float:
    """Raw-feature kNN recall on the split and background ``train`` uses for this config."""
    spec = FeatureSpec.load(paths.spec)
    data = load_training_data(paths.features, spec, paths.conversions, config.train)
    validation = validation_set(data, config.train)
    vectors = raw_feature_vectors(data.features, spec.cardinalities)
    recalls = [
        heldout_recall(
            vectors[seeds], vectors[heldout], vectors[background],
            top_fraction=config.train.validation_top_fraction, top_m=config.train.validation_top_m,
        )
        for seeds, heldout, background in zip(
            validation.seeds, validation.heldout, validation.background, strict=True
        )
    ]
    return float(np.mean(recalls))


def training_figures(result: TrainResult, wall_seconds: float) -> dict[str, float]:
    history = json.loads(result.manifest.read_text())["metrics"]["history"]
    train_seconds = sum(h["train_seconds"] for h in history)
    return {
        "wall_seconds": wall_seconds,
        "epochs": result.epochs_run,
        "best_epoch": result.best_epoch,
        "steps_per_s": sum(h["steps"] for h in history) / train_seconds,
        "tuples_per_s": sum(h["tuples"] for h in history) / train_seconds,
        "validation_seconds_per_epoch": float(np.mean([h["validation_seconds"] for h in history])),
        "recall": result.validation_recall,
        "effective_rank": result.health.effective_rank,
    }


def encode_only_users_per_s(paths: ToyPaths, batch_size: int) -> float:
    spec = FeatureSpec.load(paths.spec)
    started = time.perf_counter()
    parquet = pq.ParquetFile(paths.features)
    for batch in parquet.iter_batches(batch_size=batch_size, columns=spec.columns):
        encode(pl.from_arrow(batch), spec)  # type: ignore[arg-type]
    return parquet.metadata.num_rows / (time.perf_counter() - started)


def embedding_figures(
    paths: ToyPaths, model_dir: Path, out_dir: Path, batch_size: int
) -> dict[str, float]:
    started = time.perf_counter()
    embed_population(paths.features, paths.spec, model_dir, out_dir, batch_size=batch_size)
    users_per_s = pq.ParquetFile(paths.features).metadata.num_rows / (time.perf_counter() - started)
    baseline = encode_only_users_per_s(paths, batch_size)
    return {
        "embed_users_per_s": users_per_s,
        "encode_only_users_per_s": baseline,
        "model_share_of_embed_time": 1.0 - users_per_s / baseline,
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    columns = list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--signal-columns", type=int, default=8)
    parser.add_argument("--noise-columns", type=int, default=24)
    parser.add_argument("--types", type=int, default=3, help="conversion types")
    parser.add_argument("--conversion-rate", type=float, default=0.05, help="converters per type")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's epochs")
    parser.add_argument("--seeds", type=int, default=1, help="train seeds 0..seeds-1 per variant")
    parser.add_argument("--variant", action="append", help="name:section.field=json,... (repeat)")
    parser.add_argument("--batch-size", type=int, default=65_536, help="embedding batch size")
    parser.add_argument("--workdir", type=Path, default=None, help="for the temporary files")
    parser.add_argument("--out", type=Path, default=None, help="JSON results")
    return parser.parse_args()


def write_data(args: argparse.Namespace, folder: Path) -> ToyPaths:
    return write_toy_tables(
        folder,
        args.users,
        n_signal=args.signal_columns,
        n_noise=args.noise_columns,
        conversion_types=tuple(f"type_{t}" for t in range(args.types)),
        conversion_rate=args.conversion_rate,
    )


def train_variant(
    paths: ToyPaths, config: LookalikeConfig, model_dir: Path
) -> dict[str, float]:
    started = time.perf_counter()
    result = train(
        paths.features, paths.spec, paths.conversions, model_dir, config, progress=None
    )
    figures = training_figures(result, time.perf_counter() - started)
    raw = raw_baseline_recall(paths, config)
    return {**figures, "raw_knn_recall": raw, "recall_vs_raw": figures["recall"] / raw}


def main() -> None:
    args = parse_args()
    variants = [parse_variant(v) for v in args.variant or ["default:"]]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        root = Path(tmp)
        paths = write_data(args, root / "data")
        for name, overrides in variants:
            for seed in range(args.seeds):
                config = make_config(overrides, args, seed)
                figures = train_variant(paths, config, root / f"{name}-{seed}")
                rows.append({"variant": name, "seed": seed, **figures})
                print(f"{name} seed {seed}: recall {figures['recall']:.3f} "
                      f"vs raw {figures['raw_knn_recall']:.3f}", flush=True)
        first_model = root / f"{variants[0][0]}-0"
        embedding = embedding_figures(paths, first_model, root / "embeddings", args.batch_size)
    summary = _variant_means(rows)
    print(f"\n## Encoder benchmark, {args.users} users, dim {args.dim}\n")
    print(markdown(rows), markdown([embedding]), markdown(summary), sep="\n\n")
    if args.out:
        payload = {"args": {k: str(v) for k, v in vars(args).items()}, "training": rows,
                   "variants": summary, "embedding": embedding}
        args.out.write_text(json.dumps(payload, indent=2))


def _variant_means(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    names = list(dict.fromkeys(r["variant"] for r in rows))
    keys = ["recall", "raw_knn_recall", "wall_seconds", "steps_per_s", "tuples_per_s", "epochs"]
    summary = []
    for name in names:
        mine = [r for r in rows if r["variant"] == name]
        means = {f"mean_{k}": float(np.mean([r[k] for r in mine])) for k in keys}
        summary.append({"variant": name, "runs": len(mine), **means,
                        "std_recall": float(np.std([r["recall"] for r in mine]))})
    return summary


if __name__ == "__main__":
    main()

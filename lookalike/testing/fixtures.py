"""Small end-to-end data and fast configs for the tests and the kill-trial benchmark: a real
build of a few thousand synthetic users takes about 2 s."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl

from lookalike.build_steps import BuildRequest
from lookalike.core.config import LookalikeConfig
from lookalike.data.synthetic import generate

SEED_TYPE = "subscribe"


def fast_config(**train: object) -> LookalikeConfig:
    """A small model and short training that still learns on the toy tables."""
    return LookalikeConfig.model_validate(
        {
            "model": {"embedding_dim": 16, "hidden_dims": [64], "numeric_bins": 8},
            # the export's quality estimate refits the strategy per fold: its own tests turn it on
            "audience": {"quality_estimate": False},
            "train": {
                "epochs": 2,
                "converters_per_type": 32,
                "negatives_per_batch": 128,
                "validation_background": 2000,
                "health_sample": 1000,
                "threads": 1,
                **train,
            },
        }
    )


def small_data(folder: Path, users: int = 2000) -> Path:
    """Synthetic events, profiles and conversions in ``folder`` (ids are large int64s)."""
    generate(folder, users, events_per_user=8, seed=0)
    return folder


def reliability_config(**sections: dict) -> LookalikeConfig:
    """The fast test config with a single-threaded index (bit-reproducible) and small minimums."""
    base = fast_config().model_dump()
    base["index"] = {"threads": 1, "recall_queries": 50, "recall_floor": 0.5}
    base["audience"] = {"quality_estimate": False, "min_seed_size": 5, "warn_seed_size": 5,
                        "min_audience_size": 20,
                        "distinctiveness_sample": 500, "report_sample": 500}
    base["privacy"] = {"min_seed_difference": 10}
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return LookalikeConfig.model_validate(base)


def drifted_copy(source: Path, target: Path) -> Path:
    """``source``'s synthetic tables with drifted features: every numeric profile column but the
    integer codes moved by two standard deviations, event values five times larger; the same
    users and conversions. Returns ``target``."""
    target.mkdir(parents=True)
    profiles = pl.read_parquet(source / "profiles.parquet")
    codes = ("region_code", "plan_code", "store_code")
    numeric = [c for c, t in profiles.schema.items()
               if c != "user_id" and t.is_numeric() and c not in codes]
    profiles.with_columns([pl.col(c) + 2 * pl.col(c).std() for c in numeric]) \
        .write_parquet(target / "profiles.parquet")
    pl.read_parquet(source / "events.parquet").with_columns(pl.col("value") * 5) \
        .write_parquet(target / "events.parquet")
    shutil.copy(source / "conversions.parquet", target / "conversions.parquet")
    return target


def request_for(data: Path, config: LookalikeConfig, profiles: Path | None = None) -> BuildRequest:
    return BuildRequest(events=str(data / "events.parquet"),
                        profiles=str(profiles or data / "profiles.parquet"),
                        conversions=str(data / "conversions.parquet"), config=config)


def write_seeds(data: Path, out: Path, count: int | None = None, skip: int = 0) -> pl.Series:
    """Converters of SEED_TYPE as a seed list (ids sorted; ``skip`` leaves out the first ones)."""
    conversions = pl.read_parquet(data / "conversions.parquet")
    ids = conversions.filter(pl.col("conversion_type") == SEED_TYPE)["user_id"].unique().sort()
    ids = ids[skip:] if count is None else ids[skip : skip + count]
    pl.DataFrame({"user_id": ids}).write_parquet(out)
    return ids

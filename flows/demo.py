"""``lookalike demo``: sample data, a full build and an exported audience, in one command.

The seeds are the earlier half of the converters of the conversion type held back from training
(the later half is held out), so the headline lift measures what users do every day: expand a
seed list the model has never seen.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
import yaml

from flows.runners import Runner
from lookalike.core.artifacts import read_json
from lookalike.core.progress import Progress
from lookalike.evaluation.metrics import AudienceHits, audience_hits
from lookalike.evaluation.split import holdout_split
from lookalike.data.synthetic import generate

DEMO_OVERRIDES = {
    "train": {"time_budget_seconds": 90.0},
    "audience": {"min_audience_size": 100, "min_seed_size": 50},
}


@dataclass(frozen=True)
class DemoResult:
    audience: Path
    report: Path
    report_html: Path
    size: int
    seeds: int
    hits: AudienceHits
    seed_type: str


def run_demo(folder: Path, runner: Runner, users: int = 50_000, events_per_user: float = 30.0,
             fraction: float = 0.05, progress: Progress = print) -> DemoResult:
    """Generate (once), build (or reuse) and export with ``runner``; returns paths and the
    held-out lift."""
    data = folder / "data"
    if not (data / "truth.json").is_file():
        generate(data, users, events_per_user=events_per_user, seed=0, progress=progress)
    truth = read_json(data / "truth.json")
    config_path = demo_config(data / "config.yaml", folder / "config.yaml")
    runner.build(workdir=str(folder / "work"), events=str(data / "events.parquet"),
                 profiles=str(data / "profiles.parquet"),
                 conversions=str(data / "conversions.parquet"), as_of=truth["as_of"],
                 config_path=str(config_path))
    seed_type = truth["held_back_type"]
    split = holdout_split(pl.read_parquet(data / "conversions.parquet")
                          .filter(pl.col("conversion_type") == seed_type), 0.5, seed=0)[seed_type]
    seeds, held_out = split.seeds, split.heldout  # the later half of the converters is held out
    seeds_path = folder / "seeds.csv"
    seeds.to_frame().write_csv(seeds_path)
    result = runner.export(workdir=str(folder / "work"), seeds=str(seeds_path),
                           out=str(folder / "out" / f"{seed_type}_lookalikes.parquet"),
                           fraction=fraction, config_path=str(config_path))
    audience = pl.read_parquet(result["audience"]).get_column("user_id")
    eligible = result["summary"]["eligible_users"]
    hits = audience_hits(audience, held_out, eligible)
    return DemoResult(Path(result["audience"]), Path(result["report_md"]),
                      Path(result["report_html"]), audience.len(), seeds.len(), hits, seed_type)


def demo_config(generated: Path, out: Path) -> Path:
    """The generator's sample config plus settings that keep the demo fast on a laptop."""
    config = yaml.safe_load(generated.read_text()) or {}
    for section, values in DEMO_OVERRIDES.items():
        config.setdefault(section, {}).update(values)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(config, sort_keys=True))
    return out

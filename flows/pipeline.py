"""The scheduled pipeline: rebuild when inputs or config changed (else reuse), then refresh every
audience listed in the config's ``schedule.audiences``.

A rebuild reuses the current build's encoder (a refresh, no training) until a retrain is due:
``train.retrain_interval_days`` passed, a ``drift`` limit was crossed, or the encoder settings
changed; the build's log says which (``encoder: refresh: ...`` / ``encoder: retrain: ...``).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from prefect import flow

from flows.build import build_flow
from flows.common import log
from flows.export import export_flow
from lookalike.core.config import load_config
from lookalike.core.errors import LookalikeError


@flow(name="lookalike-pipeline")
def pipeline_flow(config_path: str) -> dict[str, Any]:
    """Build (or reuse) from the scheduled inputs, then export each configured audience."""
    schedule = load_config(config_path).schedule
    if not schedule.workdir or not schedule.conversions:
        raise LookalikeError(f"{config_path}: schedule.workdir and schedule.conversions are required")
    base = Path(config_path).resolve().parent
    path = functools.partial(config_relative, base)
    built = build_flow(workdir=path(schedule.workdir), conversions=path(schedule.conversions),
                       events=path(schedule.events), profiles=path(schedule.profiles),
                       config_path=config_path)
    exports = []
    for audience in schedule.audiences:
        log(f"exporting audience {audience.name}")
        exports.append(export_flow(
            workdir=path(schedule.workdir), seeds=path(audience.seeds),
            out=path(audience.out), size=audience.size, fraction=audience.fraction,
            exclude=path(audience.exclude), eligible=path(audience.eligible),
            strategy=audience.strategy, name=audience.name, config_path=config_path,
        ))
    return {"build": built, "exports": exports}


def config_relative(base: Path, value: str | None) -> str | None:
    """Config paths are relative to the config file's folder (URLs are left alone)."""
    if value is None or "://" in value:
        return value
    return str((base / value).resolve())

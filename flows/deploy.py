"""Register the scheduled pipeline as a Prefect deployment and serve it.

Run ``lookalike serve --config F`` (or ``python -m flows.deploy F``) with ``PREFECT_API_URL``
pointing at a Prefect server; the deployment's cron comes from ``schedule.cron`` in the config.
"""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import serve
from prefect.schedules import Cron

from flows.pipeline import pipeline_flow
from lookalike.config import load_config

DEPLOYMENT_NAME = "scheduled"


def pipeline_deployment(config_path: str | Path):  # -> RunnerDeployment
    """The pipeline flow with the config's cron schedule and the config path as its parameter."""
    path = str(Path(config_path).resolve())
    schedule = load_config(path).schedule
    return pipeline_flow.to_deployment(
        name=DEPLOYMENT_NAME, schedule=Cron(schedule.cron, timezone=schedule.timezone),
        parameters={"config_path": path},
        description="Rebuild when inputs change, then refresh the configured audiences.",
    )


def serve_pipeline(config_path: str | Path) -> None:
    """Register the deployment and run its schedule until interrupted."""
    serve(pipeline_deployment(config_path))


if __name__ == "__main__":
    serve_pipeline(sys.argv[1])

"""Register the scheduled pipeline and the ad-hoc export as Prefect deployments and serve them.

Run ``lookalike serve --config F`` (or ``python -m flows.deploy F``) with ``PREFECT_API_URL``
pointing at a Prefect server. ``lookalike-pipeline/scheduled`` runs on ``schedule.cron`` from the
config; ``lookalike-export/adhoc`` has no schedule: an analyst starts it from the Prefect UI
("Custom run") or with ``prefect deployment run 'lookalike-export/adhoc' -p seeds=/abs/seeds.csv
-p out=/abs/out/buyers.parquet -p fraction=0.05``, and finds the report among the run's artifacts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
from prefect import serve
from prefect.schedules import Cron
from prefect.settings import get_current_settings

from flows.export import export_flow
from flows.pipeline import config_relative, pipeline_flow
from lookalike.core.config import load_config
from lookalike.core.errors import LookalikeError

DEPLOYMENT_NAME = "scheduled"
EXPORT_DEPLOYMENT_NAME = "adhoc"
START_A_SERVER = ("start one with `prefect server start` and set "
                  "PREFECT_API_URL=http://127.0.0.1:4200/api")


def pipeline_deployment(config_path: str | Path):  # -> RunnerDeployment
    """The pipeline flow with the config's cron schedule and the config path as its parameter."""
    path = str(Path(config_path).resolve())
    schedule = load_config(path).schedule
    if not schedule.workdir or not schedule.conversions:
        raise LookalikeError(f"{path}: schedule.workdir and schedule.conversions are required "
                             "to serve the pipeline")
    return pipeline_flow.to_deployment(
        name=DEPLOYMENT_NAME, schedule=Cron(schedule.cron, timezone=schedule.timezone),
        parameters={"config_path": path},
        description="Rebuild when inputs change, then refresh the configured audiences.",
    )


def export_deployment(config_path: str | Path):  # -> RunnerDeployment
    """The export flow on demand (no schedule), its workdir and config defaulting to the config's.

    Every export parameter (seeds, out, size or fraction, strategy, eligible, exclude, name, ...)
    is given per run; paths should be absolute, as the run's working folder is the server's.
    """
    path = Path(config_path).resolve()
    workdir = config_relative(path.parent, load_config(path).schedule.workdir)
    defaults = {"config_path": str(path), **({"workdir": workdir} if workdir else {})}
    return export_flow.to_deployment(
        name=EXPORT_DEPLOYMENT_NAME, parameters=defaults,
        description="Export one audience from the current build: give seeds, out and size or "
                    "fraction (absolute paths); the report is among the run's artifacts.",
    )


def check_server(timeout_seconds: float = 10.0) -> str:
    """The configured Prefect API URL, once its health endpoint answers.

    A schedule needs a server that outlives this process, so the embedded mode (no URL) is refused.
    """
    url = get_current_settings().api.url
    if not url:
        raise LookalikeError(f"no Prefect server configured: {START_A_SERVER}")
    try:
        httpx.get(f"{url.rstrip('/')}/health", timeout=timeout_seconds).raise_for_status()
    except httpx.HTTPError as exc:
        raise LookalikeError(f"the Prefect server at PREFECT_API_URL={url} is not reachable "
                             f"({exc}); {START_A_SERVER}") from exc
    return url


def serve_pipeline(config_path: str | Path) -> None:
    """Register both deployments and run the schedule and any ad-hoc export until interrupted."""
    serve(pipeline_deployment(config_path), export_deployment(config_path))


if __name__ == "__main__":
    check_server()
    serve_pipeline(sys.argv[1])

"""The ad-hoc export deployment of ``lookalike serve``: a run started through a real Prefect
server's API (as the UI or ``prefect deployment run`` start one) writes the library's audience
and leaves its report and fairness audit as artifacts.

Reuses the real-server helpers and the synthetic inputs of ``test_flows.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import polars as pl
import pytest
import yaml
from test_flows import (  # noqa: F401 (inputs is a fixture)
    AUDIENCE_SIZE,
    Inputs,
    finished,
    inputs,
    served,
    tail,
    wait_for,
    write_schedule_config,
)

from lookalike.audience.export import export_audience
from lookalike.build_steps import BuildRequest, run_build
from lookalike.core.config import load_config
from lookalike.core.workdir import Workdir

NEVER_SOON = "0 3 1 1 *"  # the pipeline's cron must not start a build during the test


@pytest.mark.slow
def test_an_adhoc_export_run_writes_the_librarys_audience_and_its_report(inputs: Inputs, tmp_path):
    config = serve_config(inputs, tmp_path)
    build = run_build(Workdir(tmp_path / "work"), BuildRequest(
        inputs.events, inputs.profiles, inputs.conversions, inputs.as_of, load_config(config)),
        progress=lambda _: None)
    out = tmp_path / "out" / "adhoc.parquet"
    with served(config, tmp_path) as (api, logs):
        deployment = wait_for(lambda: export_deployment_id(api), 60,
                              "serve to register lookalike-export/adhoc", logs)
        run_id = start_export(api, deployment, {"seeds": inputs.seeds, "out": str(out),
                                                "size": AUDIENCE_SIZE})
        final = wait_for(lambda: finished(api, str(run_id)), 90, "the export run to finish", logs)
        assert final["state"]["type"] == "COMPLETED", (final["state"], tail(logs))
        report = wait_for(lambda: artifact_data(api, run_id, "adhoc-report"), 30,
                          "the run's report artifact", logs)
        fairness = artifact_data(api, run_id, "adhoc-fairness")

    expected = export_audience(build, inputs.seeds, tmp_path / "reference.parquet",
                               size=AUDIENCE_SIZE, config=load_config(config),
                               progress=lambda _: None)
    ranked = [pl.read_parquet(path).select("user_id", "rank") for path in (out, expected.audience)]
    assert ranked[0].height == AUDIENCE_SIZE
    assert ranked[0].equals(ranked[1])
    assert report == out.with_name("adhoc.report.md").read_text()
    rows = json.loads(out.with_name("adhoc.report.json").read_text())["fairness"]["rows"]
    assert rows and json.loads(fairness) == rows


def serve_config(inputs: Inputs, folder: Path) -> Path:
    """The scheduled pipeline's config (workdir ``work`` beside it), on a cron that never fires."""
    config = write_schedule_config(inputs, folder)
    raw = yaml.safe_load(config.read_text())
    raw["schedule"]["cron"] = NEVER_SOON
    raw["privacy"] = {"audit_columns": ["device", "region_code"]}
    config.write_text(yaml.safe_dump(raw))
    return config


def export_deployment_id(api: str) -> UUID | None:
    from prefect.exceptions import ObjectNotFound

    with api_client(api) as client:
        try:
            return client.read_deployment_by_name("lookalike-export/adhoc").id
        except ObjectNotFound:
            return None


def start_export(api: str, deployment: UUID, parameters: dict[str, Any]) -> UUID:
    """A run of the deployment with ``parameters`` (the others keep the deployment's defaults)."""
    with api_client(api) as client:
        return client.create_flow_run_from_deployment(deployment, parameters=parameters).id


def artifact_data(api: str, flow_run_id: UUID, key: str) -> str | None:
    """The data (Markdown, or a table as JSON) of a flow run's artifact ``key``; None if none."""
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        ArtifactFilterKey,
    )

    with api_client(api) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]),
            key=ArtifactFilterKey(any_=[key])))
    return found[0].data if found else None


def api_client(api: str):  # -> SyncPrefectClient
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api)

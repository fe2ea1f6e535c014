"""The export flow: a seed list in, an audience Parquet file and its report out.

Each run leaves up to five artifacts in Prefect: the report as Markdown, a table of the audience
per tier, a table of the expected quality (recall and lift with 95% intervals at the audience's
size and each tier, estimated by seed hold-out), the fairness audit's table (each audited group's
share of the audience and of the eligible users), a link to the Parquet file and one to the HTML
report with plots.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import fsspec
from prefect import flow, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from flows.common import IO_RETRIES, IO_RETRY_DELAYS, is_transient_io_error, log
from lookalike.core.config import LookalikeConfig, load_config
from lookalike.audience.export import HashingRequest, export_audience


@task(name="export-audience", cache_policy=NO_CACHE, retries=IO_RETRIES,
      retry_delay_seconds=IO_RETRY_DELAYS, retry_condition_fn=is_transient_io_error)
def export_task(workdir: str, seeds: str, out: str, options: dict[str, Any],
                config: LookalikeConfig) -> dict[str, Any]:
    """Score the population against the seeds and write the audience atomically (an ``s3://``
    workdir or ``out`` through :func:`lookalike.object_store.export_at`)."""
    from lookalike.object_store import export_at

    result = export_at(workdir, out, lambda build, path: export_audience(
        build, seeds, path, config=config, progress=log, **options))
    return result.to_dict()


@flow(name="lookalike-export")
def export_flow(workdir: str, seeds: str, out: str, size: int | None = None,
                fraction: float | None = None, exclude: str | None = None,
                eligible: str | None = None, strategy: str | None = None,
                min_score: float | None = None, name: str | None = None,
                config_path: str | None = None,
                hashing: dict[str, str] | None = None,
                audit_profiles: str | None = None) -> dict[str, Any]:
    """Export the audience of one seed list from the workdir's current build.

    ``hashing`` holds :class:`~lookalike.audience.export.HashingRequest` fields (kind, platform,
    identifiers, column) to add a hashed email or phone column; ``audit_profiles`` replaces the
    build's profiles as the table ``privacy.audit_columns`` are read from.
    """
    options = {"size": size, "fraction": fraction, "exclude": exclude, "eligible": eligible,
               "strategy": strategy, "min_score": min_score, "name": name,
               "hashing": None if hashing is None else HashingRequest(**hashing),
               "audit_profiles": audit_profiles}
    result = export_task(workdir, seeds, out, options, load_config(config_path))
    publish_artifacts(result)
    return result


def publish_artifacts(result: dict[str, Any]) -> None:
    """Report, tier, quality and fairness tables, and links to the file and the HTML report, keyed
    by the audience file's name."""
    key = artifact_key(Path(result["audience"]).stem)
    with fsspec.open(result["report_md"], "r") as report:
        markdown = report.read()
    create_markdown_artifact(key=f"{key}-report", markdown=markdown,
                             description="lookalike audience report")
    tiers = result["summary"].get("tiers", [])
    if tiers:
        create_table_artifact(key=f"{key}-tiers", table=tiers, description="audience per tier")
    quality = result["summary"].get("quality", [])
    if quality:
        create_table_artifact(key=f"{key}-quality", table=quality,
                              description="expected recall and lift per size (seed hold-out)")
    fairness = result["summary"].get("fairness")
    if fairness:
        create_table_artifact(key=f"{key}-fairness", table=fairness,
                              description="audited groups: audience share against eligible share")
    create_link_artifact(key=f"{key}-file", link=location_link(result["audience"]),
                         link_text=Path(result["audience"]).name, description="audience Parquet")
    create_link_artifact(key=f"{key}-html", link=location_link(result["report_html"]),
                         link_text=Path(result["report_html"]).name,
                         description="audience report with plots")


def location_link(location: str) -> str:
    """A link to a local file (``file://``) or an object-store URL as it is."""
    return location if "://" in location else Path(location).resolve().as_uri()


def artifact_key(name: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "audience"

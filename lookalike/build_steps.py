"""A build: inputs -> features -> model -> embeddings -> index, in one versioned workdir folder.

Each step is a function of (build paths, request) that reads the previous step's files and writes
its own, so the flows in ``flows/`` can run each one as a task and pass only paths. The build id is
a hash of the input files' content, the config and the package version: the same inputs give the
same build id, and a complete build with that id is reused instead of recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lookalike.core.artifacts import (
    atomic_write,
    read_json,
    sha256_file,
    sweep_stale_temp_files,
    write_json,
)
from lookalike.build_report import write_build_report
from lookalike.core.config import IndexConfig, LookalikeConfig
from lookalike.core.html import compact_histogram
from lookalike.core.errors import ArtifactError, InputError
from lookalike.data.features import compute_features, population_ids, resolve_as_of
from lookalike.data.ingest import (
    Table,
    align_id_dtype,
    load_conversions,
    load_events,
    load_profiles,
)
from lookalike.data.files import resolve_files
from lookalike.privacy.proxies import ProxyWarning, proxy_warnings, read_denied_columns
from lookalike.data.schema import USER_ID
from lookalike.data.spec import FeatureSpec
from lookalike.privacy.suppression import drop_listed, suppressed_ids
from lookalike.core.progress import Progress, eta
from lookalike.core.workdir import BuildPaths, Workdir, file_checksums, verify_build

PACKAGE_VERSION = version("lookalike")
NN_SIMILARITY_BINS = 40


@dataclass(frozen=True)
class BuildRequest:
    """What to build: input locations, the as-of time and the config."""

    events: str | None
    profiles: str | None
    conversions: str
    as_of: str | None = None
    config: LookalikeConfig = field(default_factory=LookalikeConfig)

    def inputs(self) -> dict[str, str]:
        named = {"events": self.events, "profiles": self.profiles, "conversions": self.conversions}
        return {k: v for k, v in named.items() if v is not None}


def fingerprint_inputs(request: BuildRequest) -> dict[str, Any]:
    """Content fingerprints (sha256 and size of every file) of each input table."""
    if request.events is None and request.profiles is None:
        raise InputError("inputs", "need at least one of --events or --profiles")
    prints = {}
    inputs = request.inputs()
    if request.config.privacy.suppression_list is not None:
        inputs["suppression"] = request.config.privacy.suppression_list
    for kind, path in inputs.items():
        files = resolve_files(path)
        prints[kind] = {
            "path": path,
            "files": [{"file": f, "sha256": sha256_file(f), "bytes": Path(f).stat().st_size}
                      for f in files],
        }
    return prints


def build_id_for(request: BuildRequest, fingerprints: dict[str, Any]) -> str:
    """Same inputs, config, as-of and package version give the same build id."""
    content = {
        "inputs": {k: [f["sha256"] for f in v["files"]] for k, v in fingerprints.items()},
        "config": request.config.fingerprint(),
        "as_of": request.as_of,
        "version": PACKAGE_VERSION,
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


def prepare_build(workdir: Workdir, request: BuildRequest) -> tuple[BuildPaths, dict[str, Any]]:
    """Fingerprint the inputs, name the build folder and sweep its stale temporary files.

    Nothing is created: the first step to write makes the folder. Only this build's folder is
    swept: another build or an export running in the same workdir keeps its temporary files.
    """
    fingerprints = fingerprint_inputs(request)
    build = workdir.build(build_id_for(request, fingerprints))
    sweep_stale_temp_files(build.root)
    return build, fingerprints


def reusable(build: BuildPaths) -> bool:
    """Whether the build is complete and every file its manifest lists is intact.

    A manifest whose files are missing or changed is removed, so the build runs again.
    """
    if not build.is_complete():
        return False
    try:
        verify_build(build)
    except ArtifactError:
        build.manifest.unlink(missing_ok=True)
        return False
    return True


@dataclass(frozen=True)
class ValidInputs:
    """The input tables after every check a build makes before writing anything."""

    events: Table | None
    profiles: Table | None
    conversions: Table
    population_conversions: pl.DataFrame  # conversions of population users, sorted, no duplicates
    conversion_report: dict[str, Any]
    as_of: datetime | None
    suppressed: pl.Series | None


def validate_inputs(request: BuildRequest) -> ValidInputs:
    """Read and check every input table completely; nothing is written.

    Users on ``privacy.suppression_list`` are dropped from every table first. Besides each table's
    own contract, the conversions must belong to the population (the feature table's users,
    :func:`~lookalike.data.features.population_ids`), so a build whose conversions match nobody
    stops here rather than after writing its features.
    """
    cfg = request.config
    separator = cfg.ingest.csv_separator
    suppressed = suppressed_ids(cfg)
    events = _without(suppressed, load_events(request.events, csv_separator=separator)
                      if request.events else None)
    profiles = _without(suppressed, load_profiles(request.profiles,
                                                  deny_columns=cfg.ingest.deny_columns,
                                                  csv_separator=separator)
                        if request.profiles else None)
    conversions = load_conversions(request.conversions, csv_separator=separator)
    as_of = resolve_as_of(events, request.as_of)
    known, report = population_conversions(drop_listed(conversions.frame, suppressed),
                                           request.conversions,
                                           population_ids(events, profiles, as_of))
    return ValidInputs(events, profiles, conversions, known, report, as_of, suppressed)


def step_features(build: BuildPaths, request: BuildRequest,
                  progress: Progress = print) -> dict[str, Any]:
    """Validate the inputs (:func:`validate_inputs`), then write the feature table, its spec and
    the population's conversions.

    Proxy warnings (allowed features standing in for ``ingest.deny_columns``) go into the report
    and through ``progress``.
    """
    cfg = request.config
    inputs = validate_inputs(request)
    result = compute_features(inputs.events, inputs.profiles, build.features, build.spec,
                              as_of=inputs.as_of, config=cfg)
    with atomic_write(build.conversions) as tmp:
        inputs.population_conversions.write_parquet(tmp)
    warnings = build_proxy_warnings(build, request)
    for warning in warnings:
        progress(f"warning: {warning}")
    events, profiles, suppressed = inputs.events, inputs.profiles, inputs.suppressed
    reports = {
        "events": asdict(events.report) if events else None,
        "profiles": asdict(profiles.report) if profiles else None,
        "conversions": {**asdict(inputs.conversions.report), **inputs.conversion_report},
        "features": {"n_users": result.n_users, "n_numeric": result.n_numeric,
                     "n_categorical": result.n_categorical, "as_of": str(result.as_of),
                     "notes": result.notes},
        "privacy": {"suppressed_users": 0 if suppressed is None else len(suppressed),
                    "denied_columns": cfg.ingest.deny_columns,
                    "proxy_warnings": [str(w) for w in warnings],
                    "proxy_features": sorted({w.feature for w in warnings})},
    }
    write_json(build.root / "ingest_report.json", reports)
    progress(f"features: {result.n_users:,} users, {result.n_numeric} numeric and "
             f"{result.n_categorical} categorical features")
    return reports


def _without(suppressed: pl.Series | None, table: Table | None) -> Table | None:
    if table is None:
        return None
    return Table(drop_listed(table.frame, suppressed), table.report)


def build_proxy_warnings(build: BuildPaths, request: BuildRequest) -> list[ProxyWarning]:
    """Proxy warnings of the build's features against the profiles' denied columns."""
    cfg = request.config
    if request.profiles is None or not cfg.ingest.deny_columns:
        return []
    denied = read_denied_columns(request.profiles, cfg.ingest.deny_columns,
                                 csv_separator=cfg.ingest.csv_separator)
    if denied.width <= 1:
        return []
    spec = FeatureSpec.load(build.spec)
    features = pl.read_parquet(build.features)
    return proxy_warnings(features, denied, categorical=[f.name for f in spec.categorical],
                          config=cfg.privacy)


def population_conversions(conversions: pl.LazyFrame, path: str,
                           population: pl.LazyFrame) -> tuple[pl.DataFrame, dict[str, Any]]:
    """Conversions of ``population`` users (sorted, duplicates dropped) and counts of the others.

    Conversions outside the population are counted, never silently dropped; none inside is an
    :class:`InputError`.
    """
    dtype = population.collect_schema()[USER_ID]
    conversions = align_id_dtype(conversions, dtype, path).unique()
    known = conversions.join(population, on=USER_ID, how="semi").collect(engine="streaming")
    total = conversions.select(pl.len()).collect().item()
    if known.height == 0:
        raise InputError(path, f"none of the {total} conversions belong to a population user",
                         column=USER_ID, fix="check that conversions use the same user ids as the "
                         "events/profiles tables")
    per_type = dict(known.group_by("conversion_type").len().sort("conversion_type").iter_rows())
    report = {"conversions_outside_population": total - known.height,
              "converters_per_type": per_type}
    return known.sort([USER_ID, "conversion_type"]), report


def step_train(build: BuildPaths, request: BuildRequest, progress: Progress = print) -> dict[str, Any]:
    """Train the encoder (resuming from its last checkpoint if a previous run was interrupted)."""
    from lookalike.encoder.train import train

    result = train(build.features, build.spec, build.conversions, build.model_dir, request.config,
                   resume=True, progress=progress)
    history = read_json(result.manifest)["metrics"]["history"]
    return {"model_build_id": result.model_build_id, "best_epoch": result.best_epoch,
            "history": [{"epoch": h["epoch"], "loss": h["loss"], "recall": h["recall"]}
                        for h in history],
            "epochs_run": result.epochs_run, "stop_reason": result.stop_reason,
            "validation_recall": result.validation_recall,
            "validation_recall_by_type": result.validation_recall_by_type,
            "memorization": result.memorization,
            "health": asdict(result.health), "seconds": round(result.elapsed_seconds, 1)}


def step_embed(build: BuildPaths, progress: Progress = print) -> dict[str, Any]:
    """Embed the whole population with the candidate tower."""
    from lookalike.encoder.embed import embed_population

    paths = embed_population(build.features, build.spec, build.model_dir, build.embeddings_dir,
                             progress=progress)
    return read_json(paths.manifest)


def index_shard_count(build: BuildPaths, request: BuildRequest) -> int:
    """How many index shards this build's population needs (:func:`lookalike.search.index.shard_count`)."""
    from lookalike.search.vectors import open_embeddings
    from lookalike.search.sharding import shard_count

    return shard_count(len(open_embeddings(build.embeddings)), request.config.index)


def step_index_shard(build: BuildPaths, request: BuildRequest, shard: int, n_shards: int,
                     progress: Progress | None = None) -> dict[str, Any]:
    """Build one shard's HNSW index (shards are independent: a task runner may run them at once)."""
    from lookalike.search.index import build_shard

    info = build_shard(build.embeddings, build.users, shard, n_shards, build.index_dir,
                       request.config.index, progress=progress)
    return asdict(info)


def step_index_manifest(build: BuildPaths, request: BuildRequest, shards: list[dict[str, Any]],
                        progress: Progress = print) -> dict[str, Any]:
    """Measure recall against exact search and write the index manifest (fails below the floor)."""
    from lookalike.search.manifest import ShardInfo
    from lookalike.search.index import write_index_manifest

    manifest = write_index_manifest(build.index_dir, [ShardInfo(**s) for s in shards],
                                    request.config.index, build.model_build_id(), build.embeddings)
    progress(f"index: {manifest.element_count:,} users, recall@10 {manifest.recall_at_10:.3f}, "
             f"recall@100 {manifest.recall_at_100:.3f}")
    return {"recall_at_10": manifest.recall_at_10, "recall_at_100": manifest.recall_at_100,
            "count": manifest.element_count, "shards": len(shards),
            "nn_similarity": nn_similarity_histogram(build, request.config.index)}


def nn_similarity_histogram(build: BuildPaths, config: IndexConfig) -> dict[str, Any]:
    """Histogram of a seeded sample of users' cosine similarity to their nearest other user
    (exact search over the whole population): the build report's picture of how crowded the
    embedding space is."""
    from lookalike.search.exact import nearest_other_similarity
    from lookalike.search.vectors import open_embeddings

    embeddings = open_embeddings(build.embeddings)
    rng = np.random.default_rng(config.seed)
    rows = np.sort(rng.choice(len(embeddings), min(config.similarity_sample, len(embeddings)),
                              replace=False))
    similarities = nearest_other_similarity(embeddings, rows)
    return {"sample": len(rows), **compact_histogram(similarities, NN_SIMILARITY_BINS)}


def shard_line(done: list[dict[str, Any]], n_shards: int, seconds: float) -> str:
    """Progress after the shards ``done`` in ``seconds``: users so far and, while shards remain,
    an ETA at the pace of those built."""
    users = sum(s["count"] for s in done)
    return (f"index: shard {len(done)}/{n_shards} built, {users:,} users in {seconds:.1f}s"
            f"{eta(len(done), n_shards, seconds)}")


def finalize_build(workdir: Workdir, build: BuildPaths, request: BuildRequest,
                   fingerprints: dict[str, Any], steps: dict[str, Any]) -> dict[str, Any]:
    """Write the build report (``report.html``), then the manifest last (checksums of every file,
    the report's included), and make the build current."""
    manifest = {
        "build_id": build.build_id,
        "created_at": datetime.now(UTC).isoformat(),
        "package_version": PACKAGE_VERSION,
        "as_of": request.as_of,
        "config": request.config.model_dump(mode="json"),
        "config_fingerprint": request.config.fingerprint(),
        "inputs": fingerprints,
        "steps": steps,
    }
    write_build_report(build, manifest)
    manifest["files"] = file_checksums(build)
    write_json(build.manifest, manifest)
    workdir.set_current(build.build_id)
    return manifest


def run_build(workdir: Workdir, request: BuildRequest, progress: Progress = print) -> BuildPaths:
    """Every step in this process, one after the other (what the build flow runs as tasks).

    A complete build with the same id is reused; an interrupted one continues (training from its
    last checkpoint). Returns the build, which is then current.

    Example::

        build = run_build(Workdir("work"), BuildRequest(events="events.parquet", profiles=None,
                                                        conversions="conversions.parquet"))
    """
    build, fingerprints = prepare_build(workdir, request)
    if reusable(build):
        progress(f"inputs and config unchanged: reusing build {build.build_id}")
        workdir.set_current(build.build_id)
        return build
    with discard_on_failure(build):
        steps: dict[str, Any] = {"features": step_features(build, request, progress)}
        steps["train"] = step_train(build, request, progress)
        steps["embed"] = step_embed(build, progress)
        n_shards = index_shard_count(build, request)
        shards: list[dict[str, Any]] = []
        started = time.monotonic()
        for shard in range(n_shards):
            shards.append(step_index_shard(build, request, shard, n_shards, progress))
            progress(shard_line(shards, n_shards, time.monotonic() - started))
        steps["index"] = step_index_manifest(build, request, shards, progress)
        finalize_build(workdir, build, request, fingerprints, steps)
    return build


@contextlib.contextmanager
def discard_on_failure(build: BuildPaths) -> Iterator[None]:
    """Remove the build's folder when the block raises and the build has no manifest.

    A failed build leaves nothing behind; an interrupted one (SIGKILL, Ctrl-C: not an
    ``Exception``) keeps its folder, so a restart resumes training from its last checkpoint.
    """
    try:
        yield
    except Exception:
        if not build.is_complete():
            shutil.rmtree(build.root, ignore_errors=True)
        raise

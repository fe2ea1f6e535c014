"""A build: inputs -> features -> model -> embeddings -> index, in one versioned workdir folder.

Each step is a function of (build paths, request) that reads the previous step's files and writes
its own, so the flows in ``flows/`` can run each one as a task and pass only paths. The build id is
a hash of the input files' content, the config, the package version and, for a build that reuses
an earlier encoder, the id of the build that trained it: the same inputs give the same build id,
and a complete build with that id is reused instead of recomputed.

Refresh or retrain (:func:`plan_encoder`, then :func:`settle_encoder` once the new features and
their drift are known): a build reuses the current build's encoder and feature spec (a *refresh*:
new features, embeddings and index, no training) when one exists with the same encoder settings
and package version, and retrains when asked (``mode="retrain"``), when there is no such build,
when the new feature table lacks a column the encoder reads, when the encoder is
``train.retrain_interval_days`` old, or when drift crosses a ``drift`` limit. ``steps.train``
of the manifest says which (``encoder_from``, ``reason``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from lookalike.build_report import write_build_report
from lookalike.core.artifacts import (
    TEMP_MARKER,
    atomic_write,
    read_json,
    sweep_stale_temp_files,
    write_json,
)
from lookalike.core.config import IndexConfig, LookalikeConfig
from lookalike.core.errors import ArtifactError, InputError, LookalikeError
from lookalike.core.html import compact_histogram
from lookalike.core.progress import Progress, eta
from lookalike.core.workdir import (
    BuildPaths,
    Workdir,
    file_checksums,
    load_manifest,
    verify_build,
)
from lookalike.data.drift import SKETCH_FILE, feature_psi, feature_sketch
from lookalike.data.features import (
    FeatureLayout,
    feature_partition_paths,
    merge_feature_partitions,
    parse_as_of,
    plan_features,
    population_ids,
    resolve_as_of,
    write_feature_partition,
)
from lookalike.data.files import file_fingerprint, resolve_files
from lookalike.data.ingest import (
    Table,
    TableReport,
    align_id_dtype,
    load_conversions,
    load_events,
    load_profiles,
)
from lookalike.data.schema import USER_ID
from lookalike.data.spec import FeatureSpec
from lookalike.privacy.proxies import ProxyWarning, proxy_warnings, read_denied_columns
from lookalike.privacy.suppression import drop_listed, suppressed_ids

PACKAGE_VERSION = version("lookalike")
NN_SIMILARITY_BINS = 40
EncoderMode = Literal["auto", "refresh", "retrain"]


@dataclass(frozen=True)
class BuildRequest:
    """What to build: input locations, the as-of time and the config."""

    events: str | None
    profiles: str | None
    conversions: str
    as_of: str | None = None
    config: LookalikeConfig = field(default_factory=LookalikeConfig)
    # auto: refresh when the current build's encoder fits and nothing forces a retrain;
    # refresh: always reuse it (drift is reported, never acted on); retrain: always train.
    mode: EncoderMode = "auto"

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
            "files": [file_fingerprint(f) for f in files],
        }
    return prints


def build_id_for(request: BuildRequest, fingerprints: dict[str, Any],
                 encoder_from: str | None = None) -> str:
    """Same inputs, config, as-of, package version and encoder source give the same build id.

    ``encoder_from``: the build that trained the encoder a refresh reuses (None for a build that
    trains its own, whose id is then what it was before refreshes existed).
    """
    content = {
        "inputs": {k: [f["sha256"] for f in v["files"]] for k, v in fingerprints.items()},
        "config": request.config.fingerprint(),
        "as_of": request.as_of,
        "version": PACKAGE_VERSION,
    }
    if encoder_from is not None:
        content["encoder_from"] = encoder_from
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class EncoderPlan:
    """Which encoder a build uses, and why: the previous build's (a refresh) or its own."""

    reason: str  # "refresh: ..." or "retrain: ...", for the manifest and the log
    previous: BuildPaths | None = None  # the current build before this one (drift is against it)
    encoder_from: str | None = None  # the build that trained the reused encoder; None: retrain

    @property
    def refresh(self) -> bool:
        return self.encoder_from is not None

    def retrain(self, reason: str) -> EncoderPlan:
        return EncoderPlan(f"retrain: {reason}", self.previous, None)


def plan_encoder(workdir: Workdir, request: BuildRequest,
                 fingerprints: dict[str, Any]) -> EncoderPlan:
    """The plan before any feature is computed: refresh from the current build when its encoder
    settings, package version and suppression list match this request's (``fingerprints``:
    :func:`fingerprint_inputs`), else retrain (or when asked to). A changed suppression list
    retrains so that the encoder never saw an opted-out user.

    Raises:
        LookalikeError: ``mode="refresh"`` without a current build whose encoder fits.
    """
    previous = current_build(workdir)
    if request.mode == "retrain":
        return EncoderPlan("retrain: asked", previous)
    if previous is None:
        return _retrain_unless_refresh_asked(request, EncoderPlan("retrain: no previous build"))
    manifest = load_manifest(previous)
    mismatch = encoder_mismatch(manifest, request.config)
    if suppression_digests(manifest.get("inputs", {})) != suppression_digests(fingerprints):
        mismatch = "suppression list changed"
    if mismatch:
        return _retrain_unless_refresh_asked(request, EncoderPlan(f"retrain: {mismatch}", previous))
    encoder_from = manifest["steps"]["train"].get("encoder_from", previous.build_id)
    return EncoderPlan(f"refresh: encoder trained by build {encoder_from}", previous, encoder_from)


def _retrain_unless_refresh_asked(request: BuildRequest, plan: EncoderPlan) -> EncoderPlan:
    if request.mode == "refresh":
        raise LookalikeError(f"cannot refresh: {plan.reason.removeprefix('retrain: ')}; build "
                             "without --refresh (or with --retrain) to train a new encoder")
    return plan


def current_build(workdir: Workdir) -> BuildPaths | None:
    """The workdir's current complete build, or None when it has none."""
    try:
        return workdir.current()
    except ArtifactError:
        return None


def encoder_mismatch(manifest: dict[str, Any], config: LookalikeConfig) -> str | None:
    """Why the encoder of the build with ``manifest`` cannot encode for ``config`` (None if it can)."""
    if manifest.get("package_version") != PACKAGE_VERSION:
        return f"package version changed ({manifest.get('package_version')} -> {PACKAGE_VERSION})"
    old = LookalikeConfig.model_validate(manifest["config"]).encoder_settings()
    new = config.encoder_settings()
    changed = sorted(name for name in new if old.get(name) != new[name])
    return f"encoder settings changed ({', '.join(changed)})" if changed else None


def suppression_digests(fingerprints: dict[str, Any]) -> list[str]:
    """sha256 of each file of the suppression list in input fingerprints (empty without one)."""
    return [f["sha256"] for f in fingerprints.get("suppression", {}).get("files", [])]


def prepare_build(workdir: Workdir, request: BuildRequest) -> tuple[BuildPaths, dict[str, Any]]:
    """:func:`prepare_encoder_build` without the plan."""
    build, fingerprints, _plan = prepare_encoder_build(workdir, request)
    return build, fingerprints


def prepare_encoder_build(workdir: Workdir,
                          request: BuildRequest) -> tuple[BuildPaths, dict[str, Any], EncoderPlan]:
    """Fingerprint the inputs, plan the encoder (:func:`plan_encoder`), name the build folder and
    sweep its stale temporary files.

    In ``auto`` mode a planned refresh gives way to a build of the same inputs that trained its
    own encoder and has a manifest (it is reused, or rebuilt as it was when a file is missing).
    Nothing is created: the first step to write makes the folder. Only this build's folder is
    swept: another build or an export running in the same workdir keeps its temporary files.
    """
    fingerprints = fingerprint_inputs(request)
    plan = plan_encoder(workdir, request, fingerprints)
    build = workdir.build(build_id_for(request, fingerprints, plan.encoder_from))
    if plan.refresh and request.mode == "auto" and not build.is_complete():
        retrained = workdir.build(build_id_for(request, fingerprints))
        if retrained.is_complete():
            reason = f"retrain: same inputs as build {retrained.build_id}, which trained its own"
            build, plan = retrained, EncoderPlan(reason)
    sweep_stale_temp_files(build.root)
    return build, fingerprints, plan


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
    events, profiles = _user_tables(request, suppressed, validate=True)
    conversions = load_conversions(request.conversions, csv_separator=separator)
    as_of = resolve_as_of(events, request.as_of)
    known, report = population_conversions(drop_listed(conversions.frame, suppressed),
                                           request.conversions,
                                           population_ids(events, profiles, as_of))
    return ValidInputs(events, profiles, conversions, known, report, as_of, suppressed)


def step_features(build: BuildPaths, request: BuildRequest,
                  progress: Progress = print) -> dict[str, Any]:
    """Validate the inputs (:func:`validate_inputs`), then write the feature table, its spec and
    the population's conversions: :func:`step_features_plan`, :func:`step_features_part` for every
    user partition, :func:`step_features_merge`, in this process (the build flow runs them as
    tasks).

    Proxy warnings (allowed features standing in for ``ingest.deny_columns``) go into the report
    and through ``progress``.
    """
    n_parts = step_features_plan(build, request)["n_parts"]
    counts = [step_features_part(build, request, i) for i in range(n_parts)]
    return step_features_merge(build, request, counts, progress)


def _feature_plan_path(build: BuildPaths) -> Path:
    """Where :func:`step_features_plan` leaves the layout and input reports for the next steps
    (a temporary name: swept with a killed build's scratch files, never in the manifest)."""
    return build.root / f".feature-plan.json{TEMP_MARKER}steps"


def step_features_plan(build: BuildPaths, request: BuildRequest) -> dict[str, Any]:
    """Validate the inputs (:func:`validate_inputs`), write the population's conversions, and
    decide the feature table's user partitions (:func:`lookalike.data.features.plan_features`);
    returns ``{"n_parts": n}``. The layout and the input reports wait in a scratch file for
    :func:`step_features_part` and :func:`step_features_merge`."""
    cfg = request.config
    inputs = validate_inputs(request)
    layout = plan_features(inputs.events, inputs.profiles, as_of=inputs.as_of, config=cfg)
    with atomic_write(build.conversions) as tmp:
        inputs.population_conversions.write_parquet(tmp)
    events, profiles = inputs.events, inputs.profiles
    write_json(_feature_plan_path(build), {
        "layout": layout.to_dict(),
        "events": asdict(events.report) if events else None,
        "profiles": asdict(profiles.report) if profiles else None,
        "conversions": {**asdict(inputs.conversions.report), **inputs.conversion_report},
        "suppressed_users": 0 if inputs.suppressed is None else len(inputs.suppressed),
    })
    return {"n_parts": layout.n_parts}


def step_features_part(build: BuildPaths, request: BuildRequest, index: int) -> dict[str, int]:
    """Write user partition ``index`` of the feature table to its scratch file
    (:func:`lookalike.data.features.write_feature_partition`), from the input paths (read lazily,
    already validated by :func:`step_features_plan`) and the planned layout; partitions are
    independent, so a task runner may write them at once, in other processes."""
    plan = read_json(_feature_plan_path(build))
    layout = FeatureLayout.from_dict(plan["layout"])
    events, profiles = _checked_inputs(request)
    path = feature_partition_paths(build.features, layout.n_parts)[index]
    return write_feature_partition(events, profiles, layout, index, path, config=request.config)


def step_features_merge(build: BuildPaths, request: BuildRequest, counts: list[dict[str, int]],
                        progress: Progress = print) -> dict[str, Any]:
    """Merge the partitions into the feature table and fit its spec
    (:func:`lookalike.data.features.merge_feature_partitions`), remove the scratch files, and
    write the ingest report and the feature sketch; returns the report (``steps.features``)."""
    cfg = request.config
    plan_path = _feature_plan_path(build)
    plan = read_json(plan_path)
    layout = FeatureLayout.from_dict(plan["layout"])
    events, profiles = _checked_inputs(request)
    if events is not None:  # the dropped duplicates are counted into the validated report
        events = Table(events.frame, TableReport(**plan["events"]))
    paths = feature_partition_paths(build.features, layout.n_parts)
    result = merge_feature_partitions(events, profiles, layout, paths, counts, build.features,
                                      build.spec, config=cfg)
    for path in (*paths, plan_path):
        path.unlink(missing_ok=True)
    warnings = build_proxy_warnings(build, request)
    for warning in warnings:
        progress(f"warning: {warning}")
    reports = {
        "events": asdict(events.report) if events else None,
        "profiles": plan["profiles"],
        "conversions": plan["conversions"],
        "features": {"n_users": result.n_users, "n_numeric": result.n_numeric,
                     "n_categorical": result.n_categorical, "as_of": str(result.as_of),
                     "notes": result.notes},
        "privacy": {"suppressed_users": plan["suppressed_users"],
                    "denied_columns": cfg.ingest.deny_columns,
                    "proxy_warnings": [str(w) for w in warnings],
                    "proxy_features": sorted({w.feature for w in warnings})},
    }
    write_json(build.root / "ingest_report.json", reports)
    write_feature_sketch(build, request)
    progress(f"features: {result.n_users:,} users, {result.n_numeric} numeric and "
             f"{result.n_categorical} categorical features")
    return reports


def _checked_inputs(request: BuildRequest) -> tuple[Table | None, Table | None]:
    """The events and profiles as :func:`validate_inputs` returns them, without its scans: for
    the steps after :func:`step_features_plan`, which has checked these very files."""
    return _user_tables(request, suppressed_ids(request.config), validate=False)


def _user_tables(request: BuildRequest, suppressed: pl.Series | None, *,
                 validate: bool) -> tuple[Table | None, Table | None]:
    """The events and profiles tables (None where not given), suppressed users dropped."""
    cfg = request.config
    separator = cfg.ingest.csv_separator
    events = (load_events(request.events, csv_separator=separator, validate=validate)
              if request.events else None)
    profiles = (load_profiles(request.profiles, deny_columns=cfg.ingest.deny_columns,
                              csv_separator=separator, validate=validate)
                if request.profiles else None)
    return _without(suppressed, events), _without(suppressed, profiles)


def write_feature_sketch(build: BuildPaths, request: BuildRequest) -> None:
    """The build's feature distributions (:func:`lookalike.data.drift.feature_sketch`), which the
    next build measures its drift against."""
    spec = FeatureSpec.load(build.spec)
    sketch = feature_sketch(build.features, [f.name for f in spec.numeric],
                            [f.name for f in spec.categorical], bins=request.config.drift.bins,
                            max_categories=request.config.drift.max_categories)
    write_json(build.root / SKETCH_FILE, sketch)


def step_drift(build: BuildPaths, request: BuildRequest, plan: EncoderPlan,
               progress: Progress = print) -> dict[str, Any]:
    """Drift of this build's features against the previous build (``plan.previous``), in the
    manifest's ``steps.drift`` shape: per feature PSI, largest first; the embedding shift and
    nearest-neighbour similarity PSI under the previous build's encoder (None when its spec does
    not fit the new features); converter rate per type, old and new; the limits and which were
    crossed. Everything is empty (``previous_build`` None) for a first build.
    """
    from lookalike.encoder.drift import embedding_drift

    limits = request.config.drift
    thresholds = limits.model_dump(include={"feature_psi", "max_drifted_share",
                                            "max_embedding_shift", "max_nn_similarity_psi"})
    report: dict[str, Any] = {"previous_build": None, "features": [], "embedding": None,
                              "converter_rate": [], "thresholds": thresholds, "crossed": []}
    previous = plan.previous
    if previous is None:
        return report
    sketch = previous.root / SKETCH_FILE
    embedding = embedding_drift(previous.features, build.features, previous.spec,
                                previous.model_dir, sample=limits.sample, seed=limits.seed,
                                bins=limits.bins)
    report.update({
        "previous_build": previous.build_id,
        "features": feature_psi(sketch, build.features) if sketch.is_file() else [],
        "embedding": None if embedding is None else embedding.to_dict(),
        "converter_rate": converter_rates(load_manifest(previous)["steps"]["features"],
                                          read_json(build.root / "ingest_report.json")),
    })
    report["crossed"] = crossed_limits(report, request.config)
    progress(drift_line(report))
    return report


def converter_rates(previous: dict[str, Any], current: dict[str, Any]) -> list[dict[str, Any]]:
    """Converters of each type per population user in two builds' ingest reports (0 where a
    build has none of the type)."""
    def rates(report: dict[str, Any]) -> dict[str, float]:
        users = max(report["features"]["n_users"], 1)
        return {t: n / users for t, n in report["conversions"]["converters_per_type"].items()}

    old, new = rates(previous), rates(current)
    return [{"type": t, "previous": round(old.get(t, 0.0), 6), "current": round(new.get(t, 0.0), 6)}
            for t in sorted(old.keys() | new.keys())]


def crossed_limits(report: dict[str, Any], config: LookalikeConfig) -> list[str]:
    """The drift limits ``report`` crosses, each as a sentence for the log."""
    limits, crossed = config.drift, []
    drifted = [f["feature"] for f in report["features"] if f["psi"] > limits.feature_psi]
    share = len(drifted) / max(len(report["features"]), 1)
    if share > limits.max_drifted_share:
        crossed.append(f"{len(drifted)} of {len(report['features'])} features ({share:.0%}) have "
                       f"PSI > {limits.feature_psi} (limit {limits.max_drifted_share:.0%}): "
                       f"{', '.join(drifted[:5])}{' ...' if len(drifted) > 5 else ''}")
    embedding = report["embedding"]
    if embedding and embedding["median_shift"] > limits.max_embedding_shift:
        crossed.append(f"median embedding shift {embedding['median_shift']:.3f} > "
                       f"{limits.max_embedding_shift}")
    if embedding and embedding["nn_similarity_psi"] > limits.max_nn_similarity_psi:
        crossed.append(f"nearest-neighbour similarity PSI {embedding['nn_similarity_psi']:.3f} > "
                       f"{limits.max_nn_similarity_psi}")
    return crossed


def drift_line(report: dict[str, Any]) -> str:
    """One progress line summing up ``steps.drift``."""
    top = report["features"][0] if report["features"] else None
    embedding = report["embedding"]
    return (f"drift against build {report['previous_build']}: "
            + (f"largest feature PSI {top['psi']:.3f} ({top['feature']})" if top else "no feature sketch")
            + (f", embedding shift median {embedding['median_shift']:.3f} p90 "
               f"{embedding['p90_shift']:.3f}, NN similarity PSI {embedding['nn_similarity_psi']:.3f}"
               if embedding else ", embedding shift not computable")
            + (f"; crossed: {'; '.join(report['crossed'])}" if report["crossed"] else ""))


def settle_encoder(build: BuildPaths, request: BuildRequest, plan: EncoderPlan,
                   drift: dict[str, Any], features: dict[str, Any]) -> EncoderPlan:
    """The final plan once the new features and their drift are known: a planned refresh
    retrains when the new table lacks a column the old spec reads, or (``auto`` mode) when the
    encoder is ``train.retrain_interval_days`` old or drift crossed a limit.

    Raises:
        LookalikeError: ``mode="refresh"`` and the old spec does not fit the new features.
    """
    if not plan.refresh:
        return plan
    assert plan.previous is not None
    missing = sorted(set(FeatureSpec.load(plan.previous.spec).columns)
                     - set(pl.read_parquet_schema(build.features)))
    if missing:
        reason = f"feature columns changed (the encoder reads {', '.join(missing[:5])}, now absent)"
        return _retrain_unless_refresh_asked(request, plan.retrain(reason))
    if request.mode == "refresh":
        return plan
    age = encoder_age_days(load_manifest(plan.previous), features["features"]["as_of"])
    limit = request.config.train.retrain_interval_days
    if limit is not None and age is not None and age >= limit:
        return plan.retrain(f"interval ({age:.1f} days since build {plan.encoder_from} trained "
                            f"the encoder, limit {limit:g})")
    if drift["crossed"]:
        return plan.retrain(f"drift {'; '.join(drift['crossed'])}")
    return plan


def encoder_age_days(previous: dict[str, Any], as_of: str) -> float | None:
    """Days from the as-of time of the build that trained ``previous``'s encoder to ``as_of``
    (None when either build has no as-of time)."""
    trained = previous["steps"]["train"].get("trained_as_of",
                                              previous["steps"]["features"]["features"]["as_of"])
    if trained in (None, "None") or as_of in (None, "None"):
        return None
    return (parse_as_of(as_of) - parse_as_of(trained)).total_seconds() / 86_400


def rebind(workdir: Workdir, build: BuildPaths, request: BuildRequest,
           fingerprints: dict[str, Any], plan: EncoderPlan) -> BuildPaths:
    """Move a build's folder to the id of its final ``plan`` (a planned refresh that retrains
    gets a retrain's id). A complete build of that id is kept and this folder removed; an
    interrupted one gets this folder's files (the same inputs' features) and keeps its training
    checkpoints, so its training resumes."""
    target = workdir.build(build_id_for(request, fingerprints, plan.encoder_from))
    if target == build:
        return build
    if reusable(target):
        shutil.rmtree(build.root)
        return target
    if target.root.is_dir():
        sweep_stale_temp_files(target.root)
        for item in build.root.iterdir():
            if item.is_file():
                item.replace(target.root / item.name)
        shutil.rmtree(build.root)
    else:
        build.root.rename(target.root)
    return target


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


def step_train(build: BuildPaths, request: BuildRequest, progress: Progress = print,
               plan: EncoderPlan | None = None) -> dict[str, Any]:
    """Train the encoder (resuming from its last checkpoint if a previous run was interrupted),
    or, when ``plan`` is a refresh, reuse the previous build's (:func:`reuse_encoder`).

    ``plan`` defaults to a retrain. The result gains ``encoder_from`` (the build that trained the
    encoder) and ``reason``; the reason also goes through ``progress``.
    """
    from lookalike.encoder.train import train

    plan = plan or EncoderPlan("retrain: asked")
    progress(f"encoder: {plan.reason}")
    if plan.refresh:
        return reuse_encoder(build, plan)
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
            "health": asdict(result.health), "seconds": round(result.elapsed_seconds, 1),
            "encoder_from": build.build_id, "reason": plan.reason}


def reuse_encoder(build: BuildPaths, plan: EncoderPlan) -> dict[str, Any]:
    """Copy the previous build's model (without checkpoints) and the feature spec it was trained
    with into ``build``, replacing the spec fitted on the new features: the encoder expects
    inputs scaled by its own quantiles and vocabularies. Returns the training figures of the
    build that trained it, with ``encoder_from``, ``reason`` and ``trained_as_of``."""
    previous = plan.previous
    assert previous is not None and plan.encoder_from is not None
    started = time.monotonic()
    if previous.root == build.root:  # rebuilding the current build itself: its spec was refitted
        raise ArtifactError(f"{build.root} lost files and reuses its own encoder; rebuild it with "
                            "--retrain")
    with atomic_write(build.spec) as tmp:
        shutil.copyfile(previous.spec, tmp)
    shutil.rmtree(build.model_dir, ignore_errors=True)
    shutil.copytree(previous.model_dir, build.model_dir,
                    ignore=shutil.ignore_patterns("checkpoints"))
    manifest = load_manifest(previous)
    trained = manifest["steps"]["train"]
    trained_as_of = trained.get("trained_as_of", manifest["steps"]["features"]["features"]["as_of"])
    return {**trained, "seconds": round(time.monotonic() - started, 1),
            "encoder_from": plan.encoder_from, "reason": plan.reason,
            "trained_as_of": trained_as_of}


def partition_count(build: BuildPaths, request: BuildRequest) -> int:
    """How many population partitions (= index shards, :func:`lookalike.data.partitions.shard_count`)
    the build's feature table needs; reads only the table's footer."""
    import pyarrow.parquet as pq

    from lookalike.data.partitions import shard_count

    return shard_count(pq.ParquetFile(build.features).metadata.num_rows, request.config.index)


def partition_rows(features: Path, part: int, n_parts: int) -> np.ndarray:
    """Row numbers in the feature table of the users in population partition ``part`` of
    ``n_parts``: those with ``shard_of(user_id, n_parts) == part`` (index shard ``part``). Reads
    only the ``user_id`` column."""
    from lookalike.data.partitions import shard_of

    user_ids = pl.read_parquet(features, columns=["user_id"]).get_column("user_id")
    return np.flatnonzero(shard_of(user_ids, n_parts) == part).astype(np.int64)


def step_embed_part(build: BuildPaths, part: int, n_parts: int,
                    progress: Progress | None = None) -> dict[str, Any]:
    """Embed population partition ``part`` of ``n_parts`` (the users of index shard ``part``) into
    ``embeddings/parts/`` (:func:`lookalike.encoder.embed.embed_partition`); partitions are
    independent, so a task runner may embed them at once, in other processes."""
    from lookalike.encoder.embed import embed_partition

    paths = embed_partition(build.features, build.spec, build.model_dir, build.embeddings_dir,
                            part, partition_rows(build.features, part, n_parts),
                            progress=progress)
    return {"part": part, "n_parts": n_parts,
            "count": len(np.load(paths.rows, mmap_mode="r"))}


def step_embed_assemble(build: BuildPaths, n_parts: int,
                        progress: Progress = print) -> dict[str, Any]:
    """Scatter the ``n_parts`` embedded partitions into ``embeddings.npy`` and ``users.parquet`` in
    feature-table order (:func:`lookalike.encoder.embed.assemble_embeddings`: the same bytes as
    embedding in one piece). The parts stay until :func:`remove_embedding_parts`."""
    from lookalike.encoder.embed import assemble_embeddings

    paths = assemble_embeddings(build.features, build.spec, build.model_dir, build.embeddings_dir,
                                n_parts)
    manifest = read_json(paths.manifest)
    progress(f"embedded {manifest['count']:,} users in {n_parts} partition(s)")
    return manifest


def remove_embedding_parts(build: BuildPaths) -> None:
    """Delete ``embeddings/parts/`` once the index shards and the assembly have read it, so the
    build's files are the same however it was embedded."""
    from lookalike.encoder.embed import remove_parts

    remove_parts(build.embeddings_dir)


def step_embed(build: BuildPaths, progress: Progress = print, n_parts: int = 1) -> dict[str, Any]:
    """Embed the whole population in this process: every partition (:func:`step_embed_part`),
    then :func:`step_embed_assemble`. The parts are kept for :func:`step_index_shard`."""
    for part in range(n_parts):
        step_embed_part(build, part, n_parts, progress)
    return step_embed_assemble(build, n_parts, progress)


def step_index_shard(build: BuildPaths, request: BuildRequest, shard: int, n_shards: int,
                     progress: Progress | None = None) -> dict[str, Any]:
    """Build one shard's HNSW index (shards are independent: a task runner may run them at once)
    from its embedded partition (:func:`step_embed_part` with ``n_parts = n_shards``): the same
    file as from the assembled ``embeddings.npy``, without reading the rest of the population."""
    from lookalike.encoder.embed import part_paths
    from lookalike.search.index import build_shard_from_part

    part = part_paths(build.embeddings_dir, shard)
    info = build_shard_from_part(part.embeddings, part.rows, shard, n_shards, build.index_dir,
                                 request.config.index, progress=progress)
    return asdict(info)


def step_index_manifest(build: BuildPaths, request: BuildRequest, shards: list[dict[str, Any]],
                        progress: Progress = print) -> dict[str, Any]:
    """Measure recall against exact search and write the index manifest (fails below the floor)."""
    from lookalike.search.index import write_index_manifest
    from lookalike.search.manifest import ShardInfo

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

    The encoder is reused or retrained as the module docstring says (``request.mode``). A
    complete build with the same id is reused; an interrupted one continues (training from its
    last checkpoint). Returns the build, which is then current.

    Example::

        build = run_build(Workdir("work"), BuildRequest(events="events.parquet", profiles=None,
                                                        conversions="conversions.parquet"))
    """
    started_build = time.monotonic()
    build, fingerprints, plan = prepare_encoder_build(workdir, request)
    if reusable(build):
        return reuse_build(workdir, build, progress)
    with discard_on_failure(build):
        steps: dict[str, Any] = {"features": step_features(build, request, progress)}
        steps["drift"] = step_drift(build, request, plan, progress)
        plan = settle_encoder(build, request, plan, steps["drift"], steps["features"])
        build = rebind(workdir, build, request, fingerprints, plan)
    if build.is_complete():
        return reuse_build(workdir, build, progress)
    with discard_on_failure(build):
        steps["train"] = step_train(build, request, progress, plan)
        n_shards = partition_count(build, request)
        steps["embed"] = step_embed(build, progress, n_shards)
        shards: list[dict[str, Any]] = []
        started = time.monotonic()
        for shard in range(n_shards):
            shards.append(step_index_shard(build, request, shard, n_shards, progress))
            progress(shard_line(shards, n_shards, time.monotonic() - started))
        remove_embedding_parts(build)
        steps["index"] = step_index_manifest(build, request, shards, progress)
        finalize_build(workdir, build, request, fingerprints, steps)
    progress(completion_line(build, steps["train"], time.monotonic() - started_build))
    return build


def completion_line(build: BuildPaths, train: dict[str, Any], seconds: float) -> str:
    """The last progress line of a build: its id, wall time and why it trained or not."""
    return f"build {build.build_id} done in {seconds:.1f}s ({train['reason']})"


def reuse_build(workdir: Workdir, build: BuildPaths, progress: Progress = print) -> BuildPaths:
    """Make a complete build of the same inputs current instead of building it again."""
    progress(f"inputs and config unchanged: reusing build {build.build_id}")
    workdir.set_current(build.build_id)
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

"""The build flow: ingest -> features -> drift -> train (or reuse) -> embed -> index, as tasks.

Tasks are thin wrappers over :mod:`lookalike.build_steps` and pass only paths and small dicts. A build
whose id (a hash of input contents, config, package version and encoder source) is already
complete, with every file its manifest lists intact, is reused: none of its tasks run again. A
build refreshes (reuses the current build's encoder, no training) unless something forces a
retrain (:func:`lookalike.build_steps.plan_encoder`, :func:`~lookalike.build_steps.settle_encoder`).
A build that fails removes its unfinished folder (:func:`lookalike.build_steps.discard_on_failure`).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow, task, unmapped
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import ThreadPoolTaskRunner

from flows.common import IO_RETRIES, IO_RETRY_DELAYS, is_transient_io_error, log
from lookalike import build_steps as steps
from lookalike.core.workdir import BuildPaths, Workdir


@task(name="ingest-and-features", cache_policy=NO_CACHE, retries=IO_RETRIES,
      retry_delay_seconds=IO_RETRY_DELAYS, retry_condition_fn=is_transient_io_error)
def features_plan_task(build: BuildPaths, request: steps.BuildRequest) -> dict[str, Any]:
    """Validate the input tables, write the population's conversions and plan the feature
    table's user partitions."""
    return steps.step_features_plan(build, request)


@task(name="ingest-and-features-part", cache_policy=NO_CACHE, retries=IO_RETRIES,
      retry_delay_seconds=IO_RETRY_DELAYS, retry_condition_fn=is_transient_io_error,
      task_run_name="ingest-and-features-part-{index}")
def features_part_task(build: BuildPaths, request: steps.BuildRequest,
                       index: int) -> dict[str, int]:
    """One user partition of the point-in-time feature table, to a scratch file."""
    return steps.step_features_part(build, request, index)


@task(name="ingest-and-features-merge", cache_policy=NO_CACHE, retries=IO_RETRIES,
      retry_delay_seconds=IO_RETRY_DELAYS, retry_condition_fn=is_transient_io_error)
def features_merge_task(build: BuildPaths, request: steps.BuildRequest,
                        counts: list[dict[str, int]]) -> dict[str, Any]:
    """Merge the partitions into the feature table, fit its spec, write the ingest report."""
    return steps.step_features_merge(build, request, counts, progress=log)


@task(name="measure-drift", cache_policy=NO_CACHE)
def drift_task(build: BuildPaths, request: steps.BuildRequest,
               plan: steps.EncoderPlan) -> dict[str, Any]:
    """Feature PSI, embedding shift and converter rates against the previous build."""
    return steps.step_drift(build, request, plan, progress=log)


@task(name="train-encoder", cache_policy=NO_CACHE)
def train_task(build: BuildPaths, request: steps.BuildRequest,
               plan: steps.EncoderPlan) -> dict[str, Any]:
    """Contrastive training (resumes from its last checkpoint when a previous run died), or the
    previous build's encoder copied in when ``plan`` is a refresh."""
    return steps.step_train(build, request, progress=log, plan=plan)


@task(name="embed-population", cache_policy=NO_CACHE, retries=IO_RETRIES,
      retry_delay_seconds=IO_RETRY_DELAYS, retry_condition_fn=is_transient_io_error,
      task_run_name="embed-population-{part}")
def embed_part_task(build: BuildPaths, part: int, n_parts: int) -> dict[str, Any]:
    """Embed one population partition (the users of index shard ``part``) with the candidate
    tower (memory-bounded batches) into ``embeddings/parts/``."""
    return steps.step_embed_part(build, part, n_parts)


@task(name="embed-population-assemble", cache_policy=NO_CACHE, retries=IO_RETRIES,
      retry_delay_seconds=IO_RETRY_DELAYS, retry_condition_fn=is_transient_io_error)
def embed_assemble_task(build: BuildPaths, n_parts: int) -> dict[str, Any]:
    """``embeddings.npy`` and ``users.parquet`` in feature-table order from the partitions."""
    return steps.step_embed_assemble(build, n_parts, progress=log)


@task(name="index-shard", cache_policy=NO_CACHE, task_run_name="index-shard-{shard}")
def index_shard_task(build: BuildPaths, request: steps.BuildRequest, shard: int,
                     n_shards: int, embedded: dict[str, Any]) -> dict[str, Any]:
    """HNSW index of one of ``n_shards`` shards of the population, from its embedded partition
    (``embedded``: that partition's result, so the shard starts as soon as its part is written)."""
    if embedded["part"] != shard:
        raise ValueError(f"index shard {shard} was handed partition {embedded['part']}")
    return steps.step_index_shard(build, request, shard, n_shards, progress=log)


@task(name="index-manifest", cache_policy=NO_CACHE)
def index_manifest_task(build: BuildPaths, request: steps.BuildRequest,
                        shards: list[dict[str, Any]]) -> dict[str, Any]:
    """Measure recall against exact search and write the verified index manifest."""
    return steps.step_index_manifest(build, request, shards, progress=log)


@task(name="finalize-build", cache_policy=NO_CACHE)
def finalize_task(workdir: Workdir, build: BuildPaths, request: steps.BuildRequest,
                  fingerprints: dict[str, Any], reports: dict[str, Any]) -> dict[str, Any]:
    """Write the manifest last and switch the current pointer."""
    return steps.finalize_build(workdir, build, request, fingerprints, reports)


# One task at a time in the flow's own process: hnswlib, polars and torch already use every core,
# so index shards built at once only added their memory (10M users: 18.2 GiB peak, 2026-12-01).
# A Dask task runner (``--task-runner dask``) runs the mapped tasks on its workers instead.
@flow(name="lookalike-build", task_runner=ThreadPoolTaskRunner(max_workers=1))
def build_flow(workdir: str, conversions: str, events: str | None = None,
               profiles: str | None = None, as_of: str | None = None,
               config_path: str | None = None, mode: steps.EncoderMode = "auto") -> dict[str, Any]:
    """Build (or reuse) the model, embeddings and index for these inputs; returns a summary.

    ``mode``: ``auto`` refreshes from the current build's encoder unless a retrain is due,
    ``refresh`` always reuses it, ``retrain`` always trains (:class:`lookalike.build_steps.BuildRequest`).
    An ``s3://`` workdir is built in its local mirror, then published (files, manifest, pointer
    last: :func:`lookalike.object_store.build_at`).
    """
    from lookalike.core.config import load_config
    from lookalike.object_store import build_at

    request = steps.BuildRequest(events=events, profiles=profiles, conversions=conversions,
                                 as_of=as_of, config=load_config(config_path), mode=mode)
    summary: dict[str, Any] = {}

    def build_in(wd: Workdir) -> BuildPaths:
        summary.update(_build(wd, request))
        return BuildPaths(Path(summary["path"]))

    summary["path"] = build_at(workdir, build_in)[1]
    return summary


def _build(wd: Workdir, request: steps.BuildRequest) -> dict[str, Any]:
    """The build flow's tasks on a local workdir."""
    started = time.monotonic()
    build, fingerprints, plan = steps.prepare_encoder_build(wd, request)
    had_manifest = build.is_complete()
    if steps.reusable(build):
        return _reused(wd, build)
    if had_manifest:
        log(f"build {build.build_id} has missing or changed files: building it again")
    with steps.discard_on_failure(build):
        reports: dict[str, Any] = {"features": _features(build, request)}
        reports["drift"] = drift_task(build, request, plan)
        plan = steps.settle_encoder(build, request, plan, reports["drift"], reports["features"])
        build = steps.rebind(wd, build, request, fingerprints, plan)
    if build.is_complete():
        return _reused(wd, build)
    with steps.discard_on_failure(build):
        train = train_task.with_options(timeout_seconds=_train_timeout(request))
        reports["train"] = train(build, request, plan)
        reports["embed"], shards = _embed_and_index_shards(build, request)
        steps.remove_embedding_parts(build)
        reports["index"] = index_manifest_task(build, request, shards)
        manifest = finalize_task(wd, build, request, fingerprints, reports)
    log(steps.completion_line(build, reports["train"], time.monotonic() - started))
    create_markdown_artifact(
        key="lookalike-build", markdown=_build_markdown(manifest), description="lookalike build"
    )
    create_markdown_artifact(
        key="lookalike-drift", markdown=_drift_markdown(manifest), description="lookalike drift"
    )
    return {"build_id": build.build_id, "reused": False, "path": str(build.root)}


def _reused(workdir: Workdir, build: BuildPaths) -> dict[str, Any]:
    steps.reuse_build(workdir, build, progress=log)
    return {"build_id": build.build_id, "reused": True, "path": str(build.root)}


def _features(build: BuildPaths, request: steps.BuildRequest) -> dict[str, Any]:
    """Validate and plan, one task per user partition of the feature table (a task runner may
    write them at once, in other processes), then the merge and spec; every one is submitted to
    the task runner, so on Dask this process only passes paths and counts."""
    n_parts = features_plan_task.submit(build, request).result()["n_parts"]
    counts = features_part_task.map(unmapped(build), unmapped(request), list(range(n_parts)))
    return features_merge_task.submit(build, request, [c.result() for c in counts]).result()


def _embed_and_index_shards(build: BuildPaths, request: steps.BuildRequest,
                            ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One embedding task per population partition, each followed by the index shard of the same
    users, and the assembly of ``embeddings.npy`` once every partition is embedded (a task runner
    may run them at once, on other machines: tasks pass only paths and small dicts). Returns the
    embedding manifest and the shards' infos."""
    n_parts = steps.partition_count(build, request)
    parts = embed_part_task.map(unmapped(build), list(range(n_parts)), unmapped(n_parts))
    futures = index_shard_task.map(
        unmapped(build), unmapped(request), list(range(n_parts)), unmapped(n_parts), parts
    )
    assembled = embed_assemble_task.submit(build, n_parts, wait_for=parts)
    started, shards = time.monotonic(), []
    for future in futures:
        shards.append(future.result())
        log(steps.shard_line(shards, n_parts, time.monotonic() - started))
    return assembled.result(), shards


def _train_timeout(request: steps.BuildRequest) -> float:
    """The training budget plus room for validation, health checks and saving."""
    return request.config.train.time_budget_seconds * 1.5 + 300


def _memorization_lines(figures: dict[str, dict[str, Any]]) -> str:
    """One line per type the encoder memorized (exports of its converters skip the embedding)."""
    return "".join(
        f"- memorized '{name}': seeds vs held-out AUC {f['embedding']:.3f} in the embedding, "
        f"{f['raw']:.3f} on the raw features\n"
        for name, f in sorted(figures.items()) if f["flagged"]
    )


def _build_markdown(manifest: dict[str, Any]) -> str:
    features = manifest["steps"]["features"]["features"]
    train, index = manifest["steps"]["train"], manifest["steps"]["index"]
    return (
        f"# Build {manifest['build_id']}\n\n"
        f"- users: {features['n_users']}, as of {features['as_of']}\n"
        f"- features: {features['n_numeric']} numeric, {features['n_categorical']} categorical\n"
        f"- model {train['model_build_id']}: best epoch {train['best_epoch']} of "
        f"{train['epochs_run']} ({train['stop_reason']}), validation recall "
        f"{train['validation_recall']:.3f}\n"
        f"{_memorization_lines(train.get('memorization', {}))}"
        f"- index: recall@10 {index['recall_at_10']:.3f}, recall@100 {index['recall_at_100']:.3f}\n"
        f"- encoder from build {train['encoder_from']}: {train['reason']}\n"
    )


def _drift_markdown(manifest: dict[str, Any], top: int = 10) -> str:
    """``steps.drift`` as markdown: what was crossed, the embedding figures, the ``top`` largest
    feature PSIs and the converter rates."""
    drift = manifest["steps"]["drift"]
    if drift["previous_build"] is None:
        return f"# Drift of build {manifest['build_id']}\n\nNo previous build to compare with.\n"
    crossed = "".join(f"- **crossed**: {line}\n" for line in drift["crossed"]) or "- no limit crossed\n"
    embedding = drift["embedding"]
    shift = ("not computable (the previous encoder's features are missing)" if embedding is None
             else f"median {embedding['median_shift']:.4f}, p90 {embedding['p90_shift']:.4f}, "
                  f"nearest-neighbour similarity PSI {embedding['nn_similarity_psi']:.4f}")
    features = "".join(f"| {f['feature']} | {f['psi']:.4f} |\n" for f in drift["features"][:top])
    rates = "".join(f"| {r['type']} | {r['previous']:.4%} | {r['current']:.4%} |\n"
                    for r in drift["converter_rate"])
    return (
        f"# Drift of build {manifest['build_id']} against {drift['previous_build']}\n\n"
        f"{crossed}- embedding shift: {shift}\n\n"
        f"| feature | PSI |\n|---|---|\n{features}\n"
        f"| conversion type | previous rate | current rate |\n|---|---|---|\n{rates}"
    )

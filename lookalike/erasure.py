"""Erase users (right to erasure) from a workdir: their rows leave every file the workdir keeps.

What :func:`erase_users` does, and why:

- The current build is rewritten into a staging folder without the users' rows in
  ``features.parquet``, ``conversions.parquet``, ``embeddings/embeddings.npy`` and
  ``embeddings/users.parquet`` (rows are *dropped*, not zeroed). Index labels are embedding row
  positions, so dropping rows renumbers them: the index is **rebuilt** from the remaining rows
  (:func:`lookalike.search.index.build_index`, which also re-measures recall) rather than compacted
  (compaction keeps labels and would need the erased rows to stay in ``embeddings.npy``).
  ``embeddings.json`` and the build's ``manifest.json`` get new checksums; the manifest records
  the erasure (time and count, never the ids). Training checkpoints are not copied (they were
  made from the old feature table and cannot be resumed). The model weights are kept: they are
  aggregate parameters, not per-user rows; to retrain without the users, put them on
  ``privacy.suppression_list`` and build again.
- The staging folder then replaces the build folder (same build id, so a later ``build`` with the
  same inputs reuses the erased build instead of bringing the users back), in one atomic exchange
  of the two folders where the system allows it (Linux ``renameat2``), so a crash leaves the old
  build or the erased one current, both complete; elsewhere in two renames, and a crash between
  them leaves no current build until the next ``erase``. A rerun of ``erase`` finishes the job.
- Every **other** build in ``builds/`` is deleted (older builds hold the users too; rewriting
  builds nobody uses is work without benefit, and a deleted build cannot leak).
- The last export of each audience name (``audiences/<name>/last.parquet``) and its keyed-hash
  seed list lose the users' rows.

Audience files already exported elsewhere are outside the workdir and are not touched: the report
says so. Export refuses suppressed users from then on when the ids are added to
``privacy.suppression_list``.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lookalike.audience.export import erase_from_last_export
from lookalike.core.artifacts import (
    atomic_write,
    exchange_paths,
    read_json,
    sha256_file,
    write_json,
)
from lookalike.core.progress import Progress
from lookalike.core.config import LookalikeConfig
from lookalike.data.drift import SKETCH_FILE
from lookalike.search.index import build_index
from lookalike.data.schema import USER_ID
from lookalike.privacy.suppression import is_listed, load_id_list
from lookalike.core.workdir import BuildPaths, Workdir, file_checksums, verify_build

STAGING_PREFIX = ".erasing-"
RETIRED_PREFIX = ".erased-"


@dataclass(frozen=True)
class ErasureReport:
    """What an erasure removed."""

    build_id: str
    users_requested: int
    rows_removed: dict[str, int]  # file (relative to the build) -> rows dropped
    builds_deleted: list[str]
    audience_rows_removed: dict[str, int]  # audience name -> rows dropped from its last export


def erase_users(workdir: Workdir, users: str, config: LookalikeConfig = LookalikeConfig(),
                progress: Progress = print) -> ErasureReport:
    """Physically remove the users listed in ``users`` (a user list) from ``workdir``.

    Raises:
        InputError: an unreadable user list.
        ArtifactError: no current build, or a current build whose files fail their checksums.

    Example::

        report = erase_users(Workdir("work"), "erase-requests.csv")
        print(report.rows_removed)
    """
    _finish_interrupted_swap(workdir)
    erased = load_id_list(users, "erasure list", config.ingest.csv_separator)
    build = workdir.current()
    manifest = verify_build(build)
    staging = BuildPaths(build.root.with_name(STAGING_PREFIX + build.build_id))
    shutil.rmtree(staging.root, ignore_errors=True)
    removed = _write_erased_copy(build, staging, erased, config, manifest)
    _swap_in(staging, build)
    progress(f"erased {len(erased)} listed users from build {build.build_id}: {removed}")
    deleted = _delete_other_builds(workdir, build.build_id)
    audiences = _erase_from_audiences(workdir, erased)
    if audiences:
        progress(f"removed users from the last exports of {sorted(audiences)}")
    progress("audience files exported outside the workdir are not touched; "
             "add the users to privacy.suppression_list so no export includes them")
    return ErasureReport(build.build_id, len(erased), removed, deleted, audiences)


def _write_erased_copy(build: BuildPaths, staging: BuildPaths, erased: pl.Series,
                       config: LookalikeConfig, manifest: dict[str, Any]) -> dict[str, int]:
    staging.root.mkdir(parents=True)
    # the feature sketch holds shares and quantile edges, no user rows: the next build's drift
    # is measured against it
    for name in ("feature_spec.json", "ingest_report.json", SKETCH_FILE):
        if (build.root / name).is_file():
            shutil.copy2(build.root / name, staging.root / name)
    shutil.copytree(build.model_dir, staging.model_dir,
                    ignore=shutil.ignore_patterns("checkpoints"))
    removed = {
        "features.parquet": _filter_parquet(build.features, staging.features, erased),
        "conversions.parquet": _filter_parquet(build.conversions, staging.conversions, erased),
    }
    removed["embeddings/embeddings.npy"] = _filter_embeddings(build, staging, erased)
    embed_info = _rewrite_embeddings_manifest(build, staging)
    index = build_index(staging.embeddings, staging.users, staging.index_dir, config.index,
                        read_json(staging.model_dir / "model.json")["model_build_id"])
    steps = {**manifest["steps"], "embed": embed_info,
             "index": {**manifest["steps"].get("index", {}), "count": index.element_count,
                       "recall_at_10": index.recall_at_10, "recall_at_100": index.recall_at_100}}
    erasures = [*manifest.get("erasures", []),
                {"at": datetime.now(UTC).isoformat(), "users_requested": len(erased),
                 "rows_removed": removed}]
    write_json(staging.manifest, {**manifest, "steps": steps, "erasures": erasures,
                                  "files": file_checksums(staging)})
    return removed


def _filter_parquet(source: Path, target: Path, erased: pl.Series) -> int:
    frame = pl.read_parquet(source)
    kept = frame.filter(~is_listed(pl.col(USER_ID), erased))
    with atomic_write(target) as tmp:
        kept.write_parquet(tmp)
    return frame.height - kept.height


def _filter_embeddings(build: BuildPaths, staging: BuildPaths, erased: pl.Series) -> int:
    users = pl.read_parquet(build.users)
    keep = ~users.select(is_listed(pl.col(USER_ID), erased)).to_series().to_numpy()
    embeddings = np.load(build.embeddings, mmap_mode="r")
    with atomic_write(staging.embeddings) as tmp:
        kept = np.lib.format.open_memmap(tmp, mode="w+", dtype=embeddings.dtype,
                                         shape=(int(keep.sum()), embeddings.shape[1]))
        kept[:] = embeddings[keep]
        kept.flush()
        del kept
    with atomic_write(staging.users) as tmp:
        users.filter(pl.Series(keep)).write_parquet(tmp)
    return int((~keep).sum())


def _rewrite_embeddings_manifest(build: BuildPaths, staging: BuildPaths) -> dict[str, Any]:
    info = read_json(build.embeddings_dir / "embeddings.json")
    info = {**info, "count": len(np.load(staging.embeddings, mmap_mode="r")),
            "embeddings_sha256": sha256_file(staging.embeddings),
            "users_sha256": sha256_file(staging.users)}
    write_json(staging.embeddings_dir / "embeddings.json", info)
    return info


def _swap_in(staging: BuildPaths, build: BuildPaths) -> None:
    """Replace the build folder by the staging one and delete the old build (one exchange, else
    two renames; see the module docstring)."""
    if exchange_paths(staging.root, build.root):
        shutil.rmtree(staging.root)  # the old build, now in the staging folder's place
        return
    retired = build.root.with_name(RETIRED_PREFIX + build.build_id)
    shutil.rmtree(retired, ignore_errors=True)
    build.root.rename(retired)
    staging.root.rename(build.root)
    shutil.rmtree(retired)


def _finish_interrupted_swap(workdir: Workdir) -> None:
    """After a crash between the renames of :func:`_swap_in`: put the erased copy in place."""
    if not workdir.builds_dir.is_dir():
        return
    for staging in workdir.builds_dir.glob(STAGING_PREFIX + "*"):
        target = workdir.builds_dir / staging.name[len(STAGING_PREFIX):]
        if not target.exists() and BuildPaths(staging).is_complete():
            staging.rename(target)
        else:
            shutil.rmtree(staging)
    for retired in workdir.builds_dir.glob(RETIRED_PREFIX + "*"):
        shutil.rmtree(retired)


def _delete_other_builds(workdir: Workdir, keep: str) -> list[str]:
    deleted = []
    for folder in sorted(workdir.builds_dir.iterdir()):
        if folder.is_dir() and folder.name != keep:
            shutil.rmtree(folder)
            deleted.append(folder.name)
    return deleted


def _erase_from_audiences(workdir: Workdir, erased: pl.Series) -> dict[str, int]:
    removed = {}
    audiences = workdir.root / "audiences"
    for folder in sorted(audiences.iterdir()) if audiences.is_dir() else []:
        if not folder.is_dir():
            continue
        count = erase_from_last_export(folder, erased)
        if count:
            removed[folder.name] = count
    return removed


"""Crash-safe writing and checksum-verified reading of files.

Every writer in the package goes through :func:`atomic_write`: the data lands in a temporary file
in the destination folder and is renamed over the target only once complete, so a reader sees the
old file or the whole new one, never a partial file.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.core.errors import ArtifactError

TEMP_MARKER = ".tmp-"
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # <fcntl.h>, <linux/fs.h>


@contextlib.contextmanager
def atomic_write(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` if the block succeeds."""
    target = Path(target)
    tmp = _temp_path(target)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def scratch_files(target: str | Path, count: int) -> Iterator[list[Path]]:
    """Yield ``count`` temporary paths beside ``target`` and delete them after the block.

    They are named like :func:`atomic_write`'s temporary file, so the sweeps below also find those
    a killed writer left behind.
    """
    stem = _temp_path(Path(target))
    paths = [stem.with_name(f"{stem.name}-part{i}") for i in range(count)]
    try:
        yield paths
    finally:
        for path in paths:
            path.unlink(missing_ok=True)


def _temp_path(target: Path) -> Path:
    """A new temporary path beside ``target`` (its folder is created if missing)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return target.with_name(f".{target.name}{TEMP_MARKER}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _fsync(path: Path) -> None:
    if path.is_file():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def exchange_paths(first: str | Path, second: str | Path) -> bool:
    """Swap two existing paths (folders included) in one atomic step; False where the system
    cannot (no Linux ``renameat2``, or a file system without ``RENAME_EXCHANGE``), so the caller
    falls back to renames. A crash leaves both paths swapped or neither."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second),
                 _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(first), None, str(second))


def write_json(target: str | Path, payload: Any) -> Path:
    """Write ``payload`` as indented, key-sorted JSON, atomically."""
    with atomic_write(target) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")
    return Path(target)


def json_round_trip(payload: Any) -> Any:
    """``payload`` as :func:`read_json` returns it after :func:`write_json`: render a report from
    this and re-rendering it from the file gives the same bytes.

    Example:
        >>> json_round_trip({"path": Path("a.parquet"), "sizes": (1, 2)})
        {'path': 'a.parquet', 'sizes': [1, 2]}
    """
    return json.loads(json.dumps(payload, default=str))


def read_json(path: str | Path) -> Any:
    """Read a JSON artifact, with an :class:`ArtifactError` naming the file on failure."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path} is missing") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path} is not valid JSON ({exc}); the file is corrupted") from exc


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, streamed by :func:`hashlib.file_digest`."""
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def verify_checksum(path: str | Path, expected: str) -> None:
    """Raise :class:`ArtifactError` unless ``path`` exists and hashes to ``expected``."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path} is missing")
    actual = sha256_file(path)
    if actual != expected:
        raise ArtifactError(
            f"{path} does not match its manifest (sha256 {actual[:12]}..., expected "
            f"{expected[:12]}...): the file was modified or corrupted; rebuild it"
        )


def sweep_stale_temp_files(folder: str | Path, older_than_seconds: float = 0.0) -> list[Path]:
    """Delete temporary files left behind by killed writers; return what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    now = time.time()
    removed = []
    for path in folder.rglob(f"*{TEMP_MARKER}*"):
        if path.is_file() and now - path.stat().st_mtime >= older_than_seconds:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def sweep_temp_files_of(target: str | Path) -> list[Path]:
    """Delete temporary files that killed writers of ``target`` left beside it."""
    target = Path(target)
    if not target.parent.is_dir():
        return []
    removed = [p for p in target.parent.glob(f".{target.name}{TEMP_MARKER}*") if p.is_file()]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


@dataclass(frozen=True)
class ReportFiles:
    """A report written twice: JSON for programs, Markdown for people."""

    report_json: Path
    report_md: Path

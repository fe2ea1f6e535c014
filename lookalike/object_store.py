"""A workdir, or an exported audience, on an object store (``s3://bucket/prefix``) through fsspec.

An object store has no rename, so a build cannot be switched in atomically as on a disk. Instead a
remote workdir is mirrored by a local folder (``$LOOKALIKE_CACHE/<hash of the URL>``, default
under the system's temporary folder) and every command runs on the mirror exactly as on a local
workdir; only the moves between the two are new:

- **pull** (before ``build``, ``export`` and ``erase``): the build the remote ``current.json``
  names is downloaded into the mirror, each file checked against the remote manifest's sha256
  (files already in the mirror with the right checksum are kept), then its manifest; the
  remote ``audiences/`` folder (last exports, seed key) replaces the mirror's.
- **publish** (after ``build`` and ``erase``): the build's files go up first, then its
  ``manifest.json``, then ``current.json`` last. Each object appears whole or not at all (a
  single PUT, or a multipart upload completed in one call), so a process killed at any moment
  leaves ``current.json`` naming the previous complete build; a re-run reuses the build from the
  mirror and publishes it again.
- An **erasure** rewrites the current build under the same build id. Its files cannot be
  replaced in the folder the remote pointer names (a reader would meet the new files under the old
  manifest), so the erased build goes to a new folder ``builds/<id>-erased-<time>``, the pointer
  names that folder, and only then are the other remote build folders deleted.
- An audience exported to an ``s3://`` path is written in a local folder, then its reports go
  up and the audience Parquet last: where the audience exists, its reports do.

Credentials and endpoint come from the standard AWS environment (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``
for S3-compatible stores such as MinIO) or ``~/.aws``, as s3fs and polars read them. Two
processes on one machine must not share a mirror at the same time: give each its own
``LOOKALIKE_CACHE``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from typing import TYPE_CHECKING

import fsspec

from lookalike.core.artifacts import atomic_write, sha256_file
from lookalike.core.errors import ArtifactError
from lookalike.core.workdir import BuildPaths, Workdir, verify_build

if TYPE_CHECKING:  # both load polars and more: the command line's first checks stay quick
    from lookalike.audience.export import ExportResult
    from lookalike.erasure import ErasureReport

CACHE_ENV = "LOOKALIKE_CACHE"
POINTER = "current.json"
MANIFEST = "manifest.json"


def is_remote(location: str | Path) -> bool:
    """Whether ``location`` is an fsspec URL other than a local file.

    Example:
        >>> is_remote("s3://bucket/work"), is_remote("work"), is_remote("file:///tmp/work")
        (True, False, False)
    """
    text = str(location)
    return "://" in text and text.split("://", 1)[0] not in ("file", "local")


def mirror_folder(url: str) -> Path:
    """The local folder that mirrors ``url``: ``$LOOKALIKE_CACHE`` (default
    ``<temp>/lookalike-cache``) / the first 16 hex digits of the URL's sha256.

    Example:
        >>> mirror_folder("s3://b/w") == mirror_folder("s3://b/w/")
        True
    """
    base = os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "lookalike-cache"
    return Path(base) / hashlib.sha256(url.rstrip("/").encode()).hexdigest()[:16]


class RemoteWorkdir:
    """A workdir at an fsspec URL and its local mirror (see the module docstring).

    Example::

        remote = RemoteWorkdir("s3://bucket/work")
        build = run_build(remote.pull(), request)
        remote.publish(build)
    """

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.local = Workdir(mirror_folder(self.url))

    def key(self, relative: str) -> str:
        """The store's key of a path relative to the workdir."""
        return f"{self.root}/{relative}"

    def pointer(self) -> dict[str, str] | None:
        """The remote ``current.json`` (``build_id`` and, after an erasure, ``folder``)."""
        try:
            return json.loads(self.fs.cat_file(self.key(POINTER)))
        except FileNotFoundError:
            return None

    def current_folder(self) -> str:
        """The current build's folder relative to the workdir; a clear error when none."""
        pointer = self.pointer()
        if pointer is None:
            raise ArtifactError(f"{self.url} has no current build; run "
                                f"`lookalike build --workdir {self.url} ...`")
        return pointer.get("folder", f"builds/{pointer['build_id']}")

    def pull(self) -> Workdir:
        """Mirror the remote current build (every file verified) and ``audiences/``; return the
        mirror, whose current build is the remote one (none when the remote has none)."""
        self.fs.invalidate_cache()
        self.local.pointer.unlink(missing_ok=True)
        pointer = self.pointer()
        if pointer is not None:
            folder = self.current_folder()
            manifest_bytes = self._read(f"{folder}/{MANIFEST}")
            build = self.local.build(pointer["build_id"])
            if build.manifest.is_file() and build.manifest.read_bytes() != manifest_bytes:
                build.manifest.unlink()
            for name, digest in json.loads(manifest_bytes)["files"].items():
                self._download(f"{folder}/{name}", build.root / name, digest)
            with atomic_write(build.manifest) as tmp:
                tmp.write_bytes(manifest_bytes)
            self.local.set_current(build.build_id)
        self._pull_audiences()
        return self.local

    def publish(self, build: BuildPaths, folder: str | None = None) -> None:
        """Upload ``build``'s files, then its manifest, then point ``current.json`` at it.

        ``folder``: where it goes, relative to the workdir (default ``builds/<build id>``).
        Nothing is uploaded when the remote current build already has this manifest.
        """
        manifest = verify_build(build)
        pointer = self.pointer()
        if pointer is not None and pointer["build_id"] == build.build_id and \
                self._read(f"{self.current_folder()}/{MANIFEST}") == build.manifest.read_bytes():
            return
        folder = folder or f"builds/{build.build_id}"
        for name in manifest["files"]:
            self.upload(build.root / name, self.key(f"{folder}/{name}"))
        self.upload(build.manifest, self.key(f"{folder}/{MANIFEST}"))
        target = {"build_id": build.build_id}
        if folder != f"builds/{build.build_id}":
            target["folder"] = folder
        self.fs.pipe_file(self.key(POINTER), json.dumps(target, indent=2).encode() + b"\n")

    def push_audiences(self) -> None:
        """Upload the mirror's ``audiences/`` (last exports and the seed key)."""
        audiences = self.local.root / "audiences"
        for path in sorted(audiences.rglob("*")) if audiences.is_dir() else []:
            if path.is_file():
                self.upload(path, self.key(path.relative_to(self.local.root).as_posix()))

    def delete_builds_except(self, folder: str) -> list[str]:
        """Delete every remote build folder but ``folder``; return the deleted folder names."""
        builds = self.key("builds")
        deleted = []
        for path in sorted(self.fs.ls(builds, detail=False)) if self.fs.exists(builds) else []:
            name = PurePosixPath(path).name
            if f"builds/{name}" != folder:
                self.fs.rm(path, recursive=True)
                deleted.append(name)
        return deleted

    def upload(self, local: Path, key: str) -> None:
        """One file up, as one object (what the kill trials interrupt)."""
        self.fs.put_file(str(local), key)

    def _read(self, relative: str) -> bytes:
        try:
            return self.fs.cat_file(self.key(relative))
        except FileNotFoundError as exc:
            raise ArtifactError(f"{self.url}/{relative} is missing; rebuild with "
                                f"`lookalike build --workdir {self.url} ...`") from exc

    def _download(self, relative: str, target: Path, digest: str) -> None:
        """``relative`` into ``target`` unless it is there already, checked against ``digest``."""
        if target.is_file() and sha256_file(target) == digest:
            return
        with atomic_write(target) as tmp:
            self.fs.get_file(self.key(relative), str(tmp))
            if sha256_file(tmp) != digest:
                raise ArtifactError(
                    f"{self.url}/{relative} does not match its manifest (sha256 "
                    f"{sha256_file(tmp)[:12]}..., expected {digest[:12]}...): it was modified or "
                    f"is being rewritten; rerun, or rebuild with `lookalike build --workdir "
                    f"{self.url} ...`")

    def _pull_audiences(self) -> None:
        audiences = self.local.root / "audiences"
        shutil.rmtree(audiences, ignore_errors=True)
        remote = self.key("audiences")
        for key in sorted(self.fs.find(remote)) if self.fs.exists(remote) else []:
            with atomic_write(audiences / PurePosixPath(key).relative_to(remote)) as tmp:
                self.fs.get_file(key, str(tmp))


def require_current(workdir: str | Path) -> None:
    """Raise :class:`ArtifactError` unless the workdir, local or remote, has a current build."""
    if is_remote(workdir):
        RemoteWorkdir(str(workdir)).current_folder()
    else:
        Workdir(workdir).current()


def build_at(workdir: str | Path,
             build: Callable[[Workdir], BuildPaths]) -> tuple[BuildPaths, str]:
    """Run ``build`` on the workdir (a remote one: on its pulled mirror, then publish the build);
    return the build and where it is (its folder, or its URL).

    Example::

        build, url = build_at("s3://bucket/work", lambda wd: run_build(wd, request))
    """
    if not is_remote(workdir):
        built = build(Workdir(workdir))
        return built, str(built.root)
    remote = RemoteWorkdir(str(workdir))
    built = build(remote.pull())
    remote.publish(built)
    return built, f"{remote.url}/{remote.current_folder()}"


def export_at(workdir: str | Path, out: str | Path,
              export: Callable[[BuildPaths, Path], ExportResult]) -> ExportResult:
    """Run ``export(current build, audience path)`` with the workdir and ``out`` each local or
    remote: a remote workdir is pulled first and its ``audiences/`` pushed after; a remote
    ``out`` is written locally, then its reports uploaded, the audience last.

    Example::

        export_at("s3://b/work", "s3://b/out/buyers.parquet",
                  lambda build, out: export_audience(build, "seeds.csv", out, size=1000))
    """
    remote = RemoteWorkdir(str(workdir)) if is_remote(workdir) else None
    local = remote.pull() if remote else Workdir(workdir)
    staging = mirror_folder(str(out)) / PurePosixPath(str(out)).name if is_remote(out) else None
    result = export(local.current(), staging or Path(out))
    if staging is not None:
        result = upload_export(result, str(out))
    if remote is not None:
        remote.push_audiences()
    return result


def upload_export(result: ExportResult, out: str) -> ExportResult:
    """Upload the reports of a locally written audience beside ``out``, then the audience as
    ``out``; the result with the URLs."""
    fs, key = fsspec.core.url_to_fs(out)
    parent, remote_parent = PurePosixPath(key).parent, out.rsplit("/", 1)[0]
    for report in (result.report_json, result.report_md, result.report_html):
        fs.put_file(str(report), str(parent / report.name))
    fs.put_file(str(result.audience), key)
    return dataclasses.replace(
        result, audience=out, report_json=f"{remote_parent}/{result.report_json.name}",
        report_md=f"{remote_parent}/{result.report_md.name}",
        report_html=f"{remote_parent}/{result.report_html.name}")


def erase_at(workdir: str | Path, erase: Callable[[Workdir], ErasureReport]) -> ErasureReport:
    """Run ``erase`` on the workdir; a remote one: on its pulled mirror, then the erased build is
    published to a new folder (pointer last), the last exports pushed and the other remote build
    folders deleted (they still hold the users).

    Example::

        erase_at("s3://bucket/work", lambda wd: erase_users(wd, "erase.csv"))
    """
    if not is_remote(workdir):
        return erase(Workdir(workdir))
    remote = RemoteWorkdir(str(workdir))
    report = erase(remote.pull())
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    folder = f"builds/{report.build_id}-erased-{stamp}"
    remote.publish(remote.local.current(), folder)
    remote.push_audiences()
    deleted = remote.delete_builds_except(folder)  # its own folder before the erasure included
    older = {name for name in deleted if name != report.build_id}
    return dataclasses.replace(report, builds_deleted=sorted({*report.builds_deleted, *older}))


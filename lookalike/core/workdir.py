"""Layout of a workdir: versioned builds and a pointer to the current one.

::

    W/
      current.json                 {"build_id": ...}, switched atomically after a build completes
      builds/<build_id>/
        features.parquet           one row per user, raw feature values
        feature_spec.json          names, kinds, fitted scaling
        conversions.parquet        validated conversions of population users
        model/                     model.safetensors, model.json, checkpoints/
        embeddings/                embeddings.npy (float32 or float16, row i = users.parquet row
                                   i), users.parquet
        index/                     shard-*.bin, index.json
        report.html                training curve, nearest-neighbour similarities, drift (plots)
        manifest.json              written last: a build without it is incomplete
      audiences/<name>/            last export of each audience name (for overlap reports)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.core.artifacts import read_json, sha256_file, verify_checksum, write_json
from lookalike.core.errors import ArtifactError


@dataclass(frozen=True)
class BuildPaths:
    """Where each artifact of one build lives."""

    root: Path

    @property
    def build_id(self) -> str:
        return self.root.name

    @property
    def features(self) -> Path:
        return self.root / "features.parquet"

    @property
    def spec(self) -> Path:
        return self.root / "feature_spec.json"

    @property
    def conversions(self) -> Path:
        return self.root / "conversions.parquet"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def embeddings_dir(self) -> Path:
        return self.root / "embeddings"

    @property
    def embeddings(self) -> Path:
        return self.embeddings_dir / "embeddings.npy"

    @property
    def users(self) -> Path:
        return self.embeddings_dir / "users.parquet"

    @property
    def index_dir(self) -> Path:
        return self.root / "index"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    def is_complete(self) -> bool:
        return self.manifest.is_file()

    def model_build_id(self) -> str:
        """The ``model_build_id`` recorded in ``model/model.json``."""
        model_json = self.model_dir / "model.json"
        info = read_json(model_json)
        if "model_build_id" not in info:
            raise ArtifactError(f"{model_json} has no model_build_id; re-run training")
        return str(info["model_build_id"])


class Workdir:
    """A folder that keeps versioned builds and knows which one is current."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def builds_dir(self) -> Path:
        return self.root / "builds"

    @property
    def pointer(self) -> Path:
        return self.root / "current.json"

    def audience_dir(self, name: str) -> Path:
        return self.root / "audiences" / name

    def build(self, build_id: str) -> BuildPaths:
        return BuildPaths(self.builds_dir / build_id)

    def current(self) -> BuildPaths:
        """The current complete build; a clear error when there is none."""
        if not self.pointer.is_file():
            raise ArtifactError(
                f"{self.root} has no current build; run `lookalike build --workdir {self.root} ...`"
            )
        build = self.build(read_json(self.pointer)["build_id"])
        if not build.is_complete():
            raise ArtifactError(f"{build.root} is named current but has no manifest; rebuild it")
        return build

    def set_current(self, build_id: str) -> None:
        """Point ``current.json`` at a complete build (atomic rename)."""
        build = self.build(build_id)
        if not build.is_complete():
            raise ArtifactError(f"refusing to make incomplete build {build.root} current")
        write_json(self.pointer, {"build_id": build_id})


def file_checksums(build: BuildPaths) -> dict[str, str]:
    """sha256 of every file of the build but the manifest and training checkpoints."""
    return {
        str(p.relative_to(build.root)): sha256_file(p)
        for p in sorted(build.root.rglob("*"))
        if p.is_file() and p != build.manifest and "checkpoints" not in p.parts
    }


def load_manifest(build: BuildPaths) -> dict[str, Any]:
    return read_json(build.manifest)


def verify_build(build: BuildPaths) -> dict[str, Any]:
    """Check every file the manifest lists against its sha256; return the manifest.

    Raises:
        ArtifactError: a missing manifest, or a listed file missing or modified.
    """
    manifest = load_manifest(build)
    for name, digest in manifest["files"].items():
        verify_checksum(build.root / name, digest)
    return manifest

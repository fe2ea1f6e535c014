"""The index manifest (``index.json``): dimension, space, parameters, counts, the sha256 of every
shard file, measured recall, the model build id, and suppressed and removed labels. hnswlib
files carry no header of their own, so the manifest is what a loader checks them against.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path

from lookalike.core.artifacts import (
    read_json,
    write_json,
)
from lookalike.core.errors import ArtifactError
from lookalike.data.partitions import SHARD_HASH

SPACE = "ip"
MANIFEST_NAME = "index.json"


MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ShardInfo:
    """One saved shard: its file (relative to the index folder), checksum and element count.

    ``count`` includes suppressed (tombstoned) elements, which are still in the file.
    """

    shard: int
    n_shards: int
    file: str
    sha256: str
    count: int


@dataclass(frozen=True)
class IndexManifest:
    """Everything needed to load an index safely and to know what it contains (``index.json``).

    ``element_count`` counts live elements (returned by queries). ``suppressed`` labels are
    tombstoned in the files; ``removed`` labels are rows of the embeddings left out of the files
    (erased by :func:`compact`). ``label_bound`` exceeds every label in the files.
    """

    model_build_id: str
    dim: int
    M: int
    ef_construction: int
    ef: int
    seed: int
    n_shards: int
    element_count: int
    label_bound: int
    shards: list[ShardInfo]
    suppressed: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    recall_at_10: float | None = None
    recall_at_100: float | None = None
    recall_queries: int = 0
    space: str = SPACE
    shard_hash: str = SHARD_HASH
    hnswlib_version: str = field(default_factory=lambda: version("hnswlib"))
    version: int = MANIFEST_VERSION

    def save(self, index_dir: Path) -> Path:
        return write_json(Path(index_dir) / MANIFEST_NAME, asdict(self))


def read_index_manifest(index_dir: Path) -> IndexManifest:
    """Read and validate ``index.json``; :class:`ArtifactError` if it is missing or foreign."""
    path = Path(index_dir) / MANIFEST_NAME
    raw = read_json(path)
    try:
        manifest = IndexManifest(**{**raw, "shards": [ShardInfo(**s) for s in raw["shards"]]})
    except (KeyError, TypeError) as exc:
        raise ArtifactError(f"{path} is not an index manifest ({exc}); rebuild the index") from exc
    if manifest.version != MANIFEST_VERSION:
        raise ArtifactError(
            f"{path} has manifest version {manifest.version}, this code reads {MANIFEST_VERSION}; "
            "rebuild the index"
        )
    if manifest.space != SPACE or manifest.shard_hash != SHARD_HASH:
        raise ArtifactError(
            f"{path} uses space {manifest.space!r} and sharding {manifest.shard_hash!r}; this code "
            f"needs {SPACE!r} and {SHARD_HASH!r}; rebuild the index"
        )
    return manifest


def shard_file_name(shard: int, n_shards: int) -> str:
    return f"shard-{shard:04d}-of-{n_shards:04d}.bin"


def checked_shard_set(shards: list[ShardInfo]) -> list[ShardInfo]:
    shards = sorted(shards, key=lambda s: s.shard)
    n_shards = len(shards)
    if [s.shard for s in shards] != list(range(n_shards)) or any(
        s.n_shards != n_shards for s in shards
    ):
        raise ArtifactError(
            f"shard infos {[(s.shard, s.n_shards) for s in shards]} are not one complete set "
            "0..S-1 of S shards; build the missing shards"
        )
    return shards

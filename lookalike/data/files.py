"""The files behind a table's path: a file, a folder of parts or a glob, local or an fsspec URL.

Kept apart from :mod:`lookalike.data.ingest` (no polars or pyarrow import), so the command line
can check that every path exists in a fraction of a second, before any work starts.
"""

from __future__ import annotations

import glob as globlib
import hashlib
from typing import Any

import fsspec

from lookalike.core.errors import InputError


def resolve_files(path: str) -> list[str]:
    """Expand a file, directory or glob (local or an fsspec URL) into data files, sorted."""
    fs, root = fsspec.core.url_to_fs(path)
    if fs.isdir(root):
        files = [f for f in fs.find(root) if f.endswith((".parquet", ".csv", ".pq"))]
    elif globlib.has_magic(root):
        files = fs.glob(root)
    elif fs.exists(root):
        files = [root]
    else:
        raise InputError(path, "does not exist", fix="check the path")
    if not files:
        raise InputError(path, "contains no .parquet or .csv files")
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    prefix = "" if protocol in ("file", "local") else f"{protocol}://"
    return sorted(prefix + f for f in files)


def file_fingerprint(file: str) -> dict[str, Any]:
    """sha256 and size of one file, local or an fsspec URL (``s3://...``), streamed.

    Example:
        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "t.csv"; _ = path.write_text("user_id\\n1\\n")
        >>> file_fingerprint(str(path))["bytes"]
        10
    """
    fs, root = fsspec.core.url_to_fs(file)
    with fs.open(root, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    return {"file": file, "sha256": digest, "bytes": fs.size(root)}

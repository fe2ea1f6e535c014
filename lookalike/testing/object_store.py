"""An S3 server on 127.0.0.1 (moto) for the tests and the kill-trial benchmark, a check that a
remote workdir's current build is whole, and a build that kills itself after N uploads.

Run as a script, a build into a remote workdir that SIGKILLs its own process right after its
``kill_after``-th upload (0: never)::

    python -m lookalike.testing.object_store s3://bucket/work config.json DATA_URL 5
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

from lookalike.core.errors import ArtifactError
from lookalike.object_store import MANIFEST, RemoteWorkdir, build_at

AWS_TEST_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1"}


@contextlib.contextmanager
def s3_server(bucket: str) -> Iterator[str]:
    """A moto S3 server on a free port with ``bucket`` created; the AWS environment variables
    point at it (and are restored after). Yields the endpoint URL.

    Example::

        with s3_server("test") as endpoint:
            lookalike.build("s3://test/work", ...)
    """
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in [*AWS_TEST_ENV, "AWS_ENDPOINT_URL"]}
    os.environ.update({**AWS_TEST_ENV, "AWS_ENDPOINT_URL": endpoint})
    try:
        import fsspec

        fsspec.filesystem("s3", skip_instance_cache=True).mkdir(bucket)
        yield endpoint
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


def verify_remote_current(url: str) -> str:
    """Check that every file the remote current build's manifest lists is there with its sha256;
    return the build id.

    Raises:
        ArtifactError: no current build, a missing manifest, or a listed file missing or changed.
    """
    remote = RemoteWorkdir(url)
    remote.fs.invalidate_cache()
    folder = remote.current_folder()
    try:
        manifest = json.loads(remote.fs.cat_file(remote.key(f"{folder}/{MANIFEST}")))
        for name, digest in manifest["files"].items():
            if hashlib.sha256(remote.fs.cat_file(remote.key(f"{folder}/{name}"))).hexdigest() != digest:
                raise ArtifactError(f"{url}/{folder}/{name} does not match its manifest")
    except FileNotFoundError as exc:
        raise ArtifactError(f"{url}/{folder}: {exc} is missing") from exc
    return manifest["build_id"]


def kill_after_uploads(count: int) -> None:
    """Make this process SIGKILL itself right after its ``count``-th upload of a build file."""
    upload = RemoteWorkdir.upload
    done = [0]

    def counted(self: RemoteWorkdir, local: Path, key: str) -> None:
        upload(self, local, key)
        done[0] += 1
        if done[0] == count:
            os.kill(os.getpid(), signal.SIGKILL)

    RemoteWorkdir.upload = counted  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    """``WORKDIR_URL CONFIG DATA KILL_AFTER``: build from DATA's three tables."""
    from lookalike.build_steps import BuildRequest, run_build
    from lookalike.core.config import load_config

    url, config, data, kill_after = argv
    if int(kill_after) > 0:
        kill_after_uploads(int(kill_after))
    request = BuildRequest(events=f"{data}/events.parquet", profiles=f"{data}/profiles.parquet",
                           conversions=f"{data}/conversions.parquet", config=load_config(config))
    build_at(url, lambda local: run_build(local, request, progress=lambda line: None))


if __name__ == "__main__":
    main(sys.argv[1:])

"""Where a ``lookalike`` command runs its build or export: as Prefect flows or in this process.

Prefect flows when a Prefect server is configured (``PREFECT_API_URL`` in the environment or the
active Prefect profile) or answers on the default local port, so every run shows up in its UI;
otherwise the same library steps run in this process and Prefect is never imported (its temporary
local server costs about 15 s a command, STACK_NOTES.md). ``--prefect`` forces the flows (with the
temporary server when none is found), ``--no-prefect`` forbids them.
"""

from __future__ import annotations

import os
import tomllib
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from flows.console import Console, show_prefect_logs
from lookalike.core.errors import LookalikeError

if TYPE_CHECKING:  # build_steps loads polars: imported only when a build runs
    from lookalike.build_steps import EncoderMode

DEFAULT_API_URL = "http://127.0.0.1:4200/api"
TASK_RUNNERS = ("default", "dask")
START_A_SERVER = ("start one with `prefect server start` and set "
                  f"PREFECT_API_URL={DEFAULT_API_URL}")


class Runner(Protocol):
    """Runs the build and export of the command line; both return small JSON-able dicts."""

    def build(self, **arguments: Any) -> dict[str, Any]:
        """``build_flow``'s arguments; returns build_id, reused and path."""

    def export(self, **arguments: Any) -> dict[str, Any]:
        """``export_flow``'s arguments; returns audience, report_md, report_json, report_html and
        summary."""


class LocalRunner:
    """The library steps in this process, progress through the console."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def build(self, *, workdir: str, conversions: str, events: str | None = None,
              profiles: str | None = None, as_of: str | None = None,
              config_path: str | None = None, mode: EncoderMode = "auto") -> dict[str, Any]:
        from lookalike.build_steps import BuildRequest, run_build
        from lookalike.core.config import load_config
        from lookalike.object_store import build_at

        request = BuildRequest(events=events, profiles=profiles, conversions=conversions,
                               as_of=as_of, config=load_config(config_path), mode=mode)
        build, path = build_at(workdir, lambda local: run_build(local, request,
                                                                progress=self.console.progress))
        return {"build_id": build.build_id, "path": path}

    def export(self, *, workdir: str, seeds: str, out: str, config_path: str | None = None,
               hashing: dict[str, str] | None = None, **options: Any) -> dict[str, Any]:
        from lookalike.audience.export import HashingRequest, export_audience
        from lookalike.core.config import load_config
        from lookalike.object_store import export_at

        config = load_config(config_path)
        hashed = None if hashing is None else HashingRequest(**hashing)
        result = export_at(workdir, out, lambda build, path: export_audience(
            build, seeds, path, config=config, hashing=hashed, progress=self.console.progress,
            **options))
        return result.to_dict()


class PrefectRunner:
    """The Prefect flows, reporting to the configured server (or Prefect's temporary one)."""

    def __init__(self, console: Console, *, verbose: bool, debug: bool,
                 task_runner: dict[str, Any] | None = None) -> None:
        from flows.build import build_flow
        from flows.export import export_flow

        show_prefect_logs(console, verbose=verbose, debug=debug)
        self.build_flow = build_flow.with_options(**(task_runner or {}))
        self.export_flow = export_flow

    def build(self, **arguments: Any) -> dict[str, Any]:
        return self.build_flow(**arguments)

    def export(self, **arguments: Any) -> dict[str, Any]:
        return self.export_flow(**arguments)


def check_task_runner(name: str) -> None:
    """Raise :class:`LookalikeError` unless ``name`` is one of :data:`TASK_RUNNERS`."""
    if name not in TASK_RUNNERS:
        raise LookalikeError(f"unknown task runner '{name}': use {' or '.join(TASK_RUNNERS)}")


def use_prefect(choice: bool | None, console: Console, *, needs_prefect: bool = False) -> bool:
    """``--prefect``/``--no-prefect`` (``choice``), else whether a Prefect server is configured
    or answers on the default port (then ``PREFECT_API_URL`` is set to it for this process).

    ``needs_prefect``: only a flow can run the command (the Dask task runner).

    Raises:
        LookalikeError: a configured server that does not answer, or ``--no-prefect`` where only
            a flow can run the command.
    """
    if choice is False:
        if needs_prefect:
            raise LookalikeError("the dask task runner runs as a Prefect flow: drop --no-prefect")
        return False
    if configured := configured_api_url():
        if not answers(configured):
            raise LookalikeError(f"the Prefect server at PREFECT_API_URL={configured} does not "
                                 "answer; start it, or run without Prefect: --no-prefect")
        return True
    if answers(DEFAULT_API_URL):
        os.environ["PREFECT_API_URL"] = DEFAULT_API_URL
        return True
    if choice or needs_prefect:
        console.progress(f"no Prefect server found: starting Prefect's temporary one (about 15 s; "
                         f"{START_A_SERVER} to skip this)")
        return True
    return False


def configured_api_url() -> str | None:
    """``PREFECT_API_URL`` from the environment, else from the active profile in
    ``$PREFECT_HOME/profiles.toml`` (read without importing Prefect, which takes about 2 s)."""
    if url := os.environ.get("PREFECT_API_URL"):
        return url
    home = Path(os.environ.get("PREFECT_HOME", "~/.prefect")).expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH", home / "profiles.toml")).expanduser()
    if not path.is_file():
        return None
    profiles = tomllib.loads(path.read_text())
    active = os.environ.get("PREFECT_PROFILE") or profiles.get("active", "")
    return profiles.get("profiles", {}).get(active, {}).get("PREFECT_API_URL") or None


def answers(api_url: str, timeout_seconds: float = 2.0) -> bool:
    """Whether a Prefect API answers its health check at ``api_url``."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout_seconds) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False

"""What a ``lookalike`` command prints: one progress line per stage for people, Prefect's own log
only with ``--verbose``.

Progress lines go to stderr as ``  12.3s  stage: counts...`` (seconds since the command started);
results go to stdout. Flows mark their progress lines with :data:`PROGRESS_FLAG`, so they are told
apart from Prefect's lines about task and flow runs.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable

import typer

PROGRESS_FLAG = "lookalike_progress"  # attribute of the log records flows.common.log makes


class Console:
    """Progress lines with the time since the command started."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def progress(self, message: str) -> None:
        typer.echo(f"{time.monotonic() - self.started:7.1f}s  {message}", err=True)


def show_prefect_logs(console: Console, *, verbose: bool, debug: bool) -> None:
    """Route the log of flow runs in this process to the terminal.

    Without ``verbose`` only the flows' progress lines are printed, as :meth:`Console.progress`
    prints the library's; with it, Prefect's console log goes to stderr, one line per failure
    unless ``debug``, without the temporary server's shutdown notice. The API log (what the
    Prefect UI shows) is unchanged either way.
    """
    root = logging.getLogger()
    if not verbose:
        for handler in [h for h in root.handlers if isinstance(h, logging.StreamHandler)]:
            root.removeHandler(handler)
        root.addHandler(_ProgressHandler(console))
        return
    for name in ("", "prefect"):
        for handler in logging.getLogger(name).handlers:
            if hasattr(handler, "console"):
                handler.console.file = sys.stderr
            if isinstance(handler, logging.StreamHandler):
                handler.addFilter(_not_the_shutdown_notice)
            if isinstance(handler, logging.StreamHandler) and not debug:
                class_format = type(handler).format.__get__(handler)  # never wrap a wrapper
                handler.format = functools.partial(_format_without_traceback, class_format)


def _not_the_shutdown_notice(record: logging.LogRecord) -> bool:
    """False for Prefect's "Stopping temporary server" notice, logged at exit, after the
    command's last line (its error, if it failed)."""
    return not record.getMessage().startswith("Stopping temporary server")


class _ProgressHandler(logging.Handler):
    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, PROGRESS_FLAG, False):
            self.console.progress(record.getMessage())


def _format_without_traceback(format_record: Callable[[logging.LogRecord], str],
                              record: logging.LogRecord) -> str:
    saved = record.exc_info, record.exc_text
    record.exc_info, record.exc_text = None, None
    try:
        return format_record(record)
    finally:
        record.exc_info, record.exc_text = saved

"""The progress callback every long step takes: called with one line of text at a time.

The command line prints the lines, the flows send them to Prefect's run log, and tests pass
``None``-returning collectors. Library functions default to :func:`print` or to no output.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], object]


def eta(done: float, total: float, elapsed_seconds: float) -> str:
    """``", ETA 12s"``: the time ``total - done`` more units take at the pace of the ``done`` ones
    (an empty string when nothing is done yet or nothing is left)."""
    if done <= 0 or done >= total:
        return ""
    return f", ETA {elapsed_seconds / done * (total - done):.0f}s"

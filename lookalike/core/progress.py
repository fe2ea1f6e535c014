"""The progress callback every long step takes: called with one line of text at a time.

The command line prints the lines, the flows send them to Prefect's run log, and tests pass
``None``-returning collectors. Library functions default to :func:`print` or to no output.
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[str], object]

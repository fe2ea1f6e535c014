"""Peak resident memory of this process, for the figures of benchmarks and tests.

``resource.getrusage(RUSAGE_SELF).ru_maxrss`` is wrong in a child process: Linux carries the
parent's peak across fork and exec, so a 20 MiB child of a 2 GiB parent reports 2 GiB (the audience
benchmark's exports all read 2,151 MiB that way). ``VmHWM`` in ``/proc/self/status`` belongs to
the process's own address space and starts again at exec.
"""

from __future__ import annotations

import resource
from pathlib import Path

STATUS = Path("/proc/self/status")


def peak_rss_mib() -> float:
    """This process's peak resident set size in MiB (VmHWM on Linux, ru_maxrss elsewhere)."""
    if STATUS.is_file():
        for line in STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

"""The cores this process may use, and a thread map for work that releases the GIL (numpy)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def usable_cores() -> int:
    """Cores in this process's CPU affinity (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_map(function: Callable[[Item], Result], items: Iterable[Item]) -> list[Result]:
    """``[function(item) for item in items]`` on one thread per usable core, in order."""
    with ThreadPoolExecutor(max_workers=usable_cores()) as pool:
        return list(pool.map(function, items))

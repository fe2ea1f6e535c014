"""The cores this process may use, and a thread map for work that releases the GIL (numpy,
scikit-learn's compiled code)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from threadpoolctl import threadpool_limits

Item = TypeVar("Item")
Result = TypeVar("Result")


def usable_cores() -> int:
    """Cores in this process's CPU affinity (a container's share, not the host's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_map(
    function: Callable[[Item], Result], items: Iterable[Item], openmp_threads: int | None = None
) -> list[Result]:
    """``[function(item) for item in items]`` on one thread per usable core, in order.

    ``openmp_threads`` caps the OpenMP threads of each worker (OpenMP's thread count is per
    calling thread): 1 for scikit-learn's gradient boosting, whose OpenMP threads spin while they
    wait; on two cores shared with other processes two boosting fits of 11,000 rows took 121 s
    on two OpenMP threads against 4.9 s on one (benchmarks/RESULTS.md, 2026-12-07).
    """
    def limit() -> None:
        if openmp_threads is not None:
            threadpool_limits(limits=openmp_threads, user_api="openmp")

    with ThreadPoolExecutor(max_workers=usable_cores(), initializer=limit) as pool:
        return list(pool.map(function, items))

"""The thread map: results in order, and each worker's OpenMP threads capped when asked."""

from __future__ import annotations

from sklearn.utils._openmp_helpers import _openmp_effective_n_threads

from lookalike.core.parallel import thread_map


def test_thread_map_keeps_the_order_of_a_plain_map() -> None:
    items = list(range(50))
    assert thread_map(lambda x: x * x, items) == [x * x for x in items]


def test_openmp_threads_caps_each_worker_but_not_the_caller() -> None:
    before = _openmp_effective_n_threads()
    capped = thread_map(lambda _: _openmp_effective_n_threads(), range(4), openmp_threads=1)
    assert capped == [1] * 4
    assert _openmp_effective_n_threads() == before

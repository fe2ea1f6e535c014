"""The nearest-neighbour interface the audience strategies query, and its exact implementation.

:class:`lookalike.search.index.AnnIndex` (HNSW) and :class:`ExactSearch` (a brute-force scan of all
rows or a subset) both satisfy :class:`NeighbourSearch`.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from lookalike.search.exact import exact_search


class NeighbourSearch(Protocol):
    """Nearest-neighbour search over population rows (``lookalike.search.index.AnnIndex`` satisfies it)."""

    @property
    def live_count(self) -> int:
        """Rows the search can return."""
        ...

    def query(
        self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels (int64 row positions, -1 pads short rows) and similarities [q, k'], best first."""
        ...


class ExactSearch:
    """Exact :class:`NeighbourSearch` over all population rows or a subset of them.

    Used when an eligible list leaves few candidates (filtering an HNSW index that excludes most of
    its items is slow and loses recall) and as the reference the index is checked against.
    """

    def __init__(self, embeddings: np.ndarray, rows: np.ndarray | None = None) -> None:
        self._rows = None if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
        self._vectors = embeddings if self._rows is None else np.asarray(embeddings[self._rows])

    @property
    def live_count(self) -> int:
        return len(self._vectors)

    def query(
        self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._rows is None:
            return exact_search(self._vectors, queries, k, exclude)
        labels, sims = exact_search(self._vectors, queries, k, self._local_positions(exclude))
        return self._rows[labels], sims

    def _local_positions(self, rows: np.ndarray | None) -> np.ndarray | None:
        if rows is None:
            return None
        assert self._rows is not None
        positions = np.searchsorted(self._rows, rows)
        inside = positions < len(self._rows)
        inside[inside] = self._rows[positions[inside]] == rows[inside]
        return positions[inside]

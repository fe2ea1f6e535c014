"""Row blocks for similarity scans: one memory budget sizes every blocked loop.

Scans of the population against seeds, centres or queries (exact search, kernel sums, nearest
seeds, max cosine, held-out recall) compute a rows x columns block of similarities at a time.
``BLOCK_VALUES`` float32 values (16 MiB) keep a block in cache: kernel sums ran 1.8x faster than
with 64 MiB blocks, and nearest seeds 3.3 s against 7.1 s for 50,000 seeds at 1M users.
"""

from __future__ import annotations

from collections.abc import Iterator

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

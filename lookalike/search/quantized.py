"""int8 scalar quantization of the population embeddings, for a shortlist scan re-ranked in float.

Each dimension ``j`` gets a symmetric scale ``scale[j] = max_i |x[i, j]| / 127`` and every value
the code ``round(x[i, j] / scale[j])`` in [-127, 127], so a value is recovered to within
``scale[j] / 2``: one byte a value instead of four (float32) or two (float16).
:func:`lookalike.search.exact.exact_search` scans the codes for a shortlist and re-ranks it with
the float vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike.core.blocks import float32_rows, row_blocks

INT8_LEVELS = 127


@dataclass(frozen=True)
class Int8Embeddings:
    """int8 codes [N, d] and the per-dimension float32 scale [d]: ``x ~ codes * scale``."""

    codes: np.ndarray
    scale: np.ndarray

    def decoded(self, rows: slice | np.ndarray) -> np.ndarray:
        """float32 ``codes[rows] * scale``: the values the quantized scan scores with."""
        return float32_rows(self.codes, rows) * self.scale


def quantize_int8(embeddings: np.ndarray) -> Int8Embeddings:
    """Per-dimension symmetric int8 codes of ``embeddings`` (float32 or float16, possibly
    memory-mapped), read a row block at a time (two passes: the scale, then the codes).

    Every element is recovered by :meth:`Int8Embeddings.decoded` to within ``scale[j] / 2``.

    >>> q = quantize_int8(np.array([[0.5, -1.0], [-0.25, 0.1]], dtype=np.float32))
    >>> q.codes.tolist()
    [[127, -127], [-64, 13]]
    """
    n_rows, dim = embeddings.shape
    largest = np.zeros(dim, dtype=np.float32)
    for rows in row_blocks(n_rows, dim):
        np.maximum(largest, np.abs(float32_rows(embeddings, rows)).max(axis=0), out=largest)
    scale = np.where(largest > 0, largest / INT8_LEVELS, 1.0).astype(np.float32)
    codes = np.empty((n_rows, dim), dtype=np.int8)
    for rows in row_blocks(n_rows, dim):
        codes[rows] = np.rint(float32_rows(embeddings, rows) / scale)
    return Int8Embeddings(codes, scale)

"""Batches with a fixed number of converters per trained type plus sampled non-converters.

Converters are a few percent of the population, and a label-grouped sampler ("P classes x K
samples") would give batches of one type or none. Every batch here has ``converters_per_type``
converters of each trained type (the anchors) and ``negatives_per_batch`` non-converters, so every
anchor has positives and negatives in every step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Batch:
    """Row numbers of one batch. The first ``len(anchor_types)`` rows are the anchors."""

    rows: np.ndarray  # int64 [T * converters_per_type + negatives_per_batch]
    anchor_types: np.ndarray  # int64 [T * converters_per_type], type index of each anchor row

    @property
    def n_anchors(self) -> int:
        return len(self.anchor_types)


class ConverterBatchSampler:
    """Samples :class:`Batch` es of converters per type and non-converters, deterministically.

    Args:
        converters_by_type: for each trained type, the rows of its training converters.
        negative_pool: rows of users who converted to no trained type.
        converters_per_type: converters of each type in every batch; drawn without replacement,
            or with replacement for a type that has fewer.
        negatives_per_batch: non-converters in every batch (with replacement only if the pool is
            smaller).
    """

    def __init__(
        self,
        converters_by_type: Sequence[np.ndarray],
        negative_pool: np.ndarray,
        converters_per_type: int,
        negatives_per_batch: int,
    ) -> None:
        if not converters_by_type or any(len(rows) == 0 for rows in converters_by_type):
            raise ValueError("every trained type needs at least one converter")
        if len(negative_pool) == 0:
            raise ValueError("the negative pool is empty: every user converted")
        self.converters_by_type = [np.asarray(rows, dtype=np.int64) for rows in converters_by_type]
        self.negative_pool = np.asarray(negative_pool, dtype=np.int64)
        self.converters_per_type = converters_per_type
        self.negatives_per_batch = negatives_per_batch
        self.anchor_types = np.repeat(
            np.arange(len(self.converters_by_type), dtype=np.int64), converters_per_type
        )

    def default_steps(self) -> int:
        """Steps for one pass over the training (converter, type) pairs."""
        pairs = sum(len(rows) for rows in self.converters_by_type)
        return max(1, math.ceil(pairs / len(self.anchor_types)))

    def sample(self, rng: np.random.Generator) -> Batch:
        per_type = self.converters_per_type
        converters = [_draw(rows, per_type, rng) for rows in self.converters_by_type]
        negatives = _draw(self.negative_pool, self.negatives_per_batch, rng)
        return Batch(np.concatenate([*converters, negatives]), self.anchor_types)

    def batches(self, steps: int, rng: np.random.Generator) -> Iterator[Batch]:
        for _ in range(steps):
            yield self.sample(rng)


def _draw(pool: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice(pool, size=size, replace=len(pool) < size)

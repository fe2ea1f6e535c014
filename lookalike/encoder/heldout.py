"""Held-out converter recall: the number training selects models by.

For one conversion type, the training converters are the seeds and the held-out converters are
hidden among a background sample of users who did not convert to that type. Each candidate is
scored by the mean of its ``top_m`` highest cosine similarities to the seeds (``top_m=1``: the
maximum), by exact search; the recall is the share of held-out converters that land in the top
``top_fraction`` of all candidates.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from lookalike.core.blocks import row_blocks


def seed_scores(seeds: np.ndarray, candidates: np.ndarray, top_m: int) -> np.ndarray:
    """Mean of each candidate's ``top_m`` largest inner products with the seeds: float32 [C]."""
    seed_t = torch.from_numpy(np.ascontiguousarray(seeds, dtype=np.float32))
    m = min(top_m, len(seeds))
    scores = np.empty(len(candidates), dtype=np.float32)
    with torch.inference_mode():
        for rows in row_blocks(len(candidates), len(seeds)):
            chunk = torch.from_numpy(np.ascontiguousarray(candidates[rows], dtype=np.float32))
            scores[rows] = (chunk @ seed_t.T).topk(m, dim=1).values.mean(dim=1).numpy()
    return scores


def recall_in_top_fraction(
    scores: np.ndarray, is_positive: np.ndarray, top_fraction: float
) -> float:
    """Share of positives among the ``ceil(top_fraction * n)`` highest-scoring candidates."""
    k = max(1, math.ceil(top_fraction * len(scores)))
    top = np.argsort(-scores, kind="stable")[:k]
    return float(is_positive[top].sum() / is_positive.sum())


def heldout_recall(
    seeds: np.ndarray,
    heldout: np.ndarray,
    background: np.ndarray,
    *,
    top_fraction: float,
    top_m: int,
) -> float:
    """Recall of ``heldout`` rows in the top ``top_fraction`` of ``background`` + ``heldout``.

    All three are vectors of one space (embeddings, or raw features for a baseline); seeds are
    the query side, the others the candidate side.
    """
    candidates = np.concatenate([background, heldout])
    is_positive = np.concatenate([np.zeros(len(background), bool), np.ones(len(heldout), bool)])
    return recall_in_top_fraction(seed_scores(seeds, candidates, top_m), is_positive, top_fraction)


@dataclass(frozen=True)
class ConverterSplit:
    """Rows of each trained type's converters, split into training and held-out rows."""

    train: list[np.ndarray]
    heldout: list[np.ndarray]


def split_converters(
    converters_by_type: Sequence[np.ndarray], fraction: float, rng: np.random.Generator
) -> ConverterSplit:
    """Hold out ``fraction`` of each type's converters (at least one, never all).

    A user held out for one type is held out of training for every type, so no held-out converter
    ever shapes the model; it still counts as held out for each type it converted to.
    """
    chosen = [
        rng.choice(rows, size=heldout_count(len(rows), fraction), replace=False)
        for rows in converters_by_type
    ]
    heldout_users = np.concatenate(chosen)
    train, heldout = [], []
    for rows in converters_by_type:
        is_heldout = np.isin(rows, heldout_users)
        train.append(rows[~is_heldout])
        heldout.append(rows[is_heldout])
    return ConverterSplit(train, heldout)


def heldout_count(n: int, fraction: float) -> int:
    """Converters to hold out of ``n``: ``fraction`` of them, at least one and never all."""
    return min(n - 1, max(1, round(fraction * n)))

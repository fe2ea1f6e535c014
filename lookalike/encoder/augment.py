"""Feature corruption for the self-supervised term of training (SCARF).

A corrupted view of a batch replaces a random share of every row's features with the same
feature of another random row of the batch, i.e. draws them from the batch's empirical marginal
(Bahri et al. 2022, "SCARF: Self-Supervised Contrastive Learning using Random Feature
Corruption"). Training asks each user's embedding to pick its own corrupted view out of the
batch, which it can only do from information several features share: the user's lasting traits
rather than one column's noise.

The converter loss uses the same corruption, more lightly (``train.anchor_corruption_rate``), on
its anchors: a converter seen in many batches is otherwise embedded from its exact inputs every
time and the encoder memorizes it, so training converters end up closer together than new
converters of the same type.
"""

from __future__ import annotations

import torch
from torch import Tensor


def corrupt_features(features: Tensor, rate: float, generator: torch.Generator | None = None) -> Tensor:
    """A copy of ``features`` [n, f] where each entry, with probability ``rate``, is replaced by the
    same column's entry in a uniformly drawn row of the batch (possibly the row itself).

    Example::

        >>> x = torch.arange(12.0).reshape(4, 3)
        >>> view = corrupt_features(x, 0.5, torch.Generator().manual_seed(0))
        >>> bool(all(set(view[:, j].tolist()) <= set(x[:, j].tolist()) for j in range(3)))
        True
    """
    replace = torch.rand(features.shape, generator=generator) < rate
    donors = torch.randint(0, features.shape[0], features.shape, generator=generator)
    return torch.where(replace, features.gather(0, donors), features)

"""Contrastive losses for converter embeddings, in the pytorch-metric-learning style.

A batch holds converters of every trained conversion type plus non-converters sampled from the
population. Every converter is an *anchor* (embedded with the query tower); every row of the batch
is a *candidate* (embedded with the candidate tower). :func:`pair_masks` plays the part of a miner:
it says which (anchor, candidate) pairs are positives and which are negatives. A loss returns one
value per pair (:class:`PairLosses`); :func:`mean_pair_loss` reduces them to the training loss.

Only converters are anchors. Giving "converter" and "non-converter" to a supervised-contrastive loss
as two class labels would pull all non-converters together, although they are the most varied users
of the population (and many of them will convert later); the encoder would learn one converter
cluster and one non-converter blob.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class PairLosses:
    """One loss value per (anchor, candidate) pair, with the pair's indices and kind.

    ``losses[i]`` belongs to anchor ``anchors[i]`` and candidate ``candidates[i]``; ``positive[i]``
    is True for an (anchor, positive) pair and False for an (anchor, negative) pair.
    """

    losses: Tensor
    anchors: Tensor
    candidates: Tensor
    positive: Tensor


PairLossFn = Callable[[Tensor, Tensor, Tensor, Tensor], PairLosses]


def pair_masks(
    anchor_users: Tensor, anchor_types: Tensor, batch_users: Tensor, batch_labels: Tensor
) -> tuple[Tensor, Tensor]:
    """Positive and negative masks [A, B] for anchors against the batch's candidates.

    Args:
        anchor_users: int64 [A], the user (any id, e.g. a row number) of each anchor.
        anchor_types: int64 [A], the conversion type each anchor was sampled for.
        batch_users: int64 [B], the user of each candidate.
        batch_labels: bool [B, T], multi-hot conversion types of each candidate.

    A candidate is a positive of an anchor if it converted to the anchor's type and is another
    user; it is a negative if it did not convert to that type and is another user. So the same user
    (sampled twice, or under two of its types) is never its own positive or negative, and a
    converter of the anchor's type is never a negative ("accidental hits" are masked).

    Example::

        >>> users = torch.tensor([10, 11, 12, 13])
        >>> labels = torch.tensor([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=torch.bool)
        >>> pos, neg = pair_masks(users[:3], torch.tensor([0, 0, 1]), users, labels)
        >>> pos.int().tolist(), neg.int().tolist()
        ([[0, 1, 0, 0], [1, 0, 0, 0], [0, 1, 0, 0]], [[0, 0, 1, 1], [0, 0, 1, 1], [1, 0, 0, 1]])
    """
    same_user = anchor_users[:, None] == batch_users[None, :]
    converted_to_anchor_type = batch_labels.bool()[:, anchor_types].T
    return converted_to_anchor_type & ~same_user, ~converted_to_anchor_type & ~same_user


def info_nce_loss(
    anchor_emb: Tensor,
    candidate_emb: Tensor,
    positive_mask: Tensor,
    negative_mask: Tensor,
    temperature: float = 0.1,
) -> PairLosses:
    """InfoNCE loss for each (anchor, positive) pair against the anchor's negatives.

    For anchor ``a``, positive ``p`` and the anchor's negatives ``N(a)``, with cosine similarity
    ``s`` (the embeddings are L2-normalized)::

        loss(a, p) = -log( exp(s_ap / t) / (exp(s_ap / t) + sum_{n in N(a)} exp(s_an / t)) )

    Inputs: ``anchor_emb`` [A, d] and ``candidate_emb`` [B, d], L2-normalized; boolean masks [A, B]
    from :func:`pair_masks`. Anchors without any negative give no pairs.

    Reference: van den Oord et al. 2018, "Representation Learning with Contrastive Predictive
    Coding" (InfoNCE); the per-positive form follows Khosla et al. 2020, "Supervised Contrastive
    Learning", with the other positives left out of the denominator.

    When to use: the default for lookalike training. Keep the temperature moderate (around 0.1):
    many sampled non-converters are future converters, and a very low temperature (or mining the
    hardest negatives) concentrates the gradient on exactly those users and pushes them away.

    Example::

        >>> emb = F.normalize(torch.randn(6, 8), dim=1)
        >>> labels = torch.tensor([[1], [1], [1], [0], [0], [0]], dtype=torch.bool)
        >>> users = torch.arange(6)
        >>> pos, neg = pair_masks(users[:3], torch.zeros(3, dtype=torch.long), users, labels)
        >>> pairs = info_nce_loss(emb[:3], emb, pos, neg, temperature=0.1)
        >>> pairs.losses.shape  # 3 anchors x 2 other converters
        torch.Size([6])
        >>> loss = mean_pair_loss(pairs)
    """
    logits = anchor_emb @ candidate_emb.T / temperature
    has_negative = negative_mask.any(dim=1)
    negative_logits = torch.where(negative_mask, logits, torch.full_like(logits, -torch.inf))
    # A row without negatives would give logsumexp(-inf) and NaN gradients; it yields no pairs.
    negative_logits = torch.where(has_negative[:, None], negative_logits, torch.zeros_like(logits))
    negative_lse = torch.logsumexp(negative_logits, dim=1)
    anchors, candidates = (positive_mask & has_negative[:, None]).nonzero(as_tuple=True)
    losses = F.softplus(negative_lse[anchors] - logits[anchors, candidates])
    return PairLosses(losses, anchors, candidates, torch.ones_like(anchors, dtype=torch.bool))


def view_info_nce_loss(view_emb: Tensor, emb: Tensor, temperature: float = 0.2) -> PairLosses:
    """Self-supervised InfoNCE: each row's view must pick its own row out of the batch.

    For row ``i`` with view ``v_i`` and embeddings ``e_1..e_n`` of the same batch::

        loss(i) = -log( exp(s(v_i, e_i) / t) / (exp(s(v_i, e_i) / t) + sum_{j != i} exp(s(v_i, e_j) / t)) )

    It is :func:`info_nce_loss` with the identity as positive mask (NT-Xent with one direction).

    Inputs: ``view_emb`` and ``emb`` [n, d], L2-normalized, row ``i`` of both the same user.

    Reference: Bahri et al. 2022, "SCARF: Self-Supervised Contrastive Learning using Random Feature
    Corruption" (views from :func:`lookalike.encoder.augment.corrupt_features`); Chen et al. 2020, SimCLR.

    When to use: added to the converter loss (``train.self_supervised_weight``), it keeps the
    structure of users that no trained conversion depends on, which new seed lists need.

    Example::

        >>> emb = F.normalize(torch.randn(5, 8), dim=1)
        >>> pairs = view_info_nce_loss(emb, emb, temperature=0.2)
        >>> pairs.losses.shape, bool(pairs.positive.all())
        (torch.Size([5]), True)
    """
    same = torch.eye(len(emb), dtype=torch.bool, device=emb.device)
    return info_nce_loss(view_emb, emb, same, ~same, temperature)


def margin_contrastive_loss(
    anchor_emb: Tensor,
    candidate_emb: Tensor,
    positive_mask: Tensor,
    negative_mask: Tensor,
    margin: float = 0.5,
) -> PairLosses:
    """Classic contrastive loss on cosine distance, one value per positive and per negative pair.

    With cosine distance ``D = 1 - s``: a positive pair costs ``D^2 / 2``; a negative pair costs
    ``max(0, margin - D)^2 / 2``, so negatives further than ``margin`` cost nothing.

    Inputs: ``anchor_emb`` [A, d] and ``candidate_emb`` [B, d], L2-normalized; boolean masks [A, B]
    from :func:`pair_masks`.

    Reference: Hadsell, Chopra and LeCun 2006, "Dimensionality Reduction by Learning an Invariant
    Mapping".

    When to use: as the baseline that InfoNCE is compared against. It looks at one pair at a time,
    so it learns more slowly than InfoNCE, and the margin has to be tuned to the embedding spread.

    Example::

        >>> emb = F.normalize(torch.randn(6, 8), dim=1)
        >>> labels = torch.tensor([[1], [1], [1], [0], [0], [0]], dtype=torch.bool)
        >>> users = torch.arange(6)
        >>> pos, neg = pair_masks(users[:3], torch.zeros(3, dtype=torch.long), users, labels)
        >>> pairs = margin_contrastive_loss(emb[:3], emb, pos, neg, margin=0.5)
        >>> int(pairs.positive.sum()), int((~pairs.positive).sum())
        (6, 9)
        >>> loss = mean_pair_loss(pairs)
    """
    distance = 1.0 - anchor_emb @ candidate_emb.T
    pos_anchors, pos_candidates = positive_mask.nonzero(as_tuple=True)
    neg_anchors, neg_candidates = negative_mask.nonzero(as_tuple=True)
    pos_losses = 0.5 * distance[pos_anchors, pos_candidates].square()
    neg_losses = 0.5 * F.relu(margin - distance[neg_anchors, neg_candidates]).square()
    return PairLosses(
        losses=torch.cat([pos_losses, neg_losses]),
        anchors=torch.cat([pos_anchors, neg_anchors]),
        candidates=torch.cat([pos_candidates, neg_candidates]),
        positive=torch.cat(
            [
                torch.ones_like(pos_anchors, dtype=torch.bool),
                torch.zeros_like(neg_anchors, dtype=torch.bool),
            ]
        ),
    )


def mean_pair_loss(pairs: PairLosses) -> Tensor:
    """Reduce per-pair losses: the mean over positive pairs plus the mean over negative pairs.

    Averaging each kind separately keeps the many negative pairs from drowning the few positive
    pairs (as pytorch-metric-learning's ``ContrastiveLoss`` does). A kind without pairs adds
    nothing; with no pairs at all the result is a zero that still has a gradient.
    """
    total = pairs.losses.sum() * 0.0
    for kind in (pairs.positive, ~pairs.positive):
        if kind.any():
            total = total + pairs.losses[kind].mean()
    return total


def loss_function(name: str, *, temperature: float, margin: float) -> PairLossFn:
    """The per-pair loss named in ``TrainConfig.loss``, with its setting bound."""
    if name == "info_nce":
        return functools.partial(info_nce_loss, temperature=temperature)
    if name == "margin":
        return functools.partial(margin_contrastive_loss, margin=margin)
    raise ValueError(f"unknown loss {name!r}; use 'info_nce' or 'margin'")

"""Losses against naive per-pair loops: values, gradients, masking of accidental hits."""

from __future__ import annotations

import doctest
import math

import pytest
import torch
import torch.nn.functional as F

import lookalike.encoder.losses as losses_module
from lookalike.encoder.losses import (
    PairLosses,
    info_nce_loss,
    margin_contrastive_loss,
    mean_pair_loss,
    pair_masks,
    view_info_nce_loss,
)

N_TYPES = 3


def random_batch(seed: int) -> dict[str, torch.Tensor]:
    """A batch with repeated users, multi-type users and non-converters.

    Anchors are batch rows of converters, each with one of its own types; the same user appears
    several times (sampled twice, or under two types).
    """
    g = torch.Generator().manual_seed(seed)
    n_users = 8
    user_labels = torch.rand(n_users, N_TYPES, generator=g) < 0.45
    user_labels[0] = torch.tensor([True, True, False])  # a multi-type user
    user_labels[1] = False  # a non-converter
    batch_users = torch.cat([torch.arange(n_users), torch.randint(0, n_users, (6,), generator=g)])
    batch_labels = user_labels[batch_users]
    anchor_rows = [i for i in range(len(batch_users)) if batch_labels[i].any()]
    anchor_types = []
    for i in anchor_rows:
        own_types = batch_labels[i].nonzero().flatten()
        anchor_types.append(int(own_types[torch.randint(0, len(own_types), (1,), generator=g)]))

    def unit_rows(n: int) -> torch.Tensor:
        return F.normalize(torch.randn(n, 5, generator=g, dtype=torch.float64), dim=1)

    return {
        "anchor_users": batch_users[anchor_rows],
        "anchor_types": torch.tensor(anchor_types),
        "batch_users": batch_users,
        "batch_labels": batch_labels,
        "anchor_emb": unit_rows(len(anchor_rows)),
        "candidate_emb": unit_rows(len(batch_users)),
    }


def is_positive(batch: dict[str, torch.Tensor], a: int, b: int) -> bool:
    other_user = bool(batch["anchor_users"][a] != batch["batch_users"][b])
    return other_user and bool(batch["batch_labels"][b, batch["anchor_types"][a]])


def is_negative(batch: dict[str, torch.Tensor], a: int, b: int) -> bool:
    other_user = bool(batch["anchor_users"][a] != batch["batch_users"][b])
    return other_user and not bool(batch["batch_labels"][b, batch["anchor_types"][a]])


def naive_info_nce(batch: dict[str, torch.Tensor], anchor_emb, candidate_emb, t: float) -> dict:
    pairs = {}
    n_anchors, n_batch = len(anchor_emb), len(candidate_emb)
    for a in range(n_anchors):
        negatives = [n for n in range(n_batch) if is_negative(batch, a, n)]
        if not negatives:
            continue
        for p in range(n_batch):
            if not is_positive(batch, a, p):
                continue
            positive_term = torch.exp(torch.dot(anchor_emb[a], candidate_emb[p]) / t)
            denominator = positive_term
            for n in negatives:
                negative_term = torch.exp(torch.dot(anchor_emb[a], candidate_emb[n]) / t)
                denominator = denominator + negative_term
            pairs[(a, p)] = -torch.log(positive_term / denominator)
    return pairs


def naive_margin(batch: dict[str, torch.Tensor], anchor_emb, candidate_emb, margin: float) -> dict:
    pairs = {}
    for a in range(len(anchor_emb)):
        for b in range(len(candidate_emb)):
            distance = 1 - torch.dot(anchor_emb[a], candidate_emb[b])
            if is_positive(batch, a, b):
                pairs[(a, b, True)] = 0.5 * distance**2
            elif is_negative(batch, a, b):
                pairs[(a, b, False)] = 0.5 * torch.clamp(margin - distance, min=0) ** 2
    return pairs


def naive_reduce(pairs: dict) -> torch.Tensor:
    """Mean over positive pairs plus mean over negative pairs (kind = last key element)."""
    total = torch.zeros((), dtype=torch.float64)
    for kind in (True, False):
        values = [v for key, v in pairs.items() if key[2] is kind]
        if values:
            total = total + sum(values) / len(values)
    return total


def as_dict(pairs: PairLosses, with_kind: bool) -> dict:
    out = {}
    for i, loss in enumerate(pairs.losses):
        key = (int(pairs.anchors[i]), int(pairs.candidates[i]))
        out[(*key, bool(pairs.positive[i])) if with_kind else key] = loss
    return out


@pytest.mark.parametrize("seed", range(5))
def test_pair_masks_match_the_definition(seed: int) -> None:
    batch = random_batch(seed)
    positive, negative = pair_masks(
        batch["anchor_users"], batch["anchor_types"], batch["batch_users"], batch["batch_labels"]
    )
    for a in range(positive.shape[0]):
        for b in range(positive.shape[1]):
            assert bool(positive[a, b]) == is_positive(batch, a, b)
            assert bool(negative[a, b]) == is_negative(batch, a, b)


def test_accidental_hits_are_never_negatives() -> None:
    batch = random_batch(0)
    positive, negative = pair_masks(
        batch["anchor_users"], batch["anchor_types"], batch["batch_users"], batch["batch_labels"]
    )
    same_user = batch["anchor_users"][:, None] == batch["batch_users"][None, :]
    same_type = batch["batch_labels"][:, batch["anchor_types"]].T
    assert same_user.any() and same_type.any()  # the batch does contain accidental hits
    assert not (negative & (same_user | same_type)).any()
    assert not (positive & same_user).any()
    non_converters = ~batch["batch_labels"].any(dim=1)
    assert not positive[:, non_converters].any()  # non-converters are never pulled together


def test_the_same_user_is_never_a_negative_whatever_its_row_labels() -> None:
    # Row 2 repeats user 7 (the anchor) with no labels, as a copy drawn from the population would.
    users = torch.tensor([7, 8, 7, 9])
    labels = torch.tensor([[1], [1], [0], [0]], dtype=torch.bool)
    positive, negative = pair_masks(users[:1], torch.tensor([0]), users, labels)
    assert positive.tolist() == [[False, True, False, False]]
    assert negative.tolist() == [[False, False, False, True]]


def _leaves(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    anchor, candidate = batch["anchor_emb"], batch["candidate_emb"]
    return anchor.clone().requires_grad_(), candidate.clone().requires_grad_()


def _check_against_reference(
    pairs: PairLosses, got: dict, expected: dict, reference_loss: torch.Tensor,
    leaves: tuple[torch.Tensor, torch.Tensor], reference_leaves: tuple[torch.Tensor, torch.Tensor],
) -> None:
    """Per-pair values and the reduced loss's gradients equal the naive loop's."""
    assert got.keys() == expected.keys() and len(expected) > 0
    for key, value in expected.items():
        torch.testing.assert_close(got[key], value)
    grads = torch.autograd.grad(mean_pair_loss(pairs), leaves)
    grads_ref = torch.autograd.grad(reference_loss, reference_leaves)
    for g, g_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(g, g_ref)


def _masks(batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return pair_masks(
        batch["anchor_users"], batch["anchor_types"], batch["batch_users"], batch["batch_labels"]
    )


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("temperature", [0.05, 0.1, 1.0])
def test_info_nce_matches_naive_loop_values_and_gradients(seed: int, temperature: float) -> None:
    batch = random_batch(seed)
    anchor, candidate = _leaves(batch)
    pairs = info_nce_loss(anchor, candidate, *_masks(batch), temperature=temperature)
    anchor_ref, candidate_ref = _leaves(batch)
    expected = naive_info_nce(batch, anchor_ref, candidate_ref, temperature)
    reference = sum(expected.values()) / len(expected)
    _check_against_reference(pairs, as_dict(pairs, with_kind=False), expected, reference,
                             (anchor, candidate), (anchor_ref, candidate_ref))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("margin", [0.3, 0.5, 1.5])
def test_margin_loss_matches_naive_loop_values_and_gradients(seed: int, margin: float) -> None:
    batch = random_batch(seed)
    anchor, candidate = _leaves(batch)
    pairs = margin_contrastive_loss(anchor, candidate, *_masks(batch), margin=margin)
    anchor_ref, candidate_ref = _leaves(batch)
    expected = naive_margin(batch, anchor_ref, candidate_ref, margin)
    _check_against_reference(pairs, as_dict(pairs, with_kind=True), expected, naive_reduce(expected),
                             (anchor, candidate), (anchor_ref, candidate_ref))


def test_anchor_without_negatives_gives_no_pairs_and_finite_gradients() -> None:
    users = torch.arange(4)
    labels = torch.tensor([[1, 0], [1, 0], [0, 1], [1, 0]], dtype=torch.bool)
    # Anchor 0 has type 0; candidate 2 (type 1 only) is its sole negative; masking it leaves none.
    positive, negative = pair_masks(users[:2], torch.tensor([0, 0]), users, labels)
    negative[0] = False
    anchor = F.normalize(torch.randn(2, 3, dtype=torch.float64), dim=1).requires_grad_()
    candidate = F.normalize(torch.randn(4, 3, dtype=torch.float64), dim=1).requires_grad_()
    pairs = info_nce_loss(anchor, candidate, positive, negative)
    assert set(pairs.anchors.tolist()) == {1}
    grads = torch.autograd.grad(mean_pair_loss(pairs), (anchor, candidate))
    assert all(torch.isfinite(g).all() for g in grads)
    assert float(grads[0][0].abs().sum()) == 0.0


def test_reducer_with_no_pairs_is_a_differentiable_zero() -> None:
    anchor = torch.randn(2, 3, requires_grad=True)
    nothing = torch.zeros(2, 2, dtype=torch.bool)
    loss = mean_pair_loss(info_nce_loss(anchor, anchor.detach(), nothing, nothing))
    (grad,) = torch.autograd.grad(loss, anchor)
    assert float(loss.detach()) == 0.0 and float(grad.abs().sum()) == 0.0


def test_info_nce_single_pair_hand_computed() -> None:
    # s_ap = 1, s_an = 0, t = 0.5: loss = -log(e^2 / (e^2 + e^0)).
    anchor = torch.tensor([[1.0, 0.0]])
    candidates = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    positive, negative = torch.tensor([[True, False]]), torch.tensor([[False, True]])
    pairs = info_nce_loss(anchor, candidates, positive, negative, temperature=0.5)
    assert float(pairs.losses[0]) == pytest.approx(-math.log(math.e**2 / (math.e**2 + 1)))


@pytest.mark.parametrize("seed", range(3))
def test_view_info_nce_matches_a_naive_loop(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    emb = F.normalize(torch.randn(7, 5, generator=g, dtype=torch.float64), dim=1)
    views = F.normalize(emb + 0.5 * torch.randn(7, 5, generator=g, dtype=torch.float64), dim=1)
    pairs = view_info_nce_loss(views, emb, temperature=0.3)
    expected = []
    for i in range(7):
        logits = [float(views[i] @ emb[j]) / 0.3 for j in range(7)]
        expected.append(-logits[i] + math.log(sum(math.exp(v) for v in logits)))
    assert pairs.anchors.tolist() == pairs.candidates.tolist() == list(range(7))
    torch.testing.assert_close(pairs.losses, torch.tensor(expected, dtype=torch.float64))


def test_docstring_examples_run() -> None:
    result = doctest.testmod(losses_module, extraglobs={"torch": torch, "F": F})
    assert result.attempted >= 3 and result.failed == 0

"""Feature corruption for the self-supervised term: what it replaces, and with what."""

from __future__ import annotations

import doctest

import pytest
import torch

import lookalike.encoder.augment as augment_module
from lookalike.encoder.augment import corrupt_features


def distinct_columns(n: int, f: int) -> torch.Tensor:
    """Every entry distinct, so a changed entry is always visible."""
    return torch.arange(n * f, dtype=torch.float32).reshape(n, f)


@pytest.mark.parametrize("rate", [0.2, 0.6])
def test_the_share_of_replaced_entries_matches_the_rate(rate: float) -> None:
    n, f = 200, 60
    x = distinct_columns(n, f)
    view = corrupt_features(x, rate, torch.Generator().manual_seed(1))
    changed = (view != x).float().mean().item()
    expected = rate * (1 - 1 / n)  # a replaced entry may draw its own row
    sd = (expected * (1 - expected) / (n * f)) ** 0.5
    assert abs(changed - expected) < 5 * sd


def test_replacements_come_from_the_same_column_of_different_rows() -> None:
    n, f = 50, 40
    x = distinct_columns(n, f)
    view = corrupt_features(x, 0.9, torch.Generator().manual_seed(2))
    for j in range(f):
        assert set(view[:, j].tolist()) <= set(x[:, j].tolist())
    # Each entry draws its own donor: one row's replacements come from many rows, not one.
    donors_of_row_0 = {int(v) // f for v in view[0].tolist()}
    assert len(donors_of_row_0) > 20


def test_integer_codes_keep_their_dtype_and_the_draw_is_reproducible() -> None:
    codes = torch.randint(0, 9, (30, 4), generator=torch.Generator().manual_seed(0))
    first = corrupt_features(codes, 0.6, torch.Generator().manual_seed(3))
    again = corrupt_features(codes, 0.6, torch.Generator().manual_seed(3))
    assert first.dtype == codes.dtype and torch.equal(first, again)


def test_a_table_without_columns_passes_through() -> None:
    empty = torch.zeros(5, 0, dtype=torch.int64)
    assert corrupt_features(empty, 0.6).shape == (5, 0)


def test_docstring_examples_run() -> None:
    result = doctest.testmod(augment_module, extraglobs={"torch": torch})
    assert result.attempted >= 1 and result.failed == 0

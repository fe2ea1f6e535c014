"""Held-out recall: seed scoring against brute force, recall by hand, the converter split."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from lookalike.data.spec import EncodedFeatures, raw_feature_vectors
from lookalike.encoder.heldout import (
    heldout_recall,
    recall_in_top_fraction,
    seed_scores,
    split_converters,
)


@pytest.mark.parametrize("top_m", [1, 3, 50])
def test_seed_scores_match_brute_force(top_m: int) -> None:
    rng = np.random.default_rng(0)
    seeds, candidates = rng.standard_normal((7, 5)), rng.standard_normal((2100, 5))
    expected = [np.mean(sorted(seeds @ c, reverse=True)[:top_m]) for c in candidates]
    got = seed_scores(seeds, candidates, top_m)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_recall_in_top_fraction_by_hand() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1, 0.0])
    positive = np.array([1, 0, 0, 1, 0, 0, 0, 0, 0, 1], dtype=bool)
    assert recall_in_top_fraction(scores, positive, 0.2) == pytest.approx(1 / 3)  # top 2
    assert recall_in_top_fraction(scores, positive, 0.35) == pytest.approx(2 / 3)  # top ceil(3.5)=4
    assert recall_in_top_fraction(scores, positive, 1.0) == 1.0


def test_heldout_recall_finds_planted_neighbours() -> None:
    rng = np.random.default_rng(1)
    seeds = np.tile([1.0, 0.0], (5, 1))
    heldout = np.array([[0.99, 0.1], [0.98, -0.1], [-1.0, 0.0]])  # two near the seeds, one far
    background = np.column_stack([np.zeros(97), rng.choice([-1.0, 1.0], 97)])
    recall = heldout_recall(seeds, heldout, background, top_fraction=0.02, top_m=3)
    assert recall == pytest.approx(2 / 3)


def test_split_holds_out_a_fraction_and_a_user_for_every_type() -> None:
    rng = np.random.default_rng(0)
    by_type = [np.arange(0, 200), np.arange(150, 250), np.arange(300, 303)]
    split = split_converters(by_type, 0.1, rng)
    all_heldout = np.concatenate(split.heldout)
    for rows, train, heldout in zip(by_type, split.train, split.heldout, strict=True):
        assert np.array_equal(np.sort(np.concatenate([train, heldout])), rows)
        assert len(heldout) >= 1 and len(train) >= 1
        assert not np.isin(train, all_heldout).any()  # held out for one type, out for all
    assert 18 <= len(split.heldout[0]) <= 20 + 10  # own 10% plus users held out via type 1


def test_raw_feature_vectors_are_standardized_numeric_and_one_hot() -> None:
    rng = np.random.default_rng(0)
    features = EncodedFeatures(rng.random((300, 3), dtype=np.float32), rng.integers(0, 4, (300, 1)))
    one_hot_encoder = OneHotEncoder(categories=[list(range(4))], sparse_output=False)
    one_hot = one_hot_encoder.fit_transform(features.categorical)
    expected = StandardScaler().fit_transform(np.hstack([features.numeric, one_hot]))
    np.testing.assert_allclose(raw_feature_vectors(features, [4]), expected, rtol=1e-4, atol=1e-5)

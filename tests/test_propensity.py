"""The hybrid strategy's raw-feature half: model inputs, feature readers and cross-fitted boosting."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from lookalike.audience.crossfit import random_halves
from lookalike.core.errors import ArtifactError
from lookalike.audience.propensity import (
    PREDICT_CHUNK_ROWS,
    ArrayFeatures,
    BlendedModel,
    ParquetFeatures,
    boosted_log_odds,
    mean_log_odds,
)
from lookalike.data.spec import model_inputs
from lookalike.data.spec import EncodedFeatures, encode
from lookalike.testing.toy_tables import toy_spec


def feature_table(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "user_id": np.arange(100, 100 + n, dtype=np.int64),
            "spend": rng.gamma(2.0, 10.0, n),
            "visits": np.where(rng.random(n) < 0.1, np.nan, rng.poisson(4, n).astype(float)),
            "plan": rng.choice(["free", "pro", "team"], n).tolist(),
        }
    )


@pytest.fixture
def table(tmp_path: Path) -> tuple[ParquetFeatures, np.ndarray]:
    """A feature table on disk and, as the reference, its model inputs encoded all at once."""
    frame = feature_table(300)
    path = tmp_path / "features.parquet"
    frame.write_parquet(path, row_group_size=50)
    spec = toy_spec(frame)
    reference = model_inputs(encode(frame, spec), spec.cardinalities)
    return ParquetFeatures(path, spec, batch_rows=37), reference


def test_model_inputs_by_hand() -> None:
    features = EncodedFeatures(
        numeric=np.array([[0.25, 1.0], [0.5, 0.0]], dtype=np.float32),
        categorical=np.array([[2, 0], [0, 1]]),
    )
    expected = [[0.25, 1.0, 0, 0, 1, 1, 0], [0.5, 0.0, 1, 0, 0, 0, 1]]
    np.testing.assert_array_equal(model_inputs(features, [3, 2]), expected)


def test_parquet_rows_equal_the_table_encoded_at_once(table) -> None:
    features, reference = table
    rows = np.array([299, 3, 150, 3, 0, 74])  # unsorted, repeated, across row groups
    np.testing.assert_array_equal(features.take(rows), reference[rows])
    subset = np.sort(np.random.default_rng(4).choice(300, 120, replace=False))
    np.testing.assert_allclose(
        features.map_rows(subset, lambda block: block.sum(axis=1)),
        reference[subset].sum(axis=1), rtol=1e-6,
    )
    in_memory = ArrayFeatures(reference)
    np.testing.assert_array_equal(
        in_memory.map_rows(subset, lambda block: block[:, 0]), reference[subset, 0]
    )


def test_a_feature_table_in_another_order_is_refused(table) -> None:
    features, _ = table
    ids = pl.read_parquet(features.path).get_column("user_id")
    features.check_rows(ids)
    with pytest.raises(ArtifactError, match="order"):
        features.check_rows(ids.reverse())
    with pytest.raises(ArtifactError):
        features.check_rows(ids.head(10))


@pytest.mark.parametrize("linear_share", [0.0, 0.5, 1.0])
def test_boosted_log_odds_are_cross_fitted_by_the_other_half(linear_share: float) -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(400, 5)).astype(np.float32)
    matrix[:, 4] = matrix[:, 4] * 50 + 10  # a column on another scale: the linear model standardizes
    seed_rows = np.flatnonzero(rng.random(400) < 1 / (1 + np.exp(2.0 - 2.0 * matrix[:, 0])))
    weights = rng.uniform(0.5, 2.0, len(seed_rows))
    rows = np.setdiff1d(np.arange(400), seed_rows)
    halves = random_halves(rows, 200, seed=3)
    got = boosted_log_odds(ArrayFeatures(matrix), seed_rows, weights, halves, rows, random_state=1,
                           linear_share=linear_share)

    logits = []
    for half in halves:  # the reference: every model fitted here, each row scored by hand
        x = np.vstack([matrix[seed_rows], matrix[half]])
        y = np.r_[np.ones(len(seed_rows)), np.zeros(len(half))]
        sample_weight = np.r_[weights, np.ones(len(half))]
        boosted = HistGradientBoostingClassifier(early_stopping=True, random_state=1)
        boosted.fit(x, y, sample_weight=sample_weight)
        linear = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
        linear.fit(x, y, logisticregression__sample_weight=sample_weight)
        logits.append((1 - linear_share) * boosted.decision_function(matrix)
                      + linear_share * linear.decision_function(matrix))
    expected = []
    for row in rows:
        owner = [i for i, half in enumerate(halves) if row in half]
        expected.append(logits[1 - owner[0]][row] if owner else (logits[0][row] + logits[1][row]) / 2)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # the signal is found: seeds are likelier where the first feature is high
    assert got[matrix[rows, 0] > 1.0].mean() > got[matrix[rows, 0] < -1.0].mean() + 1.0


def test_mean_log_odds_over_chunks_on_threads_equals_one_call_per_model() -> None:
    """Chunks scored on worker threads (one OpenMP thread each) give the models' mean score that
    one call per model on the whole matrix, on this thread, gives."""
    rng = np.random.default_rng(2)
    matrix = rng.normal(size=(3 * PREDICT_CHUNK_ROWS + 17, 4)).astype(np.float32)
    labels = (matrix[:, 0] + rng.normal(size=len(matrix)) > 0.5).astype(float)
    models = [
        BlendedModel(HistGradientBoostingClassifier(random_state=s).fit(matrix, labels), None, 0.0)
        for s in (0, 1)
    ]
    reference = np.mean([m.boosted.decision_function(matrix) for m in models], axis=0)
    np.testing.assert_array_equal(mean_log_odds(models, matrix), reference)

"""Tests of the synthetic data generator: contract (schemas, ranges, ids, determinism, atomicity)
and the hidden latent model (rates, where the signal is, where it is not)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from scipy import integrate, stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

from lookalike.data import synthetic
from lookalike.core.artifacts import TEMP_MARKER, read_json, sha256_file
from lookalike.core.config import load_config
from lookalike.core.errors import LookalikeError
from lookalike.data.synthetic import (
    CATEGORIES,
    CONVERSION_TYPES,
    EVENT_TYPES,
    NOISE_PROFILE_COLUMNS,
    GeneratedData,
    generate,
    intercept_for_rate,
    user_ids,
)

N_USERS = 20_000
EVENTS_PER_USER = 10.0
AS_OF = datetime(2025, 7, 1, 12, tzinfo=UTC)
TYPES = [t.name for t in CONVERSION_TYPES]
PARQUET_FILES = ("events", "profiles", "conversions", "truth")


@pytest.fixture(scope="module", autouse=True)
def _single_threaded_blas() -> Iterator[None]:
    """The fits here are tiny; on a busy 2-core machine BLAS threads make them 20x slower."""
    with threadpool_limits(1):
        yield


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> GeneratedData:
    out = tmp_path_factory.mktemp("synthetic")
    return generate(out, N_USERS, events_per_user=EVENTS_PER_USER, seed=7, as_of=AS_OF)


@pytest.fixture(scope="module")
def users(data: GeneratedData) -> pl.DataFrame:
    """Truth joined with profiles and one boolean label column per conversion type."""
    conversions = pl.read_parquet(data.conversions)
    frame = pl.read_parquet(data.truth).join(pl.read_parquet(data.profiles), on="user_id")
    converters = {t: conversions.filter(pl.col("conversion_type") == t)["user_id"].implode() for t in TYPES}
    return frame.with_columns(pl.col("user_id").is_in(ids).alias(t) for t, ids in converters.items())


@pytest.fixture(scope="module")
def past_counts(data: GeneratedData, users: pl.DataFrame) -> pl.DataFrame:
    """Per-user event counts by type before as_of, one row per user in ``users`` order."""
    events = pl.read_parquet(data.events).filter(pl.col("event_time") < AS_OF)
    counts = events.group_by("user_id", "event_type").len()
    counts = counts.pivot(on="event_type", index="user_id", values="len")
    return users.select("user_id").join(counts, on="user_id", how="left").fill_null(0)


def _latent(users: pl.DataFrame, dims: range = range(synthetic.LATENT_DIM)) -> np.ndarray:
    return users.select([f"latent_{k}" for k in dims]).to_numpy()


def _null_auc_se(labels: np.ndarray) -> float:
    """Standard error of the AUC of a score independent of the labels (Hanley and McNeil)."""
    n1 = int(labels.sum())
    n0 = labels.size - n1
    return math.sqrt((n1 + n0 + 1) / (12 * n1 * n0))


def _held_out_auc(features: np.ndarray, labels: np.ndarray) -> float:
    """Fit a logistic regression on the first half of the users, AUC on the second half."""
    half = np.arange(labels.size) < labels.size // 2
    model = LogisticRegression(max_iter=2000).fit(features[half], labels[half])
    return roc_auc_score(labels[~half], model.decision_function(features[~half]))


def _standardized(matrix: np.ndarray) -> np.ndarray:
    matrix = np.where(np.isnan(matrix), np.nanmedian(matrix, axis=0), matrix)
    return (matrix - matrix.mean(axis=0)) / (matrix.std(axis=0) + 1e-12)


# --- contract -------------------------------------------------------------------------------------


def test_every_file_has_the_documented_schema(data: GeneratedData) -> None:
    utc_us = pa.timestamp("us", tz="UTC")
    expected = {
        "events": {
            "user_id": pa.int64(), "event_time": utc_us, "event_type": pa.string(),
            "item_id": pa.int64(), "category": pa.string(), "value": pa.float64(),
        },
        "conversions": {"user_id": pa.int64(), "conversion_type": pa.string(), "conversion_time": utc_us},
        "truth": {
            "user_id": pa.int64(), **{f"latent_{k}": pa.float64() for k in range(synthetic.LATENT_DIM)},
            "activity": pa.float64(), **{f"p_{t}": pa.float64() for t in TYPES},
        },
    }  # fmt: skip
    for name, columns in expected.items():
        schema = pq.read_schema(getattr(data, name))
        assert dict(zip(schema.names, schema.types)) == columns, name
    profiles = pq.read_schema(data.profiles)
    signal = set(synthetic.SIGNAL_PROFILE_COLUMNS) | set(synthetic.DISTRACTOR_PROFILE_COLUMNS)
    assert set(profiles.names) == {"user_id"} | signal | set(NOISE_PROFILE_COLUMNS)
    for column in synthetic.CATEGORICAL_INT_COLUMNS:
        assert profiles.field(column).type == pa.int64()
    assert {pa.string(), pa.bool_(), pa.float64(), pa.int64()} <= set(profiles.types)


def test_row_groups_never_exceed_the_limit_and_chunking_does_not_change_the_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_batch = generate(tmp_path / "one", 25_000, events_per_user=4, seed=3, chunk_users=1_000_000)
    monkeypatch.setattr(synthetic, "ROW_GROUP_ROWS", 7_000)
    many = generate(tmp_path / "many", 25_000, events_per_user=4, seed=3, chunk_users=10_000)
    for name in PARQUET_FILES:
        metadata = pq.ParquetFile(getattr(many, name)).metadata
        assert max(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)) <= 7_000
        assert pl.read_parquet(getattr(one_batch, name)).equals(pl.read_parquet(getattr(many, name)))


def test_same_arguments_give_the_same_bytes_and_another_seed_other_data(tmp_path: Path) -> None:
    first, again, other = (
        generate(tmp_path / name, 3_000, events_per_user=5, seed=seed)
        for name, seed in (("a", 1), ("b", 1), ("c", 2))
    )
    for name in (*PARQUET_FILES, "truth_json", "config"):
        assert sha256_file(getattr(first, name)) == sha256_file(getattr(again, name))
    for name in PARQUET_FILES:
        assert not pl.read_parquet(getattr(first, name)).equals(pl.read_parquet(getattr(other, name)))


def test_each_user_appears_exactly_once_with_the_documented_scattered_ids(
    data: GeneratedData, users: pl.DataFrame
) -> None:
    expected = {synthetic.USER_ID_OFFSET + (i * synthetic.USER_ID_MULTIPLIER) % 2**32 for i in range(N_USERS)}
    for name in ("profiles", "truth"):
        ids = pl.read_parquet(getattr(data, name))["user_id"]
        assert ids.n_unique() == ids.len() == N_USERS
        assert set(ids.to_list()) == expected
    for name in ("events", "conversions"):
        assert set(pl.read_parquet(getattr(data, name))["user_id"].unique().to_list()) <= expected
    ids = users["user_id"].to_numpy()
    assert not np.all(np.diff(ids) > 0), "ids must not be sorted, so code cannot treat them as positions"


def test_user_ids_is_a_bijection_onto_scattered_ids() -> None:
    index = np.concatenate([np.arange(100_000), 2**32 - 1 - np.arange(100_000)])
    ids = user_ids(index)
    assert np.unique(ids).size == index.size
    assert ids.min() >= synthetic.USER_ID_OFFSET and ids.max() < synthetic.USER_ID_OFFSET + 2**32
    assert ids.dtype == np.int64


def test_events_lie_in_the_documented_time_range_with_a_share_after_as_of(data: GeneratedData) -> None:
    times = pl.read_parquet(data.events, columns=["event_time"])["event_time"]
    start = AS_OF - timedelta(days=synthetic.HISTORY_DAYS)
    end = AS_OF + timedelta(days=synthetic.EVENTS_AFTER_AS_OF_DAYS)
    assert times.min() >= start and times.max() < end
    after = float((times >= AS_OF).mean())
    assert abs(after - (end - AS_OF) / (end - start)) < 0.01
    truth = read_json(data.truth_json)
    assert datetime.fromisoformat(truth["as_of"]) == AS_OF
    assert [datetime.fromisoformat(t) for t in truth["events_time_range"]] == [start, end]


def test_conversions_lie_after_as_of_within_the_window(data: GeneratedData) -> None:
    conversions = pl.read_parquet(data.conversions)
    assert conversions["conversion_time"].min() >= AS_OF
    assert conversions["conversion_time"].max() < AS_OF + timedelta(days=synthetic.CONVERSION_WINDOW_DAYS)
    assert set(conversions["conversion_type"].unique()) == set(TYPES)
    assert conversions.select("user_id", "conversion_type").is_unique().all()
    multi = conversions.group_by("user_id").len().filter(pl.col("len") > 1).height
    assert multi > 0, "some users should convert to more than one type"


def test_conversions_before_the_events_extract_leave_a_purchase_event_as_a_leakage_trap(
    data: GeneratedData,
) -> None:
    extract = AS_OF + timedelta(days=synthetic.EVENTS_AFTER_AS_OF_DAYS)
    conversions = pl.read_parquet(data.conversions).filter(pl.col("conversion_time") < extract)
    purchases = pl.read_parquet(data.events).filter(pl.col("event_type") == "purchase")
    matched = conversions.join(
        purchases, left_on=["user_id", "conversion_time"], right_on=["user_id", "event_time"], how="semi"
    )
    assert conversions.height > 0 and matched.height == conversions.height


def test_item_category_and_value_are_null_exactly_where_the_event_type_has_none(data: GeneratedData) -> None:
    events = pl.read_parquet(data.events)
    flags = pl.DataFrame(
        {
            "event_type": [t.name for t in EVENT_TYPES],
            "has_item": [t.has_item for t in EVENT_TYPES],
            "has_value": [t.has_value for t in EVENT_TYPES],
        }
    )
    joined = events.join(flags, on="event_type", how="left")
    assert joined["has_item"].null_count() == 0, "an event type outside EVENT_TYPES"
    assert (joined["item_id"].is_not_null() == joined["has_item"]).all()
    assert (joined["category"].is_not_null() == joined["has_item"]).all()
    assert (joined["value"].is_not_null() == joined["has_value"]).all()
    assert set(events["category"].drop_nulls().unique()) <= set(CATEGORIES)
    values = joined["value"].drop_nulls()
    assert values.min() > 0 and values.max() > 20 * values.median(), "purchase values should be heavy-tailed"


def test_mean_event_count_per_user_matches_the_argument(data: GeneratedData) -> None:
    n_events = pq.ParquetFile(data.events).metadata.num_rows
    traps = pl.read_parquet(data.conversions).filter(
        pl.col("conversion_time") < AS_OF + timedelta(days=synthetic.EVENTS_AFTER_AS_OF_DAYS)
    )
    assert data.n_events == n_events
    assert abs((n_events - traps.height) / N_USERS - EVENTS_PER_USER) < 0.05 * EVENTS_PER_USER


def test_profiles_have_missing_values_in_several_columns(users: pl.DataFrame) -> None:
    null_share = {c: users[c].null_count() / N_USERS for c in users.columns}
    assert sum(0.05 <= share <= 0.20 for share in null_share.values()) >= 8
    assert null_share["user_id"] == 0 and null_share["tenure_days"] == 0
    assert set(users["region_code"].drop_nulls().unique()) == set(range(1, 61))


def test_sample_config_validates_and_names_real_columns_and_types(data: GeneratedData) -> None:
    config = load_config(data.config)
    profiles = pq.read_schema(data.profiles)
    assert config.ingest.categorical_int_columns == list(synthetic.CATEGORICAL_INT_COLUMNS)
    assert all(profiles.field(c).type == pa.int64() for c in config.ingest.categorical_int_columns)
    truth = read_json(data.truth_json)
    assert config.train.held_back_types == [truth["held_back_type"]]
    assert truth["held_back_type"] in TYPES


def test_truth_probabilities_follow_the_documented_model(data: GeneratedData, users: pl.DataFrame) -> None:
    truth = read_json(data.truth_json)
    latent = _latent(users)
    for spec in truth["conversion_types"]:
        logit = spec["intercept"] + latent @ np.asarray(spec["weights"])
        expected = 1 / (1 + np.exp(-logit))
        np.testing.assert_allclose(users[f"p_{spec['name']}"].to_numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize(("rate", "weight_norm"), [(0.025, 1.7), (0.008, 1.2), (0.3, 0.0), (0.001, 3.0)])
def test_intercept_gives_the_target_rate_by_numerical_integration(rate: float, weight_norm: float) -> None:
    a = intercept_for_rate(rate, weight_norm)
    expected, _ = integrate.quad(lambda z: stats.norm.pdf(z) / (1 + np.exp(-(a + weight_norm * z))), -12, 12)
    assert expected == pytest.approx(rate, rel=1e-6)


def test_invalid_arguments_raise_actionable_errors(tmp_path: Path) -> None:
    with pytest.raises(LookalikeError, match="--users"):
        generate(tmp_path, 0)
    with pytest.raises(LookalikeError, match="--events-per-user"):
        generate(tmp_path, 10, events_per_user=-1)
    with pytest.raises(LookalikeError, match="time zone"):
        generate(tmp_path, 10, as_of=datetime(2026, 1, 1))


def test_a_failure_midway_leaves_no_partial_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_block = synthetic._generate_block

    def failing_second_block(settings: object, block: int, n: int) -> dict[str, pa.Table]:
        if block == 1:
            raise RuntimeError("disk full")
        return real_block(settings, block, n)

    monkeypatch.setattr(synthetic, "_generate_block", failing_second_block)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(tmp_path, 2 * synthetic.BLOCK_USERS, events_per_user=1, chunk_users=1)
    assert list(tmp_path.iterdir()) == []


def test_progress_reports_each_batch(tmp_path: Path) -> None:
    lines: list[str] = []
    generate(tmp_path, 25_000, events_per_user=1, chunk_users=10_000, progress=lines.append)
    assert len(lines) == 3 and lines[-1].startswith("users 25,000/25,000")
    assert not any(TEMP_MARKER in p.name for p in tmp_path.iterdir())


# --- the hidden latent model ----------------------------------------------------------------------


def test_converter_rates_match_the_targets(users: pl.DataFrame) -> None:
    for spec in CONVERSION_TYPES:
        observed = users[spec.name].mean()
        assert abs(observed - spec.rate) < 4 * math.sqrt(spec.rate * (1 - spec.rate) / N_USERS), spec.name
        probabilities = users[f"p_{spec.name}"]
        assert abs(probabilities.mean() - spec.rate) < 4 * probabilities.std() / math.sqrt(N_USERS)
    p_none = np.prod([1 - users[f"p_{t}"].to_numpy() for t in TYPES], axis=0)
    any_rate = users.select(pl.any_horizontal(TYPES)).to_series().mean()
    assert abs(any_rate - (1 - p_none.mean())) < 4 * math.sqrt(any_rate * (1 - any_rate) / N_USERS)
    assert 0.04 < any_rate < 0.07


def test_the_true_latent_predicts_every_type(users: pl.DataFrame) -> None:
    latent = _latent(users)
    for name in TYPES:
        assert _held_out_auc(latent, users[name].to_numpy()) > 0.75, name


def test_types_load_on_different_latent_directions(data: GeneratedData) -> None:
    """The held-back type's direction is spanned by the training types but matches none of them."""
    truth = read_json(data.truth_json)
    weights = {t["name"]: np.asarray(t["weights"]) for t in truth["conversion_types"]}
    held_back = weights.pop(truth["held_back_type"])
    training = np.stack(list(weights.values()))
    coefficients, residual, *_ = np.linalg.lstsq(training.T, held_back, rcond=None)
    assert np.allclose(training.T @ coefficients, held_back)
    cosines = training @ held_back / (np.linalg.norm(training, axis=1) * np.linalg.norm(held_back))
    assert np.all(np.abs(cosines) < 0.75)


def test_noise_profile_columns_carry_no_signal(users: pl.DataFrame) -> None:
    noise = users.select(NOISE_PROFILE_COLUMNS)
    strings = [c for c, dtype in noise.schema.items() if dtype == pl.String] + ["plan_code"]
    features = _standardized(noise.to_dummies(strings).cast(pl.Float64).to_numpy())
    labels = {name: users[name].to_numpy() for name in TYPES}
    labels["any"] = users.select(pl.any_horizontal(TYPES)).to_series().to_numpy()
    aucs = {name: _held_out_auc(features, y) for name, y in labels.items()}
    for name, y in labels.items():
        assert abs(aucs[name] - 0.5) < 4 * _null_auc_se(y[N_USERS // 2 :]), name
    assert abs(aucs["any"] - 0.5) < 0.05


def test_only_the_signal_event_types_depend_on_the_latent(
    users: pl.DataFrame, past_counts: pl.DataFrame
) -> None:
    latent = _latent(users)
    tolerance = 4 / math.sqrt(N_USERS)
    for spec in EVENT_TYPES:
        for k in range(synthetic.LATENT_DIM):
            rho = stats.spearmanr(past_counts[spec.name].to_numpy(), latent[:, k]).statistic
            if spec.loading[k]:
                assert rho > 0.15, (spec.name, k)
            else:
                assert abs(rho) < tolerance, (spec.name, k)


def test_region_age_tenure_and_device_carry_their_latent_dimensions(users: pl.DataFrame) -> None:
    latent = _latent(users)
    for k in range(synthetic.LATENT_DIM):
        explained = _share_of_variance_explained_by_groups(users["region_code"], latent[:, k])
        assert (explained > 0.2) if k in (1, 2) else (explained < 0.01), k
    age = users["age"].to_numpy().astype(float)
    assert stats.spearmanr(age, latent[:, 0], nan_policy="omit").statistic > 0.3
    assert stats.spearmanr(users["tenure_days"], latent[:, 3]).statistic > 0.3
    mobile = users["device"].is_in(["android", "ios"]).to_numpy()
    assert latent[mobile, 4].mean() - latent[~mobile, 4].mean() > 0.5


def _share_of_variance_explained_by_groups(groups: pl.Series, values: np.ndarray) -> float:
    """Between-group variance over total variance (eta squared), rows with a null group dropped."""
    frame = pl.DataFrame({"g": groups, "v": values}).drop_nulls("g")
    fitted = frame.select(pl.col("v").mean().over("g"))["v"]
    return fitted.var() / frame["v"].var()


def test_shopping_categories_lean_to_the_preferred_category_of_the_latent_sector(
    data: GeneratedData, users: pl.DataFrame
) -> None:
    truth = read_json(data.truth_json)
    preferred = np.array(truth["category_affinity"]["preferred_by_sector_of_u2_u3"])
    angle = np.arctan2(users["latent_3"].to_numpy(), users["latent_2"].to_numpy()) + np.pi
    sector = np.minimum((angle / (2 * np.pi) * len(preferred)).astype(int), len(preferred) - 1)
    shopping = [t.name for t in EVENT_TYPES if t.shopping]
    events = pl.read_parquet(data.events).filter(pl.col("event_type").is_in(shopping))
    opposite = preferred[(sector + len(preferred) // 2) % len(preferred)]
    keyed = pl.DataFrame({"user_id": users["user_id"], "own": preferred[sector], "opposite": opposite})
    shares = events.join(keyed, on="user_id").select(
        (pl.col("category") == pl.col("own")).mean().alias("own"),
        (pl.col("category") == pl.col("opposite")).mean().alias("opposite"),
    )
    assert shares["own"][0] - shares["opposite"][0] > 0.25


def test_activity_is_a_weak_predictor_of_conversion(users: pl.DataFrame, past_counts: pl.DataFrame) -> None:
    total = past_counts.drop("user_id").sum_horizontal().to_numpy()
    for name in TYPES:
        assert abs(roc_auc_score(users[name].to_numpy(), total) - 0.5) < 0.1, name


def test_raw_feature_neighbours_are_weak_while_latent_neighbours_are_strong(
    users: pl.DataFrame, past_counts: pl.DataFrame
) -> None:
    numeric = [c for c, dtype in users.select(pl.exclude("user_id")).schema.items() if dtype.is_numeric()]
    profile = [c for c in numeric if not c.startswith(("latent_", "p_")) and c != "activity"]
    counts = np.log1p(past_counts.drop("user_id").to_numpy().astype(float))
    raw = _standardized(np.column_stack([users.select(profile).cast(pl.Float64).to_numpy(), counts]))
    raw_neighbours = _neighbours_in_first_half(raw)
    latent_neighbours = _neighbours_in_first_half(_latent(users, range(4)))
    for name in TYPES:
        y = users[name].to_numpy()
        assert _neighbour_auc(raw_neighbours, y) < 0.62, name
        assert _neighbour_auc(latent_neighbours, y) > 0.70, name


def _neighbours_in_first_half(features: np.ndarray, k: int = 50) -> np.ndarray:
    """For each user of the second half, its k nearest users of the first half (Euclidean)."""
    half = features.shape[0] // 2
    return NearestNeighbors(n_neighbors=k).fit(features[:half]).kneighbors(features[half:])[1]


def _neighbour_auc(neighbours: np.ndarray, labels: np.ndarray) -> float:
    """AUC of scoring each second-half user by the converter share among its neighbours."""
    half = labels.size // 2
    return roc_auc_score(labels[half:], labels[:half][neighbours].mean(axis=1))

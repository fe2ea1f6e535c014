"""Proxy detection (measures against scipy and hand-computed values, synthetic proxies that must and
must not be flagged) and the seed-differencing guard."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import stats

from lookalike.core.config import LookalikeConfig, PrivacyConfig
from lookalike.core.errors import AudienceError
from lookalike.data.features import compute_features
from lookalike.data.ingest import load_profiles
from lookalike.privacy.proxies import (
    correlation_ratio,
    cramers_v_corrected,
    proxy_warnings,
    read_denied_columns,
    seed_overlap_guard,
    spearman,
)

N = 2000
RELIGIONS = np.array(["a", "b", "c", "d"])


# ---- the measures ---------------------------------------------------------------------------


def test_spearman_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    y = np.round(x + rng.normal(size=300), 1)  # ties on purpose
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)


def test_spearman_hand_computed_with_ties_and_undefined_cases() -> None:
    # Ranks x = 1..5, y = [1, 2, 3.5, 5, 3.5]: covariance sum 8, squares 10 and 9.5 -> 8 / sqrt(95).
    x, y = np.array([1.0, 2.0, 3.0, 4.0, 5.0]), np.array([5.0, 6.0, 7.0, 8.0, 7.0])
    assert spearman(x, y) == pytest.approx(8 / np.sqrt(95), abs=1e-12)
    assert spearman(x, -(x**3)) == pytest.approx(-1.0)
    assert spearman(x, np.full(5, 2.0)) == 0.0  # constant: undefined, reported as no association
    assert spearman(np.array([1.0]), np.array([2.0])) == 0.0
    assert spearman(np.array([]), np.array([])) == 0.0


def test_cramers_v_corrected_hand_computed() -> None:
    # Table [[3, 1], [1, 3]], n = 8: chi2 = 2, phi2 = 1/4, corrected phi2 = 1/4 - 1/7 = 3/28,
    # corrected r = k = 2 - 1/7 = 13/7, so V^2 = (3/28) / (6/7) = 1/8.
    x = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    assert cramers_v_corrected(x, y) == pytest.approx(np.sqrt(1 / 8))
    assert cramers_v_corrected(x, x) == pytest.approx(1.0)


def test_cramers_v_corrected_approaches_scipy_plain_v_on_large_samples() -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 3, 50_000)
    y = np.where(rng.random(50_000) < 0.5, x, rng.integers(0, 4, 50_000))
    table = stats.contingency.crosstab(x, y).count
    plain = stats.contingency.association(table, method="cramer")
    assert cramers_v_corrected(x, y) == pytest.approx(plain, abs=2e-3)


def test_correlation_ratio_hand_computed() -> None:
    # Ranks 1..6 in groups {1,2,3} and {4,5,6}: between = 3 * 1.5^2 * 2 = 13.5, total = 17.5,
    # eta^2 = 27/35, adjusted = 1 - (8/35) * 5/4 = 5/7.
    values = np.array([10.0, 20.0, 30.0, 40.0, 50.0, 60.0])
    groups = np.array([7, 7, 7, 9, 9, 9])
    assert correlation_ratio(values, groups) == pytest.approx(np.sqrt(5 / 7))


def test_correlation_ratio_matches_kruskal_wallis_epsilon_from_scipy() -> None:
    """Adjusted eta^2 of the ranks equals (H - k + 1) / (n - k) with scipy's tie-corrected H."""
    rng = np.random.default_rng(2)
    groups = rng.integers(0, 12, 500) * 3  # sparse codes
    values = np.round(groups / 10 + rng.normal(size=500), 0)  # many ties
    samples = [values[groups == g] for g in np.unique(groups)]
    h, n, k = stats.kruskal(*samples).statistic, len(values), len(samples)
    assert correlation_ratio(values, groups) == pytest.approx(np.sqrt((h - k + 1) / (n - k)), abs=1e-12)
    assert correlation_ratio(np.full(500, 3.0), groups) == 0.0


# ---- proxy warnings -------------------------------------------------------------------------


def _population(seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Denied columns, and features with one deterministic proxy per type pair plus independent ones."""
    rng = np.random.default_rng(seed)
    religion = RELIGIONS[rng.integers(0, 4, N)]
    age = rng.integers(18, 90, N).astype(np.float64)
    denied = pl.DataFrame({"user_id": np.arange(N), "religion": religion, "age": age})
    score = {"a": 0.3, "b": 0.9, "c": 0.1, "d": 0.5}
    noise = rng.normal(size=N)
    noise[:50] = np.nan  # missing values are left out of numeric pairs
    features = pl.DataFrame(
        {
            "user_id": np.arange(N)[::-1],  # a different row order: the join must align users
            "church_code": [f"code_{r}" for r in religion[::-1]],  # categorical <- categorical
            "religion_score": [score[r] for r in religion[::-1]],  # numeric <- categorical
            "age_decade": age[::-1] // 10,  # numeric <- numeric
            "age_band": np.where(age[::-1] < 40, "young", "old"),  # categorical <- numeric
            "noise": noise,
            "plan": rng.choice(["x", "y", "z"], N),
            "zip": rng.integers(0, 300, N).astype(str),  # 300 random levels: no association
        }
    )
    return features, denied


EXPECTED_PROXIES = {
    ("church_code", "religion", "cramers_v"),
    ("religion_score", "religion", "correlation_ratio"),
    ("age_decade", "age", "spearman"),
    ("age_band", "age", "correlation_ratio"),
}


def test_deterministic_proxies_are_flagged_and_independent_columns_are_not() -> None:
    features, denied = _population()
    warnings = proxy_warnings(features, denied)
    assert {(w.feature, w.denied, w.measure) for w in warnings} == EXPECTED_PROXIES
    assert all(w.strength > 0.8 and w.n_users >= N - 50 for w in warnings)
    assert [w.strength for w in warnings] == sorted((w.strength for w in warnings), reverse=True)


def test_independent_columns_score_near_zero_even_with_many_categories() -> None:
    features, denied = _population()
    independent = ["noise", "plan", "zip"]
    low_threshold = PrivacyConfig(proxy_threshold=0.25)  # half the default; sampling noise is ~0.1
    assert proxy_warnings(features, denied, independent, config=low_threshold) == []
    # plain Cramér's V would call a random 300-level column associated:
    zip_codes = features.sort("user_id").get_column("zip").to_numpy()
    table = stats.contingency.crosstab(zip_codes, denied.get_column("religion").to_numpy()).count
    assert stats.contingency.association(table, method="cramer") > 0.2


def test_threshold_comes_from_config() -> None:
    rng = np.random.default_rng(4)
    denied = pl.DataFrame({"user_id": np.arange(N), "income": rng.normal(size=N)})
    moderate = denied.get_column("income").to_numpy() + rng.normal(scale=1.5, size=N)  # |rho| about 0.5
    features = pl.DataFrame({"user_id": np.arange(N), "spend": moderate})
    rho = abs(stats.spearmanr(moderate, denied.get_column("income").to_numpy()).statistic)
    assert [w.strength for w in proxy_warnings(features, denied, config=PrivacyConfig(proxy_threshold=rho - 0.05))] \
        == [pytest.approx(rho)]
    assert proxy_warnings(features, denied, config=PrivacyConfig(proxy_threshold=rho + 0.05)) == []


def test_declared_integer_codes_are_categorical() -> None:
    rng = np.random.default_rng(5)
    region = rng.integers(0, 6, N)
    denied = pl.DataFrame({"user_id": np.arange(N), "ethnicity": np.array(list("pqrstu"))[region]})
    features = pl.DataFrame({"user_id": np.arange(N), "region_code": (region * 5) % 6})
    as_codes = proxy_warnings(features, denied, categorical=["region_code"])
    assert [(w.feature, w.measure) for w in as_codes] == [("region_code", "cramers_v")]
    assert as_codes[0].strength == pytest.approx(1.0, abs=1e-3)
    as_quantity = proxy_warnings(features, denied)
    assert [(w.feature, w.measure) for w in as_quantity] == [("region_code", "correlation_ratio")]


def test_end_to_end_from_profiles_with_a_denied_column(tmp_path: Path) -> None:
    """A denied column is dropped at ingest, yet its proxy survives as a feature and is reported."""
    rng = np.random.default_rng(6)
    religion = RELIGIONS[rng.integers(0, 4, 400)]
    profiles = tmp_path / "profiles.parquet"
    pl.DataFrame(
        {"user_id": np.arange(400), "religion": religion,
         "diet": np.where(np.isin(religion, ["a", "b"]), "kosher", "any"), "age": rng.integers(18, 90, 400)}
    ).write_parquet(profiles)
    config = LookalikeConfig.model_validate({"ingest": {"deny_columns": ["religion"]}})
    compute_features(None, load_profiles(str(profiles), deny_columns=["religion"]),
                     tmp_path / "f.parquet", tmp_path / "f.json", config=config)
    features = pl.read_parquet(tmp_path / "f.parquet")
    assert "religion" not in features.columns
    denied = read_denied_columns(str(profiles), config.ingest.deny_columns)
    warnings = proxy_warnings(features, denied, config=config.privacy)
    assert [(w.feature, w.denied) for w in warnings] == [("diet", "religion")]
    assert "diet" in str(warnings[0]) and "deny_columns" in str(warnings[0])


# ---- seed differencing ----------------------------------------------------------------------


MIN_DIFFERENCE = PrivacyConfig().min_seed_difference


@pytest.mark.parametrize(
    ("added", "removed", "flagged"),
    [(3, 0, True), (0, 3, True), (2, 1, True), (250, 250, False), (500, 0, False), (0, 0, False),
     (MIN_DIFFERENCE - 1, 0, True), (MIN_DIFFERENCE, 0, False)],
)
def test_seed_lists_differing_in_few_users_are_flagged(added: int, removed: int, flagged: bool) -> None:
    previous = list(range(10_000))
    new = previous[removed:] + list(range(20_000, 20_000 + added))
    check = seed_overlap_guard(previous, new, MIN_DIFFERENCE)
    assert (check.added, check.removed, check.difference) == (added, removed, added + removed)
    assert check.flagged is flagged
    if flagged:
        with pytest.raises(AudienceError, match=f"differ in {added + removed} users"):
            check.raise_if_flagged()
    else:
        check.raise_if_flagged()


def test_seed_guard_counts_distinct_ids_and_matches_int_and_string_ids() -> None:
    previous = pl.Series([1, 2, 3, 3, 4])
    new = ["1", "2", "3", "4", "4", "5"]
    check = seed_overlap_guard(previous, new, min_difference=10)
    assert (check.added, check.removed, check.flagged) == (1, 0, True)

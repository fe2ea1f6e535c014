"""Privacy checks: allowed features that stand in for denied (sensitive) columns, and exports
whose seed lists differ in so few users that comparing their audiences singles those users out.

Proxy measures, one per pair of column types, each in [0, 1] so one threshold
(``privacy.proxy_threshold``, default 0.5) applies to all:

- categorical / categorical: bias-corrected Cramér's V (Bergsma, 2013, J. Korean Stat. Soc. 42:323),
  which does not grow with the number of categories the way plain Cramér's V does on finite samples;
- numeric / numeric: |Spearman's rho| (monotone association, robust to outliers and scale);
- numeric / categorical (either way round): the correlation ratio eta of the numeric column's ranks
  by the categorical column, adjusted for the number of categories like an adjusted R^2
  (the share of the ranks' variance the categories explain, then its square root).

A missing categorical value is a category of its own (missingness can itself be a proxy); rows with
a missing numeric value (null, NaN, inf) are left out of that pair. Dates and datetimes count as
numeric. Limitation: Spearman misses non-monotone numeric proxies (``(age - 40) ** 2``), and every
measure looks at one allowed feature at a time, not at combinations.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import polars as pl
from scipy import stats

from lookalike.core.config import PrivacyConfig
from lookalike.core.errors import AudienceError, InputError
from lookalike.data.ingest import load_profiles
from lookalike.data.schema import USER_ID, is_float, is_integer, is_textual

Measure = Literal["cramers_v", "spearman", "correlation_ratio"]
MEASURE_NAMES: dict[Measure, str] = {
    "cramers_v": "bias-corrected Cramér's V",
    "spearman": "|Spearman rho|",
    "correlation_ratio": "rank correlation ratio",
}


@dataclass(frozen=True)
class ProxyWarning:
    """An allowed feature whose association with a denied column reaches the threshold."""

    feature: str
    denied: str
    measure: Measure
    strength: float
    threshold: float
    n_users: int

    def __str__(self) -> str:
        return (
            f"feature '{self.feature}' is a proxy for the denied column '{self.denied}' "
            f"({MEASURE_NAMES[self.measure]} {self.strength:.2f} >= {self.threshold:.2f} on "
            f"{self.n_users:,} users); drop it by adding it to ingest.deny_columns"
        )


def proxy_warnings(
    features: pl.DataFrame,
    denied: pl.DataFrame,
    allowed_columns: Collection[str] | None = None,
    *,
    categorical: Collection[str] = (),
    config: PrivacyConfig = PrivacyConfig(),
) -> list[ProxyWarning]:
    """Warn about allowed features that are strong proxies for denied columns, strongest first.

    ``features`` and ``denied`` are joined on ``user_id``; every non-id column of ``denied`` is
    checked against every column in ``allowed_columns`` (default: all of ``features`` but the id).
    ``categorical`` names integer columns that are codes rather than quantities.

    Example::

        >>> f = pl.DataFrame({"user_id": [1, 2, 3, 4], "zip": ["a", "a", "b", "b"]})
        >>> d = pl.DataFrame({"user_id": [1, 2, 3, 4], "group": ["x", "x", "y", "y"]})
        >>> [w.feature for w in proxy_warnings(f, d)]
        ['zip']
    """
    allowed = [c for c in (features.columns if allowed_columns is None else allowed_columns) if c != USER_ID]
    sensitive = [c for c in denied.columns if c != USER_ID]
    joined = features.select(USER_ID, *allowed).join(denied.select(USER_ID, *sensitive), on=USER_ID,
                                                     how="inner", suffix="__denied")
    if joined.height == 0:
        raise InputError("denied columns", "share no user_id with the feature table",
                         column=USER_ID, fix="pass the profiles the features were computed from")
    if joined.height > config.proxy_sample:
        joined = joined.sample(config.proxy_sample, seed=0)
    denied_names = {c: c if c not in allowed else f"{c}__denied" for c in sensitive}
    warnings = []
    for feature in allowed:
        for column, joined_name in denied_names.items():
            measure, strength, n = association(joined.get_column(feature), joined.get_column(joined_name),
                                               set(categorical))
            if strength >= config.proxy_threshold:
                warnings.append(ProxyWarning(feature, column, measure, strength, config.proxy_threshold, n))
    return sorted(warnings, key=lambda w: -w.strength)


def association(a: pl.Series, b: pl.Series, categorical: Collection[str] = ()) -> tuple[Measure, float, int]:
    """The module's measure for this pair of column types: (measure, strength in [0, 1], rows used)."""
    a_is_categorical, b_is_categorical = _is_categorical(a, categorical), _is_categorical(b, categorical)
    if a_is_categorical and b_is_categorical:
        return "cramers_v", cramers_v_corrected(_codes(a), _codes(b)), len(a)
    if not a_is_categorical and not b_is_categorical:
        x, y = _numeric(a), _numeric(b)
        both = np.isfinite(x) & np.isfinite(y)
        return "spearman", abs(spearman(x[both], y[both])), int(both.sum())
    numeric, groups = (b, a) if a_is_categorical else (a, b)
    values = _numeric(numeric)
    present = np.isfinite(values)
    return "correlation_ratio", correlation_ratio(values[present], _codes(groups)[present]), int(present.sum())


def cramers_v_corrected(x: np.ndarray, y: np.ndarray) -> float:
    """Bias-corrected Cramér's V of two integer-coded categorical arrays (Bergsma, 2013)."""
    _, x = np.unique(x, return_inverse=True)
    _, y = np.unique(y, return_inverse=True)
    n, r, k = len(x), int(x.max(initial=-1)) + 1, int(y.max(initial=-1)) + 1
    if n < 2 or r < 2 or k < 2:
        return 0.0
    observed = np.bincount(x * k + y, minlength=r * k).reshape(r, k).astype(np.float64)
    expected = observed.sum(axis=1, keepdims=True) * observed.sum(axis=0, keepdims=True) / n
    phi2 = float(((observed - expected) ** 2 / expected).sum()) / n
    phi2_corrected = max(0.0, phi2 - (r - 1) * (k - 1) / (n - 1))
    r_corrected = r - (r - 1) ** 2 / (n - 1)
    k_corrected = k - (k - 1) ** 2 / (n - 1)
    denominator = min(r_corrected, k_corrected) - 1
    return float(np.sqrt(phi2_corrected / denominator)) if denominator > 0 else 0.0


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho (:func:`scipy.stats.spearmanr`, average ranks for ties); 0 when either side
    is constant or has fewer than two values, where rho is undefined.

    >>> spearman(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 8.0, 27.0, 64.0]))
    1.0
    """
    if len(x) < 2 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    return float(stats.spearmanr(x, y).statistic)


def correlation_ratio(values: np.ndarray, groups: np.ndarray) -> float:
    """Adjusted correlation ratio of ``values``' ranks by integer ``groups``, in [0, 1].

    The same as ``sqrt((H - k + 1) / (n - k))`` for the tie-corrected Kruskal-Wallis ``H``
    (:func:`scipy.stats.kruskal`) of the ``k`` groups, computed with bincounts rather than one
    array per group so that thousands of categories stay fast.
    """
    _, groups = np.unique(groups, return_inverse=True)
    n, k = len(values), int(groups.max(initial=-1)) + 1
    if n <= k or k < 2:
        return 0.0
    ranks = stats.rankdata(values)
    total = float(((ranks - ranks.mean()) ** 2).sum())
    if total == 0.0:
        return 0.0
    counts = np.bincount(groups, minlength=k)
    means = np.bincount(groups, weights=ranks, minlength=k) / counts
    between = float((counts * (means - ranks.mean()) ** 2).sum())
    adjusted = 1.0 - (1.0 - between / total) * (n - 1) / (n - k)
    return float(np.sqrt(min(1.0, max(0.0, adjusted))))


def read_denied_columns(profiles: str, deny_columns: Collection[str], *, csv_separator: str = ",") -> pl.DataFrame:
    """``user_id`` plus the denied columns of a profiles table (validated like any profile table)."""
    table = load_profiles(profiles, csv_separator=csv_separator)
    present = [c for c in table.frame.collect_schema().names() if c in set(deny_columns)]
    return table.frame.select(USER_ID, *present).collect()


def _is_categorical(column: pl.Series, declared: Collection[str]) -> bool:
    dtype = column.dtype
    return is_textual(dtype) or dtype == pl.Boolean or (is_integer(dtype) and column.name in declared)


def _numeric(column: pl.Series) -> np.ndarray:
    """Float64 values, NaN where missing; dates and datetimes as their physical integers."""
    dtype = column.dtype
    if not (is_integer(dtype) or is_float(dtype)):
        if not dtype.is_temporal():
            raise InputError(column.name, f"has type {dtype}, which is neither numeric nor categorical",
                             fix="cast it or leave it out of the proxy check")
        column = column.to_physical()
    return column.cast(pl.Float64).fill_null(np.nan).to_numpy()


def _codes(column: pl.Series) -> np.ndarray:
    """Integer codes of a categorical column; missing is code 0, a category of its own."""
    return column.cast(pl.String).rank("dense").fill_null(0).to_numpy().astype(np.int64)


# --------------------------------------------------------------------------------------------
# Seed differencing


@dataclass(frozen=True)
class SeedOverlapCheck:
    """How two exports' seed lists differ, and whether that difference is small enough to leak."""

    added: int
    removed: int
    min_difference: int

    @property
    def difference(self) -> int:
        """Users in exactly one of the two seed lists."""
        return self.added + self.removed

    @property
    def flagged(self) -> bool:
        """A non-zero difference below ``min_difference``: comparing the audiences isolates it."""
        return 0 < self.difference < self.min_difference

    def __str__(self) -> str:
        verdict = "too few: the difference of the two audiences would reveal them" if self.flagged else "ok"
        return (f"seed lists differ in {self.difference} users ({self.added} added, {self.removed} "
                f"removed; minimum {self.min_difference}): {verdict}")

    def raise_if_flagged(self) -> None:
        """Refuse the export when the difference is flagged."""
        if self.flagged:
            raise AudienceError(
                f"{self}; change at least {self.min_difference} seeds between exports, or export the "
                "previous seed list again"
            )


def seed_overlap_guard(
    previous_seed_ids: Iterable[int | str] | pl.Series,
    new_seed_ids: Iterable[int | str] | pl.Series,
    min_difference: int,
) -> SeedOverlapCheck:
    """Compare two exports' seed ids (differencing attack guard); duplicates count once.

    Example::

        >>> check = seed_overlap_guard(range(1000), range(1003), min_difference=100)
        >>> check.flagged, check.added, check.removed
        (True, 3, 0)
    """
    if min_difference < 1:
        raise ValueError("min_difference must be at least 1")
    previous, new = _unique_ids(previous_seed_ids), _unique_ids(new_seed_ids)
    added = int((~new.is_in(previous.implode())).sum())
    removed = int((~previous.is_in(new.implode())).sum())
    return SeedOverlapCheck(added=added, removed=removed, min_difference=min_difference)


def _unique_ids(ids: Iterable[int | str] | pl.Series) -> pl.Series:
    """Distinct ids as text, so an integer id and its string form are the same user."""
    values = ids if isinstance(ids, pl.Series) else list(ids)
    return pl.Series("id", values).cast(pl.String).unique()

"""Fairness audit of an audience: how the groups of sensitive columns are represented in it.

For every audit column (``privacy.audit_columns``) and each of its groups (the column's values as
text), three figures: the group's share of the audience, its share of the eligible users the
export chose from, and the gap ``100 * (audience share - eligible share)`` in percentage points.
A user with no value, or missing from the profiles table, is in the group ``"(missing)"``, so the
shares of a column add up to 1 on both sides. A gap beyond ``privacy.max_audit_gap_points`` is a
warning.

The audit columns are read from the profiles table itself, never from the features: a column in
``ingest.deny_columns`` is audited without ever reaching the model. The gap of an audience built
without the column measures how far the remaining features (its proxies) carry it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from lookalike.core.errors import InputError
from lookalike.data.ingest import align_id_dtype, load_profiles
from lookalike.data.schema import USER_ID

MISSING_GROUP = "(missing)"


def read_audit_columns(
    profiles: str, columns: Sequence[str], id_dtype: pl.DataType, *, csv_separator: str = ","
) -> pl.DataFrame:
    """``user_id`` plus the audit ``columns`` of a profiles table, ids cast to ``id_dtype``.

    The table is validated like any profiles table (one row per user); denied columns are kept.
    Use it before anything is written, so a misnamed column stops the export early.

    Raises:
        InputError: a named column absent from the table, or ids of another type.

    Example::

        audit = read_audit_columns("profiles.parquet", ["sex", "race"], pl.Int64)
    """
    frame = load_profiles(profiles, csv_separator=csv_separator).frame
    present = frame.collect_schema().names()
    absent = [c for c in columns if c not in present or c == USER_ID]
    if absent:
        raise InputError(
            profiles, f"has no column named in privacy.audit_columns (columns: {present})",
            column=absent[0], fix="correct privacy.audit_columns, or pass the profiles table "
            "that holds it (--audit-profiles)",
        )
    frame = align_id_dtype(frame.select(USER_ID, *dict.fromkeys(columns)), id_dtype, profiles)
    return frame.collect()


def audit_shares(
    audience_ids: pl.Series, eligible_ids: pl.Series, profiles: pl.DataFrame, columns: Sequence[str]
) -> list[dict[str, Any]]:
    """Share of the audience and of the eligible users in each group of each audit column.

    Args:
        audience_ids: the audience's user ids (a subset of the eligible users in an export).
        eligible_ids: the users the audience was chosen from.
        profiles: ``user_id`` (unique, the ids' type) and the audit ``columns``.
        columns: the audit columns, in the order of the rows returned.

    Returns one JSON-able row per column and group, sorted by column (in ``columns`` order) and
    group: ``column``, ``group`` (text; ``"(missing)"`` for no value), ``audience_users``,
    ``eligible_users``, ``audience_share``, ``eligible_share`` (0 for an empty side) and
    ``gap_points`` (``100 * (audience_share - eligible_share)``).

    Example::

        >>> profiles = pl.DataFrame({"user_id": [1, 2, 3, 4], "sex": ["f", "m", "f", None]})
        >>> rows = audit_shares(pl.Series([1, 3]), pl.Series([1, 2, 3, 4]), profiles, ["sex"])
        >>> [(r["group"], r["audience_share"], r["eligible_share"], r["gap_points"]) for r in rows]
        [('(missing)', 0.0, 0.25, -25.0), ('f', 1.0, 0.5, 50.0), ('m', 0.0, 0.25, -25.0)]
    """
    audience = _group_counts(audience_ids, profiles, columns, "audience")
    eligible = _group_counts(eligible_ids, profiles, columns, "eligible")
    rows = (
        eligible.join(audience, on=["column", "group"], how="full", coalesce=True)
        .fill_null(0)
        .with_columns(
            audience_share=_share(pl.col("audience_users"), len(audience_ids)),
            eligible_share=_share(pl.col("eligible_users"), len(eligible_ids)),
            order=pl.col("column").replace_strict(
                {c: i for i, c in enumerate(columns)}, return_dtype=pl.Int64),
        )
        .with_columns(gap_points=100 * (pl.col("audience_share") - pl.col("eligible_share")))
        .sort("order", "group")
        .select("column", "group", "audience_users", "eligible_users", "audience_share",
                "eligible_share", "gap_points")
    )
    return rows.to_dicts()


def _group_counts(
    ids: pl.Series, profiles: pl.DataFrame, columns: Sequence[str], side: str
) -> pl.DataFrame:
    """Users per (column, group) among ``ids``; users without a profile row count as missing."""
    users = ids.rename(USER_ID).to_frame().join(profiles, on=USER_ID, how="left")
    counts = [
        users.select(pl.col(column).cast(pl.String).fill_null(MISSING_GROUP).alias("group"))
        .group_by("group").len(name=f"{side}_users")
        .with_columns(pl.lit(column).alias("column"))
        for column in dict.fromkeys(columns)
    ]
    schema = {"group": pl.String, f"{side}_users": pl.UInt32, "column": pl.String}
    frame = pl.concat(counts) if counts else pl.DataFrame(schema=schema)
    return frame.with_columns(pl.col(f"{side}_users").cast(pl.Int64))


def _share(users: pl.Expr, total: int) -> pl.Expr:
    return users / total if total else pl.lit(0.0)


def gap_warnings(rows: Sequence[dict[str, Any]], max_gap_points: float) -> list[str]:
    """One warning per audited group whose absolute gap exceeds ``max_gap_points``.

    >>> gap_warnings([{"column": "sex", "group": "f", "audience_share": 0.7,
    ...                "eligible_share": 0.5, "gap_points": 20.0}], 10)
    ["fairness: 'sex' = 'f' is 70.0% of the audience but 50.0% of the eligible users (+20.0 points, more than 10 allowed by privacy.max_audit_gap_points)"]
    """
    return [
        f"fairness: '{r['column']}' = '{r['group']}' is {r['audience_share']:.1%} of the audience "
        f"but {r['eligible_share']:.1%} of the eligible users ({r['gap_points']:+.1f} points, "
        f"more than {max_gap_points:g} allowed by privacy.max_audit_gap_points)"
        for r in rows
        if abs(r["gap_points"]) > max_gap_points
    ]

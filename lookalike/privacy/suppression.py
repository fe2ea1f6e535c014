"""Opted-out users: read the suppression list and drop its users from tables and id lists.

The list is ``privacy.suppression_list`` (Parquet or CSV with a ``user_id`` column). Ids are
compared as text, so an integer id ``42`` and the string ``"42"`` are the same user whatever the
dtype of the table they are matched against.
"""

from __future__ import annotations

import polars as pl

from lookalike.core.config import LookalikeConfig
from lookalike.data.ingest import load_user_list
from lookalike.data.schema import USER_ID


def load_id_list(path: str, kind: str, csv_separator: str = ",") -> pl.Series:
    """Distinct ids of a user list, as text."""
    frame, _ = load_user_list(path, kind=kind, csv_separator=csv_separator)
    return frame.get_column(USER_ID).cast(pl.String).unique().sort()


def suppressed_ids(config: LookalikeConfig) -> pl.Series | None:
    """The configured suppression list's ids as text; None when no list is configured."""
    path = config.privacy.suppression_list
    if path is None:
        return None
    return load_id_list(path, "suppression list", config.ingest.csv_separator)


def is_listed(ids: pl.Expr, listed: pl.Series) -> pl.Expr:
    """True where an id (any dtype) is on ``listed`` (text ids)."""
    return ids.cast(pl.String).is_in(listed.implode())


def drop_listed(frame: pl.LazyFrame, listed: pl.Series | None) -> pl.LazyFrame:
    """``frame`` without the rows whose ``user_id`` is listed (unchanged for None)."""
    if listed is None:
        return frame
    return frame.filter(~is_listed(pl.col(USER_ID), listed))

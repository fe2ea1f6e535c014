"""The input contract: which tables exist, their columns and the types each column accepts.

``data/README.md`` documents the same contract for people; :mod:`lookalike.data.ingest` enforces it.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

USER_ID = "user_id"
DEFAULT_CONVERSION_TYPE = "conversion"
TIMESTAMP = pl.Datetime("us", "UTC")


@dataclass(frozen=True)
class TableContract:
    """Required and optional columns of one kind of input table."""

    kind: str
    required: tuple[str, ...]
    optional: tuple[str, ...] = ()
    keeps_extra_columns: bool = False

    def describe(self) -> str:
        optional = f"; optional: {', '.join(self.optional)}" if self.optional else ""
        return f"required: {', '.join(self.required)}{optional}"


EVENTS = TableContract(
    "events",
    required=(USER_ID, "event_time", "event_type"),
    optional=("item_id", "category", "value"),
)
PROFILES = TableContract("profiles", required=(USER_ID,), keeps_extra_columns=True)
CONVERSIONS = TableContract(
    "conversions", required=(USER_ID,), optional=("conversion_type", "conversion_time")
)
SEEDS = TableContract("seeds", required=(USER_ID,), optional=("weight",))
USER_LIST = TableContract("user list", required=(USER_ID,))

INTEGER_TYPES = (pl.Int8, pl.Int16, pl.Int32, pl.Int64, pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64)
FLOAT_TYPES = (pl.Float32, pl.Float64)


def is_integer(dtype: pl.DataType) -> bool:
    return any(dtype == t for t in INTEGER_TYPES)


def is_float(dtype: pl.DataType) -> bool:
    return any(dtype == t for t in FLOAT_TYPES)


def is_textual(dtype: pl.DataType) -> bool:
    return dtype == pl.String or isinstance(dtype, (pl.Categorical, pl.Enum))

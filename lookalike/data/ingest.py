"""Read and validate input tables (the contract in :mod:`lookalike.data.schema` and ``data/README.md``).

Each ``load_*`` function returns a normalized polars ``LazyFrame`` (or a small ``DataFrame`` for
user lists) after validating the whole table in one streaming pass. Anything that breaks the
contract raises :class:`~lookalike.core.errors.InputError` naming the file, the column, what was
expected and example offending rows; nothing is written before validation passes.

Normalization: ``user_id`` becomes Int64 or String; timestamps become ``Datetime("us", "UTC")``
(naive values are taken as UTC, tz-aware ones converted, ISO strings parsed, integer epochs read in
the unit their magnitude implies); exact duplicate events are dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import fsspec
import polars as pl
import pyarrow.parquet as pq

from lookalike.core.errors import InputError
from lookalike.data.files import resolve_files
from lookalike.data.schema import (
    CONVERSIONS,
    DEFAULT_CONVERSION_TYPE,
    EVENTS,
    PROFILES,
    SEEDS,
    TIMESTAMP,
    USER_ID,
    USER_LIST,
    TableContract,
    is_float,
    is_integer,
    is_textual,
)

PARQUET_MAGIC = b"PAR1"
# Text timestamps: ISO 8601 with "T" or a space, optional fraction, optional offset or "Z".
ISO_FORMATS = (
    "%Y-%m-%dT%H:%M:%S%.f%#z",
    "%Y-%m-%d %H:%M:%S%.f%#z",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M%#z",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d",
)
# Numeric epochs: the unit is read from the magnitude (values below 1e11 are seconds, which covers
# dates up to the year 5138; then milliseconds, microseconds, and nanoseconds above 1e17).
_EPOCH_LIMITS = {"s": 1e11, "ms": 1e14, "us": 1e17}


@dataclass
class TableReport:
    """What ingest saw in one table: counts a user should know about, never silent drops."""

    file: str
    rows: int = 0
    duplicates_dropped: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Table:
    """A validated table: the normalized lazy frame plus its report."""

    frame: pl.LazyFrame
    report: TableReport


# --------------------------------------------------------------------------------------------
# Files


def detect_format(file: str) -> str:
    """'parquet' or 'csv' from the file's bytes (not its name); truncated Parquet is rejected."""
    with fsspec.open(file, "rb") as fh:
        head = fh.read(4)
        if head == PARQUET_MAGIC:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 4))
            if size < 12 or fh.read(4) != PARQUET_MAGIC:
                raise InputError(file, "is a truncated or corrupted Parquet file (no footer)",
                                 fix="re-export the file completely")
            return "parquet"
        sample = head + fh.read(4096)
    if not sample:
        raise InputError(file, "is empty (0 bytes)")
    if b"\x00" in sample:
        raise InputError(file, "is neither Parquet nor CSV (binary content)",
                         fix="provide Parquet or CSV")
    if file.endswith((".parquet", ".pq")):
        raise InputError(file, "is named .parquet but is not a Parquet file (it looks like text/CSV)",
                         fix="rename it to .csv or write real Parquet")
    return "csv"


def scan_table(path: str, *, csv_separator: str = ",") -> tuple[pl.LazyFrame, list[str]]:
    """Lazily scan every file behind ``path`` as one table; returns the frame and the files."""
    files = resolve_files(path)
    formats = {detect_format(f) for f in files}
    if len(formats) > 1:
        raise InputError(path, "mixes Parquet and CSV files", fix="keep one format per table")
    if formats == {"parquet"}:
        for file in files:
            _check_parquet_footer(file)
        frame = _scan_parquet_parts(path, files)
    else:
        frame = pl.concat(
            [pl.scan_csv(f, separator=csv_separator, infer_schema_length=10_000) for f in files],
            how="diagonal_relaxed",
        )
    return frame, files


def _scan_parquet_parts(path: str, files: list[str]) -> pl.LazyFrame:
    """One frame from Parquet parts that may differ in their optional columns, integer or float
    widths and datetime units or zones; parts whose column types differ in kind are rejected."""
    scans = []
    for file in files:
        scan = pl.scan_parquet(file)
        schema = scan.collect_schema()
        datetimes = [timestamp_expr(c, t, file).alias(c) for c, t in schema.items() if isinstance(t, pl.Datetime)]
        scans.append(scan.with_columns(datetimes))
    _check_same_column_kinds(path, files, [scan.collect_schema() for scan in scans])
    return pl.concat(scans, how="diagonal_relaxed")


def _column_kind(dtype: pl.DataType) -> str:
    if is_integer(dtype) or is_float(dtype):
        return "number"
    return "text" if is_textual(dtype) else str(dtype)


def _check_same_column_kinds(path: str, files: list[str], schemas: list[pl.Schema]) -> None:
    first_seen: dict[str, tuple[str, pl.DataType, str]] = {}
    for file, schema in zip(files, schemas, strict=True):
        for column, dtype in schema.items():
            if dtype == pl.Null:  # an all-null column takes any type
                continue
            kind = _column_kind(dtype)
            seen_kind, seen_dtype, seen_file = first_seen.setdefault(column, (kind, dtype, file))
            if kind != seen_kind:
                raise InputError(
                    path, f"has Parquet parts whose types disagree: {seen_dtype} in {seen_file}, "
                    f"{dtype} in {file}", column=column, fix="write every part with the same schema",
                )


def _check_parquet_footer(file: str) -> None:
    try:
        with fsspec.open(file, "rb") as fh:
            pq.read_metadata(fh)
    except Exception as exc:  # pyarrow raises several types for damaged footers
        raise InputError(file, f"is not a readable Parquet file ({exc})",
                         fix="re-export the file") from exc


# --------------------------------------------------------------------------------------------
# Column normalization


def _require_columns(frame: pl.LazyFrame, contract: TableContract, path: str) -> list[str]:
    columns = frame.collect_schema().names()
    missing = [c for c in contract.required if c not in columns]
    if missing:
        raise InputError(
            path,
            f"the {contract.kind} table is missing required column(s) {missing}",
            expected=contract.describe(),
            examples=[f"columns found: {columns}"],
        )
    return columns


def user_id_expr(dtype: pl.DataType, path: str) -> pl.Expr:
    """Normalize user_id to Int64 (integers, integral floats) or String (text)."""
    col = pl.col(USER_ID)
    if is_integer(dtype):
        return col.cast(pl.Int64)
    if is_float(dtype):
        # A non-integral id (2.5) becomes null and is rejected, never truncated into another user's id.
        return pl.when(col == col.floor()).then(col).cast(pl.Int64, strict=False)
    if is_textual(dtype):
        return col.cast(pl.String).str.strip_chars()
    raise InputError(path, f"has type {dtype}", column=USER_ID, expected="integer or string ids")


def timestamp_expr(name: str, dtype: pl.DataType, path: str) -> pl.Expr:
    """Normalize a timestamp column to UTC microseconds; unparseable values become null."""
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        col = col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col
        return col.dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    if dtype == pl.Date:
        return col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    if is_textual(dtype):
        text = col.cast(pl.String).str.strip_chars()
        return pl.coalesce(
            [text.str.to_datetime(f, time_unit="us", time_zone="UTC", strict=False)
             for f in ISO_FORMATS]
        )
    if is_integer(dtype) or is_float(dtype):
        return _epoch_expr(col)
    raise InputError(path, f"has type {dtype}", column=name,
                     expected="a timestamp, a date, an ISO 8601 string or an integer epoch")


def _epoch_expr(col: pl.Expr) -> pl.Expr:
    value = col.cast(pl.Float64)
    magnitude = value.abs()
    micros = pl.when(magnitude < _EPOCH_LIMITS["s"]).then(value * 1e6)
    micros = micros.when(magnitude < _EPOCH_LIMITS["ms"]).then(value * 1e3)
    micros = micros.when(magnitude < _EPOCH_LIMITS["us"]).then(value).otherwise(value / 1e3)
    finite = pl.when(micros.is_finite()).then(micros)
    return finite.cast(pl.Int64).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")


@dataclass(frozen=True)
class Check:
    """One contract rule of a table: rows where ``violated`` is true break it."""

    violated: pl.Expr
    column: str
    problem: str
    expected: str
    show: tuple[str, ...]
    fix: str | None = None


class Validation:
    """Normalizations and contract rules of one table, checked together in one pass.

    Each rule only adds an expression; :meth:`run` counts every rule's violations with a single
    scan (50M-row tables are read once, not once per rule) and fetches example rows only for a
    rule that is broken.
    """

    def __init__(self, frame: pl.LazyFrame, path: str, kind: str) -> None:
        self.frame = frame
        self.path = path
        self.kind = kind
        self.schema = frame.collect_schema()
        self.checks: list[Check] = []
        self.normalized: dict[str, pl.Expr] = {}

    def user_id(self, *, unique: bool = False) -> None:
        ids = user_id_expr(self.schema[USER_ID], self.path)
        self.normalized[USER_ID] = ids
        self.checks.append(Check(
            ids.is_null() | (ids.cast(pl.String) == ""), USER_ID,
            "has null, empty or non-integral ids", "a non-empty id on every row", ("row", USER_ID),
            fix="drop or repair those rows",
        ))
        if unique:
            self.checks.append(Check(
                ids.is_duplicated(), USER_ID,
                f"has duplicate user_id rows (a {self.kind} table needs one row per user)",
                "unique user_id", ("row", USER_ID),
                fix="deduplicate the table, e.g. keep each user's latest row",
            ))

    def timestamp(self, name: str, *, required: bool) -> None:
        parsed = timestamp_expr(name, self.schema[name], self.path)
        self.normalized[name] = parsed
        unparseable = parsed.is_null() & pl.col(name).is_not_null()
        self.checks.append(Check(
            unparseable | pl.col(name).is_null() if required else unparseable, name,
            "has missing or unparseable timestamps",
            "a timestamp, an ISO 8601 string such as 2024-05-01T13:45:00Z, or an epoch",
            ("row", USER_ID, name),
        ))

    def text(self, name: str, *, required: bool = False) -> None:
        self.normalized[name] = pl.col(name).cast(pl.String)
        if required:
            self.checks.append(Check(
                pl.col(name).is_null(), name, f"has null {name.replace('_', ' ')}s",
                f"a non-empty {name} on every row", ("row", USER_ID, name),
            ))

    def number(self, name: str, *, positive: bool = False) -> None:
        """A float column; text is parsed, empty text and NaN/inf mean missing."""
        dtype = self.schema[name]
        if is_integer(dtype) or is_float(dtype):
            parsed = pl.col(name).cast(pl.Float64)
        elif is_textual(dtype):
            text = pl.col(name).cast(pl.String).str.strip_chars()
            present = text.is_not_null() & (text != "")  # a quoted empty CSV field ("") is none too
            parsed = pl.when(present).then(text).cast(pl.Float64, strict=False)
            self.checks.append(Check(
                parsed.is_null() & present, name, "has non-numeric values",
                "numbers (or empty for none)", ("row", USER_ID, name),
            ))
        else:
            raise InputError(self.path, f"has type {dtype}", column=name, expected="a float")
        finite = pl.when(parsed.is_finite()).then(parsed)
        self.normalized[name] = finite
        if positive:
            self.checks.append(Check(
                ~(finite > 0).fill_null(False), name, "has missing, non-positive or non-finite values",
                f"{name} > 0 on every row", ("row", USER_ID, name),
            ))

    def unchecked(self) -> pl.LazyFrame:
        """The normalized frame :meth:`run` returns, without its scan (a table already checked)."""
        return self.frame.with_columns([e.alias(n) for n, e in self.normalized.items()])

    def run(self) -> tuple[pl.LazyFrame, int]:
        """Count rows and every rule's violations in one scan; the first broken rule raises."""
        counts = self.frame.select(
            [pl.len().alias("rows")] + [c.violated.sum().alias(f"check_{i}") for i, c in enumerate(self.checks)]
        ).collect(engine="streaming").row(0)
        rows, violations = counts[0], counts[1:]
        if rows == 0:
            raise InputError(self.path, f"the {self.kind} table has no rows")
        for check, count in zip(self.checks, violations, strict=True):
            if count:
                examples = (self.frame.with_row_index("row").filter(check.violated)
                            .select(list(check.show)).head(5).collect().to_dicts())
                raise InputError(self.path, f"{check.problem} ({count} rows)", column=check.column,
                                 expected=check.expected, examples=examples, fix=check.fix)
        return self.frame.with_columns([e.alias(n) for n, e in self.normalized.items()]), rows


# --------------------------------------------------------------------------------------------
# Tables


def load_events(path: str, *, csv_separator: str = ",", validate: bool = True) -> Table:
    """Validate and normalize an events table (duplicates are dropped by feature computation).

    ``validate=False`` skips the scan that checks every row and counts them (``report.rows`` stays
    0): for a process that works on a table another step has already loaded and checked.
    """
    raw, _ = scan_table(path, csv_separator=csv_separator)
    columns = _require_columns(raw, EVENTS, path)
    report = TableReport(file=path)
    report.ignored_columns = [c for c in columns if c not in EVENTS.required + EVENTS.optional]
    if report.ignored_columns:
        report.notes.append(f"ignored extra event columns {report.ignored_columns}")
    validation = Validation(raw.select([c for c in columns if c not in report.ignored_columns]),
                            path, "events")
    validation.user_id()
    validation.timestamp("event_time", required=True)
    validation.text("event_type", required=True)
    if "category" in columns:
        validation.text("category")
    if "value" in columns:
        validation.number("value")
    if not validate:
        return Table(validation.unchecked(), report)
    frame, report.rows = validation.run()
    return Table(frame, report)


def load_profiles(path: str, *, deny_columns: list[str] = (), csv_separator: str = ",",
                  validate: bool = True) -> Table:
    """Validate a profiles table: one row per user; denied (sensitive) columns are dropped.
    ``validate``: as for :func:`load_events`."""
    raw, _ = scan_table(path, csv_separator=csv_separator)
    columns = _require_columns(raw, PROFILES, path)
    report = TableReport(file=path)
    denied = [c for c in columns if c in set(deny_columns)]
    if denied:
        report.notes.append(f"dropped denied (sensitive) columns {denied}")
        report.ignored_columns = denied
    validation = Validation(raw.select([c for c in columns if c not in denied]), path, "profiles")
    validation.user_id(unique=True)
    if not validate:
        return Table(validation.unchecked(), report)
    frame, report.rows = validation.run()
    return Table(frame, report)


def load_conversions(path: str, *, csv_separator: str = ",") -> Table:
    """Validate conversions: user_id, optional conversion_type (default one type) and time."""
    raw, _ = scan_table(path, csv_separator=csv_separator)
    columns = _require_columns(raw, CONVERSIONS, path)
    report = TableReport(file=path)
    report.ignored_columns = [c for c in columns if c not in CONVERSIONS.required + CONVERSIONS.optional]
    validation = Validation(raw.select([c for c in columns if c not in report.ignored_columns]),
                            path, "conversions")
    validation.user_id()
    if "conversion_time" in columns:
        validation.timestamp("conversion_time", required=False)
    frame, report.rows = validation.run()
    if "conversion_type" in columns:
        frame = frame.with_columns(
            pl.col("conversion_type").cast(pl.String).fill_null(DEFAULT_CONVERSION_TYPE)
        )
    else:
        frame = frame.with_columns(pl.lit(DEFAULT_CONVERSION_TYPE).alias("conversion_type"))
    if "conversion_time" not in columns:
        frame = frame.with_columns(pl.lit(None, dtype=TIMESTAMP).alias("conversion_time"))
    return Table(frame.select(USER_ID, "conversion_type", "conversion_time"), report)


def load_user_list(path: str, *, kind: str = "user list", with_weight: bool = False,
                   csv_separator: str = ",") -> tuple[pl.DataFrame, TableReport]:
    """Read a seed, exclusion or eligible list: ``user_id`` (and ``weight`` for seeds).

    Duplicate ids are collapsed to one row (weights summed) and counted in the report.
    """
    raw, _ = scan_table(path, csv_separator=csv_separator)
    contract = SEEDS if with_weight else USER_LIST
    columns = _require_columns(raw, contract, path)
    report = TableReport(file=path)
    keep = [USER_ID] + (["weight"] if with_weight and "weight" in columns else [])
    validation = Validation(raw.select(keep), path, kind)
    validation.user_id()
    if "weight" in keep:
        validation.number("weight", positive=True)
    frame, report.rows = validation.run()
    if "weight" in keep:
        collapsed = frame.group_by(USER_ID).agg(pl.col("weight").sum())
    else:
        collapsed = frame.unique(subset=[USER_ID])
    result = collapsed.sort(USER_ID).collect()
    report.duplicates_dropped = report.rows - result.height
    if report.duplicates_dropped:
        report.notes.append(f"{report.duplicates_dropped} duplicate ids in the {kind} were merged")
    return result, report


def align_id_dtype(frame: pl.DataFrame | pl.LazyFrame, population_dtype: pl.DataType, path: str):
    """Cast another table's user_id to the population's id type, or explain the mismatch."""
    dtype = frame.collect_schema()[USER_ID]
    if dtype == population_dtype:
        return frame
    cast = pl.col(USER_ID).cast(population_dtype, strict=False)
    if population_dtype == pl.Int64:
        not_integers = cast.is_null() & pl.col(USER_ID).is_not_null()
        lazy = frame.lazy()
        examples = lazy.filter(not_integers).select(USER_ID).head(5).collect().to_series().to_list()
        if examples:
            raise InputError(path, "has ids that are not integers, but the population's ids are",
                             column=USER_ID, examples=examples,
                             fix="use the same id type as the events/profiles tables")
    return frame.with_columns(cast.alias(USER_ID))

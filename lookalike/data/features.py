"""Per-user, point-in-time features from events and profiles.

Only events strictly before ``as_of`` count, so a feature never sees the future. The output is one
Parquet table keyed by ``user_id`` (raw, readable values) plus a :class:`~lookalike.data.spec.FeatureSpec`
with the scaling fitted once on this table; every later step encodes through that spec.

Event features (per user): event counts per type and window, recency and tenure in days, active
days, value sum/mean/max, distinct items and categories, and category affinity (the share of events
in each of the top-N categories, the rest hashed into a few buckets). Profile features: numeric
columns stay numeric, text/boolean columns and declared integer codes become categorical, dates
become "days before as_of".
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from lookalike.core.artifacts import TEMP_MARKER, atomic_write, scratch_files
from lookalike.core.config import FeatureConfig, LookalikeConfig
from lookalike.core.errors import InputError
from lookalike.data.ingest import Table
from lookalike.data.partitions import shard_count, shard_of
from lookalike.data.schema import USER_ID, is_float, is_integer, is_textual
from lookalike.data.spec import (
    CategoricalFeature,
    FeatureSpec,
    NumericFeature,
    fit_quantiles,
)

PARQUET_ROW_GROUP = 1_000_000
OTHER_EVENT_TYPE = "other"
# Event features with no meaningful value for a user without events (the rest are counts, so 0).
UNDEFINED_WITHOUT_EVENTS = frozenset({"recency_days", "tenure_days", "value_mean", "value_max"})
# A text column with more distinct values than this share of rows is an identifier, not a category.
MAX_UNIQUE_SHARE_FOR_CATEGORICAL = 0.5


@dataclass
class FeatureResult:
    """Where the feature table and spec were written, and what a user should know about them."""

    features_path: Path
    spec_path: Path
    n_users: int
    n_numeric: int
    n_categorical: int
    as_of: datetime | None
    notes: list[str] = field(default_factory=list)


def parse_as_of(value: str | datetime | None) -> datetime | None:
    """An as-of time as an aware UTC datetime; naive values are taken as UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise InputError("--as-of", f"'{value}' is not an ISO 8601 time",
                             expected="e.g. 2024-06-01 or 2024-06-01T00:00:00Z") from exc
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def default_as_of(events: pl.LazyFrame) -> datetime:
    """The latest event time (events at exactly this instant are then excluded)."""
    latest = events.select(pl.col("event_time").max()).collect().item()
    return parse_as_of(latest)


def resolve_as_of(events: Table | None, as_of: str | datetime | None) -> datetime | None:
    """``as_of`` as an aware UTC datetime; with events and no ``as_of``, :func:`default_as_of`."""
    as_of = parse_as_of(as_of)
    if events is not None and as_of is None:
        return default_as_of(events.frame)
    return as_of


def population_ids(events: Table | None, profiles: Table | None,
                   as_of: datetime | None) -> pl.LazyFrame:
    """The ``user_id`` of every row the feature table will have, without computing it: profile
    users when there are profiles, else users with an event strictly before ``as_of``."""
    if profiles is not None:
        return profiles.frame.select(USER_ID)
    if events is None:
        raise InputError("inputs", "need at least one of an events table or a profiles table")
    return events.frame.filter(pl.col("event_time") < as_of).select(USER_ID).unique()


def slug(text: str) -> str:
    """A column-name-safe lowercase version of an event type or category."""
    return re.sub(r"[^0-9a-z]+", "_", str(text).lower()).strip("_") or "x"


def _unique_names(values: list[str], prefix: str, taken: set[str]) -> dict[str, str]:
    names = {}
    for value in values:
        base = f"{prefix}{slug(value)}"
        name, k = base, 2
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        names[value] = name
    return names


# --------------------------------------------------------------------------------------------
# Events


# Column of value counts (a name no input column is expected to have).
_COUNT = "__count"


def _top_values(frame: pl.LazyFrame, column: str, limit: int) -> list[str]:
    """The ``limit`` most frequent non-null values of ``column``, ties in value order."""
    counts = (
        frame.group_by(column).len(name=_COUNT).filter(pl.col(column).is_not_null())
        .sort([_COUNT, column], descending=[True, False]).head(limit).collect(engine="streaming")
    )
    return counts.get_column(column).to_list()


MICROS_PER_DAY = 86_400_000_000
# Helper columns computed once per event, so the many per-user sums compare integers, not strings.
_AGE = "__age_us"
_TYPE = "__type_code"
_CATEGORY = "__category_code"
# Seed of the user-id hash that splits users into partitions (any fixed value; ids may be text).
_PARTITION_SEED = 1
# Row number of the feature table while drawing the scaling sample.
_ROW = "__row"
# Population partition of a row while the merge groups the table by it.
_GROUP = "__population_partition"


@dataclass(frozen=True)
class _TopValues:
    """Event types and categories with their own columns (value -> column name). Decided once over
    all past events, so every user partition gets the same columns."""

    types: dict[str, str]
    categories: dict[str, str] | None  # None without a category column


def _decide_top_values(past: pl.LazyFrame, config: FeatureConfig) -> _TopValues:
    taken: set[str] = set()
    types = _unique_names(_top_values(past, "event_type", config.max_event_types), "n_", taken)
    categories = None
    if "category" in past.collect_schema().names():
        top = _top_values(past, "category", config.top_categories)
        categories = _unique_names(top, "cat_share_", taken)
    return _TopValues(types, categories)


def event_partitions(events: pl.LazyFrame, as_of: datetime, config: FeatureConfig,
                     layout: FeatureLayout | None = None) -> tuple[list[pl.LazyFrame], int]:
    """The event features of users with events before ``as_of``, one lazy frame per user partition,
    and the number of such events.

    Exact duplicate events are dropped. Users are split by a hash of their id
    (:func:`user_partition`) into partitions of about ``config.partition_events`` past events, each
    computed on its own, so memory is bounded by a partition rather than by the whole table; a
    duplicate is always within one user, so dropping duplicates per partition is exact.
    ``layout``: the partition count, past-event count and top values decided before
    (:func:`plan_features`), so no scan is needed.
    """
    past = events.filter(pl.col("event_time") < as_of)
    if layout is None:
        n_past = past.select(pl.len()).collect(engine="streaming").item()
        top = _decide_top_values(past, config)
        n_parts = max(1, math.ceil(n_past / config.partition_events))
    else:
        n_past, n_parts = layout.n_past, layout.n_parts
        top = _TopValues(dict(layout.types), None if layout.categories is None
                         else dict(layout.categories))
    parts = [event_feature_frame(user_partition(past, i, n_parts), as_of, config, top) for i in range(n_parts)]
    return parts, n_past


def user_partition(frame: pl.LazyFrame, index: int, n_parts: int) -> pl.LazyFrame:
    """The rows of the users in partition ``index`` of ``n_parts`` (by a hash of ``user_id``)."""
    if n_parts == 1:
        return frame
    return frame.filter(pl.col(USER_ID).hash(seed=_PARTITION_SEED) % n_parts == index)


def event_feature_frame(past: pl.LazyFrame, as_of: datetime, config: FeatureConfig,
                        top: _TopValues) -> pl.LazyFrame:
    """One row per user of ``past`` (events before ``as_of``; exact duplicates dropped): the features above."""
    columns = set(past.collect_schema().names())
    types = list(top.types)
    coded = past.unique().with_columns(
        (pl.lit(as_of) - pl.col("event_time")).dt.total_microseconds().alias(_AGE),
        _codes(pl.col("event_type"), types, default=len(types)).alias(_TYPE),
    )
    windows = {w: pl.col(_AGE) <= w * MICROS_PER_DAY for w in config.windows_days}

    exprs = [pl.len().alias("n_events_total")]
    exprs += [recent.sum().alias(f"n_events_{w}d") for w, recent in windows.items()]
    for code, name in enumerate([*top.types.values(), "n_" + OTHER_EVENT_TYPE]):
        is_type = pl.col(_TYPE) == code
        exprs += [(is_type & recent).sum().alias(f"{name}_{w}d") for w, recent in windows.items()]
    exprs += [
        (pl.col(_AGE).min() / MICROS_PER_DAY).alias("recency_days"),
        (pl.col(_AGE).max() / MICROS_PER_DAY).alias("tenure_days"),
        pl.col("event_time").dt.date().n_unique().alias("active_days"),
    ]
    if "value" in columns:
        # A float sum depends on the order rows reach their group, which varies between runs; a
        # rebuild must give the same bytes. Polars drops a sort before a plain sum as order-free,
        # so the sorted values are summed as a list.
        ordered = pl.col("value").drop_nulls().sort().implode().list
        exprs += [ordered.sum().alias("value_sum"), ordered.mean().alias("value_mean"),
                  pl.col("value").max().alias("value_max")]
    if "item_id" in columns:
        exprs.append(pl.col("item_id").drop_nulls().n_unique().alias("n_items"))
    if top.categories is not None:
        coded, category_exprs = _category_affinity(coded, top.categories, config)
        exprs += category_exprs
    return coded.group_by(USER_ID).agg(exprs)


def _codes(column: pl.Expr, values: list[str], *, default: int) -> pl.Expr:
    """Integer code of each value's position in ``values``; ``default`` for anything else."""
    return column.replace_strict(values, list(range(len(values))), default=default,
                                 return_dtype=pl.Int32)


def _category_affinity(coded: pl.LazyFrame, names: dict[str, str],
                       config: FeatureConfig) -> tuple[pl.LazyFrame, list[pl.Expr]]:
    """Share of a user's categorized events in each top category and in hashed buckets of the rest."""
    top = list(names)
    buckets = config.category_hash_buckets
    hashed = len(top) + (pl.col("category").hash(seed=0) % max(buckets, 1)).cast(pl.Int32)
    code = pl.when(pl.col("category").is_null()).then(-1).otherwise(
        _codes(pl.col("category"), top, default=-2)
    )
    coded = coded.with_columns(pl.when(code == -2).then(hashed).otherwise(code).alias(_CATEGORY))
    total = (pl.col(_CATEGORY) >= 0).sum().clip(lower_bound=1)
    exprs = [pl.col("category").drop_nulls().n_unique().alias("n_categories")]
    exprs += [((pl.col(_CATEGORY) == k).sum() / total).alias(n) for k, n in enumerate(names.values())]
    exprs += [((pl.col(_CATEGORY) == len(top) + b).sum() / total).alias(f"cat_share_hashed_{b}")
              for b in range(buckets)]
    return coded, exprs


def _count_duplicates(events: Table, n_kept: int, n_past: int) -> list[str]:
    """Exact duplicate events before as_of were dropped; record how many in the events report."""
    duplicates = n_past - n_kept
    events.report.duplicates_dropped = duplicates
    return [f"dropped {duplicates} exact duplicate events"] if duplicates else []


# --------------------------------------------------------------------------------------------
# Profiles


@dataclass
class _ProfileColumns:
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def profile_feature_frame(
    profiles: pl.LazyFrame, as_of: datetime | None, config: LookalikeConfig, taken: set[str],
) -> tuple[pl.LazyFrame, _ProfileColumns]:
    """Profile columns as features: numeric stays numeric, codes and text become categorical."""
    schema = profiles.collect_schema()
    declared = set(config.ingest.categorical_int_columns)
    kinds = _ProfileColumns()
    missing_declared = sorted(declared - set(schema.names()))
    if missing_declared:
        kinds.notes.append(f"categorical_int_columns not in profiles: {missing_declared}")
    exprs = [pl.col(USER_ID)]
    reference = as_of or datetime(1970, 1, 1, tzinfo=UTC)
    for column, dtype in schema.items():
        if column == USER_ID:
            continue
        name = column if column not in taken else f"profile_{column}"
        taken.add(name)
        if (is_integer(dtype) and column in declared) or is_textual(dtype) or dtype == pl.Boolean:
            exprs.append(pl.col(column).cast(pl.String).alias(name))
            kinds.categorical.append(name)
        elif is_integer(dtype) or is_float(dtype):
            value = pl.col(column).cast(pl.Float64)
            exprs.append(pl.when(value.is_finite()).then(value).alias(name))
            kinds.numeric.append(name)
        elif dtype == pl.Date or isinstance(dtype, pl.Datetime):
            when = pl.col(column).cast(pl.Datetime("us"))
            when = when.dt.replace_time_zone("UTC") if getattr(dtype, "time_zone", None) is None \
                else pl.col(column).dt.convert_time_zone("UTC").dt.cast_time_unit("us")
            exprs.append(((pl.lit(reference) - when).dt.total_seconds() / 86_400).alias(f"{name}_days_ago"))
            kinds.numeric.append(f"{name}_days_ago")
        else:
            kinds.notes.append(f"profile column '{column}' of type {dtype} ignored (not numeric, text or date)")
    return profiles.select(exprs), kinds


# --------------------------------------------------------------------------------------------
# The feature table


@dataclass(frozen=True)
class FeatureLayout:
    """What every partition of the feature table must agree on, decided once by
    :func:`plan_features` with scans of the whole events table, and JSON-able
    (:meth:`to_dict`), so each partition can be written in its own process from the input paths,
    the layout and its index (:func:`write_feature_partition`)."""

    as_of: str | None  # ISO time, or None without events and as_of
    n_parts: int
    n_past: int  # events before as_of (exact duplicates included)
    types: dict[str, str]  # event type -> column name prefix
    categories: dict[str, str] | None  # category -> column name (None: no category column)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able; the value -> name maps as lists of pairs, since their order is the columns'
        order (a key-sorted JSON writer would change it)."""
        values = asdict(self)
        values["types"] = list(self.types.items())
        values["categories"] = None if self.categories is None else list(self.categories.items())
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FeatureLayout:
        categories = values["categories"]
        return cls(**{**values, "types": dict(values["types"]),
                      "categories": None if categories is None else dict(categories)})


def plan_features(events: Table | None, profiles: Table | None, *,
                  as_of: str | datetime | None = None,
                  config: LookalikeConfig) -> FeatureLayout:
    """The partition count and the event types and categories with their own columns (see
    :func:`event_partitions`); without events, one partition."""
    if events is None and profiles is None:
        raise InputError("inputs", "need at least one of an events table or a profiles table")
    as_of = resolve_as_of(events, as_of)
    iso = as_of.isoformat() if as_of else None
    if events is None:
        return FeatureLayout(iso, 1, 0, {}, None)
    past = events.frame.filter(pl.col("event_time") < as_of)
    n_past = past.select(pl.len()).collect(engine="streaming").item()
    top = _decide_top_values(past, config.features)
    n_parts = max(1, math.ceil(n_past / config.features.partition_events))
    return FeatureLayout(iso, n_parts, n_past, top.types, top.categories)


def feature_partition_paths(features_path: str | Path, n_parts: int) -> list[Path]:
    """Where :func:`write_feature_partition` writes each partition: scratch files beside the
    feature table, named so that a sweep of stale temporary files removes them."""
    features_path = Path(features_path)
    return [features_path.with_name(f".{features_path.name}{TEMP_MARKER}part-{i}")
            for i in range(n_parts)]


def write_feature_partition(events: Table | None, profiles: Table | None, layout: FeatureLayout,
                            index: int, path: str | Path, *,
                            config: LookalikeConfig) -> dict[str, int]:
    """Write user partition ``index`` of the feature table to ``path``, sorted by ``user_id``;
    return its counts for :func:`merge_feature_partitions` (past events kept, users with events
    but no profile). Partitions are independent: each may be written in another process."""
    plan = _plan_table(events, profiles, parse_as_of(layout.as_of), config, layout)
    return asdict(_write_partition(plan, index, Path(path)))


def merge_feature_partitions(events: Table | None, profiles: Table | None, layout: FeatureLayout,
                             paths: list[Path], counts: list[dict[str, int]],
                             features_path: str | Path, spec_path: str | Path, *,
                             config: LookalikeConfig) -> FeatureResult:
    """Merge the partition files (each sorted by ``user_id``) into the feature table, fit its spec
    on the written table, and record the dropped duplicates in ``events.report``; the partition
    files are left for the caller to delete. The table's rows are ordered by population partition
    (the index shards of ``config.index``, :func:`lookalike.data.partitions.shard_count`), then
    by ``user_id``."""
    as_of = parse_as_of(layout.as_of)
    plan = _plan_table(events, profiles, as_of, config, layout)
    partition_counts = [_PartitionCounts(**c) for c in counts]
    notes = _partition_notes(plan, partition_counts, events)
    features_path, spec_path = Path(features_path), Path(spec_path)
    n_users = pl.scan_parquet(paths).select(pl.len()).collect().item()
    if n_users == 0:
        raise InputError("inputs", f"no users have events before as_of {as_of}",
                         fix="choose a later --as-of")
    categorical = _drop_identifier_like(pl.scan_parquet(paths), n_users, plan.categorical, notes)
    with atomic_write(features_path) as tmp:
        _merge_partitions(paths, [USER_ID, *plan.numeric, *categorical], tmp,
                          shard_count(n_users, config.index))
        spec = _fit_spec(pl.scan_parquet(tmp), n_users, plan, categorical, as_of, config.features)
    spec.save(spec_path)
    return FeatureResult(features_path, spec_path, n_users, len(plan.numeric), len(categorical), as_of, notes)


def compute_features(
    events: Table | None,
    profiles: Table | None,
    features_path: str | Path,
    spec_path: str | Path,
    *,
    as_of: str | datetime | None = None,
    config: LookalikeConfig = LookalikeConfig(),
) -> FeatureResult:
    """Write the feature table and its spec; return where they are and what was noticed.

    The table never is in memory whole: each user partition (see :func:`event_partitions`; profiles
    are split by the same hash) is joined, sorted by ``user_id`` and written to a scratch file beside
    the output, the output is a streaming merge of those sorted files, and the spec is fitted from
    the written output with lazy scans of the columns each fit needs. The quantiles are fitted on
    the rows ``DataFrame.sample(features.scaling_sample, seed=0)`` would draw from the table (all
    rows if there are no more), so a re-run gives the same bytes.

    The same in steps that may run in separate processes: :func:`plan_features`, then
    :func:`write_feature_partition` for every partition, then :func:`merge_feature_partitions`.
    """
    layout = plan_features(events, profiles, as_of=as_of, config=config)
    with scratch_files(features_path, layout.n_parts) as parts:
        counts = [write_feature_partition(events, profiles, layout, i, path, config=config)
                  for i, path in enumerate(parts)]
        return merge_feature_partitions(events, profiles, layout, parts, counts, features_path,
                                        spec_path, config=config)


@dataclass
class _TablePlan:
    """The lazy inputs of the feature table, split into user partitions, and its columns by kind."""

    event_parts: list[pl.LazyFrame] = field(default_factory=list)  # empty without events
    profiles: pl.LazyFrame | None = None
    n_past: int = 0
    event_columns: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    profile_numeric: set[str] = field(default_factory=set)
    profile_notes: list[str] = field(default_factory=list)

    @property
    def n_parts(self) -> int:
        return max(1, len(self.event_parts))

    def partition(self, index: int) -> tuple[pl.LazyFrame | None, pl.LazyFrame | None]:
        """Event features and profile features of the users in one partition (None where absent)."""
        events = self.event_parts[index] if self.event_parts else None
        profiles = None if self.profiles is None else user_partition(self.profiles, index, self.n_parts)
        return events, profiles


def _plan_table(events: Table | None, profiles: Table | None, as_of: datetime | None,
                config: LookalikeConfig, layout: FeatureLayout) -> _TablePlan:
    plan = _TablePlan()
    taken: set[str] = {USER_ID}
    if events is not None:
        plan.event_parts, plan.n_past = event_partitions(events.frame, as_of, config.features,
                                                         layout)
        plan.event_columns = [c for c in plan.event_parts[0].collect_schema().names() if c != USER_ID]
        plan.numeric += plan.event_columns
        taken.update(plan.event_columns)
    if profiles is not None:
        plan.profiles, kinds = profile_feature_frame(profiles.frame, as_of, config, taken)
        plan.numeric += kinds.numeric
        plan.profile_numeric.update(kinds.numeric)
        plan.categorical += kinds.categorical
        plan.profile_notes = kinds.notes
    return plan


@dataclass(frozen=True)
class _PartitionCounts:
    events_kept: int  # past events of the partition's users, exact duplicates dropped
    users_without_profile: int  # users with past events but no profile (left out of the table)


def _partition_notes(plan: _TablePlan, counts: list[_PartitionCounts],
                     events: Table | None) -> list[str]:
    """The notes on what the written partitions left out."""
    notes = [] if events is None else _count_duplicates(events, sum(c.events_kept for c in counts), plan.n_past)
    return notes + plan.profile_notes + _outside_profiles(sum(c.users_without_profile for c in counts))


def _write_partition(plan: _TablePlan, index: int, path: Path) -> _PartitionCounts:
    """Write one user partition of the table to ``path``, sorted by ``user_id``; count what it left out."""
    event_part, profile_part = plan.partition(index)
    events = None if event_part is None else event_part.collect(engine="streaming")
    profiles = None if profile_part is None else profile_part.collect(engine="streaming")
    table = _fill_event_counts(_join_population(events, profiles), plan.event_columns)
    table.sort(USER_ID).write_parquet(path, compression="lz4")  # read back once: fast beats small
    if events is None:
        return _PartitionCounts(events_kept=0, users_without_profile=0)
    outside = 0 if profiles is None else events.join(profiles, on=USER_ID, how="anti").height
    return _PartitionCounts(int(events.get_column("n_events_total").sum()), outside)


def _join_population(events: pl.DataFrame | None, profiles: pl.DataFrame | None) -> pl.DataFrame:
    """The population (see :func:`population_ids`): profile users if there are profiles, else
    users with events before as_of."""
    if events is None or profiles is None:
        return profiles if events is None else events
    return profiles.join(events, on=USER_ID, how="left")


def _outside_profiles(n_users: int) -> list[str]:
    return [f"events of {n_users} users not in profiles were ignored"] if n_users else []


def _fill_event_counts(table: pl.DataFrame, event_columns: list[str]) -> pl.DataFrame:
    """Users without events have zero counts; recency, tenure and value stats stay missing."""
    counts = [c for c in event_columns if c not in UNDEFINED_WITHOUT_EVENTS]
    return table.with_columns([pl.col(c).fill_null(0) for c in counts])


def _merge_partitions(paths: list[Path], columns: list[str], target: Path, n_groups: int) -> None:
    """Write ``columns`` of the partition files, each sorted by ``user_id``, as one table ordered by
    population partition (:func:`lookalike.data.partitions.shard_of` of ``n_groups``), then by
    ``user_id``: with one group, a table sorted by ``user_id``.

    Each population partition is then a run of whole row groups, so a task embedding one reads
    only its part (reading the table once per partition cost 30 s each at 10M users, 2026-12-07).
    Memory stays at about one partition: polars' ``merge_sorted`` held the whole table (10M users:
    9.5 GiB).
    """
    if n_groups == 1:
        parts = pl.scan_parquet(paths).select(columns)
        _write_chunks((parts.filter(in_range).collect(engine="streaming").sort(USER_ID)
                       for in_range in _id_ranges(paths[0], len(paths))), target)
        return
    with scratch_files(target, n_groups) as groups:
        _split_by_group(paths, columns, groups)
        _write_chunks((pl.read_parquet(group).sort(USER_ID) for group in groups if group.exists()),
                      target)


def _split_by_group(paths: list[Path], columns: list[str], groups: list[Path]) -> None:
    """Append each partition file's rows to the scratch file of their population partition."""
    writers: dict[int, pq.ParquetWriter] = {}
    try:
        for path in paths:
            part = pl.read_parquet(path, columns=columns)
            part = part.with_columns(pl.Series(_GROUP, shard_of(part.get_column(USER_ID), len(groups))))
            for (group,), rows in part.partition_by(_GROUP, as_dict=True, include_key=False).items():
                table = rows.to_arrow()
                if group not in writers:
                    writers[group] = pq.ParquetWriter(groups[group], table.schema, compression="lz4")
                writers[group].write_table(table)
    finally:
        for writer in writers.values():
            writer.close()


def _write_chunks(chunks: Iterable[pl.DataFrame], target: Path) -> None:
    """Write the chunks, in order, as one Parquet file; each chunk starts its own row groups."""
    writer: pq.ParquetWriter | None = None
    try:
        for chunk in chunks:
            table = chunk.to_arrow()
            writer = writer or pq.ParquetWriter(target, table.schema, compression="zstd")
            writer.write_table(table, row_group_size=PARQUET_ROW_GROUP)
    finally:
        if writer is not None:
            writer.close()


def _id_ranges(sorted_part: Path, n_ranges: int) -> list[pl.Expr]:
    """Filters splitting ``user_id`` into ``n_ranges`` consecutive ranges, cut at evenly spaced ids
    of one (sorted, hash-drawn, so representative) partition."""
    ids = pl.read_parquet(sorted_part, columns=[USER_ID]).get_column(USER_ID)
    step = max(1, math.ceil(len(ids) / n_ranges))
    cuts = ids.gather(list(range(step, len(ids), step))).to_list()
    user = pl.col(USER_ID)
    bounds = [None, *cuts, None]
    return [
        (user >= low if low is not None else pl.lit(True)) & (user < high if high is not None else pl.lit(True))
        for low, high in itertools.pairwise(bounds)
    ]


def _drop_identifier_like(table: pl.LazyFrame, n_users: int, categorical: list[str],
                          notes: list[str]) -> list[str]:
    if n_users < 100 or not categorical:
        return categorical
    distinct = table.select(pl.col(categorical).n_unique()).collect(engine="streaming").row(0)
    kept = []
    for column, n_distinct in zip(categorical, distinct, strict=True):
        unique_share = n_distinct / n_users
        if unique_share > MAX_UNIQUE_SHARE_FOR_CATEGORICAL:
            notes.append(f"profile column '{column}' looks like an identifier "
                         f"({unique_share:.0%} distinct values) and was not used")
        else:
            kept.append(column)
    return kept


def _fit_spec(table: pl.LazyFrame, n_users: int, plan: _TablePlan, categorical: list[str],
              as_of: datetime | None, config: FeatureConfig) -> FeatureSpec:
    """The spec of the written ``table``: scaling quantiles, missing flags and vocabularies."""
    sample = _scaling_sample(table.select(plan.numeric), n_users, config.scaling_sample)
    null_counts = table.select(pl.col(plan.numeric).null_count()).collect(engine="streaming")
    numeric_features = [
        NumericFeature(
            name=c,
            quantiles=fit_quantiles(sample.get_column(c).cast(pl.Float64).to_numpy(), config.n_quantiles),
            has_missing=null_counts.get_column(c).item() > 0,
            source="profiles" if c in plan.profile_numeric else "events",
        )
        for c in plan.numeric
    ]
    categorical_features = [
        CategoricalFeature(name=c, vocabulary=_top_values(table, c, config.max_categorical_cardinality))
        for c in categorical
    ]
    return FeatureSpec(
        id_dtype=str(table.collect_schema()[USER_ID]).lower(),
        as_of=as_of.isoformat() if as_of else None,
        n_users=n_users,
        numeric=numeric_features,
        categorical=categorical_features,
    )


def _scaling_sample(table: pl.LazyFrame, n_users: int, size: int) -> pl.DataFrame:
    """The rows ``DataFrame.sample(size, seed=0)`` draws from ``table``, in its order (which decides
    whether a quantile on tied 0.0 and -0.0 is written signed), or all rows if there are at most ``size``."""
    if n_users <= size:
        return table.collect(engine="streaming")
    order = pl.int_range(n_users, dtype=pl.get_index_type(), eager=True).sample(size, seed=0).to_frame(_ROW)
    drawn = table.with_row_index(_ROW).filter(pl.col(_ROW).is_in(order.get_column(_ROW).implode()))
    return order.join(drawn.collect(engine="streaming"), on=_ROW, how="left", maintain_order="left").drop(_ROW)

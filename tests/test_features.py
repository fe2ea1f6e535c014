"""Feature values against a hand-computed example, point-in-time correctness and format parity."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.preprocessing import QuantileTransformer

import lookalike.data.features
from lookalike.core.config import LookalikeConfig, load_config
from lookalike.core.errors import InputError
from lookalike.data.features import (
    UNDEFINED_WITHOUT_EVENTS,
    compute_features,
    event_partitions,
    parse_as_of,
    profile_feature_frame,
)
from lookalike.data.ingest import Table, load_events, load_profiles
from lookalike.data.parquet_rows import read_rows
from lookalike.data.partitions import shard_count, shard_of
from lookalike.data.schema import USER_ID
from lookalike.data.spec import (
    CategoricalFeature,
    FeatureSpec,
    NumericFeature,
    encode,
    fit_quantiles,
    quantile_transform,
)
from lookalike.data.synthetic import GeneratedData, generate

AS_OF = "2024-02-01"
CONFIG = LookalikeConfig.model_validate(
    {"features": {"windows_days": [7, 30]}, "ingest": {"categorical_int_columns": ["region"]}}
)


def _events() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 2, 3],
            "event_time": [
                datetime(2024, 1, 31), datetime(2024, 1, 25), datetime(2023, 12, 1),
                datetime(2024, 1, 30), datetime(2024, 2, 2), datetime(2024, 1, 1),
            ],
            "event_type": ["view", "buy", "view", "view", "buy", "add to cart"],
            "category": ["shoes", "shoes", "hats", None, "hats", "shoes"],
            "value": [None, 10.0, None, None, 99.0, None],
            "item_id": [1, 2, 1, 3, 4, 5],
        }
    )


def _profiles() -> pl.DataFrame:
    return pl.DataFrame({"user_id": [1, 2, 3, 4], "age": [30.0, None, 50.0, 20.0],
                         "region": [5, 7, 5, None], "plan": ["a", "b", None, "a"]})


def _build(tmp_path: Path, events: pl.DataFrame | None, profiles: pl.DataFrame | None,
           name: str = "f", as_of: str | None = AS_OF) -> pl.DataFrame:
    tables = {}
    for kind, frame in (("events", events), ("profiles", profiles)):
        if frame is not None:
            path = tmp_path / f"{name}_{kind}.parquet"
            frame.write_parquet(path)
            tables[kind] = str(path)
    compute_features(
        load_events(tables["events"]) if "events" in tables else None,
        load_profiles(tables["profiles"]) if "profiles" in tables else None,
        tmp_path / f"{name}.parquet", tmp_path / f"{name}.json", as_of=as_of, config=CONFIG,
    )
    return pl.read_parquet(tmp_path / f"{name}.parquet")


def test_feature_values_match_hand_computed_example(tmp_path: Path) -> None:
    f = _build(tmp_path, _events(), _profiles())
    rows = {r["user_id"]: r for r in f.to_dicts()}
    assert sorted(rows) == [1, 2, 3, 4]  # population = profile users
    u1, u2, u3, u4 = rows[1], rows[2], rows[3], rows[4]
    # user 1: view Jan 31, buy Jan 25 (exactly 7 days before as_of: inside), view Dec 1
    assert (u1["n_events_total"], u1["n_events_7d"], u1["n_events_30d"]) == (3, 2, 2)
    assert (u1["n_view_7d"], u1["n_view_30d"], u1["n_buy_7d"]) == (1, 1, 1)
    assert u1["recency_days"] == pytest.approx(1.0)
    assert u1["tenure_days"] == pytest.approx(62.0)
    assert u1["active_days"] == 3
    assert (u1["value_sum"], u1["value_mean"], u1["value_max"]) == (10.0, 10.0, 10.0)
    assert u1["n_items"] == 2 and u1["n_categories"] == 2
    assert u1["cat_share_shoes"] == pytest.approx(2 / 3)
    assert u1["cat_share_hats"] == pytest.approx(1 / 3)
    # user 2: the Feb 2 buy is after as_of and must not count
    assert (u2["n_events_total"], u2["n_buy_30d"], u2["value_sum"]) == (1, 0, 0.0)
    assert u2["value_mean"] is None and u2["n_categories"] == 0
    # user 3: one event 31 days before as_of: outside the 30-day window
    assert (u3["n_events_30d"], u3["n_add_to_cart_30d"], u3["recency_days"]) == (0, 0, 31.0)
    # user 4: profile only: zero counts, undefined recency
    assert u4["n_events_total"] == 0 and u4["recency_days"] is None
    assert (u1["age"], u1["region"], u1["plan"]) == (30.0, "5", "a")
    assert u2["age"] is None and u4["region"] is None


def test_spec_kinds_cardinalities_and_encoding(tmp_path: Path) -> None:
    f = _build(tmp_path, _events(), _profiles())
    spec = FeatureSpec.load(tmp_path / "f.json")
    assert [c.name for c in spec.categorical] == ["region", "plan"]
    assert spec.cardinalities == [4, 4]  # missing, other, two values
    by_name = {n.name: n for n in spec.numeric}
    assert by_name["age"].source == "profiles" and by_name["n_view_7d"].source == "events"
    assert by_name["age"].has_missing and by_name["recency_days"].has_missing
    assert not by_name["n_events_total"].has_missing
    enc = encode(f, spec)
    assert enc.numeric.shape == (4, len(spec.encoded_numeric_names))
    assert np.all((enc.numeric >= 0) & (enc.numeric <= 1))
    age_missing = spec.encoded_numeric_names.index("age__missing")
    np.testing.assert_array_equal(enc.numeric[:, age_missing], [0, 1, 0, 0])
    np.testing.assert_array_equal(enc.categorical[:, 0], [2, 3, 2, 0])  # "5" most frequent first


@settings(max_examples=60, deadline=None)
@given(
    data=st.lists(st.integers(-3, 12), min_size=2, max_size=300),
    scale=st.sampled_from([1.0, 0.37, 1e6]),
    n_quantiles=st.sampled_from([2, 7, 100, 1000]),
)
def test_quantile_transform_matches_scikit_learn(data: list[int], scale: float, n_quantiles: int) -> None:
    # small integers make tied quantiles; probes fall on, between and beyond the fitted values
    values = np.asarray(data, dtype=np.float64) * scale
    assume(values.min() < values.max())  # a constant column: scikit-learn maps it to 0, we to 1
    fitted = QuantileTransformer(n_quantiles=min(n_quantiles, len(values)), subsample=None)
    fitted.fit(values[:, None])
    probes = np.r_[values, np.linspace(values.min() - scale, values.max() + scale, 101)]
    # within 1e-7 of a bound we map to the bound (scikit-learn's normal-output rule); it needs ==
    gap = np.minimum(np.abs(probes - values.min()), np.abs(probes - values.max()))
    probes = probes[(gap == 0) | (gap > 1e-6)]
    ours = quantile_transform(probes, fitted.quantiles_[:, 0])
    np.testing.assert_allclose(ours, fitted.transform(probes[:, None])[:, 0], rtol=0, atol=1e-12)


def test_event_after_as_of_changes_no_feature(tmp_path: Path) -> None:
    base = _build(tmp_path, _events(), _profiles(), name="base")
    late = pl.DataFrame({"user_id": [1, 3, 4], "event_time": [datetime(2024, 2, 1), datetime(2024, 3, 1),
                                                              datetime(2025, 1, 1)],
                         "event_type": ["buy", "view", "new type"], "category": ["new", "shoes", "x"],
                         "value": [1e6, 5.0, 3.0], "item_id": [9, 9, 9]})
    leaked = _build(tmp_path, pl.concat([_events(), late]), _profiles(), name="leaked")
    assert leaked.equals(base)
    assert FeatureSpec.load(tmp_path / "leaked.json") == FeatureSpec.load(tmp_path / "base.json")


def test_events_only_population_is_users_with_past_events(tmp_path: Path) -> None:
    f = _build(tmp_path, _events(), None)
    assert f.get_column("user_id").to_list() == [1, 2, 3]
    assert "age" not in f.columns


def test_profiles_only(tmp_path: Path) -> None:
    f = _build(tmp_path, None, _profiles(), as_of=None)
    assert f.columns == ["user_id", "age", "region", "plan"]


def test_default_as_of_is_latest_event(tmp_path: Path) -> None:
    _build(tmp_path, _events(), None, as_of=None)
    assert FeatureSpec.load(tmp_path / "f.json").as_of == datetime(2024, 2, 2, tzinfo=UTC).isoformat()


@pytest.mark.parametrize("ids", [[101, 102, 103, 104], ["u-1", "u-2", "u-3", "u-4"]])
def test_id_type_round_trip(tmp_path: Path, ids: list) -> None:
    mapping = dict(zip([1, 2, 3, 4], ids, strict=True))
    events = _events().with_columns(pl.col("user_id").replace_strict(mapping))
    profiles = _profiles().with_columns(pl.col("user_id").replace_strict(mapping))
    f = _build(tmp_path, events, profiles)
    assert f.get_column("user_id").to_list() == ids
    assert f.schema["user_id"] == (pl.Int64 if isinstance(ids[0], int) else pl.String)


def test_tz_aware_naive_and_csv_inputs_give_equal_features(tmp_path: Path) -> None:
    naive = _build(tmp_path, _events(), _profiles(), name="naive")
    berlin = _events().with_columns(
        pl.col("event_time").dt.replace_time_zone("UTC").dt.convert_time_zone("Europe/Berlin")
    )
    assert _build(tmp_path, berlin, _profiles(), name="berlin").equals(naive)
    csv_events = tmp_path / "events.csv"
    _events().with_columns(pl.col("event_time").dt.strftime("%Y-%m-%dT%H:%M:%SZ")).write_csv(csv_events)
    csv_profiles = tmp_path / "profiles.csv"
    _profiles().write_csv(csv_profiles)
    compute_features(load_events(str(csv_events)), load_profiles(str(csv_profiles)),
                     tmp_path / "csv.parquet", tmp_path / "csv.json", as_of=AS_OF, config=CONFIG)
    assert pl.read_parquet(tmp_path / "csv.parquet").equals(naive)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> GeneratedData:
    return generate(tmp_path_factory.mktemp("synthetic"), 400, events_per_user=20, seed=3)


@pytest.mark.parametrize("id_kind", ["int", "str"])
def test_user_partitions_give_the_single_partition_features(
    tmp_path: Path, synthetic: GeneratedData, id_kind: str
) -> None:
    events = pl.read_parquet(synthetic.events)
    duplicates = events.sample(500, seed=1)
    events = pl.concat([events, duplicates]).sample(fraction=1.0, shuffle=True, seed=2)
    profiles = pl.read_parquet(synthetic.profiles)
    if id_kind == "str":
        events, profiles = (f.with_columns(pl.format("u-{}", USER_ID).alias(USER_ID)) for f in (events, profiles))
    events.write_parquet(tmp_path / "events.parquet")
    profiles.write_parquet(tmp_path / "profiles.parquet")
    as_of = json.loads(synthetic.truth_json.read_text())["as_of"]
    n_past = events.filter(pl.col("event_time") < parse_as_of(as_of)).height
    base = load_config(synthetic.config)
    partition_events = 2000
    assert math.ceil(n_past / partition_events) >= 3
    configs = {"one": base, "parts": base.model_validate(
        {**base.model_dump(), "features": {**base.features.model_dump(), "partition_events": partition_events}}
    )}
    results = {
        name: compute_features(load_events(str(tmp_path / "events.parquet")),
                               load_profiles(str(tmp_path / "profiles.parquet")),
                               tmp_path / f"{name}.parquet", tmp_path / f"{name}.json", as_of=as_of, config=config)
        for name, config in configs.items()
    }
    one, parts = (pl.read_parquet(tmp_path / f"{name}.parquet") for name in configs)
    assert parts.equals(one) and one.height == 400
    assert parts.schema[USER_ID] == (pl.Int64 if id_kind == "int" else pl.String)
    assert (tmp_path / "parts.json").read_text() == (tmp_path / "one.json").read_text()
    dropped = duplicates.filter(pl.col("event_time") < parse_as_of(as_of)).height
    assert results["parts"].notes == results["one"].notes
    assert f"dropped {dropped} exact duplicate events" in results["parts"].notes


def _in_memory_reference(events: Table, profiles: Table, as_of: datetime,
                         config: LookalikeConfig) -> tuple[pl.DataFrame, FeatureSpec]:
    """The feature table and spec computed with the whole table in memory (the library streams it),
    rows ordered by population partition (index shard), then ``user_id``."""
    parts, _ = event_partitions(events.frame, as_of, config.features)
    event_frame = pl.concat([part.collect() for part in parts])
    event_columns = [c for c in event_frame.columns if c != USER_ID]
    profile_frame, kinds = profile_feature_frame(profiles.frame, as_of, config, {USER_ID, *event_columns})
    counts = [c for c in event_columns if c not in UNDEFINED_WITHOUT_EVENTS]
    table = profile_frame.collect().join(event_frame, on=USER_ID, how="left").with_columns(pl.col(counts).fill_null(0))
    categorical = [c for c in kinds.categorical if table.get_column(c).n_unique() <= table.height / 2]
    numeric = event_columns + kinds.numeric
    table = table.select([USER_ID, *numeric, *categorical])
    n_shards = shard_count(table.height, config.index)
    table = (table.with_columns(pl.Series("shard", shard_of(table.get_column(USER_ID), n_shards)))
             .sort("shard", USER_ID).drop("shard"))
    fit = config.features
    sample = table.sample(fit.scaling_sample, seed=0)
    spec = FeatureSpec(
        id_dtype=str(table.schema[USER_ID]).lower(), as_of=as_of.isoformat(), n_users=table.height,
        numeric=[NumericFeature(c, fit_quantiles(sample.get_column(c).cast(pl.Float64).to_numpy(), fit.n_quantiles),
                                table.get_column(c).null_count() > 0, "profiles" if c in kinds.numeric else "events")
                 for c in numeric],
        categorical=[CategoricalFeature(c, table.get_column(c).drop_nulls().value_counts(name="n")
                                        .sort(["n", c], descending=[True, False]).get_column(c)
                                        .head(fit.max_categorical_cardinality).to_list())
                     for c in categorical],
    )
    return table, spec


@pytest.fixture(scope="module")
def synthetic_1500(tmp_path_factory: pytest.TempPathFactory) -> GeneratedData:
    return generate(tmp_path_factory.mktemp("synthetic_1500"), 1500, events_per_user=10, seed=4)


@pytest.mark.parametrize(("id_kind", "shards"), [("int", 1), ("str", 1), ("int", 3), ("str", 3)])
def test_streamed_table_and_spec_equal_the_in_memory_ones(
    tmp_path: Path, synthetic_1500: GeneratedData, id_kind: str, shards: int,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several user partitions, row groups and a scaling sample smaller than the table; an
    identifier-like profile column; event users without a profile and profile users without events;
    with index shards, each shard's users are a run of whole row groups."""
    monkeypatch.setattr(lookalike.data.features, "PARQUET_ROW_GROUP", 400)
    events = pl.read_parquet(synthetic_1500.events)
    profiles = (pl.read_parquet(synthetic_1500.profiles).filter(pl.col(USER_ID) % 10 != 3)
                .with_columns(pl.format("user-{}@example.com", USER_ID).alias("email")))
    if id_kind == "str":
        events, profiles = (f.with_columns(pl.format("u-{}", USER_ID).alias(USER_ID)) for f in (events, profiles))
    events.write_parquet(tmp_path / "events.parquet")
    profiles.write_parquet(tmp_path / "profiles.parquet")
    as_of = parse_as_of(json.loads(synthetic_1500.truth_json.read_text())["as_of"])
    base = load_config(synthetic_1500.config)
    config = base.model_validate({**base.model_dump(), "features": {
        **base.features.model_dump(), "partition_events": 3000, "scaling_sample": 1000},
        "index": {**base.index.model_dump(), "shards": shards}})
    assert events.filter(pl.col("event_time") < as_of).height > 4 * 3000
    out = tmp_path / "out"
    result = compute_features(load_events(str(tmp_path / "events.parquet")),
                              load_profiles(str(tmp_path / "profiles.parquet")),
                              out / "f.parquet", out / "f.json", as_of=as_of, config=config)
    table, spec = _in_memory_reference(load_events(str(tmp_path / "events.parquet")),
                                       load_profiles(str(tmp_path / "profiles.parquet")), as_of, config)
    assert table.height == result.n_users == profiles.height > config.features.scaling_sample
    assert "email" not in table.columns and any("'email' looks like an identifier" in n for n in result.notes)
    assert any(n.startswith("events of ") and n.endswith("users not in profiles were ignored") for n in result.notes)
    assert pl.read_parquet(out / "f.parquet").equals(table)
    row_groups = pq.ParquetFile(out / "f.parquet").metadata
    sizes = [row_groups.row_group(i).num_rows for i in range(row_groups.num_row_groups)]
    assert max(sizes) <= 400
    shard_starts = np.flatnonzero(np.diff(shard_of(table.get_column(USER_ID), shards))) + 1
    assert set(shard_starts) <= set(np.cumsum(sizes).tolist())
    assert (out / "f.json").read_text() == spec.save(tmp_path / "reference.json").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["f.json", "f.parquet"]  # scratch files removed


def test_no_scratch_file_is_left_when_no_user_has_past_events(tmp_path: Path) -> None:
    (tmp_path / "out").mkdir()
    _events().write_parquet(tmp_path / "events.parquet")
    with pytest.raises(InputError, match="no users have events before as_of"):
        compute_features(load_events(str(tmp_path / "events.parquet")), None, tmp_path / "out" / "f.parquet",
                         tmp_path / "out" / "f.json", as_of="2020-01-01", config=CONFIG)
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.parametrize("partition_events", [10**9, 2000])
def test_features_written_as_separate_partition_steps_equal_one_call_byte_for_byte(
    tmp_path: Path, synthetic: GeneratedData, partition_events: int
) -> None:
    from lookalike.build_steps import (
        BuildRequest,
        step_features_merge,
        step_features_part,
        step_features_plan,
    )
    from lookalike.core.workdir import BuildPaths

    base = load_config(synthetic.config)
    config = base.model_validate({**base.model_dump(), "features": {
        **base.features.model_dump(), "partition_events": partition_events}})
    as_of = json.loads(synthetic.truth_json.read_text())["as_of"]
    one = compute_features(load_events(str(synthetic.events)), load_profiles(str(synthetic.profiles)),
                           tmp_path / "one.parquet", tmp_path / "one.json", as_of=as_of, config=config)
    request = BuildRequest(events=str(synthetic.events), profiles=str(synthetic.profiles),
                           conversions=str(synthetic.conversions), as_of=as_of, config=config)
    build = BuildPaths(tmp_path / "build")

    n_parts = step_features_plan(build, request)["n_parts"]
    assert (n_parts == 1) if partition_events > 10**6 else (n_parts >= 3)
    # each partition on its own, last first: they depend only on the paths and their index
    counts = [step_features_part(build, request, i) for i in reversed(range(n_parts))][::-1]
    reports = step_features_merge(build, request, counts, progress=lambda _: None)

    assert build.features.read_bytes() == (tmp_path / "one.parquet").read_bytes()
    assert build.spec.read_bytes() == (tmp_path / "one.json").read_bytes()
    assert reports["features"]["notes"] == one.notes
    assert sorted(p.name for p in build.root.iterdir()) == [
        "conversions.parquet", "feature_sketch.json", "feature_spec.json", "features.parquet",
        "ingest_report.json"]


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(0, 999), unique=True, max_size=60), st.integers(1, 300))
def test_read_rows_gives_the_rows_of_the_table_in_order(tmp_path_factory: pytest.TempPathFactory,
                                                        rows: list[int], batch_size: int) -> None:
    path = tmp_path_factory.mktemp("rows") / "t.parquet"
    table = pl.DataFrame({"user_id": np.arange(1000) * 7, "x": np.arange(1000) / 3})
    pq.write_table(table.to_arrow(), path, row_group_size=128)
    wanted = np.array(sorted(rows), dtype=np.int64)
    batches = list(read_rows(pq.ParquetFile(path), wanted, ["x", "user_id"], batch_size))
    assert all(0 < b.num_rows <= batch_size for b in batches)
    read = pl.concat([pl.from_arrow(b) for b in batches]) if batches else None
    expected = table.select("x", "user_id")[wanted]
    assert (read is None and wanted.size == 0) or read.equals(expected)

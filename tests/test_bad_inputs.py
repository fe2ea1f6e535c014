"""The bad-input matrix (issue 9, item 7): malformed inputs mapped to the error or handling expected.

A row either names the fragments its error must contain (besides the file), or a check of the
specific handling. A rejected events, profiles or conversions table goes through ``lookalike build``,
a rejected seed list through ``lookalike export`` (in this process, without Prefect): the command
must fail with exit code 1, its last line of output must be the ``error:`` line, and the workdir
must hold no new or changed file. An accepted row goes through the library
(``lookalike.data.ingest``, ``lookalike.data.features.compute_features``,
``lookalike.data.spec.encode``); every accepted events/profiles row must give finite features and
encoded inputs in [0, 1].
"""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from typer.testing import CliRunner

from flows.cli import app
from lookalike.build_steps import run_build
from lookalike.core.workdir import Workdir
from lookalike.data.features import compute_features
from lookalike.data.ingest import TableReport, load_conversions, load_events, load_profiles, load_user_list
from lookalike.data.spec import EncodedFeatures, FeatureSpec, encode
from lookalike.testing.fixtures import reliability_config, request_for, small_data

AS_OF = "2024-02-01"
JAN = [datetime(2024, 1, d) for d in (3, 5, 7, 9, 11, 13)]
EVENTS = {
    "user_id": [1, 1, 2, 2, 3, 3],
    "event_time": JAN,
    "event_type": ["view", "buy", "view", "view", "buy", "view"],
    "value": [None, 10.0, None, None, 5.0, None],
}
PROFILES = {"user_id": [1, 2, 3], "age": [30.0, 40.0, 50.0], "plan": ["a", "b", "a"]}
REPO = Path(__file__).resolve().parents[1]


# ---- writers --------------------------------------------------------------------------------


def frame(base: dict, **changes: list) -> pl.DataFrame:
    return pl.DataFrame({**base, **changes}, strict=False)


def write(path: Path, table: pl.DataFrame) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".csv":
        table.write_csv(path)
    else:
        table.write_parquet(path)
    return str(path)


def events_file(name: str, **changes: list) -> Callable[[Path], str]:
    return lambda d: write(d / name, frame(EVENTS, **changes))


def csv_lines(name: str, *lines: str) -> Callable[[Path], str]:
    return raw_file(name, ("\n".join(lines) + "\n").encode())


def parts(*tables: pl.DataFrame, names: tuple[str, ...] = ("part-0.parquet", "part-1.parquet", "part-2.parquet"),
          url: Callable[[Path], str] = lambda folder: str(folder)) -> Callable[[Path], str]:
    """A folder of Parquet parts; ``url`` turns the folder into the path handed to ingest."""
    def make(d: Path) -> str:
        for table, name in zip(tables, names, strict=False):
            write(d / "parts" / name, table)
        return url(d / "parts")

    return make


def split_events(base: pl.DataFrame | None = None) -> tuple[pl.DataFrame, ...]:
    base = frame(EVENTS) if base is None else base
    return base[:2], base[2:4], base[4:]


def truncated(d: Path) -> str:
    path = Path(write(d / "e.parquet", frame(EVENTS)))
    path.write_bytes(path.read_bytes()[:-40])
    return str(path)


def raw_file(name: str, content: bytes) -> Callable[[Path], str]:
    def make(d: Path) -> str:
        (d / name).write_bytes(content)
        return str(d / name)

    return make


def parquet_bytes(table: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    table.write_parquet(buffer)
    return buffer.getvalue()


def truncated_part(d: Path) -> str:
    folder = parts(*split_events())(d)
    part = Path(folder) / "part-1.parquet"
    part.write_bytes(part.read_bytes()[:100])
    return folder


# ---- running a row --------------------------------------------------------------------------


@dataclass
class Outcome:
    """What the library made of one input: the normalized table and, for events/profiles, features."""

    table: pl.DataFrame
    report: TableReport
    features: pl.DataFrame | None = None
    encoded: EncodedFeatures | None = None
    spec: FeatureSpec | None = None


def run(kind: str, path: str, out: Path) -> Outcome:
    if kind == "conversions":
        table = load_conversions(path)
        return Outcome(table.frame.collect(), table.report)
    if kind in ("seeds", "exclusions"):
        table, report = load_user_list(path, kind=kind, with_weight=kind == "seeds")
        return Outcome(table, report)
    loaded = load_events(path) if kind == "events" else load_profiles(path)
    result = compute_features(loaded if kind == "events" else None, loaded if kind == "profiles" else None,
                              out / "f.parquet", out / "f.json", as_of=AS_OF)
    features = pl.read_parquet(result.features_path)
    spec = FeatureSpec.load(result.spec_path)
    return Outcome(loaded.frame.collect(), loaded.report, features, encode(features, spec), spec)


CONVERSIONS = {"user_id": [1, 3], "conversion_type": ["buy", "buy"]}
BUILD_TABLES = ("events", "profiles", "conversions")


def files_under(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``folder`` with its size and modification time."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def command_for(kind: str, path: str, tmp_path: Path, exportable: Workdir) -> tuple[list[str], Path]:
    """The command that reads ``path`` as a ``kind`` table, with clean other tables; its workdir."""
    if kind in BUILD_TABLES:
        clean = tmp_path / "clean"
        tables = {"events": write(clean / "events.parquet", frame(EVENTS)),
                  "conversions": write(clean / "conversions.parquet", pl.DataFrame(CONVERSIONS))}
        if kind == "profiles":
            del tables["events"]
        tables[kind] = path
        options = [item for name, table in tables.items() for item in (f"--{name}", table)]
        return ["build", "--workdir", str(tmp_path / "work"), "--as-of", AS_OF, *options], tmp_path / "work"
    return ["export", "--workdir", str(exportable.root), "--seeds", path, "--size", "30",
            "--out", str(tmp_path / "out" / "audience.parquet")], exportable.root


def fails_with_one_last_error_line(command: list[str]) -> str:
    """Run a ``lookalike`` command in this process (no Prefect); its last line, an error."""
    result = CliRunner().invoke(app, [*command, "--no-prefect"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert lines[-1].startswith("error: ") and not lines[-1].startswith("error: unexpected"), result.output
    assert sum(line.startswith("error:") for line in lines) == 1, result.output
    return lines[-1]


def reference(kind: str, tmp_path: Path, table: pl.DataFrame | None = None) -> Outcome:
    """The same pipeline on the clean single-file table, for 'same result' rows."""
    clean = frame(EVENTS if kind == "events" else PROFILES) if table is None else table
    folder = tmp_path / "reference"
    return run(kind, write(folder / f"{kind}.parquet", clean), folder)


# ---- handling checks ------------------------------------------------------------------------


def same_features_as_single_file(outcome: Outcome, tmp_path: Path) -> None:
    assert outcome.features.equals(reference("events", tmp_path).features)


def utc_instants(*expected: datetime) -> Callable[[Outcome, Path], None]:
    def check(outcome: Outcome, _: Path) -> None:
        assert outcome.table.schema["event_time"] == pl.Datetime("us", "UTC")
        assert outcome.table.sort("user_id", "event_time").get_column("event_time").to_list() == list(expected)

    return check


def values_missing_not_poisoning(outcome: Outcome, _: Path) -> None:
    """NaN/inf values count as missing: user 1's other value still sums, user 2 has none."""
    rows = {r["user_id"]: r for r in outcome.features.to_dicts()}
    assert (rows[1]["value_sum"], rows[1]["value_mean"], rows[1]["value_max"]) == (10.0, 10.0, 10.0)
    assert rows[2]["value_sum"] == 0.0 and rows[2]["value_mean"] is None and rows[2]["value_max"] is None
    assert outcome.table.get_column("value").is_nan().sum() == 0


def profile_non_finite_is_missing(outcome: Outcome, _: Path) -> None:
    ages = dict(zip(outcome.features.get_column("user_id"), outcome.features.get_column("age"), strict=True))
    assert ages == {1: 30.0, 2: None, 3: None}
    names = outcome.spec.encoded_numeric_names
    missing = outcome.encoded.numeric[:, names.index("age__missing")]
    assert missing.tolist() == [0.0, 1.0, 1.0]
    assert outcome.encoded.numeric[1:, names.index("age")].tolist() == [0.5, 0.5]


def seeds_merged(outcome: Outcome, _: Path) -> None:
    assert outcome.table.to_dicts() == [{"user_id": 1, "weight": 3.0}, {"user_id": 2, "weight": 1.0}]
    assert outcome.report.duplicates_dropped == 2 and "merged" in outcome.report.notes[0]


def exclusions_merged(outcome: Outcome, _: Path) -> None:
    assert outcome.table.get_column("user_id").to_list() == ["a", "b"]
    assert outcome.report.duplicates_dropped == 1


def integral_float_ids_become_integers(outcome: Outcome, tmp_path: Path) -> None:
    assert outcome.features.schema["user_id"] == pl.Int64
    same_features_as_single_file(outcome, tmp_path)


def value_column_from_a_later_part_is_kept(outcome: Outcome, tmp_path: Path) -> None:
    later_only = frame(EVENTS, value=[None, None, None, None, *EVENTS["value"][4:]])
    assert outcome.features.equals(reference("events", tmp_path, later_only).features)


# ---- the matrix -----------------------------------------------------------------------------

# Distinct instants (identical events would be dropped as duplicates), in row order.
HOURLY_FROM_10_UTC = [datetime(2024, 1, 10, 10 + h, tzinfo=UTC) for h in range(6)]
EPOCH_10_UTC = int(HOURLY_FROM_10_UTC[0].timestamp())


@dataclass(frozen=True)
class Row:
    name: str
    kind: str  # which table: events, profiles, conversions, seeds, exclusions
    make: Callable[[Path], str]
    error: list[str] = field(default_factory=list)  # fragments of the InputError, besides the file
    handling: Callable[[Outcome, Path], None] | None = None


MATRIX = [
    # wrong types
    Row("event_time boolean (Parquet)", "events", events_file("e.parquet", event_time=[True, False] * 3),
        error=["column 'event_time'", "has type Boolean", "expected a timestamp"]),
    Row("event_time boolean (CSV)", "events", events_file("e.csv", event_time=["true", "false"] * 3),
        error=["column 'event_time'", "has type Boolean"]),
    Row("user_id float with fractions (Parquet)", "events",
        events_file("e.parquet", user_id=[1.0, 1.0, 2.5, 2.0, 3.0, 3.0]),
        error=["column 'user_id'", "non-integral", "'row': 2", "'user_id': 2.5"]),
    Row("user_id float with fractions (CSV)", "conversions",
        lambda d: write(d / "c.csv", pl.DataFrame({"user_id": [1.0, 7.25]})),
        error=["column 'user_id'", "non-integral", "'user_id': 7.25"]),
    Row("user_id integral floats", "events", events_file("e.csv", user_id=[1.0, 1.0, 2.0, 2.0, 3.0, 3.0]),
        handling=integral_float_ids_become_integers),
    Row("user_id boolean", "profiles", lambda d: write(d / "p.parquet", frame(PROFILES, user_id=[True, False, True])),
        error=["column 'user_id'", "has type Boolean", "integer or string ids"]),
    Row("value as text", "events", events_file("e.csv", value=["1.5", "", "abc", "2", "", ""]),
        error=["column 'value'", "non-numeric", "'row': 2", "'value': 'abc'"]),
    Row("weight as text", "seeds", csv_lines("s.csv", "user_id,weight", "1,1", "2,heavy"),
        error=["column 'weight'", "non-numeric", "heavy"]),
    # nulls in keys and required columns
    Row("null user_id in events", "events", events_file("e.parquet", user_id=[1, None, 2, 2, 3, 3]),
        error=["column 'user_id'", "null", "'row': 1", "'user_id': None"]),
    Row("empty user_id in events (CSV)", "events", events_file("e.csv", user_id=["a", "a", "  ", "b", "c", "c"]),
        error=["column 'user_id'", "empty", "'row': 2"]),
    Row("null user_id in profiles", "profiles", lambda d: write(d / "p.parquet", frame(PROFILES, user_id=[1, None, 3])),
        error=["column 'user_id'", "null", "'row': 1"]),
    Row("null user_id in conversions", "conversions", csv_lines("c.csv", "user_id,conversion_type", "1,buy", ",buy"),
        error=["column 'user_id'", "null", "'row': 1"]),
    Row("null user_id in seeds", "seeds", csv_lines("s.csv", "user_id,weight", "1,1.0", "2,1.0", ",2.0"),
        error=["column 'user_id'", "null", "'row': 2"]),
    Row("null event_time", "events", events_file("e.parquet", event_time=[*JAN[:3], None, *JAN[4:]]),
        error=["column 'event_time'", "missing or unparseable", "'row': 3"]),
    Row("null event_type", "events", events_file("e.parquet", event_type=["view", None, "view", "buy", "buy", "view"]),
        error=["column 'event_type'", "null event types", "'row': 1"]),
    Row("missing seed weight", "seeds", csv_lines("s.csv", "user_id,weight", "1,1.0", "2,"),
        error=["column 'weight'", "missing", "'row': 1", "'user_id': 2"]),
    Row("NaN seed weight", "seeds",
        lambda d: write(d / "s.parquet", pl.DataFrame({"user_id": [1, 2], "weight": [math.nan, 1.0]})),
        error=["column 'weight'", "non-finite", "'row': 0"]),
    # duplicate keys
    Row("duplicate profile ids", "profiles", lambda d: write(d / "p.csv", frame(PROFILES, user_id=[1, 7, 7])),
        error=["column 'user_id'", "duplicate user_id", "'user_id': 7", "fix: deduplicate"]),
    Row("duplicate seeds merged, weights summed", "seeds",
        lambda d: write(d / "s.csv", pl.DataFrame({"user_id": [1, 2, 1, 1], "weight": [1.0, 1.0, 0.5, 1.5]})),
        handling=seeds_merged),
    Row("duplicate exclusion ids merged", "exclusions", csv_lines("x.csv", "user_id", "a", "b", "a"),
        handling=exclusions_merged),
    # time zones and epochs
    Row("mixed time zones in a CSV column", "events",
        events_file("e.csv", event_time=["2024-01-10T12:00:00+02:00", "2024-01-10T11:00:00Z", "2024-01-10 12:00:00",
                                         "2024-01-10T08:00:00-05:00", "2024-01-10 14:00:00.000+0000",
                                         "2024-01-10T15:00"]),
        handling=utc_instants(*HOURLY_FROM_10_UTC)),
    Row("non-UTC zone in Parquet", "events",
        lambda d: write(d / "e.parquet", frame(EVENTS, event_time=[datetime(2024, 1, 10, 5 + h) for h in range(6)])
                        .with_columns(pl.col("event_time").dt.replace_time_zone("America/New_York"))),
        handling=utc_instants(*HOURLY_FROM_10_UTC)),
    Row("epoch s/ms/us/ns in one CSV column", "events",
        events_file("e.csv", event_time=[(EPOCH_10_UTC + 3600 * h) * 10**exponent
                                         for h, exponent in enumerate([0, 3, 6, 9, 3, 0])]),
        handling=utc_instants(*HOURLY_FROM_10_UTC)),
    Row("fractional epoch seconds", "events",
        events_file("e.csv", event_time=[EPOCH_10_UTC + 3600 * h + 0.5 for h in range(6)]),
        handling=utc_instants(*[t.replace(microsecond=500_000) for t in HOURLY_FROM_10_UTC])),
    Row("unparseable conversion_time", "conversions",
        csv_lines("c.csv", "user_id,conversion_time", "1,2024-01-01", "2,soon"),
        error=["column 'conversion_time'", "unparseable", "'conversion_time': 'soon'"]),
    # NaN and infinity
    Row("NaN/inf event values (Parquet)", "events",
        events_file("e.parquet", value=[math.nan, 10.0, math.inf, -math.inf, 5.0, None]),
        handling=values_missing_not_poisoning),
    Row("NaN/inf event values (CSV text)", "events",
        events_file("e.csv", value=["NaN", "10", "inf", "-Infinity", "5", ""]), handling=values_missing_not_poisoning),
    Row("quoted empty and blank event values", "events",
        csv_lines("e.csv", "user_id,event_time,event_type,value", '1,2024-01-03,view,""', "1,2024-01-05,buy,10",
                  "2,2024-01-07,view,  ", "2,2024-01-09,view,", "3,2024-01-11,buy,5"),
        handling=values_missing_not_poisoning),
    Row("NaN/inf in a numeric profile column", "profiles",
        lambda d: write(d / "p.parquet", frame(PROFILES, age=[30.0, math.nan, math.inf])),
        handling=profile_non_finite_is_missing),
    # empty and damaged files
    Row("zero-row Parquet with schema (events)", "events", lambda d: write(d / "e.parquet", frame(EVENTS).head(0)),
        error=["the events table has no rows"]),
    Row("zero-row Parquet with schema (profiles)", "profiles",
        lambda d: write(d / "p.parquet", frame(PROFILES).head(0)), error=["the profiles table has no rows"]),
    Row("CSV with header only", "conversions", csv_lines("c.csv", "user_id,conversion_type"),
        error=["the conversions table has no rows"]),
    Row("zero-byte file", "seeds", raw_file("s.csv", b""), error=["is empty (0 bytes)"]),
    Row("CSV named .parquet", "events", raw_file("e.parquet", frame(EVENTS).write_csv().encode()),
        error=["named .parquet but is not a Parquet file"]),
    Row("Parquet named .csv", "events", raw_file("e.csv", parquet_bytes(frame(EVENTS))),
        handling=same_features_as_single_file),
    Row("truncated Parquet", "events", truncated, error=["truncated or corrupted Parquet"]),
    Row("truncated part in a folder", "events", truncated_part, error=["part-1.parquet", "truncated or corrupted"]),
    # folders, globs, URLs
    Row("folder of Parquet parts", "events", parts(*split_events()), handling=same_features_as_single_file),
    Row("glob", "events", parts(*split_events(), url=lambda folder: f"{folder}/part-*.parquet"),
        handling=same_features_as_single_file),
    Row("fsspec file:// URL to a file", "events", parts(frame(EVENTS), url=lambda f: f"file://{f}/part-0.parquet"),
        handling=same_features_as_single_file),
    Row("fsspec file:// URL to a folder", "events", parts(*split_events(), url=lambda folder: f"file://{folder}"),
        handling=same_features_as_single_file),
    Row("glob matching nothing", "events", lambda d: f"{d}/nothing-*.parquet", error=["contains no .parquet or .csv"]),
    Row("folder mixing Parquet and CSV", "events",
        parts(*split_events()[:2], names=("part-0.parquet", "part-1.csv")), error=["mixes Parquet and CSV"]),
    Row("parts with int and string ids", "events",
        parts(split_events()[0], split_events()[1].with_columns(pl.col("user_id").cast(pl.String))),
        error=["column 'user_id'", "types disagree", "Int64 in", "part-0.parquet", "String in", "part-1.parquet"]),
    Row("parts with different int widths and time units", "events",
        parts(split_events()[0], split_events()[1].with_columns(pl.col("user_id").cast(pl.Int32)),
              split_events()[2].with_columns(pl.col("event_time").dt.cast_time_unit("ms"))),
        handling=same_features_as_single_file),
    Row("conversions matching no population user", "conversions",
        lambda d: write(d / "c.parquet", pl.DataFrame({"user_id": [101, 102], "conversion_type": ["buy", "buy"]})),
        error=["column 'user_id'", "none of the 2 conversions belong to a population user"]),
    Row("optional column only in a later part", "events",
        parts(split_events()[0].drop("value"), split_events()[1].drop("value"), split_events()[2]),
        handling=value_column_from_a_later_part_is_kept),
]


@pytest.fixture(scope="module")
def exportable(tmp_path_factory: pytest.TempPathFactory) -> Workdir:
    """A workdir with a complete build of 2,000 synthetic users, for the seed-list rows."""
    root = tmp_path_factory.mktemp("exportable")
    workdir = Workdir(root / "work")
    run_build(workdir, request_for(small_data(root / "data"), reliability_config()), progress=lambda _m: None)
    return workdir


@pytest.mark.parametrize("row", MATRIX, ids=[r.name for r in MATRIX])
def test_bad_input_matrix(row: Row, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    assert bool(row.error) != (row.handling is not None), "a row names an error or a handling, not both"
    path = row.make(tmp_path)
    if row.error:
        exportable = request.getfixturevalue("exportable") if row.kind == "seeds" else None
        command, workdir = command_for(row.kind, path, tmp_path, exportable)
        before = files_under(workdir)
        message = fails_with_one_last_error_line(command)
        missing = [f for f in [path, *row.error] if f not in message]
        assert not missing, f"{missing} not in: {message}"
        assert files_under(workdir) == before
        assert not (tmp_path / "out").exists()
        return
    outcome = run(row.kind, path, tmp_path)
    row.handling(outcome, tmp_path)
    if outcome.features is not None:
        numeric = outcome.features.drop("user_id").select(pl.selectors.numeric().cast(pl.Float64))
        assert all(numeric.select((pl.all().is_finite() | pl.all().is_null()).all()).row(0))
        assert np.isfinite(outcome.encoded.numeric).all()
        assert outcome.encoded.numeric.min() >= 0.0 and outcome.encoded.numeric.max() <= 1.0


def test_a_build_failing_after_its_features_removes_its_folder(tmp_path: Path) -> None:
    """Valid tables whose two converters are too few to train on: features are written, then the
    training step fails; the unfinished build folder goes with the failure."""
    events = write(tmp_path / "events.parquet", frame(EVENTS))
    conversions = write(tmp_path / "conversions.parquet", pl.DataFrame(CONVERSIONS))
    message = fails_with_one_last_error_line(["build", "--workdir", str(tmp_path / "work"), "--as-of", AS_OF,
                                              "--events", events, "--conversions", conversions])
    assert "no conversion type has" in message and "converters in the feature table" in message
    assert files_under(tmp_path / "work") == {}


# ---- ten times larger: same handling, peak memory -------------------------------------------

BASE_USERS, EVENTS_PER_USER = 2_000, 10

PEAK_RSS_SCRIPT = """
import json, sys
from lookalike.data.features import compute_features
from lookalike.data.ingest import load_events
from lookalike.testing.peak_rss import peak_rss_mib
events, out = sys.argv[1], sys.argv[2]
result = compute_features(load_events(events), None, out + ".parquet", out + ".json", as_of="2024-02-01")
print(json.dumps({"users": result.n_users, "peak_rss_mib": peak_rss_mib()}))
"""


def synthetic_events(users: int) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    n = users * EVENTS_PER_USER
    values = rng.gamma(2.0, 20.0, n)
    values[rng.random(n) < 0.7] = np.nan  # most events carry no value; NaN = missing
    return pl.DataFrame({
        "user_id": np.repeat(np.arange(users), EVENTS_PER_USER),
        "event_time": np.datetime64("2024-01-01", "us") + rng.integers(0, 31 * 86_400 * 10**6, n).astype("m8[us]"),
        "event_type": rng.choice(["view", "cart", "buy"], n, p=[0.8, 0.15, 0.05]),
        "category": rng.choice([f"c{i}" for i in range(30)], n),
        "value": values,
    })


def feature_build_peak_rss(events: str, out: Path) -> dict:
    """Ingest and features in a fresh process: its own peak RSS (VmHWM, which starts again at exec;
    ``ru_maxrss`` would carry the test run's peak into the child)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", PEAK_RSS_SCRIPT, events, str(out)], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_ten_times_larger_file_is_handled_the_same_and_peak_rss_is_recorded(tmp_path: Path) -> None:
    """Ten copies of the base file (distinct users) give ten copies of the base features."""
    base = synthetic_events(BASE_USERS)
    large = pl.concat([base.with_columns(pl.col("user_id") + k * BASE_USERS) for k in range(10)])
    runs = {}
    for name, table in (("1x", base), ("10x", large)):
        runs[name] = feature_build_peak_rss(write(tmp_path / f"{name}.parquet", table), tmp_path / f"{name}_features")
    assert (runs["1x"]["users"], runs["10x"]["users"]) == (BASE_USERS, 10 * BASE_USERS)
    base_features = pl.read_parquet(tmp_path / "1x_features.parquet")
    large_features = pl.read_parquet(tmp_path / "10x_features.parquet")
    for k in range(10):
        block = large_features.filter((pl.col("user_id") // BASE_USERS) == k)
        assert_frame_equal(block.with_columns(pl.col("user_id") - k * BASE_USERS), base_features)  # float sums: rtol
    print(f"\npeak RSS (VmHWM) of ingest+features: 1x ({base.height:,} events) {runs['1x']['peak_rss_mib']:.0f} MiB, "
          f"10x ({large.height:,} events) {runs['10x']['peak_rss_mib']:.0f} MiB, "
          f"ratio {runs['10x']['peak_rss_mib'] / runs['1x']['peak_rss_mib']:.2f}")

"""Each contract violation gives a clear error naming file, column and rows; nothing is written."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from flows.cli import app
from lookalike.core.errors import InputError
from lookalike.data.features import compute_features
from lookalike.data.ingest import load_conversions, load_events, load_profiles, load_user_list

GOOD_EVENTS = {
    "user_id": [1, 1, 2, 3],
    "event_time": [datetime(2024, 1, 1), datetime(2024, 1, 5), datetime(2024, 1, 3), datetime(2024, 1, 4)],
    "event_type": ["view", "buy", "view", "view"],
}


def _write(path: Path, frame: pl.DataFrame) -> str:
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        frame.write_parquet(path)
    return str(path)


def _events(**changes: list) -> pl.DataFrame:
    return pl.DataFrame({**GOOD_EVENTS, **changes}, strict=False)


def _truncated(path: Path) -> str:
    _write(path, _events())
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return str(path)


def _csv_named_parquet(path: Path) -> str:
    _write(path.with_suffix(".csv"), _events())
    path.write_bytes(path.with_suffix(".csv").read_bytes())
    return str(path)


# (name, file name, maker, expected fragments of the message)
BAD_EVENTS: list[tuple[str, str, Callable[[Path], str], list[str]]] = [
    ("missing column", "e.parquet", lambda p: _write(p, _events().drop("event_type")),
     ["missing required column", "event_type"]),
    ("null user_id", "e.parquet", lambda p: _write(p, _events(user_id=[1, None, 2, 3])),
     ["user_id", "null", "'row': 1"]),
    ("empty user_id", "e.csv", lambda p: _write(p, _events(user_id=["a", " ", "b", "c"])),
     ["user_id", "empty"]),
    ("unparseable time", "e.csv",
     lambda p: _write(p, _events(event_time=["2024-01-01", "yesterday", "2024-01-03", "2024-01-04"])),
     ["event_time", "unparseable", "yesterday"]),
    ("empty table", "e.parquet", lambda p: _write(p, _events().head(0)), ["no rows"]),
    ("truncated parquet", "e.parquet", _truncated, ["truncated"]),
    ("csv named parquet", "e.parquet", _csv_named_parquet, ["not a Parquet file"]),
    ("not a table", "e.csv", lambda p: (p.write_bytes(b"\x00\x01binary\x00"), str(p))[1],
     ["neither Parquet nor CSV"]),
    ("missing file", "nope.parquet", lambda p: str(p), ["does not exist"]),
    ("non-numeric value", "e.csv", lambda p: _write(p, _events(value=["1.5", "abc", "", "2"])),
     ["value", "non-numeric", "abc"]),
]


@pytest.mark.parametrize(("name", "file", "make", "fragments"), BAD_EVENTS, ids=[b[0] for b in BAD_EVENTS])
def test_bad_events_are_rejected_with_file_column_and_rows(
    tmp_path: Path, name: str, file: str, make: Callable[[Path], str], fragments: list[str]
) -> None:
    path = make(tmp_path / file)
    with pytest.raises(InputError) as err:
        load_events(path)
    message = str(err.value)
    assert path in message
    for fragment in fragments:
        assert fragment in message


def test_good_events_load(tmp_path: Path) -> None:
    frame = load_events(_write(tmp_path / "e.parquet", _events())).frame.collect()
    assert frame.height == 4 and frame.schema["event_time"] == pl.Datetime("us", "UTC")


def test_duplicate_events_are_dropped_and_counted(tmp_path: Path) -> None:
    doubled = pl.concat([_events(), _events().head(2)])
    table = load_events(_write(tmp_path / "e.parquet", doubled))
    result = compute_features(table, None, tmp_path / "f.parquet", tmp_path / "s.json",
                              as_of="2024-02-01")
    assert table.report.duplicates_dropped == 2
    assert "dropped 2 exact duplicate events" in result.notes
    features = pl.read_parquet(tmp_path / "f.parquet")
    assert features.get_column("n_events_total").sum() == 4


def test_integer_epochs_in_any_unit_mean_the_same_instant(tmp_path: Path) -> None:
    seconds = 1_704_067_200  # 2024-01-01T00:00:00Z
    frame = _events(event_time=[seconds, seconds * 1000, seconds * 1_000_000, seconds * 1_000_000_000])
    times = load_events(_write(tmp_path / "e.parquet", frame)).frame.collect().get_column("event_time")
    assert times.n_unique() == 1 and times[0] == datetime.fromisoformat("2024-01-01T00:00:00+00:00")


def test_extra_event_columns_are_ignored_with_a_note(tmp_path: Path) -> None:
    table = load_events(_write(tmp_path / "e.parquet", _events(extra=[1, 2, 3, 4])))
    assert table.report.ignored_columns == ["extra"]
    assert "extra" not in table.frame.collect_schema().names()


def test_duplicate_profile_rows_are_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.parquet", pl.DataFrame({"user_id": ["a", "b", "a"], "age": [1, 2, 3]}))
    with pytest.raises(InputError, match=r"duplicate user_id.*'a'"):
        load_profiles(path)


def test_denied_profile_columns_are_dropped(tmp_path: Path) -> None:
    path = _write(tmp_path / "p.parquet", pl.DataFrame({"user_id": [1, 2], "religion": ["x", "y"], "age": [3, 4]}))
    table = load_profiles(path, deny_columns=["religion"])
    assert table.frame.collect_schema().names() == ["user_id", "age"]


def test_conversions_default_type_and_optional_time(tmp_path: Path) -> None:
    path = _write(tmp_path / "c.csv", pl.DataFrame({"user_id": [1, 2]}))
    frame = load_conversions(path).frame.collect()
    assert frame.get_column("conversion_type").to_list() == ["conversion", "conversion"]
    assert frame.get_column("conversion_time").null_count() == 2


def test_seed_weights_validated_and_duplicates_merged(tmp_path: Path) -> None:
    good = _write(tmp_path / "s.csv", pl.DataFrame({"user_id": [5, 5, 6], "weight": [1.0, 2.0, 0.5]}))
    seeds, report = load_user_list(good, kind="seeds", with_weight=True)
    assert seeds.to_dicts() == [{"user_id": 5, "weight": 3.0}, {"user_id": 6, "weight": 0.5}]
    assert report.duplicates_dropped == 1
    bad = _write(tmp_path / "b.csv", pl.DataFrame({"user_id": [5, 6], "weight": [1.0, -2.0]}))
    with pytest.raises(InputError, match="weight"):
        load_user_list(bad, kind="seeds", with_weight=True)


# ---- through the command line: one-line error, non-zero exit, no output written -------------

CLI_CASES = [BAD_EVENTS[i] for i in (0, 1, 3, 5, 6)]


@pytest.mark.parametrize(("name", "file", "make", "fragments"), CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_build_command_rejects_bad_events_without_writing(
    prefect_harness: None, tmp_path: Path, name: str, file: str, make: Callable[[Path], str],
    fragments: list[str],
) -> None:
    conversions = _write(tmp_path / "c.csv", pl.DataFrame({"user_id": [1]}))
    events = make(tmp_path / file)
    result = CliRunner().invoke(app, ["build", "--workdir", str(tmp_path / "w"), "--events", events,
                                      "--conversions", conversions])
    assert result.exit_code == 1
    error_lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and all(f in error_lines[0] for f in fragments)
    assert "Traceback" not in result.output
    assert not list((tmp_path / "w").rglob("*.parquet"))


def test_build_command_builds_valid_data_end_to_end(prefect_harness: None, tmp_path: Path) -> None:
    from lookalike.data.synthetic import generate

    data = generate(tmp_path / "data", 3000, events_per_user=10, seed=3)
    config = tmp_path / "config.yaml"
    config.write_text(data.config.read_text() + "\nmodel: {embedding_dim: 16, hidden_dims: [32]}\n"
                      "train: {epochs: 8, threads: 1, held_back_types: [card_signup]}\n")
    args = ["build", "--workdir", str(tmp_path / "w"), "--events", str(data.events), "--profiles",
            str(data.profiles), "--conversions", str(data.conversions), "--as-of", "2026-01-01",
            "--config", str(config)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    builds = list((tmp_path / "w" / "builds").glob("*/manifest.json"))
    assert len(builds) == 1
    assert (builds[0].parent / "index" / "index.json").is_file()


def test_build_command_reports_an_unknown_config_key_as_a_one_line_error(
    prefect_harness: None, tmp_path: Path
) -> None:
    """A typo in the config is the user's to fix: a plain ``error:`` line, not an "unexpected" bug."""
    conversions = _write(tmp_path / "c.csv", pl.DataFrame({"user_id": [1]}))
    events = _write(tmp_path / "e.parquet", pl.DataFrame(GOOD_EVENTS))
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  epochz: 3\n")
    result = CliRunner().invoke(app, ["build", "--workdir", str(tmp_path / "w"), "--events", events,
                                      "--conversions", conversions, "--config", str(config)])
    assert result.exit_code == 1
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: config file ") and "train.epochz" in last
    assert "unexpected" not in last and "Traceback" not in result.output
    assert not list((tmp_path / "w").rglob("*.parquet"))

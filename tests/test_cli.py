"""The command line answers mistakes at once: arguments, paths and the workdir's current build are
checked before anything starts, in a fresh process as a user runs it, and every failure ends with
one ``error:`` line."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from lookalike.core.artifacts import write_json
from lookalike.core.workdir import Workdir

REPO = Path(__file__).resolve().parents[1]
QUICK_SECONDS = 2.0


def lookalike(*arguments: str) -> tuple[int, list[str], float]:
    """Exit code, lines of combined output and wall seconds of ``lookalike ARGUMENTS``."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "flows.cli", *arguments], cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    return done.returncode, done.stdout.strip().splitlines(), time.perf_counter() - started


def with_current_build(root: Path) -> Workdir:
    """A workdir whose current build has a manifest (all the first checks look at)."""
    workdir = Workdir(root)
    write_json(workdir.build("0123456789ab").manifest, {"build_id": "0123456789ab", "files": {}})
    workdir.set_current("0123456789ab")
    return workdir


def test_a_workdir_without_a_build_is_reported_at_once(tmp_path: Path) -> None:
    code, lines, seconds = lookalike("export", "--workdir", str(tmp_path / "work"), "--seeds",
                                     str(tmp_path / "seeds.csv"), "--out", str(tmp_path / "a.parquet"),
                                     "--size", "100")
    assert code == 1
    assert lines == [f"error: {tmp_path / 'work'} has no current build; run "
                     f"`lookalike build --workdir {tmp_path / 'work'} ...`"]
    assert seconds < QUICK_SECONDS


def test_a_missing_seed_file_is_reported_at_once(tmp_path: Path) -> None:
    workdir = with_current_build(tmp_path / "work")
    seeds = tmp_path / "seeds.csv"
    code, lines, seconds = lookalike("export", "--workdir", str(workdir.root), "--seeds", str(seeds),
                                     "--out", str(tmp_path / "a.parquet"), "--fraction", "0.1")
    assert code == 1
    assert lines == [f"error: {seeds}: does not exist; fix: check the path"]
    assert seconds < QUICK_SECONDS
    assert not (tmp_path / "a.parquet").exists()


def test_a_missing_input_table_of_a_build_is_reported_at_once(tmp_path: Path) -> None:
    code, lines, seconds = lookalike("build", "--workdir", str(tmp_path / "work"), "--events",
                                     str(tmp_path / "events"), "--conversions",
                                     str(tmp_path / "conversions.csv"))
    assert (code, lines[-1]) == (1, f"error: {tmp_path / 'events'}: does not exist; fix: check the path")
    assert seconds < QUICK_SECONDS
    assert not (tmp_path / "work").exists()


def test_a_refresh_needs_a_current_build_and_excludes_retrain(tmp_path: Path) -> None:
    tables = [tmp_path / "events.csv", tmp_path / "conversions.csv"]
    for table in tables:
        table.write_text("user_id\n1\n")
    command = ["build", "--workdir", str(tmp_path / "work"), "--events", str(tables[0]),
               "--conversions", str(tables[1]), "--no-prefect", "--refresh"]

    alone, both = lookalike(*command), lookalike(*command, "--retrain")

    assert (alone[0], alone[1][-1]) == (1, "error: cannot refresh: no previous build; build "
                                           "without --refresh (or with --retrain) to train a new encoder")
    assert (both[0], both[1]) == (1, ["error: give --refresh or --retrain, not both"])
    assert not (tmp_path / "work").exists()


def test_a_usage_mistake_ends_with_an_error_line_too(tmp_path: Path) -> None:
    code, lines, _ = lookalike("export", "--workdir", str(tmp_path), "--seeds", "s.csv", "--out",
                               "a.parquet", "--size", "10", "--fraction", "0.1")
    assert (code, lines) == (1, ["error: give exactly one of --size or --fraction"])
    code, lines, _ = lookalike("build", "--workdir", str(tmp_path))
    assert code == 2
    assert lines[-1] == "error: Missing option '--conversions'."

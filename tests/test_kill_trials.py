"""Crash safety under SIGKILL (issue 9, issue 22): two kills in the write window of every writer
(build, manifest and current switch, export publish, erasure); benchmarks/bench_kill_trials.py
runs 50 per writer."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.testing.fixtures import reliability_config, small_data, write_seeds
from lookalike.testing.kill_harness import (
    JOB_OF,
    WRITERS,
    Timeline,
    check_state,
    kill_at,
    kill_build_after,
    kill_trial,
    prepare,
    record_timeline,
    summary,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("kill")
    data = small_data(root / "data")
    write_seeds(data, root / "seeds.parquet", count=40)
    return prepare(root, data, reliability_config(), root / "seeds.parquet")


@pytest.fixture(scope="module")
def timelines(setup) -> dict[str, Timeline]:
    return {job: record_timeline(setup, job) for job in ("build", "export", "erase")}


@pytest.mark.slow
def test_the_windows_cover_each_writers_dangerous_writes(setup, timelines):
    def names(writer: str) -> list[str]:
        timeline = timelines[JOB_OF[writer]]
        return [f"{timeline.events[i - 1].kind} {timeline.events[i - 1].name}"
                for i in timeline.window(writer, setup.audience.name)]

    assert names("switch") == ["open manifest.json", "replace manifest.json", "open current.json",
                               "replace current.json"]
    assert names("export")[0] == "open audience.parquet" and "replace last.parquet" in names("export")
    assert "replace state.json" in names("build") and "replace index.json" in names("build")
    erase = names("erase")
    assert erase.index("replace manifest.json") < erase.index(f"exchange {setup.first_build}")
    swap = erase.index(f"exchange {setup.first_build}")
    assert erase[swap + 1] == f"rmtree .erasing-{setup.first_build}"  # the old build, swapped out


@pytest.mark.slow
def test_kills_in_every_writers_window_land_mid_job_and_leave_complete_states(setup, timelines):
    rng = np.random.default_rng(7)
    trials = [kill_trial(setup, writer, timelines[JOB_OF[writer]], rng)
              for writer in WRITERS for _ in range(2)]
    figures = summary(trials)
    assert figures["problems"] == []
    assert figures["corrupt_states"] == 0
    assert all(figures[writer]["landed_share"] >= 0.9 for writer in WRITERS), figures


@pytest.mark.slow
def test_an_erasure_killed_at_its_folder_swap_leaves_a_complete_current_build(setup, timelines):
    """Just before the exchange the old build is current, just after it the erased one (the old
    build then waits in the staging folder for the rerun to delete it)."""
    timeline = timelines["erase"]
    swap = [f"{e.kind} {e.name}" for e in timeline.events].index(f"exchange {setup.first_build}") + 1
    trials = [kill_at(setup, "erase", timeline, index, 0.0) for index in (swap, swap + 1)]
    assert [(t.event.split()[0], t.landed, t.survived, t.restarted) for t in trials] == [
        ("exchange", True, True, True), ("rmtree", True, True, True)]


@pytest.mark.slow
def test_a_build_killed_during_training_resumes_from_its_checkpoint(setup):
    output, checkpoint = kill_build_after(setup, "epoch 3/")
    assert checkpoint
    assert "resuming after epoch" in output
    assert "epoch 1/" not in output  # the finished epochs are not trained again
    assert check_state(setup) == ""


def test_the_check_notices_a_broken_audience(setup, tmp_path: Path):
    saved = setup.audience.read_bytes()
    try:
        setup.audience.write_bytes(saved[: len(saved) // 2])
        assert check_state(setup) != ""
    finally:
        setup.audience.write_bytes(saved)
    assert check_state(setup) == ""

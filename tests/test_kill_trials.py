"""Crash safety under SIGKILL (issue 9): a few trials; benchmarks/bench_kill_trials.py runs 50."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from lookalike.testing.kill_harness import build_trial, check_state, export_trial, kill_build_after, prepare
from lookalike.testing.fixtures import reliability_config, small_data, write_seeds


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("kill")
    data = small_data(root / "data")
    write_seeds(data, root / "seeds.parquet", count=40)
    return prepare(root, data, reliability_config(), root / "seeds.parquet")


@pytest.mark.slow
def test_random_kills_leave_a_complete_build_and_audience_and_restarts_finish(setup):
    rng = np.random.default_rng(7)
    trials = [build_trial(setup, rng, 6.0), export_trial(setup, rng, 2.5)]
    assert [t.problem for t in trials] == ["", ""]
    assert all(t.survived and t.restarted for t in trials)


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

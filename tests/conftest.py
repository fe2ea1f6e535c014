"""Shared fixtures: a Prefect harness, toy feature tables and a quickly trained encoder.

Prefect's home is pointed at a temporary folder before anything imports it,
so test runs never share a database or cached results with a user's ~/.prefect."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="lookalike-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

from collections.abc import Callable, Iterator  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from lookalike.core.config import LookalikeConfig  # noqa: E402
from lookalike.testing.fixtures import fast_config  # noqa: E402
from lookalike.testing.toy_tables import ToyPaths, write_toy_tables  # noqa: E402
from lookalike.encoder.train import TrainResult, train  # noqa: E402


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect server (SQLite) for every test that runs a flow."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def make_config() -> Callable[..., LookalikeConfig]:
    """``make_config(**train_overrides)``: the fast test config."""
    return fast_config


@pytest.fixture(scope="session")
def toy(tmp_path_factory: pytest.TempPathFactory) -> ToyPaths:
    """6000 users with integer ids, three conversion types, three converters not in the table."""
    return write_toy_tables(tmp_path_factory.mktemp("toy"), 6000, seed=1, unknown_converters=3)


@pytest.fixture(scope="session")
def trained(toy: ToyPaths, tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    return train(
        toy.features, toy.spec, toy.conversions, tmp_path_factory.mktemp("model"), fast_config(),
        progress=None,
    )


@pytest.fixture
def model_dir(trained: TrainResult) -> Path:
    return trained.model_dir

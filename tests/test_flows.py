"""The Prefect flows on small synthetic data: build, export, reuse, rebuild, retries, failures, Dask.

Every flow runs against the session's ``prefect_harness`` server. Step calls are counted by
wrapping the library step functions the tasks call (``lookalike.build.step_*``), so "reused"
means "the expensive code never ran", whatever the API's eventual consistency.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import numpy as np
import polars as pl
import pytest
import yaml

from flows.build import build_flow
from flows.common import task_runner_options
from flows.export import export_flow
from lookalike import build as steps
from lookalike.artifacts import TEMP_MARKER, read_json
from lookalike.config import load_config
from lookalike.export import export_audience
from lookalike.synthetic import HELD_BACK_TYPE, generate
from lookalike.workdir import Workdir

pytestmark = pytest.mark.usefixtures("prefect_harness")

USERS = 4000
SEEDS = 150
AUDIENCE_SIZE = 200
SHARDS = 2
STEP_NAMES = ("step_features", "step_train", "step_embed", "step_index_shard",
              "step_index_manifest", "finalize_build")
FAST_SETTINGS: dict[str, dict[str, Any]] = {
    "model": {"embedding_dim": 16, "hidden_dims": [64], "numeric_bins": 8},
    "train": {"epochs": 2, "converters_per_type": 32, "negatives_per_batch": 128,
              "validation_background": 1000, "health_sample": 500, "threads": 1,
              "max_mean_cosine": 0.999},  # tests check orchestration, not model quality
    # ef above the shard size makes HNSW search exhaustive, so any runner gives the same answer
    "index": {"shards": SHARDS, "ef": 5000, "recall_queries": 50, "threads": 1},
    "audience": {"min_audience_size": 10, "min_seed_size": 20, "distinctiveness_sample": 500,
                 "report_sample": 1000},
}


@dataclass(frozen=True)
class Inputs:
    events: str
    profiles: str
    conversions: str
    config: str
    seeds: str
    as_of: str

    def build_kwargs(self, workdir: Path, **changes: str) -> dict[str, Any]:
        kwargs = {"workdir": str(workdir), "events": self.events, "profiles": self.profiles,
                  "conversions": self.conversions, "as_of": self.as_of,
                  "config_path": self.config}
        return {**kwargs, **changes}


def write_fast_config(generated: Path, out: Path, **extra: dict[str, Any]) -> Path:
    """The generator's sample config plus settings that build in seconds."""
    config = yaml.safe_load(generated.read_text()) or {}
    for section, values in {**FAST_SETTINGS, **extra}.items():
        config.setdefault(section, {}).update(values)
    out.write_text(yaml.safe_dump(config))
    return out


def write_seeds(conversions: Path, out: Path, n: int = SEEDS) -> Path:
    ids = (pl.read_parquet(conversions).filter(pl.col("conversion_type") == HELD_BACK_TYPE)
           .get_column("user_id").unique().sort().head(n))
    ids.to_frame().write_csv(out)
    return out


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    folder = tmp_path_factory.mktemp("flow-data")
    data = generate(folder / "data", USERS, events_per_user=10, seed=3)
    return Inputs(events=str(data.events), profiles=str(data.profiles),
                  conversions=str(data.conversions),
                  config=str(write_fast_config(data.config, folder / "config.yaml")),
                  seeds=str(write_seeds(data.conversions, folder / "seeds.csv")),
                  as_of=read_json(data.truth_json)["as_of"])


@pytest.fixture
def step_calls(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How often each library step ran in this test (flows call them through ``steps``)."""
    calls: Counter[str] = Counter()
    for name in STEP_NAMES:
        monkeypatch.setattr(steps, name, _counted(getattr(steps, name), name, calls))
    return calls


def _counted(function: Callable[..., Any], name: str, calls: Counter[str]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls[name] += 1
        return function(*args, **kwargs)

    return wrapper


def full_build_calls() -> Counter[str]:
    return Counter({**{name: 1 for name in STEP_NAMES}, "step_index_shard": SHARDS})


@pytest.fixture(scope="module")
def first_build(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("work")
    state = build_flow(**inputs.build_kwargs(workdir), return_state=True)
    assert state.is_completed(), state.message
    return {"workdir": workdir, "result": state.result(),
            "flow_run_id": state.state_details.flow_run_id}


def task_run_counts(flow_run_id: UUID, expected: Counter[str], timeout: float = 60) -> Counter[str]:
    """Completed task runs of a flow run by task name, once the API shows ``expected`` of them."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            counts = Counter(run.name.rsplit("-", 1)[0]  # "<task name>-<suffix>"
                             for run in runs if run.state and run.state.is_completed())
            if counts == expected or time.monotonic() > deadline:
                return counts
            time.sleep(0.5)


def flow_run_logs(flow_run_id: UUID, needle: str, timeout: float = 30) -> str:
    """The API log of a flow run (its tasks included), once it mentions ``needle``."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            text = "\n".join(log.message for log in logs)
            if needle in text or time.monotonic() > deadline:
                return text
            time.sleep(0.5)


def test_build_runs_every_step_as_a_task_and_makes_the_build_current(first_build, inputs):
    result = first_build["result"]
    workdir = Workdir(first_build["workdir"])
    assert result["reused"] is False
    assert workdir.current().build_id == result["build_id"]
    manifest = read_json(workdir.current().manifest)
    assert manifest["steps"]["index"]["count"] == USERS
    assert manifest["steps"]["index"]["shards"] == SHARDS
    expected = Counter({"ingest-and-features": 1, "train-encoder": 1, "embed-population": 1,
                        "index-shard": SHARDS, "index-manifest": 1, "finalize-build": 1})
    assert task_run_counts(first_build["flow_run_id"], expected) == expected


def test_export_flow_writes_the_audience_the_library_computes(first_build, inputs, tmp_path):
    workdir = Workdir(first_build["workdir"])
    flow_result = export_flow(workdir=str(workdir.root), seeds=inputs.seeds,
                              out=str(tmp_path / "flow.parquet"), size=AUDIENCE_SIZE,
                              config_path=inputs.config)
    direct = export_audience(workdir.current(), inputs.seeds, tmp_path / "direct.parquet",
                             size=AUDIENCE_SIZE, config=load_config(inputs.config),
                             progress=lambda _: None)

    from_flow = pl.read_parquet(flow_result["audience"])
    assert from_flow.height == flow_result["summary"]["size"] == AUDIENCE_SIZE
    assert from_flow.select("user_id", "rank").equals(
        pl.read_parquet(direct.audience).select("user_id", "rank"))
    seeds = pl.read_csv(inputs.seeds).get_column("user_id")
    assert not from_flow.get_column("user_id").is_in(seeds.implode()).any()
    assert Path(flow_result["report_md"]).is_file()


def test_unchanged_inputs_reuse_the_build_without_running_a_step(first_build, inputs, step_calls):
    result = build_flow(**inputs.build_kwargs(first_build["workdir"]))

    assert result == {**first_build["result"], "reused": True}
    assert sum(step_calls.values()) == 0


def test_a_changed_input_rebuilds_every_step_and_switches_current(first_build, inputs, tmp_path,
                                                                  step_calls):
    workdir = tmp_path / "work"
    shutil.copytree(first_build["workdir"], workdir)
    conversions = pl.read_parquet(inputs.conversions)
    changed = tmp_path / "conversions.parquet"
    conversions.head(conversions.height - 5).write_parquet(changed)

    result = build_flow(**inputs.build_kwargs(workdir, conversions=str(changed)))

    assert result["reused"] is False
    assert result["build_id"] != first_build["result"]["build_id"]
    assert Workdir(workdir).current().build_id == result["build_id"]
    assert step_calls == full_build_calls()


def test_an_io_error_is_retried_and_the_build_completes(inputs, tmp_path, monkeypatch, step_calls):
    embed = steps.step_embed
    failures = Counter[str]()

    def embed_failing_once(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures["embed"] += 1
            raise OSError("stale file handle (injected)")
        return embed(*args, **kwargs)

    monkeypatch.setattr(steps, "step_embed", embed_failing_once)
    state = build_flow(**inputs.build_kwargs(tmp_path / "work"), return_state=True)

    assert state.is_completed(), state.message
    assert failures["embed"] == 1
    assert step_calls["step_embed"] == 1  # the successful retry (the failed try raised first)
    assert Workdir(tmp_path / "work").current().build_id == state.result()["build_id"]


def test_a_failing_step_leaves_no_partial_output_and_fails_the_flow(first_build, inputs, tmp_path,
                                                                    monkeypatch):
    workdir = tmp_path / "work"
    shutil.copytree(first_build["workdir"], workdir)
    pointer_before = (workdir / "current.json").read_bytes()
    real_write = pl.DataFrame.write_parquet

    def write_half_then_fail(frame: pl.DataFrame, file: Any, *args: Any, **kwargs: Any) -> None:
        real_write(frame.head(frame.height // 2), file, *args, **kwargs)
        raise RuntimeError("device full while writing Parquet (injected)")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", write_half_then_fail)
    state = build_flow(**inputs.build_kwargs(workdir, as_of="2030-01-01T00:00:00Z"),
                       return_state=True)

    assert state.is_failed()
    assert "device full while writing Parquet" in state.message
    builds = [p for p in (workdir / "builds").iterdir()
              if p.name != first_build["result"]["build_id"]]
    assert len(builds) == 1
    assert not (builds[0] / "manifest.json").exists()
    assert not list(builds[0].rglob("*.parquet"))
    assert not [p for p in workdir.rglob("*") if TEMP_MARKER in p.name]
    assert (workdir / "current.json").read_bytes() == pointer_before
    logs = flow_run_logs(state.state_details.flow_run_id, "device full while writing Parquet")
    assert "device full while writing Parquet" in logs


def test_dask_runner_with_two_shards_gives_the_default_runners_audience(first_build, inputs,
                                                                       tmp_path):
    flow = build_flow.with_options(**task_runner_options("dask", workers=2))
    result = flow(**inputs.build_kwargs(tmp_path / "work"))
    default_build = Workdir(first_build["workdir"]).current()
    dask_build = Workdir(tmp_path / "work").current()

    assert result["build_id"] == default_build.build_id
    assert read_json(dask_build.index_dir / "index.json")["shards"] == read_json(
        default_build.index_dir / "index.json")["shards"]
    np.testing.assert_array_equal(np.load(dask_build.embeddings), np.load(default_build.embeddings))
    config = load_config(inputs.config)
    audiences = [
        pl.read_parquet(export_audience(build, inputs.seeds, tmp_path / f"{name}.parquet",
                                        size=AUDIENCE_SIZE, config=config,
                                        progress=lambda _: None).audience)
        for name, build in (("dask", dask_build), ("default", default_build))
    ]
    assert audiences[0].select("user_id", "rank").equals(audiences[1].select("user_id", "rank"))

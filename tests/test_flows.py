"""Prefect flows on small synthetic data: build, export, reuse, rebuild, retries, failures, Dask.

Every flow runs against the session's ``prefect_harness`` server. Step calls are counted by
wrapping the library step functions the tasks call (``lookalike.build_steps.step_*``), so "reused"
means "the expensive code never ran", whatever the API's eventual consistency.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import duckdb
import httpx
import numpy as np
import polars as pl
import pytest
import yaml

from flows.build import build_flow
from flows.common import task_runner_options
from flows.export import export_flow
from flows.pipeline import pipeline_flow
from lookalike import build_steps as steps
from lookalike.core.artifacts import TEMP_MARKER, read_json
from lookalike.core.config import load_config
from lookalike.core.errors import LookalikeError
from lookalike.audience.export import export_audience
from lookalike.data.synthetic import HELD_BACK_TYPE, generate
from lookalike.core.workdir import Workdir
from lookalike.testing.fixtures import drifted_copy

REPO = Path(__file__).resolve().parents[1]
T = TypeVar("T")
pytestmark = pytest.mark.usefixtures("prefect_harness")

USERS = 4000
SEEDS = 150
AUDIENCE_SIZE = 200
SHARDS = 2
FEATURE_PARTS = 3  # 40,000 events (10 a user) in partitions of 15,000
STEP_NAMES = ("step_features_plan", "step_features_part", "step_features_merge", "step_drift", "step_train", "step_embed_part",
              "step_embed_assemble", "step_index_shard", "step_index_manifest", "finalize_build")
FAST_SETTINGS: dict[str, dict[str, Any]] = {
    "model": {"embedding_dim": 16, "hidden_dims": [64], "numeric_bins": 8},
    "train": {"epochs": 2, "converters_per_type": 32, "negatives_per_batch": 128,
              "validation_background": 1000, "health_sample": 500, "threads": 1,
              "max_mean_cosine": 0.999},  # tests check orchestration, not model quality
    "features": {"partition_events": 15_000},
    # ef above the shard size makes HNSW search exhaustive, so any runner gives the same answer
    "index": {"shards": SHARDS, "ef": 5000, "recall_queries": 50, "threads": 1},
    "audience": {"min_audience_size": 10, "min_seed_size": 20, "distinctiveness_sample": 500,
                 "report_sample": 1000, "quality_estimate": False},
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
    return Counter({**{name: 1 for name in STEP_NAMES}, "step_features_part": FEATURE_PARTS,
                    "step_embed_part": SHARDS, "step_index_shard": SHARDS})


@pytest.fixture(scope="module")
def first_build(inputs: Inputs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("work")
    state = build_flow(**inputs.build_kwargs(workdir), return_state=True)
    assert state.is_completed(), state.message
    return {"workdir": workdir, "result": state.result(),
            "flow_run_id": state.state_details.flow_run_id}


def poll(fetch: Callable[[], T], done: Callable[[T], bool], timeout: float) -> T:
    """``fetch()`` until ``done`` accepts it or ``timeout`` seconds pass; the last value."""
    deadline = time.monotonic() + timeout
    while not done(value := fetch()) and time.monotonic() < deadline:
        time.sleep(0.5)
    return value


def task_run_counts(flow_run_id: UUID, expected: Counter[str], timeout: float = 60) -> Counter[str]:
    """Completed task runs of a flow run by task name, once the API shows ``expected`` of them."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        def counts() -> Counter[str]:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            return Counter(run.name.rsplit("-", 1)[0]  # "<task name>-<suffix>"
                           for run in runs if run.state and run.state.is_completed())

        return poll(counts, expected.__eq__, timeout)


def flow_run_logs(flow_run_id: UUID, needle: str, timeout: float = 30) -> str:
    """The API log of a flow run (its tasks included), once it mentions ``needle``."""
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        def text() -> str:
            logs = client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            return "\n".join(log.message for log in logs)

        return poll(text, lambda logs: needle in logs, timeout)


def test_build_runs_every_step_as_a_task_and_makes_the_build_current(first_build, inputs):
    result = first_build["result"]
    workdir = Workdir(first_build["workdir"])
    assert result["reused"] is False
    assert workdir.current().build_id == result["build_id"]
    manifest = read_json(workdir.current().manifest)
    assert manifest["steps"]["index"]["count"] == USERS
    assert manifest["steps"]["index"]["shards"] == SHARDS
    assert not (workdir.current().embeddings_dir / "parts").exists()  # read by the shards, removed
    assert sorted(f for f in manifest["files"] if f.startswith("embeddings/")) == [
        "embeddings/embeddings.json", "embeddings/embeddings.npy", "embeddings/users.parquet"]
    expected = Counter({"ingest-and-features": 1, "ingest-and-features-part": FEATURE_PARTS,
                        "ingest-and-features-merge": 1, "measure-drift": 1, "train-encoder": 1,
                        "embed-population": SHARDS, "embed-population-assemble": 1,
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
    assert Path(flow_result["report_md"]).is_file() and Path(flow_result["report_html"]).is_file()


def test_unchanged_inputs_reuse_the_build_without_running_a_step(first_build, inputs, step_calls):
    result = build_flow(**inputs.build_kwargs(first_build["workdir"]))

    assert result == {**first_build["result"], "reused": True}
    assert sum(step_calls.values()) == 0


def test_a_build_with_a_missing_file_is_built_again(first_build, inputs, tmp_path, step_calls):
    workdir = tmp_path / "work"
    shutil.copytree(first_build["workdir"], workdir)
    build = Workdir(workdir).current()
    expected = np.load(build.embeddings)
    build.embeddings.unlink()

    result = build_flow(**inputs.build_kwargs(workdir))

    assert result == {**first_build["result"], "reused": False, "path": str(build.root)}
    assert step_calls == full_build_calls()
    np.testing.assert_array_equal(np.load(build.embeddings), expected)
    assert steps.reusable(Workdir(workdir).current())


def test_preparing_a_build_sweeps_only_its_own_stale_temporary_files(first_build, inputs, tmp_path):
    workdir = Workdir(tmp_path / "work")
    request = steps.BuildRequest(events=inputs.events, profiles=inputs.profiles,
                                 conversions=inputs.conversions, as_of=inputs.as_of,
                                 config=load_config(inputs.config))
    own_folder = workdir.build(first_build["result"]["build_id"]).root
    own = own_folder / f".features.parquet{TEMP_MARKER}1-a"
    others = [workdir.build("another").root / f".features.parquet{TEMP_MARKER}2-b",
              workdir.audience_dir("buyers") / f".last.parquet{TEMP_MARKER}3-c"]
    for path in (own, *others):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"partial")

    build, _ = steps.prepare_build(workdir, request)

    assert build.root == own.parent
    assert not own.exists()
    assert all(path.exists() for path in others)


def test_a_changed_input_refreshes_every_step_with_the_current_encoder(first_build, inputs,
                                                                       tmp_path, step_calls,
                                                                       monkeypatch):
    workdir = tmp_path / "work"
    shutil.copytree(first_build["workdir"], workdir)
    conversions = pl.read_parquet(inputs.conversions)
    changed = tmp_path / "conversions.parquet"
    conversions.head(conversions.height - 5).write_parquet(changed)
    trainings, artifacts = Counter[str](), {}
    monkeypatch.setattr("lookalike.encoder.train.train",
                        lambda *a, **k: trainings.update(["train"]))
    monkeypatch.setattr("flows.build.create_markdown_artifact",
                        lambda **artifact: artifacts.update({artifact["key"]: artifact["markdown"]}))

    result = build_flow(**inputs.build_kwargs(workdir, conversions=str(changed)))

    first_id = first_build["result"]["build_id"]
    assert result["reused"] is False
    assert result["build_id"] != first_id
    assert Workdir(workdir).current().build_id == result["build_id"]
    assert step_calls == full_build_calls()
    assert not trainings
    manifest = read_json(Workdir(workdir).current().manifest)
    assert manifest["steps"]["train"]["encoder_from"] == first_id
    assert manifest["steps"]["train"]["reason"] == f"refresh: encoder trained by build {first_id}"
    assert manifest["steps"]["drift"]["previous_build"] == first_id
    assert f"# Drift of build {result['build_id']} against {first_id}" in artifacts["lookalike-drift"]
    assert f"encoder from build {first_id}: refresh" in artifacts["lookalike-build"]


def test_the_scheduled_pipeline_refreshes_between_retrains_and_retrains_on_drift(inputs, tmp_path):
    day2 = tmp_path / "day2"
    day2.mkdir()
    for table in ("events", "profiles"):
        shutil.copy(getattr(inputs, table), day2 / f"{table}.parquet")
    conversions = pl.read_parquet(inputs.conversions)
    conversions.head(conversions.height - 5).write_parquet(day2 / "conversions.parquet")
    days = [Path(inputs.events).parent, day2, drifted_copy(day2, tmp_path / "day3")]
    runs = []
    for number, data in enumerate(days, start=1):
        config = yaml.safe_load(Path(inputs.config).read_text())
        config["schedule"] = {"workdir": str(tmp_path / "work"),
                              **{t: str(data / f"{t}.parquet")
                                 for t in ("events", "profiles", "conversions")}}
        path = tmp_path / f"day{number}.yaml"
        path.write_text(yaml.safe_dump(config))
        state = pipeline_flow(str(path), return_state=True)
        assert state.is_completed(), state.message
        build = state.result()["build"]
        runs.append({"train": read_json(Path(build["path"]) / "manifest.json")["steps"]["train"],
                     "build_id": build["build_id"], "flow_run": state.state_details.flow_run_id})

    first, second, third = runs
    assert first["train"]["reason"] == "retrain: no previous build"
    assert second["train"]["encoder_from"] == first["build_id"]
    assert second["train"]["reason"] == f"refresh: encoder trained by build {first['build_id']}"
    assert third["train"]["encoder_from"] == third["build_id"]
    assert third["train"]["reason"].startswith("retrain: drift ")
    for run in runs:
        build_run = build_subflow_run(run["flow_run"])
        assert f"encoder: {run['train']['reason']}" in flow_run_logs(build_run, "encoder: ")
        done = f"build {run['build_id']} done in "
        assert [line for line in flow_run_logs(build_run, done).splitlines()
                if line.startswith(done) and line.endswith(f"s ({run['train']['reason']})")]


def build_subflow_run(pipeline_run: UUID) -> UUID:
    """The id of the build flow a pipeline run ran (its logs are under that flow run)."""
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[pipeline_run])))
    (build,) = children  # a pipeline without audiences runs only the build flow
    return build.id


def test_an_io_error_is_retried_and_the_build_completes(inputs, tmp_path, monkeypatch, step_calls):
    embed = steps.step_embed_part
    failures = Counter[str]()

    def embed_failing_once(*args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures["embed"] += 1
            raise OSError("stale file handle (injected)")
        return embed(*args, **kwargs)

    monkeypatch.setattr(steps, "step_embed_part", embed_failing_once)
    state = build_flow(**inputs.build_kwargs(tmp_path / "work"), return_state=True)

    assert state.is_completed(), state.message
    assert failures["embed"] == 1
    # the successful retry of the failed partition and the other partition (the failed try
    # raised first)
    assert step_calls["step_embed_part"] == SHARDS
    assert Workdir(tmp_path / "work").current().build_id == state.result()["build_id"]


def test_a_failing_step_removes_its_build_and_fails_the_flow(first_build, inputs, tmp_path,
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
    assert [p.name for p in (workdir / "builds").iterdir()] == [first_build["result"]["build_id"]]
    assert not [p for p in workdir.rglob("*") if TEMP_MARKER in p.name]
    assert (workdir / "current.json").read_bytes() == pointer_before
    logs = flow_run_logs(state.state_details.flow_run_id, "device full while writing Parquet")
    assert "device full while writing Parquet" in logs


def test_dask_runner_with_two_workers_gives_the_default_runners_files_and_audience(
        first_build, inputs, tmp_path):
    """The build and export flows on a local Dask cluster of 2 worker processes write what the
    default runner writes: byte-equal embeddings, users and index shards (hnswlib with one thread
    and a fixed seed is deterministic), and the same audience (users, order, scores)."""
    dask = task_runner_options("dask", workers=2)
    result = build_flow.with_options(**dask)(**inputs.build_kwargs(tmp_path / "work"))
    default_build = Workdir(first_build["workdir"]).current()
    dask_build = Workdir(tmp_path / "work").current()

    assert result["build_id"] == default_build.build_id
    for path in (dask_build.embeddings, dask_build.users):
        assert path.read_bytes() == (default_build.root / path.relative_to(dask_build.root)
                                     ).read_bytes(), path.name
    dask_manifest, default_manifest = (read_json(b.manifest) for b in (dask_build, default_build))
    assert {f: h for f, h in dask_manifest["files"].items() if f.startswith(("embeddings/", "index/shard-"))} == {
        f: h for f, h in default_manifest["files"].items() if f.startswith(("embeddings/", "index/shard-"))}
    assert not (dask_build.embeddings_dir / "parts").exists()

    audiences = [
        pl.read_parquet(flow(workdir=str(build.root.parents[1]), seeds=inputs.seeds,
                             out=str(tmp_path / f"{name}.parquet"), size=AUDIENCE_SIZE,
                             config_path=inputs.config)["audience"])
        for name, build, flow in (("dask", dask_build, export_flow.with_options(**dask)),
                                  ("default", default_build, export_flow))
    ]
    assert audiences[0].height == AUDIENCE_SIZE
    assert audiences[0].select("user_id", "rank", "score").equals(
        audiences[1].select("user_id", "rank", "score"))


@pytest.mark.slow
def test_served_deployment_runs_on_its_cron_schedule(inputs, tmp_path):
    """A real server (SQLite) and ``lookalike serve``: the scheduler's own run must complete.

    Only a run the scheduler created catches a broken scheduler (STACK_NOTES: SQLAlchemy 2.1).
    Its start time is then moved to now, so the test does not wait for the next minute.
    """
    config = write_schedule_config(inputs, tmp_path)
    with served(config, tmp_path) as (api, logs):
        run = wait_for(lambda: scheduled_run(api), 90, "the scheduler to create a run", logs)
        start_now(api, run["id"])
        final = wait_for(lambda: finished(api, run["id"]), 150, "the scheduled run to finish", logs)
        assert final["state"]["type"] == "COMPLETED", (final["state"], tail(logs))

    audience = tmp_path / "out" / "scheduled.parquet"
    expected = export_audience(Workdir(tmp_path / "work").current(), inputs.seeds,
                               tmp_path / "reference.parquet", size=AUDIENCE_SIZE,
                               config=load_config(config), progress=lambda _: None)
    query = "SELECT user_id, rank FROM read_parquet(?) ORDER BY rank"
    assert duckdb.execute(query, [str(audience)]).fetchall() == duckdb.execute(
        query, [str(expected.audience)]).fetchall()
    assert duckdb.execute("SELECT count(*) FROM read_parquet(?)",
                          [str(audience)]).fetchone() == (AUDIENCE_SIZE,)


@contextlib.contextmanager
def served(config: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A real Prefect server on a free local port and ``lookalike serve --config`` against it;
    yields the API URL and the folder of both processes' logs, and stops both afterwards."""
    api = f"http://127.0.0.1:{free_port()}/api"
    env = server_env(api, tmp_path / "prefect-home")
    logs = tmp_path / "logs"
    logs.mkdir()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(start([sys.executable, "-m", "prefect", "server", "start", "--host",
                                "127.0.0.1", "--port", api.split(":")[-1].split("/")[0],
                                "--no-ui"], env, logs / "server.log"))
        wait_for(lambda: healthy(api), 120, "the Prefect server to be healthy", logs)
        processes.append(start([sys.executable, "-m", "flows.cli", "serve", "--config",
                                str(config)], env, logs / "serve.log"))
        yield api, logs
    finally:
        for process in reversed(processes):  # serve first: it hangs if the server goes first
            stop(process)


def write_schedule_config(inputs: Inputs, folder: Path) -> Path:
    config = yaml.safe_load(Path(inputs.config).read_text())
    config["schedule"] = {
        "workdir": "work", "events": inputs.events, "profiles": inputs.profiles,
        "conversions": inputs.conversions, "cron": "* * * * *",
        "audiences": [{"name": "scheduled", "seeds": inputs.seeds, "size": AUDIENCE_SIZE,
                       "out": "out/scheduled.parquet"}],
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_env(api: str, home: Path) -> dict[str, str]:
    """Its own PREFECT_HOME (SQLite database) and this worktree's code in every subprocess."""
    return {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": api,
            "PREFECT_RUNNER_POLL_FREQUENCY": "2", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1", "PYTHONPATH": str(REPO)}


def start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def stop(process: subprocess.Popen[bytes], grace_seconds: float = 30) -> None:
    """SIGTERM to the process group it leads (its flow-run or uvicorn children), then SIGKILL."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(grace_seconds)


def wait_for(check: Callable[[], Any], timeout: float, what: str, logs: Path) -> Any:
    if found := poll(check, bool, timeout):
        return found
    pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n{tail(logs)}")


def tail(logs: Path, lines: int = 30) -> str:
    return "\n".join(f"--- {log.name}\n" + "\n".join(log.read_text().splitlines()[-lines:])
                     for log in sorted(logs.iterdir()))


def healthy(api: str) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=5).is_success
    except httpx.HTTPError:
        return False


def scheduled_run(api: str) -> dict[str, Any] | None:
    """A flow run of the deployment that the scheduler (not a manual trigger) created."""
    runs = httpx.post(f"{api}/flow_runs/filter", json={
        "deployments": {"name": {"any_": ["scheduled"]}},
        "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
        "sort": "EXPECTED_START_TIME_ASC", "limit": 1,
    }, timeout=10).raise_for_status().json()
    return runs[0] if runs and runs[0]["auto_scheduled"] else None


def start_now(api: str, flow_run_id: str) -> None:
    httpx.post(f"{api}/flow_runs/{flow_run_id}/set_state", json={
        "state": {"type": "SCHEDULED", "name": "Scheduled",
                  "state_details": {"scheduled_time": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                    time.gmtime())}},
        "force": True,
    }, timeout=10).raise_for_status()


def finished(api: str, flow_run_id: str) -> dict[str, Any] | None:
    run = httpx.get(f"{api}/flow_runs/{flow_run_id}", timeout=10).raise_for_status().json()
    return run if run["state"]["type"] in {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"} else None


def test_serve_refuses_an_unreachable_server_with_a_way_to_start_one(inputs):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.deploy import check_server

    url = f"http://127.0.0.1:{free_port()}/api"
    with temporary_settings(updates={PREFECT_API_URL: url}):
        with pytest.raises(LookalikeError, match="prefect server start") as error:
            check_server(timeout_seconds=2)
    assert url in str(error.value)


def test_serve_needs_the_schedule_inputs_in_the_config(inputs):
    from flows.deploy import pipeline_deployment

    with pytest.raises(LookalikeError, match="schedule.workdir and schedule.conversions"):
        pipeline_deployment(inputs.config)


def lookalike(*arguments: str) -> tuple[int, str]:
    """Exit code and combined output of ``lookalike ARGUMENTS`` in a fresh process, with
    PREFECT_API_URL set to this session's server (found by the command, as a user's would be)."""
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value(), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "flows.cli", *arguments], env=env, cwd=REPO,
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    return done.returncode, done.stdout


def test_commands_print_progress_lines_and_prefect_logs_only_with_verbose(first_build, inputs, tmp_path):
    command = ["export", "--workdir", str(first_build["workdir"]), "--seeds", inputs.seeds,
               "--size", str(AUDIENCE_SIZE), "--config", inputs.config]
    verbose = lookalike("--verbose", *command, "--out", str(tmp_path / "verbose.parquet"))
    quiet = lookalike(*command, "--out", str(tmp_path / "quiet.parquet"))

    assert verbose[0] == quiet[0] == 0, (verbose, quiet)
    assert "Finished in state Completed" in verbose[1] and "lookalike-export" in verbose[1]
    assert "Finished in state" not in quiet[1] and "Flow run" not in quiet[1]
    assert re.search(r"^ +\d+\.\ds  seeds: \d+ rows, \d+ matched", quiet[1], re.MULTILINE), quiet[1]
    assert quiet[1].strip().splitlines()[-1] == (
        f"report:   {tmp_path / 'quiet.report.md'}, {tmp_path / 'quiet.report.html'}")


def test_a_failing_flow_prints_its_error_once_and_last(first_build, tmp_path):
    seeds = tmp_path / "seeds.csv"
    seeds.write_text("user_id,weight\n1,1.0\n,2.0\n")
    for verbosity in ([], ["--verbose"]):
        code, output = lookalike(*verbosity, "export", "--workdir", str(first_build["workdir"]),
                                 "--seeds", str(seeds), "--size", "50", "--out", str(tmp_path / "a.parquet"))
        lines = output.strip().splitlines()
        assert code == 1
        assert lines[-1].startswith(f"error: {seeds}: column 'user_id': has null"), output
        assert sum(line.startswith("error:") for line in lines) == 1, output
        assert ("Finished in state Failed" in output) == bool(verbosity), output


def test_build_command_names_the_task_runners_it_knows(inputs, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["build", "--workdir", str(tmp_path), "--events",
                                      inputs.events, "--conversions", inputs.conversions,
                                      "--task-runner", "spark"])
    assert result.exit_code == 1
    assert "unknown task runner 'spark': use default or dask" in result.output

"""Fault injection: SIGKILL a build or an export at a random moment, then check what is left.

A trial runs the library build (:func:`lookalike.build_steps.run_build`) or export
(:func:`lookalike.audience.export.export_audience`) in a subprocess and kills it after a random delay. Then:

- the current build is complete and loadable: every manifest checksum verifies, embeddings and
  users have the same row count, the index loads (checksum-verified);
- the last audience file reads as Parquet with the expected row count;
- a restart finishes; when the killed build had saved a training checkpoint, the restart says
  ``resuming after epoch`` (it continues instead of starting over).

The workdir is reset after each trial (the new build deleted, the first one made current again) so
every trial starts from the same state: one complete build and one exported audience.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from lookalike.testing.fixtures import request_for

from lookalike.build_steps import run_build
from lookalike.core.workdir import verify_build
from lookalike.core.config import LookalikeConfig
from lookalike.audience.export import export_audience
from lookalike.search.index import AnnIndex
from lookalike.core.workdir import Workdir

ROOT = Path(__file__).resolve().parents[2]
AUDIENCE_SIZE = 200

CHILD = """
import sys
from lookalike.build_steps import BuildRequest, run_build
from lookalike.core.config import LookalikeConfig
from lookalike.audience.export import export_audience
from lookalike.core.workdir import Workdir
from pathlib import Path
mode, workdir, data, config_file, seeds, out = sys.argv[1:7]
config = LookalikeConfig.model_validate_json(Path(config_file).read_text())
say = lambda message: print(message, flush=True)
say("started")
if mode == "build":
    tables = {{name: str(Path(data) / f"{{name}}.parquet")
              for name in ("events", "profiles", "conversions")}}
    run_build(Workdir(workdir), BuildRequest(**tables, config=config), progress=say)
else:
    export_audience(Workdir(workdir).current(), seeds, out, size={size}, name="trial",
                    config=config, progress=say)
print("done", flush=True)
"""


@dataclass(frozen=True)
class Setup:
    """A workdir with one complete build and one audience, plus what a trial needs."""

    root: Path
    data: Path
    config: LookalikeConfig  # of the first build
    killed_config: LookalikeConfig  # of the builds that get killed (another build id)
    seeds: Path
    audience: Path
    first_build: str

    @property
    def workdir(self) -> Workdir:
        return Workdir(self.root / "work")


@dataclass(frozen=True)
class Trial:
    kind: str  # "build" or "export"
    delay_s: float
    killed: bool  # False: the process had finished before the kill
    last_line: str  # the child's last progress line: where the kill landed
    survived: bool  # current build and audience complete and loadable after the kill
    restarted: bool  # the restart finished and left a complete, loadable state
    checkpoint_left: bool
    resumed: bool  # the restart said "resuming after epoch"
    problem: str = ""


def prepare(root: Path, data: Path, config: LookalikeConfig, seeds: Path) -> Setup:
    """Build once, export once; killed builds train longer (more checkpoints to resume from)."""
    killed_config = config.model_copy(
        update={"train": config.train.model_copy(update={"seed": 1, "epochs": 12, "patience": 12})}
    )
    workdir, audience = Workdir(root / "work"), root / "out" / "audience.parquet"
    build = run_build(workdir, request_for(data, config), progress=lambda _m: None)
    export_audience(build, seeds, audience, size=AUDIENCE_SIZE, name="trial", config=config,
                    progress=lambda _m: None)
    setup = Setup(root, data, config, killed_config, seeds, audience, build.build_id)
    (root / "killed.json").write_text(killed_config.model_dump_json())
    (root / "first.json").write_text(config.model_dump_json())
    return setup


def check_state(setup: Setup) -> str:
    """'' when the current build and the audience are complete and loadable, else the problem."""
    try:
        build = setup.workdir.current()
        verify_build(build)
        rows = len(np.load(build.embeddings, mmap_mode="r"))
        if pl.read_parquet(build.users).height != rows:
            return "embeddings and users differ in rows"
        AnnIndex.load(build.index_dir, threads=1)
        if pl.read_parquet(setup.audience).height != AUDIENCE_SIZE:
            return "audience has the wrong row count"
    except Exception as exc:  # any failure to load is what the trial looks for
        return f"{type(exc).__name__}: {exc}"
    return ""


def _child(setup: Setup, mode: str, config_name: str) -> subprocess.Popen[str]:
    script = CHILD.format(size=AUDIENCE_SIZE)
    args = [sys.executable, "-c", script, mode, str(setup.workdir.root), str(setup.data),
            str(setup.root / config_name), str(setup.seeds), str(setup.audience)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def _run_killed(setup: Setup, mode: str, config_name: str, delay: float) -> tuple[bool, str]:
    """Start the job, wait until its imports are done (start-up time varies with the machine's
    load), then kill it ``delay`` seconds later; the last line it printed says where."""
    child = _child(setup, mode, config_name)
    assert child.stdout is not None
    lines = [child.stdout.readline()]
    time.sleep(delay)
    killed = child.poll() is None
    if killed:
        child.send_signal(signal.SIGKILL)
    output, _ = child.communicate()
    lines += [line for line in output.splitlines() if line.strip()]
    return killed, lines[-1].strip()


def kill_build_after(setup: Setup, marker: str) -> tuple[str, bool]:
    """Kill a build as soon as it prints a line containing ``marker``; restart it.

    Returns the restart's output and whether a training checkpoint was left by the killed run.
    """
    child = _child(setup, "build", "killed.json")
    assert child.stdout is not None
    for line in child.stdout:
        if marker in line:
            child.send_signal(signal.SIGKILL)
            break
    child.communicate()
    new_builds = [p for p in setup.workdir.builds_dir.iterdir() if p.name != setup.first_build]
    checkpoint = any((p / "model" / "checkpoints" / "state.json").is_file() for p in new_builds)
    _, output = _restart(setup, "build", "killed.json")
    _reset(setup)
    return output, checkpoint


def _restart(setup: Setup, mode: str, config_name: str) -> tuple[bool, str]:
    child = _child(setup, mode, config_name)
    output, _ = child.communicate()
    return child.returncode == 0, output


def build_trial(setup: Setup, rng: np.random.Generator, max_delay: float) -> Trial:
    """Kill a build of ``killed_config`` after a random delay, check, restart, reset."""
    delay = float(rng.uniform(0.0, max_delay))
    killed, last = _run_killed(setup, "build", "killed.json", delay)
    problem = check_state(setup)
    new_builds = [p for p in setup.workdir.builds_dir.iterdir() if p.name != setup.first_build]
    checkpoint = any((p / "model" / "checkpoints" / "state.json").is_file() for p in new_builds)
    complete = any((p / "manifest.json").is_file() for p in new_builds)
    finished, output = _restart(setup, "build", "killed.json")
    after = check_state(setup)
    resumed = "resuming after epoch" in output
    # a checkpoint of an unfinished build must be resumed, never thrown away
    restarted = finished and not after and (resumed or not checkpoint or complete)
    _reset(setup)
    return Trial("build", delay, killed, last, not problem, restarted, checkpoint, resumed,
                 problem or after)


def export_trial(setup: Setup, rng: np.random.Generator, max_delay: float) -> Trial:
    """Kill an export after a random delay, check, restart."""
    delay = float(rng.uniform(0.0, max_delay))
    killed, last = _run_killed(setup, "export", "first.json", delay)
    problem = check_state(setup)
    finished, _ = _restart(setup, "export", "first.json")
    after = check_state(setup)
    return Trial("export", delay, killed, last, not problem, finished and not after, False, False,
                 problem or after)


def _reset(setup: Setup) -> None:
    """Delete every build but the first and make it current again."""
    for folder in setup.workdir.builds_dir.iterdir():
        if folder.name != setup.first_build:
            shutil.rmtree(folder)
    setup.workdir.set_current(setup.first_build)


def summary(trials: list[Trial]) -> dict[str, object]:
    """Counts for the report: survived / total per kind, kills that landed, resumes."""
    out: dict[str, object] = {}
    for kind in ("build", "export"):
        mine = [t for t in trials if t.kind == kind]
        out[kind] = {
            "trials": len(mine),
            "killed_while_running": sum(t.killed for t in mine),
            "survived": sum(t.survived for t in mine),
            "restarted_ok": sum(t.restarted for t in mine),
            "checkpoint_left": sum(t.checkpoint_left for t in mine),
            "resumed": sum(t.resumed for t in mine),
        }
    out["problems"] = [t.problem for t in trials if t.problem]
    return json.loads(json.dumps(out))

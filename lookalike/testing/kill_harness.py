"""Fault injection: SIGKILL a build, an export or an erasure at a chosen moment of its writes,
then check what is left.

Every job runs in a child process whose file-system writes are *events*: a temporary file is
created (:func:`~lookalike.core.artifacts.atomic_write` or ``scratch_files`` begins a write), a file
is renamed into place (``os.replace``), a folder is renamed (``Path.rename``) or exchanged with
another (``exchange_paths``: the erasure's swap) or removed (``shutil.rmtree``). A dry run of the
job records its events and their times. A trial picks one event of the writer's *window*
(uniformly) and kills the job there: either just before the event's operation (in the job's own
thread, so exactly between two writes), or after a delay drawn uniformly from the time until the
next event (a timer thread; mid-write, mid-compute; the job's last event is always hit before its
operation). So the kills spread over the write window and land while the job runs; each trial
records whether the job died before printing ``done``. Exports use the fast ``knn`` strategy: the
trials test the publish, not the scoring.

Writers and their windows:

- ``build``: every event of a build from scratch (features, training checkpoints, model,
  embeddings, index shards, index manifest, build manifest, ``current.json``);
- ``switch``: the build's last events, from the manifest's temporary file to the ``current.json``
  rename;
- ``export``: the export's publish, from the audience file's temporary file to its last write;
- ``erase``: every event of an erasure (the erased copy, the folder swap, older builds deleted,
  the last exports rewritten).

After the kill: the current build is complete and loadable (every manifest checksum verifies,
embeddings and users have the same row count, the index loads, checksum-verified) and the last
audience file reads with its row count. Then the killed job runs again and must finish and leave
the same checks passing (a build with a training checkpoint must resume from it; an erasure must
leave none of the erased users and no other build). Every trial starts from the same state: one
complete build and one exported audience (and, for erasures, an older build to delete).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from lookalike.audience.export import export_audience
from lookalike.build_steps import run_build
from lookalike.core.config import LookalikeConfig
from lookalike.core.workdir import Workdir, verify_build
from lookalike.search.index import AnnIndex
from lookalike.testing.fixtures import request_for

ROOT = Path(__file__).resolve().parents[2]
AUDIENCE_SIZE = 200
EXPORT_STRATEGY = "knn"
ERASED_USERS = 20
WRITERS = ("build", "switch", "export", "erase")
JOB_OF = {"build": "build", "switch": "build", "export": "export", "erase": "erase"}

CHILD = """
import os, shutil, signal, sys, threading, time
from pathlib import Path
from lookalike.build_steps import BuildRequest, run_build
from lookalike.core import artifacts
from lookalike.core.config import LookalikeConfig
from lookalike.audience.export import export_audience
from lookalike.core.workdir import Workdir
from lookalike import erasure
from lookalike.erasure import erase_users
job, workdir, data, config_file, seeds, out, erase = sys.argv[1:8]
kill_at, kill_delay = int(os.environ.get("KILL_AT", "0")), float(os.environ.get("KILL_DELAY", "0"))
config = LookalikeConfig.model_validate_json(Path(config_file).read_text())
say = lambda message: print(message, flush=True)
started, count = time.monotonic(), 0

def event(kind, path):
    global count
    count += 1
    say(f"event {{count}} {{kind}} {{Path(path).name}} {{time.monotonic() - started:.6f}}")
    if count == kill_at and kill_delay == 0:
        os.kill(os.getpid(), signal.SIGKILL)
    if count == kill_at:
        timer = threading.Timer(kill_delay, os.kill, (os.getpid(), signal.SIGKILL))
        timer.daemon = True
        timer.start()

def hooked(function, kind, position):
    def run(*args, **kwargs):
        event(kind, args[position])
        return function(*args, **kwargs)
    return run

artifacts._temp_path = hooked(artifacts._temp_path, "open", 0)
os.replace = hooked(os.replace, "replace", 1)
shutil.rmtree = hooked(shutil.rmtree, "rmtree", 0)
Path.rename = hooked(Path.rename, "rename", 1)
erasure.exchange_paths = hooked(erasure.exchange_paths, "exchange", 1)
say("started")
if job == "build":
    tables = {{name: str(Path(data) / f"{{name}}.parquet")
              for name in ("events", "profiles", "conversions")}}
    run_build(Workdir(workdir), BuildRequest(**tables, config=config), progress=say)
elif job == "export":
    export_audience(Workdir(workdir).current(), seeds, out, size={size}, name="trial",
                    strategy="{strategy}", config=config, progress=say)
else:
    erase_users(Workdir(workdir), erase, config, progress=say)
say(f"done {{time.monotonic() - started:.6f}}")
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
    erase_list: Path  # users an erasure removes

    @property
    def workdir(self) -> Workdir:
        return Workdir(self.root / "work")

    @property
    def erase_workdir(self) -> Workdir:
        return Workdir(self.root / "erase-work")

    @property
    def erase_pristine(self) -> Path:
        return self.root / "erase-pristine"


@dataclass(frozen=True)
class Event:
    """One write of a job: ``open`` (a temporary file), ``replace``, ``rename``, ``exchange`` or
    ``rmtree``."""

    kind: str
    name: str  # the file or folder name the write is about
    seconds: float  # since the job's imports were done


@dataclass(frozen=True)
class Timeline:
    """The events of an uninterrupted run of a job and when it finished."""

    events: list[Event]
    done_seconds: float

    def window(self, writer: str, audience_name: str) -> list[int]:
        """Indices (from 1) of the writer's events (see the module docstring)."""
        names = [f"{e.kind} {e.name}" for e in self.events]
        first, last = 1, len(self.events)
        if writer == "switch":
            first = _last_index(names, "open manifest.json")
            last = _last_index(names, "replace current.json")
        elif writer == "export":
            first = names.index(f"open {audience_name}") + 1
        return list(range(first, last + 1))

    def gap(self, index: int) -> float:
        """Seconds from event ``index`` to the next one."""
        return max(0.0, self.events[index].seconds - self.events[index - 1].seconds)


@dataclass(frozen=True)
class Trial:
    writer: str
    event: str  # "<kind> <name>" of the event the kill was anchored to
    delay_s: float  # 0: killed just before the event's operation
    landed: bool  # the job was killed before it finished
    survived: bool  # current build and audience complete and loadable after the kill
    restarted: bool  # the job ran again, finished and left a complete, loadable state
    checkpoint_left: bool
    resumed: bool  # the restarted build said "resuming after epoch"
    problem: str = ""


def prepare(root: Path, data: Path, config: LookalikeConfig, seeds: Path) -> Setup:
    """Build once, export once; killed builds train longer (more checkpoints to resume from).

    The erasure trials get their own workdir: a copy of this one plus an older complete build
    (of the killed config), which an erasure deletes.
    """
    killed_config = config.model_copy(
        update={"train": config.train.model_copy(update={"seed": 1, "epochs": 12, "patience": 12})}
    )
    workdir, audience = Workdir(root / "work"), root / "out" / "audience.parquet"
    build = run_build(workdir, request_for(data, config), progress=lambda _m: None)
    export_audience(build, seeds, audience, size=AUDIENCE_SIZE, name="trial",
                    strategy=EXPORT_STRATEGY, config=config, progress=lambda _m: None)
    erase_list = root / "erase.parquet"
    users = pl.read_parquet(build.users).get_column("user_id")
    users.gather(np.arange(0, len(users), len(users) // ERASED_USERS)[:ERASED_USERS]).to_frame() \
        .write_parquet(erase_list)
    setup = Setup(root, data, config, killed_config, seeds, audience, build.build_id, erase_list)
    (root / "killed.json").write_text(killed_config.model_dump_json())
    (root / "first.json").write_text(config.model_dump_json())
    shutil.copytree(workdir.root, setup.erase_pristine)
    run_build(Workdir(setup.erase_pristine), request_for(data, killed_config),
              progress=lambda _m: None)
    Workdir(setup.erase_pristine).set_current(build.build_id)
    _reset(setup, "erase")
    return setup


def check_state(setup: Setup, workdir: Workdir | None = None) -> str:
    """'' when the current build and the audience are complete and loadable, else the problem."""
    try:
        build = (workdir or setup.workdir).current()
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


def check_erased(setup: Setup) -> str:
    """'' when the erasure is complete: no erased user in the current build, no other build."""
    problem = check_state(setup, setup.erase_workdir)
    if problem:
        return problem
    build = setup.erase_workdir.current()
    erased = pl.read_parquet(setup.erase_list).get_column("user_id")
    if pl.read_parquet(build.users).get_column("user_id").is_in(erased.implode()).any():
        return "erased users are still in the current build"
    others = [p.name for p in setup.erase_workdir.builds_dir.iterdir() if p.name != build.build_id]
    return f"builds left beside the current one: {others}" if others else ""


def record_timeline(setup: Setup, writer: str) -> Timeline:
    """The events of an uninterrupted run of the writer's job (the state is reset after it)."""
    finished, lines = _run_job(setup, JOB_OF[writer])
    if not finished:
        raise RuntimeError("the dry run failed:\n" + "\n".join(lines[-20:]))
    events = [Event(p[2], p[3], float(p[4])) for p in (line.split() for line in lines)
              if p[0] == "event"]
    done = float(next(line.split()[1] for line in lines if line.startswith("done ")))
    _reset(setup, JOB_OF[writer])
    return Timeline(events, done)


def kill_trial(setup: Setup, writer: str, timeline: Timeline, rng: np.random.Generator) -> Trial:
    """Kill the writer's job at a random point of its window (see :func:`kill_at`)."""
    index = int(rng.choice(timeline.window(writer, setup.audience.name)))
    last = index == len(timeline.events)  # after the job's last write nothing is left to hit
    delay = 0.0 if last or rng.random() < 0.5 else float(rng.uniform(0.0, timeline.gap(index)))
    return kill_at(setup, writer, timeline, index, delay)


def kill_at(setup: Setup, writer: str, timeline: Timeline, index: int, delay: float) -> Trial:
    """Kill the writer's job at event ``index`` (just before it when ``delay`` is 0, else that
    long after it starts), check, restart, check, reset."""
    job = JOB_OF[writer]
    finished, lines = _run_job(setup, job, kill_at=index, delay=delay)
    landed = not finished and not any(line.startswith("done ") for line in lines)
    workdir = setup.erase_workdir if job == "erase" else setup.workdir
    problem = check_state(setup, workdir)
    new_builds = [p for p in setup.workdir.builds_dir.iterdir() if p.name != setup.first_build]
    checkpoint = job == "build" and any(
        (p / "model" / "checkpoints" / "state.json").is_file() for p in new_builds)
    complete = any((p / "manifest.json").is_file() for p in new_builds)
    restart_finished, restart_lines = _run_job(setup, job)
    after = check_erased(setup) if job == "erase" else check_state(setup)
    if not restart_finished:
        after = f"the restart failed: {restart_lines[-1] if restart_lines else 'no output'}"
    resumed = any("resuming after epoch" in line for line in restart_lines)
    # a checkpoint of an unfinished build must be resumed, never thrown away
    restarted = restart_finished and not after and (resumed or not checkpoint or complete)
    _reset(setup, job)
    event = timeline.events[index - 1]
    return Trial(writer, f"{event.kind} {event.name}", delay, landed, not problem, restarted,
                 checkpoint, resumed, problem or after)


def kill_build_after(setup: Setup, marker: str) -> tuple[str, bool]:
    """Kill a build as soon as it prints a line containing ``marker``; restart it.

    Returns the restart's output and whether a training checkpoint was left by the killed run.
    """
    child = _child(setup, "build")
    assert child.stdout is not None
    for line in child.stdout:
        if marker in line:
            child.send_signal(signal.SIGKILL)
            break
    child.communicate()
    new_builds = [p for p in setup.workdir.builds_dir.iterdir() if p.name != setup.first_build]
    checkpoint = any((p / "model" / "checkpoints" / "state.json").is_file() for p in new_builds)
    _, lines = _run_job(setup, "build")
    _reset(setup, "build")
    return "\n".join(lines), checkpoint


def _child(setup: Setup, job: str, kill_at: int = 0, delay: float = 0.0) -> subprocess.Popen[str]:
    workdir = setup.erase_workdir if job == "erase" else setup.workdir
    config = "killed.json" if job == "build" else "first.json"
    script = CHILD.format(size=AUDIENCE_SIZE, strategy=EXPORT_STRATEGY)
    args = [sys.executable, "-c", script, job, str(workdir.root),
            str(setup.data), str(setup.root / config), str(setup.seeds), str(setup.audience),
            str(setup.erase_list)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "KILL_AT": str(kill_at), "KILL_DELAY": str(delay)}
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env)


def _run_job(setup: Setup, job: str, kill_at: int = 0,
             delay: float = 0.0) -> tuple[bool, list[str]]:
    """Run a job (killed at event ``kill_at`` when given); whether it finished, its lines."""
    child = _child(setup, job, kill_at, delay)
    output, _ = child.communicate()
    return child.returncode == 0, [line for line in output.splitlines() if line.strip()]


def _reset(setup: Setup, job: str) -> None:
    """Back to the starting state: for builds, every build but the first deleted and the first
    current again; for erasures, the erasure workdir copied afresh."""
    if job == "erase":
        shutil.rmtree(setup.erase_workdir.root, ignore_errors=True)
        shutil.copytree(setup.erase_pristine, setup.erase_workdir.root)
        return
    for folder in setup.workdir.builds_dir.iterdir():
        if folder.name != setup.first_build:
            shutil.rmtree(folder)
    setup.workdir.set_current(setup.first_build)


def _last_index(names: list[str], name: str) -> int:
    return len(names) - names[::-1].index(name)


def summary(trials: list[Trial]) -> dict[str, object]:
    """Counts per writer: trials, kills that landed before the job finished (and their share),
    states that survived the kill, restarts that finished, checkpoints left and resumed."""
    out: dict[str, object] = {}
    for writer in WRITERS:
        mine = [t for t in trials if t.writer == writer]
        if not mine:
            continue
        out[writer] = {
            "trials": len(mine),
            "landed_before_finish": sum(t.landed for t in mine),
            "landed_share": round(sum(t.landed for t in mine) / len(mine), 3),
            "survived": sum(t.survived for t in mine),
            "restarted_ok": sum(t.restarted for t in mine),
            "checkpoint_left": sum(t.checkpoint_left for t in mine),
            "resumed": sum(t.resumed for t in mine),
        }
    out["corrupt_states"] = sum(not (t.survived and t.restarted) for t in trials)
    out["problems"] = [f"{t.writer} at {t.event} +{t.delay_s:.3f}s: {t.problem}"
                       for t in trials if t.problem]
    return json.loads(json.dumps(out))

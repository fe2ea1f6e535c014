"""Command-line overhead: an ad-hoc ``lookalike export`` against the library call it makes.

On a small synthetic build (``--users``), times ``export_audience`` called in this process (imports
done) and in a fresh process (``lookalike.export_audience``, as a script or notebook calls it), and
``lookalike export`` with the same arguments as a user runs it, in a fresh process, in three set-ups
(and, to explain the imports, a fresh process that only imports the command line and the export
code):

- default, no Prefect server anywhere: the library runs in the command's process (no Prefect);
- ``--prefect`` with no server: the flow, on Prefect's temporary local server;
- a ``prefect server start`` already running (``PREFECT_API_URL``): the flow, reported to it.

Each set-up runs once to warm up (file cache, the temporary server's first database migration),
then the set-ups take turns ``--repeats`` times (a shared machine's load drifts alike for all);
medians are reported. Overhead = command - the library call in a fresh process: what the command
adds to the same work started the same way. Example::

    python benchmarks/bench_cli.py --users 5000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from lookalike.audience.export import export_audience
from lookalike.build_steps import run_build
from lookalike.core.workdir import Workdir
from lookalike.testing.fixtures import reliability_config, request_for, small_data, write_seeds

REPO = Path(__file__).resolve().parent.parent
SIZE, STRATEGY = 500, "centroid"


def command_seconds(root: Path, arguments: list[str], env: dict[str, str], name: str) -> float:
    """Wall seconds of one ``lookalike export`` in a fresh process (fails loudly)."""
    command = [sys.executable, "-m", "flows.cli", "export", "--workdir", str(root / "work"),
               "--seeds", str(root / "seeds.parquet"), "--size", str(SIZE), "--strategy", STRATEGY,
               "--config", str(root / "config.json"), "--out", str(root / "out" / f"{name}.parquet"),
               *arguments]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")
    return seconds


def fresh_library_seconds(root: Path, env: dict[str, str]) -> float:
    """Wall seconds of a fresh process that calls ``lookalike.export_audience`` with the command's
    arguments (the library started as a script starts it)."""
    script = ("import sys, lookalike; lookalike.export_audience(sys.argv[1] + '/work', "
              "sys.argv[1] + '/seeds.parquet', sys.argv[1] + '/out/fresh.parquet', "
              f"size={SIZE}, strategy='{STRATEGY}', config=sys.argv[1] + '/config.json', "
              "progress=lambda _m: None)")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", script, str(root)], env=env, cwd=REPO, check=True)
    return time.perf_counter() - started


def import_seconds(env: dict[str, str]) -> float:
    """Wall seconds of a fresh process that only imports the command line and the export."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import flows.cli, lookalike.audience.export"], env=env,
                   cwd=REPO, check=True)
    return time.perf_counter() - started


def medians(runs: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Each run once to warm up, then all of them in turn ``repeats`` times; median seconds."""
    times: dict[str, list[float]] = {name: [] for name in runs}
    for name, run in runs.items():
        run()
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(run())
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def prefect_server(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    """``prefect server start`` on a free port, once healthy; the process and its API URL."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host",
                               "127.0.0.1", "--port", str(port), "--no-ui"],
                              env={**env, "PREFECT_HOME": str(home)}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{api}/health", timeout=2) as response:
                if response.status == 200:
                    return server, api
        except OSError:
            time.sleep(0.5)
    os.killpg(server.pid, signal.SIGKILL)
    raise SystemExit("the Prefect server did not become healthy in 180 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = reliability_config()
        (root / "config.json").write_text(config.model_dump_json())
        data = small_data(root / "data", args.users)
        write_seeds(data, root / "seeds.parquet", count=100)
        build = run_build(Workdir(root / "work"), request_for(data, config), progress=lambda _m: None)

        def library() -> float:
            started = time.perf_counter()
            export_audience(build, root / "seeds.parquet", root / "out" / "library.parquet",
                            size=SIZE, strategy=STRATEGY, config=config, progress=lambda _m: None)
            return time.perf_counter() - started

        env = {key: value for key, value in os.environ.items() if key != "PREFECT_API_URL"}
        env.update({"PREFECT_HOME": str(root / "prefect-home"), "PYTHONPATH": str(REPO),
                    "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"})
        server, api = prefect_server(root / "server-home", env)
        try:
            figures = medians({
                "library_call": library,
                "library call, fresh process": lambda: fresh_library_seconds(root, env),
                "imports alone (fresh process)": lambda: import_seconds(env),
                "default (no server: library in process)":
                    lambda: command_seconds(root, [], env, "default"),
                "--prefect (temporary server)":
                    lambda: command_seconds(root, ["--prefect"], env, "temporary"),
                "running server (PREFECT_API_URL)":
                    lambda: command_seconds(root, [], {**env, "PREFECT_API_URL": api}, "server"),
            }, args.repeats)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(30)

    fresh_s = figures["library call, fresh process"]
    print(f"| `lookalike export` ({args.users:,} users, {STRATEGY}, size {SIZE}) | seconds | "
          "over the library call in a fresh process |")
    print("|---|---|---|")
    for name, seconds in figures.items():
        print(f"| {name} | {seconds:.2f} | {seconds - fresh_s:+.2f} |")
    print(json.dumps({"args": vars(args), "seconds": figures}))


if __name__ == "__main__":
    main()

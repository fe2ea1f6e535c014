"""Kill trials of a build publishing to an object store (issue 19, part 4): SIGKILL a build into
an ``s3://`` workdir (a moto server on 127.0.0.1), then check that the remote ``current.json``
still names a build whose manifest verifies and that a re-run publishes the new build.

Each trial builds with a new config (a new build id, the encoder refreshed, no training) in a
subprocess killed either right after its N-th upload (N drawn from 1 to the build's file count
plus one: the last is after the manifest, before the pointer) or after a random delay within the
subprocess's run time (most land before the first upload). Prints one line per trial and the
counts as JSON: ``intact`` (the remote current build verifies), ``on_previous`` (it is still the
previous build: every kill before the pointer upload), ``late`` (the build finished, or was killed
after writing the pointer); exits non-zero on any state that does not verify, any kill by upload
count that moved the pointer, or a re-run that did not publish. Example::

    python benchmarks/bench_object_store_kills.py --trials 12
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import fsspec
import numpy as np

import lookalike
from lookalike.core.errors import ArtifactError
from lookalike.testing.fixtures import reliability_config, small_data
from lookalike.testing.object_store import s3_server, verify_remote_current

BUCKET = "bench"


def build_command(url: str, config: Path, inputs: str, kill_after: int) -> list[str]:
    return [sys.executable, "-m", "lookalike.testing.object_store", url, str(config), inputs,
            str(kill_after)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--users", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    counts = {"trials": 0, "killed": 0, "killed_in_upload": 0, "intact": 0, "on_previous": 0,
              "late": 0, "reran": 0}
    with tempfile.TemporaryDirectory() as tmp, s3_server(BUCKET):
        root = Path(tmp)
        os.environ["LOOKALIKE_CACHE"] = str(root / "cache")
        data = small_data(root / "data", args.users)
        s3 = fsspec.filesystem("s3", skip_instance_cache=True)
        for name in ("events", "profiles", "conversions"):
            s3.put_file(str(data / f"{name}.parquet"), f"{BUCKET}/data/{name}.parquet")
        url, inputs = f"s3://{BUCKET}/work", f"s3://{BUCKET}/data"
        tables = {k: f"{inputs}/{k}.parquet" for k in ("events", "profiles", "conversions")}
        lookalike.build(url, **tables, config=reliability_config(), progress=lambda line: None)
        current = verify_remote_current(url)
        files = len(json.loads(s3.cat_file(f"{BUCKET}/work/builds/{current}/manifest.json"))["files"])
        config = root / "config.json"
        config.write_text(json.dumps(reliability_config(index={"recall_queries": 30}).model_dump(mode="json")))
        started = time.perf_counter()
        subprocess.run(build_command(f"s3://{BUCKET}/dry", config, inputs, 0), check=True)
        run_seconds = time.perf_counter() - started
        for trial in range(args.trials):
            cfg = reliability_config(index={"recall_queries": 31 + trial})
            config.write_text(json.dumps(cfg.model_dump(mode="json")))
            by_upload = trial % 2 == 0
            kill_after = int(rng.integers(1, files + 2)) if by_upload else 0
            process = subprocess.Popen(build_command(url, config, inputs, kill_after),
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            if not by_upload:
                time.sleep(float(rng.uniform(0, run_seconds)))
                process.kill()
            code = process.wait()
            counts["trials"] += 1
            counts["killed"] += code == -9
            counts["killed_in_upload"] += by_upload and code == -9
            try:
                state = verify_remote_current(url)
            except ArtifactError as exc:
                state = f"does not verify: {exc}"
            counts["intact"] += "verify" not in state
            counts["on_previous"] += state == current
            counts["late"] += not by_upload and "verify" not in state and state != current
            lookalike.build(url, **tables, config=cfg, progress=lambda line: None)
            rerun = verify_remote_current(url)
            counts["reran"] += rerun != current
            how = f"after upload {kill_after} of {files + 1}" if by_upload else "after a delay"
            print(f"trial {trial}: killed {how} (exit {code}); current after the kill {state} "
                  f"(previous {current}); re-run published {rerun}")
            current = rerun
    print(json.dumps(counts))
    by_upload_trials = (args.trials + 1) // 2
    held = counts["intact"] == counts["reran"] == counts["trials"] and \
        counts["on_previous"] + counts["late"] == counts["trials"] and \
        counts["on_previous"] >= by_upload_trials
    sys.exit(0 if held else 1)


if __name__ == "__main__":
    main()

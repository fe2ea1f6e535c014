"""A workdir, inputs and exported audiences on S3 (a moto server on 127.0.0.1): the same build
and audience as on a local disk, erasure, and builds killed while they publish."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import fsspec
import polars as pl
import pytest

import lookalike
from lookalike.audience.export import ExportResult
from lookalike.core.errors import ArtifactError
from lookalike.core.workdir import Workdir
from lookalike.erasure import erase_users
from lookalike.object_store import RemoteWorkdir, erase_at, mirror_folder
from lookalike.testing.fixtures import reliability_config, small_data, write_seeds
from lookalike.testing.object_store import s3_server, verify_remote_current

BUCKET = "lookalike-test"
CONFIG = reliability_config()


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> fsspec.AbstractFileSystem:
    cache = tmp_path_factory.mktemp("cache")
    with s3_server(BUCKET), pytest.MonkeyPatch.context() as patch:
        patch.setenv("LOOKALIKE_CACHE", str(cache))
        yield fsspec.filesystem("s3", skip_instance_cache=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, s3: fsspec.AbstractFileSystem) -> Path:
    """The synthetic tables on disk, uploaded to s3://BUCKET/data/ too, with a seed list."""
    folder = small_data(tmp_path_factory.mktemp("data"))
    write_seeds(folder, folder / "seeds.parquet")
    for name in ("events", "profiles", "conversions", "seeds"):
        s3.put_file(str(folder / f"{name}.parquet"), f"{BUCKET}/data/{name}.parquet")
    return folder


def build(workdir: str | Path, data: str | Path, config: object = CONFIG) -> str | Path:
    return lookalike.build(workdir, events=f"{data}/events.parquet",
                           profiles=f"{data}/profiles.parquet",
                           conversions=f"{data}/conversions.parquet", config=config,
                           progress=lambda line: None)


def export(workdir: str | Path, seeds: str, out: str | Path) -> ExportResult:
    return lookalike.export_audience(workdir, seeds, out, size=300, config=CONFIG,
                                     progress=lambda line: None)


def read_audience(s3: fsspec.AbstractFileSystem, url: str) -> pl.DataFrame:
    with s3.open(url, "rb") as fh:
        return pl.read_parquet(fh)


def test_build_and_export_on_s3_equal_the_local_disk(
        s3: fsspec.AbstractFileSystem, data: Path, tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/same"
    remote_build = build(url, f"s3://{BUCKET}/data")
    local_build = build(tmp_path / "work", data)
    assert remote_build == f"{url}/builds/{Path(local_build).name}"
    assert verify_remote_current(url) == Path(local_build).name
    out = f"s3://{BUCKET}/out/buyers.parquet"
    result = export(url, f"s3://{BUCKET}/data/seeds.parquet", out)
    local = export(tmp_path / "work", str(data / "seeds.parquet"), tmp_path / "buyers.parquet")
    assert result.audience == out and result.report_md == f"s3://{BUCKET}/out/buyers.report.md"
    expected = pl.read_parquet(local.audience)
    assert expected.height == 300
    assert read_audience(s3, out).select("user_id", "score").equals(
        expected.select("user_id", "score"))
    assert s3.exists(f"{BUCKET}/out/buyers.report.json")
    assert s3.exists(f"{BUCKET}/same/audiences/buyers/last.parquet")


def test_the_flows_build_and_export_on_s3_like_the_library(
        s3: fsspec.AbstractFileSystem, data: Path, tmp_path: Path, prefect_harness: None) -> None:
    from flows.build import build_flow
    from flows.export import export_flow

    url, inputs = f"s3://{BUCKET}/flows", f"s3://{BUCKET}/data"
    config = tmp_path / "config.json"
    config.write_text(CONFIG.model_dump_json())
    built = build_flow(workdir=url, events=f"{inputs}/events.parquet",
                       profiles=f"{inputs}/profiles.parquet",
                       conversions=f"{inputs}/conversions.parquet", config_path=str(config))
    local_build = build(tmp_path / "work", data)
    assert built["path"] == f"{url}/builds/{Path(local_build).name}"
    assert verify_remote_current(url) == Path(local_build).name
    out = f"s3://{BUCKET}/flows-out/buyers.parquet"
    result = export_flow(workdir=url, seeds=f"{inputs}/seeds.parquet", out=out, size=300,
                         config_path=str(config))
    local = export(tmp_path / "work", str(data / "seeds.parquet"), tmp_path / "buyers.parquet")
    assert result["audience"] == out
    assert read_audience(s3, out).select("user_id", "score").equals(
        pl.read_parquet(local.audience).select("user_id", "score"))


def test_a_remote_file_that_differs_from_its_manifest_is_refused(
        s3: fsspec.AbstractFileSystem, data: Path) -> None:
    url = f"s3://{BUCKET}/tampered"
    build_id = Path(str(build(url, f"s3://{BUCKET}/data"))).name
    s3.pipe_file(f"{BUCKET}/tampered/builds/{build_id}/feature_spec.json", b"{}")
    shutil.rmtree(mirror_folder(url))  # no verified copy left to fall back on
    with pytest.raises(ArtifactError, match="feature_spec.json does not match its manifest"):
        export(url, f"s3://{BUCKET}/data/seeds.parquet", f"s3://{BUCKET}/tampered-out/a.parquet")
    assert not s3.exists(f"{BUCKET}/tampered-out/a.parquet")


def test_erase_on_s3_removes_the_users_like_the_local_disk(
        s3: fsspec.AbstractFileSystem, data: Path, tmp_path: Path) -> None:
    url = f"s3://{BUCKET}/erase"
    build(url, f"s3://{BUCKET}/data")
    build(tmp_path / "work", data)
    before = export(url, f"s3://{BUCKET}/data/seeds.parquet", f"s3://{BUCKET}/erase-out/a.parquet")
    gone = read_audience(s3, str(before.audience))["user_id"].head(5)
    pl.DataFrame({"user_id": gone}).write_parquet(tmp_path / "erase.parquet")
    s3.put_file(str(tmp_path / "erase.parquet"), f"{BUCKET}/erase-list.parquet")
    erase_list = f"s3://{BUCKET}/erase-list.parquet"
    report = erase_at(url, lambda wd: erase_users(wd, erase_list, CONFIG, progress=lambda l: None))
    erase_users(Workdir(tmp_path / "work"), str(tmp_path / "erase.parquet"), CONFIG,
                progress=lambda line: None)
    assert report.rows_removed["embeddings/embeddings.npy"] == 5
    verify_remote_current(url)
    folder = RemoteWorkdir(url).current_folder()
    assert "-erased-" in folder
    assert s3.ls(f"{BUCKET}/erase/builds", detail=False) == [f"{BUCKET}/erase/{folder}"]
    users = read_audience(s3, f"s3://{BUCKET}/erase/{folder}/embeddings/users.parquet")
    assert users.height == 2000 - 5 and not users["user_id"].is_in(gone.to_list()).any()
    after = export(url, f"s3://{BUCKET}/data/seeds.parquet", f"s3://{BUCKET}/erase-out/b.parquet")
    local = export(tmp_path / "work", str(data / "seeds.parquet"), tmp_path / "b.parquet")
    audience = read_audience(s3, str(after.audience))
    assert not audience["user_id"].is_in(gone.to_list()).any()
    assert audience.select("user_id", "score").equals(
        pl.read_parquet(local.audience).select("user_id", "score"))


def test_builds_killed_while_publishing_leave_the_previous_build_current(
        s3: fsspec.AbstractFileSystem, data: Path, tmp_path: Path) -> None:
    """Killed right after the first upload, after the last file before the manifest, and after
    the manifest before the pointer; each time a re-run publishes the new build."""
    url, inputs = f"s3://{BUCKET}/kill", f"s3://{BUCKET}/data"
    current = Path(str(build(url, inputs))).name
    manifest = s3.cat_file(f"{BUCKET}/kill/builds/{current}/manifest.json")
    files = len(json.loads(manifest)["files"])  # every build here has the same files
    for trial, uploads in enumerate([1, files, files + 1]):
        changed = reliability_config(index={"recall_queries": 40 + trial})  # a new build id,
        config = tmp_path / f"config-{trial}.json"                          # no training
        config.write_text(json.dumps(changed.model_dump(mode="json")))
        killed = subprocess.run([sys.executable, "-m", "lookalike.testing.object_store", url,
                                 str(config), inputs, str(uploads)],
                                capture_output=True, text=True, timeout=120)
        assert killed.returncode == -9, killed.stderr
        assert verify_remote_current(url) == current
        s3.invalidate_cache()
        manifests = s3.glob(f"{BUCKET}/kill/builds/*/manifest.json")
        assert len(manifests) == trial + 1 + (uploads == files + 1)
        rerun = Path(str(build(url, inputs, changed))).name
        assert verify_remote_current(url) == rerun != current
        current = rerun

"""Versioned-workdir guarantees, suppression, erasure, export guard rails and tampered artifacts
(GitHub issue 9), on real builds of a few thousand synthetic users."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from lookalike.testing.fixtures import reliability_config, request_for, small_data, write_seeds

from lookalike.core.artifacts import exchange_paths, read_json
from lookalike.build_steps import run_build
from lookalike.core.workdir import file_checksums, verify_build
from lookalike.erasure import erase_users
from lookalike.core.errors import ArtifactError, AudienceError
from lookalike.audience.export import HashingRequest, export_audience, read_audience_metadata
from lookalike.core.workdir import Workdir

QUIET = lambda _message: None  # noqa: E731
TIMING_KEYS = ("created_at", "seconds", "elapsed_seconds", "train_seconds", "validation_seconds",
               "timings_s")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return small_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def built(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir with one complete build (copy it before changing it)."""
    root = tmp_path_factory.mktemp("built")
    run_build(Workdir(root), request_for(data, reliability_config()), progress=QUIET)
    return root


@pytest.fixture
def workdir(built: Path, tmp_path: Path) -> Workdir:
    shutil.copytree(built, tmp_path / "w")
    return Workdir(tmp_path / "w")


def without_timings(value: Any) -> Any:
    """``value`` with every timing or timestamp entry removed, recursively."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if k not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def export(workdir: Workdir, seeds: Path, out: Path, **options: Any):
    config = options.pop("config", reliability_config())
    return export_audience(workdir.current(), seeds, out, size=100, config=config,
                           progress=QUIET, **options)


# --- idempotency and stale temporary files ------------------------------------------------------


def test_rebuilding_the_same_inputs_gives_the_same_files(data, built, tmp_path):
    again = Workdir(tmp_path / "again")
    build = run_build(again, request_for(data, reliability_config()), progress=QUIET)
    first = Workdir(built).current()
    assert build.build_id == first.build_id
    old, new = json.loads(first.manifest.read_text()), json.loads(build.manifest.read_text())
    assert without_timings({**old, "files": {}}) == without_timings({**new, "files": {}})
    model_json = "model/model.json"  # holds training timings
    assert {k: v for k, v in old["files"].items() if k != model_json} == {
        k: v for k, v in new["files"].items() if k != model_json
    }
    assert without_timings(json.loads((first.root / model_json).read_text())) == without_timings(
        json.loads((build.root / model_json).read_text())
    )


def test_a_second_build_run_sweeps_temporary_files_and_reuses_the_build(workdir, data):
    before = workdir.current().manifest.read_bytes()
    stale = workdir.current().embeddings_dir / ".embeddings.npy.tmp-99-0badf00d"
    stale.write_bytes(b"killed mid-write")
    messages: list[str] = []
    run_build(workdir, request_for(data, reliability_config()), progress=messages.append)
    assert workdir.current().manifest.read_bytes() == before
    assert any("reusing build" in m for m in messages)
    assert not stale.exists()


def test_exporting_twice_gives_the_same_audience(workdir, data, tmp_path):
    seeds = tmp_path / "seeds.parquet"
    write_seeds(data, seeds, count=40)
    first = export(workdir, seeds, tmp_path / "a.parquet", name="same")
    second = export(workdir, seeds, tmp_path / "b.parquet", name="same")
    assert pq.read_table(first.audience).equals(pq.read_table(second.audience))
    meta_a, meta_b = read_audience_metadata(first.audience), read_audience_metadata(second.audience)
    assert {**meta_a, "created_at": ""} == {**meta_b, "created_at": ""}
    report_a, report_b = (json.loads(r.report_json.read_text()) for r in (first, second))
    assert report_b["overlap"]["jaccard"] == 1.0
    report_a["overlap"] = report_b["overlap"] = None
    report_a["audience"]["path"] = report_b["audience"]["path"] = ""
    assert without_timings(report_a) == without_timings(report_b)


def test_an_export_sweeps_temporary_files_killed_writers_left(workdir, data, tmp_path):
    seeds = tmp_path / "seeds.parquet"
    write_seeds(data, seeds, count=40)
    out = tmp_path / "out" / "aud.parquet"
    out.parent.mkdir()
    stale = out.with_name(".aud.parquet.tmp-123-abcdef01")
    stale.write_bytes(b"half written")
    unrelated = out.with_name(".other.parquet.tmp-1-00000000")
    unrelated.write_bytes(b"someone else's")
    export(workdir, seeds, out)
    assert not stale.exists() and unrelated.exists()


# --- suppression ----------------------------------------------------------------------------------


def test_suppressed_users_never_reach_a_build_or_an_export(workdir, data, tmp_path):
    seeds = tmp_path / "seeds.parquet"
    seed_ids = write_seeds(data, seeds, count=40)
    original = workdir.current().build_id
    audience = pl.read_parquet(export(workdir, seeds, tmp_path / "before.parquet").audience)
    # opted out after the build: some audience members and some seeds
    opted_out = pl.concat([audience["user_id"][:30], seed_ids[:5]])
    suppression = tmp_path / "optout.csv"
    pl.DataFrame({"user_id": opted_out}).write_csv(suppression)
    config = reliability_config(privacy={"suppression_list": str(suppression)})

    after = export(workdir, seeds, tmp_path / "after.parquet", config=config)
    after = pl.read_parquet(after.audience)
    assert after.height == 100
    assert not after["user_id"].is_in(opted_out.implode()).any()
    assert not after["nearest_seed"].is_in(opted_out.implode()).any()

    build = run_build(workdir, request_for(data, config), progress=QUIET)
    assert build.build_id != original  # the list's content is part of the build id
    for table in (build.features, build.conversions, build.users):
        ids = pl.read_parquet(table)["user_id"]
        assert not ids.is_in(opted_out.implode()).any(), table
    assert pl.read_parquet(build.users).height == 2000 - opted_out.n_unique()


# --- erasure ------------------------------------------------------------------------------------


def saved_bytes(path: Path) -> bytes:
    """A file's bytes; for Parquet also its content re-encoded without compression, since
    compressed pages would hide ids from a byte scan."""
    raw = path.read_bytes()
    if path.suffix != ".parquet":
        return raw
    plain = io.BytesIO()
    pq.write_table(pq.read_table(path), plain, compression="none", use_dictionary=False)
    return raw + plain.getvalue()


def byte_hits(folder: Path, needles: list[bytes]) -> dict[str, int]:
    """Files under ``folder`` (relative name) -> occurrences of any needle in the saved bytes."""
    hits = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        raw = saved_bytes(path)
        count = sum(raw.count(needle) for needle in needles)
        if count:
            hits[str(path.relative_to(folder))] = count
    return hits


def erased_needles(workdir: Workdir, ids: pl.Series) -> list[bytes]:
    """Each user's embedding row (float32 bytes), int64 little-endian id and id as text."""
    build = workdir.current()
    users = pl.read_parquet(build.users)["user_id"]
    rows = np.flatnonzero(users.is_in(ids.implode()).to_numpy())
    vectors = np.load(build.embeddings)[rows]
    return ([v.astype("<f4").tobytes() for v in vectors]
            + [int(i).to_bytes(8, "little", signed=True) for i in ids]
            + [str(i).encode() for i in ids])


def test_erase_removes_every_byte_of_the_users_and_keeps_the_build_usable(
    workdir, data, tmp_path
):
    seeds = tmp_path / "seeds.parquet"
    seed_ids = write_seeds(data, seeds, count=40)
    exported = export(workdir, seeds, tmp_path / "a.parquet", name="buyers")
    exported = pl.read_parquet(exported.audience)
    converters = pl.read_parquet(data / "conversions.parquet")["user_id"]
    erased = pl.concat([exported["user_id"][:3], seed_ids[:2], converters[:2]]).unique()
    (workdir.builds_dir / "0ld0ld0ld0ld").mkdir()  # an older build: deleted by erase
    needles = erased_needles(workdir, erased)
    before = byte_hits(workdir.root, needles)
    assert any(name.endswith("embeddings.npy") for name in before)
    assert any(name.endswith(".bin") for name in before)  # the HNSW shard stores the vectors
    assert {"features.parquet", "embeddings/users.parquet", "conversions.parquet"} <= {
        name.split("/", 2)[-1] for name in before
    }

    request = tmp_path / "erase.csv"
    pl.DataFrame({"user_id": erased}).write_csv(request)
    report = erase_users(workdir, str(request), reliability_config(), progress=QUIET)

    after = byte_hits(workdir.root, needles)
    print(f"\nerasure byte scan, {len(erased)} users: {sum(before.values())} hits in {len(before)} "
          f"files before erase, {sum(after.values())} after")
    assert after == {}
    assert report.builds_deleted == ["0ld0ld0ld0ld"]
    assert report.rows_removed["embeddings/embeddings.npy"] == len(erased)
    last_seeds = pl.read_parquet(workdir.audience_dir("buyers") / "last_seeds.parquet")
    assert last_seeds.height == len(seed_ids) - seed_ids.is_in(erased.implode()).sum()
    build = workdir.current()
    verify_build(build)
    remaining = pl.read_parquet(build.users)["user_id"]
    assert len(remaining) == 2000 - len(erased)
    assert np.load(build.embeddings).shape[0] == len(remaining)
    # still exports, never the erased users, with index labels matching the new rows
    later = tmp_path / "later_seeds.parquet"
    write_seeds(data, later, skip=2)
    audience = pl.read_parquet(export(workdir, later, tmp_path / "b.parquet").audience)
    assert not audience["user_id"].is_in(erased.implode()).any()


def test_exchange_paths_swaps_two_folders_in_one_step(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    (first / "from-first").mkdir(parents=True)
    (second / "from-second").mkdir(parents=True)
    assert exchange_paths(first, second)  # Linux, on ext4 and tmpfs alike
    assert [p.name for p in first.iterdir()] == ["from-second"]
    assert [p.name for p in second.iterdir()] == ["from-first"]
    with pytest.raises(FileNotFoundError):
        exchange_paths(first, tmp_path / "missing")


def test_a_crash_between_the_swaps_of_an_erasure_is_finished_by_the_next_one(workdir, tmp_path):
    build = workdir.current()
    staging = build.root.with_name(".erasing-" + build.build_id)
    shutil.copytree(build.root, staging)
    build.root.rename(build.root.with_name(".erased-" + build.build_id))
    request = tmp_path / "none.csv"
    pl.DataFrame({"user_id": [1]}).write_csv(request)
    erase_users(workdir, str(request), reliability_config(), progress=QUIET)
    assert verify_build(workdir.current())["build_id"] == build.build_id
    assert sorted(p.name for p in workdir.builds_dir.iterdir()) == [build.build_id]


# --- export guard rails ---------------------------------------------------------------------------


def test_seed_lists_differing_in_a_few_users_are_refused_without_writing(workdir, data, tmp_path):
    seeds, close, far = (tmp_path / f"{n}.parquet" for n in ("seeds", "close", "far"))
    write_seeds(data, seeds, count=40)
    write_seeds(data, close, count=43)  # 3 added: fewer than privacy.min_seed_difference (10)
    write_seeds(data, far, count=40, skip=20)  # 20 removed, 20 added
    first = export(workdir, seeds, tmp_path / "a.parquet", name="buyers")
    kept = (workdir.audience_dir("buyers") / "last_seeds.parquet").read_bytes()
    with pytest.raises(AudienceError, match="differ in 3 users"):
        export(workdir, close, tmp_path / "b.parquet", name="buyers")
    assert not (tmp_path / "b.parquet").exists()
    assert (workdir.audience_dir("buyers") / "last_seeds.parquet").read_bytes() == kept
    export(workdir, close, tmp_path / "b.parquet", name="other-name")  # another audience: allowed
    export(workdir, far, tmp_path / "c.parquet", name="buyers")
    export(workdir, seeds, first.audience, name="buyers-2")
    # the seed ids are kept hashed only
    raw_ids = pl.read_parquet(seeds)["user_id"]
    stored = workdir.audience_dir("buyers") / "last_seeds.parquet"
    assert byte_hits(stored.parent, [int(i).to_bytes(8, "little") for i in raw_ids]
                     + [str(i).encode() for i in raw_ids]).get("last_seeds.parquet") is None


def test_proxy_warnings_for_denied_columns_are_in_the_build_report(data, tmp_path):
    profiles = pl.read_parquet(data / "profiles.parquet")
    # a denied column that an allowed profile column gives away
    profiles = profiles.with_columns((pl.col("age") // 10).alias("age_band"))
    profiles.write_parquet(tmp_path / "profiles.parquet")
    config = reliability_config(ingest={"deny_columns": ["age_band"]})
    messages: list[str] = []
    request = request_for(data, config, tmp_path / "profiles.parquet")
    build = run_build(Workdir(tmp_path / "w"), request, progress=messages.append)
    steps = json.loads(build.manifest.read_text())["steps"]
    warnings = steps["features"]["privacy"]["proxy_warnings"]
    assert any("'age'" in w and "'age_band'" in w for w in warnings)
    assert any(m.startswith("warning: feature 'age'") for m in messages)
    assert "age_band" not in pl.read_parquet(build.features).columns


def test_hashed_emails_are_added_per_user_and_invalid_ones_counted(workdir, data, tmp_path):
    seeds = tmp_path / "seeds.parquet"
    write_seeds(data, seeds, count=40)
    population = pl.read_parquet(workdir.current().users)["user_id"]
    # every third user has no email, every fifth a malformed one, the rest mixed case and spaces
    emails = [None if i % 3 == 0 else "no-at-sign" if i % 5 == 0 else f"  User{i}@Example.COM "
              for i in range(len(population))]
    identifiers = tmp_path / "ids.parquet"
    pl.DataFrame({"user_id": population, "mail": emails}).write_parquet(identifiers)
    result = export(workdir, seeds, tmp_path / "a.parquet",
                    hashing=HashingRequest("email", "meta", str(identifiers), column="mail"))
    audience = pl.read_parquet(result.audience)
    by_user = dict(zip(population.to_list(), emails, strict=True))
    expected = []
    for user in audience["user_id"]:
        email = by_user[user]
        valid = email is not None and "@" in email
        digest = hashlib.sha256(email.strip().lower().encode()).hexdigest() if valid else None
        expected.append(digest)
    assert audience["hashed_email"].to_list() == expected
    counts = result.summary["hashing"]
    assert counts["missing"] == sum(by_user[u] is None for u in audience["user_id"])
    assert counts["invalid"] == sum(by_user[u] == "no-at-sign" for u in audience["user_id"])
    assert counts["hashed"] == sum(e is not None for e in expected)


# --- tampered artifacts --------------------------------------------------------------------------

TAMPERED = [
    "embeddings/embeddings.npy",
    "embeddings/users.parquet",
    "embeddings/embeddings.json",
    "features.parquet",
    "feature_spec.json",
    "model/model.json",
    "index/index.json",
    "index/shard-0000-of-0001.bin",
]


def flip_a_byte(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("artifact", TAMPERED)
def test_an_export_from_a_tampered_build_fails_clearly_and_writes_nothing(
    workdir, data, tmp_path, artifact
):
    seeds = tmp_path / "seeds.parquet"
    write_seeds(data, seeds, count=40)
    flip_a_byte(workdir.current().root / artifact)
    out = tmp_path / "out" / "aud.parquet"
    with pytest.raises(ArtifactError, match="does not match its manifest"):
        # the default strategy scans the embeddings; only knn opens the index
        strategy = "knn" if artifact.startswith("index/") else None
        export(workdir, seeds, out, name="t", strategy=strategy)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    assert not workdir.audience_dir("t").exists()


def test_model_weights_are_verified_before_they_are_read(workdir):
    from lookalike.encoder.model import load_model

    build = workdir.current()
    flip_a_byte(build.model_dir / "model.safetensors")
    with pytest.raises(ArtifactError):
        load_model(build.model_dir)
    with pytest.raises(ArtifactError, match="model/model.safetensors"):
        verify_build(build)


def test_a_tampered_training_checkpoint_is_refused_before_it_is_read(workdir, data):
    from lookalike.build_steps import step_train

    build = workdir.current()
    weights = build.model_dir / "model.safetensors"
    before = weights.read_bytes()
    checkpoint = next((build.model_dir / "checkpoints").glob("epoch-*.safetensors"))
    flip_a_byte(checkpoint)
    with pytest.raises(ArtifactError, match=checkpoint.name):
        step_train(build, request_for(data, reliability_config()), progress=QUIET)
    assert weights.read_bytes() == before


def test_embedding_with_a_tampered_spec_is_refused_and_writes_nothing(workdir):
    from lookalike.build_steps import step_embed

    build = workdir.current()
    before = build.embeddings.read_bytes()
    flip_a_byte(build.spec)
    with pytest.raises(ArtifactError, match="feature_spec.json"):
        step_embed(build, progress=QUIET)
    assert build.embeddings.read_bytes() == before


def test_manifest_lists_every_file_but_checkpoints(workdir):
    build = workdir.current()
    listed = json.loads(build.manifest.read_text())["files"]
    assert listed == file_checksums(build)
    assert not any("checkpoints" in name for name in listed)


def test_the_erase_command_reports_what_it_removed_and_fails_in_one_line(workdir, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    users = pl.read_parquet(workdir.current().users)["user_id"][:4]
    request = tmp_path / "erase.csv"
    pl.DataFrame({"user_id": users}).write_csv(request)
    runner = CliRunner()
    done = runner.invoke(app, ["erase", "--workdir", str(workdir.root), "--users", str(request)])
    assert done.exit_code == 0, done.output
    assert "'embeddings/embeddings.npy': 4" in done.output
    missing = runner.invoke(app, ["erase", "--workdir", str(tmp_path / "none"), "--users",
                                  str(request)])
    assert missing.exit_code == 1 and "has no current build" in missing.output
    bad_hash = runner.invoke(app, ["export", "--workdir", str(workdir.root), "--seeds", "s.csv",
                                   "--out", "o.parquet", "--size", "10", "--hash", "email"])
    assert bad_hash.exit_code == 1 and "--platform google|meta" in bad_hash.output


def test_a_population_above_max_shard_users_is_split_into_bounded_shards(
    data: Path, tmp_path: Path
) -> None:
    config = reliability_config(index={"max_shard_users": 1000})
    build = run_build(Workdir(tmp_path / "w"), request_for(data, config), progress=QUIET)
    index = read_json(build.index_dir / "index.json")
    assert index["element_count"] == 2000
    assert index["n_shards"] == 2
    assert all(shard["count"] <= 1000 * 1.2 for shard in index["shards"])  # a hash split

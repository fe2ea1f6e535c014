"""Audience export: file contract (pyarrow, pandas, DuckDB), hard rules, reports, crash safety."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.parquet as pq
import pytest
from audience_fixtures import clustered_embeddings, population_ids, write_build, write_ids

from lookalike.search.neighbours import ExactSearch
from lookalike.audience.strategies.base import ExpansionProblem
from lookalike.audience.selection import band_size
from lookalike.audience.strategies import expand_seeds
from lookalike.core.config import AudienceConfig, IndexConfig, LookalikeConfig
from lookalike.core.errors import ArtifactError, AudienceError, InputError
from lookalike.audience.export import export_audience, read_audience_metadata
from lookalike.audience.propensity import ArrayFeatures
from lookalike.search.index import build_index
from lookalike.data.spec import model_inputs
from lookalike.data.spec import FeatureSpec, encode

N = 600
TESTS_DIR = Path(__file__).parent
CONFIG = LookalikeConfig(
    audience=AudienceConfig(min_audience_size=10, min_seed_size=20, tiers=[0.05, 0.1, 0.2])
)


@pytest.fixture(scope="module")
def embeddings() -> np.ndarray:
    return clustered_embeddings(N)


def seed_rows() -> np.ndarray:
    return np.flatnonzero(np.arange(N) % 6 == 5)[:40]


def run_export(build, tmp_path, *, out_name="audience.parquet", **kwargs):
    ids = pl.read_parquet(build.users).get_column("user_id")
    seeds = write_ids(tmp_path / "seeds.csv", ids[seed_rows()])
    if "fraction" not in kwargs:
        kwargs.setdefault("size", 90)
    return export_audience(
        build,
        seeds,
        tmp_path / "out" / out_name,
        config=kwargs.pop("config", CONFIG),
        search=ExactSearch(np.load(build.embeddings)),
        progress=lambda _: None,
        **kwargs,
    )


@pytest.mark.parametrize("id_kind", ["int", "string"])
def test_export_honours_the_hard_rules_and_the_column_contract(tmp_path, embeddings, id_kind):
    build = write_build(tmp_path / "w", embeddings, id_kind)
    ids = population_ids(N, id_kind)
    excluded_rows, eligible_rows = np.arange(0, N, 5), np.arange(0, N, 2)
    exclude = write_ids(tmp_path / "exclude.parquet", ids[excluded_rows])
    eligible = write_ids(tmp_path / "eligible.csv", ids[eligible_rows])
    result = run_export(build, tmp_path, size=100, exclude=exclude, eligible=eligible)

    frame = pl.read_parquet(result.audience)
    chosen = set(frame.get_column("user_id").to_list())
    forbidden = set(ids[seed_rows()].to_list()) | set(ids[excluded_rows].to_list())
    assert len(chosen) == frame.height == 100
    assert not chosen & forbidden
    assert chosen <= set(ids[eligible_rows].to_list())
    assert frame.get_column("rank").to_list() == list(range(1, 101))
    assert (frame.get_column("score").diff().drop_nulls() <= 0).all()

    expected_nearest = _naive_nearest_seed(embeddings, ids, frame.get_column("user_id"))
    assert frame.get_column("nearest_seed").to_list() == expected_nearest

    id_type = "BIGINT" if id_kind == "int" else "VARCHAR"
    described = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{result.audience}')").fetchall()
    assert [(c[0], c[1]) for c in described] == [
        ("user_id", id_type),
        ("rank", "BIGINT"),
        ("score", "DOUBLE"),
        ("tier", "DOUBLE"),
        ("nearest_seed", id_type),
    ]
    pandas_frame = pd.read_parquet(result.audience)
    assert pandas_frame["rank"].dtype == np.int64 and pandas_frame["tier"].dtype == np.float64
    assert pandas_frame["user_id"].tolist() == frame.get_column("user_id").to_list()


def _naive_nearest_seed(embeddings: np.ndarray, ids: pl.Series, audience_ids: pl.Series) -> list:
    row_of = {v: i for i, v in enumerate(ids.to_list())}
    seeds = seed_rows()
    nearest = []
    for user in audience_ids.to_list():
        sims = [float(np.dot(embeddings[row_of[user]], embeddings[s])) for s in seeds]
        nearest.append(ids[int(seeds[int(np.argmax(sims))])])
    return nearest


def test_metadata_round_trips_through_pyarrow_and_duckdb(tmp_path, embeddings):
    build = write_build(tmp_path / "w", embeddings)
    (build.index_dir).mkdir(parents=True)
    (build.index_dir / "index.json").write_text('{"kind": "hnsw"}')
    result = run_export(build, tmp_path, fraction=0.1, strategy="clusters")

    metadata = read_audience_metadata(result.audience)
    seed_ids = sorted(population_ids(N, "int")[seed_rows()].to_list())
    assert metadata["model_build_id"] == "model-123"
    assert metadata["build_id"] == "b1"
    assert metadata["index_manifest_sha256"] == hashlib.sha256(b'{"kind": "hnsw"}').hexdigest()
    seed_text = "\n".join(map(str, seed_ids)).encode()
    assert metadata["seed_sha256"] == hashlib.sha256(seed_text).hexdigest()
    parameters = json.loads(metadata["parameters"])
    assert parameters["strategy"] == "clusters" and parameters["fraction"] == 0.1
    assert metadata["created_at"].endswith("+00:00")

    query = f"SELECT decode(key), decode(value) FROM parquet_kv_metadata('{result.audience}')"
    rows = duckdb.sql(query).fetchall()
    from_duckdb = {k.removeprefix("lookalike."): v for k, v in rows if k.startswith("lookalike.")}
    assert from_duckdb == metadata


def test_fraction_and_tiers_are_relative_to_the_eligible_users(tmp_path, embeddings):
    build = write_build(tmp_path / "w", embeddings)
    result = run_export(build, tmp_path, fraction=0.2)
    eligible = N - len(seed_rows())
    frame = pl.read_parquet(result.audience)
    assert frame.height == band_size(0.2, eligible) == result.summary["size"]
    for band in (0.05, 0.1, 0.2):
        query = f"SELECT count(*) FROM read_parquet('{result.audience}') WHERE tier <= {band}"
        assert duckdb.sql(query).fetchall() == [(band_size(band, eligible),)]
        in_band = frame.filter(pl.col("tier") <= band)
        assert in_band.get_column("rank").max() == band_size(band, eligible)


def test_all_eligible_users_when_fewer_than_asked_with_a_warning(tmp_path, embeddings):
    build = write_build(tmp_path / "w", embeddings)
    ids = population_ids(N, "int")
    eligible = write_ids(tmp_path / "eligible.parquet", ids[np.arange(0, 60)])
    result = run_export(build, tmp_path, size=500, eligible=eligible)
    expected = set(ids[np.setdiff1d(np.arange(60), seed_rows())].to_list())
    assert set(pl.read_parquet(result.audience).get_column("user_id").to_list()) == expected
    n = len(expected)
    warning = f"asked for 500 users but only {n} are eligible: the audience is capped at {n}"
    assert warning in result.summary["warnings"]
    assert f"- warning: {warning}" in result.report_md.read_text()
    exact = run_export(build, tmp_path, size=n, eligible=eligible, out_name="exact.parquet")
    assert not [w for w in exact.summary["warnings"] if w.startswith("asked for")]


def test_min_score_cuts_the_tail_and_small_audiences_refuse(tmp_path, embeddings):
    build = write_build(tmp_path / "w", embeddings)
    full = pl.read_parquet(run_export(build, tmp_path, size=200, strategy="centroid").audience)
    threshold = float(full.get_column("score")[49])
    cut_export = run_export(build, tmp_path, size=200, strategy="centroid", min_score=threshold)
    cut = pl.read_parquet(cut_export.audience)
    assert cut.equals(full.filter(pl.col("score") >= threshold))
    with pytest.raises(AudienceError, match="min_audience_size"):
        run_export(build, tmp_path, size=5)
    too_high = float(full.get_column("score")[3])
    with pytest.raises(AudienceError, match="score at least"):
        run_export(build, tmp_path, size=200, strategy="centroid", min_score=too_high)


def test_report_sections_and_overlap_with_the_previous_export(tmp_path, embeddings):
    build = write_build(tmp_path / "w", embeddings)
    first = run_export(build, tmp_path, size=100, name="buyers")
    assert json.loads(first.report_json.read_text())["overlap"] is None
    second = run_export(
        build, tmp_path, size=150, name="buyers", strategy="centroid", out_name="b2.parquet"
    )
    report = json.loads(second.report_json.read_text())

    before = set(pl.read_parquet(first.audience).get_column("user_id").to_list())
    after = set(pl.read_parquet(second.audience).get_column("user_id").to_list())
    overlap = report["overlap"]
    assert (overlap["common"], overlap["added"], overlap["removed"]) == (
        len(before & after), len(after - before), len(before - after)
    )
    assert overlap["jaccard"] == pytest.approx(len(before & after) / len(before | after))
    assert second.summary["overlap_jaccard"] == overlap["jaccard"]

    scores = pl.read_parquet(second.audience).get_column("score").to_numpy()
    assert report["score_quantiles"]["0.5"] == pytest.approx(np.quantile(scores, 0.5))
    assert report["reach_curve"][-1]["size"] == 150
    assert report["reach_curve"][-1]["mean_score"] == pytest.approx(scores.mean())
    expected_cumulative = [min(150, band_size(b, N - 40)) for b in (0.05, 0.1, 0.2)] + [150]
    assert [t["cumulative"] for t in report["tiers"]] == expected_cumulative
    assert report["seeds"]["matched"] == 40
    assert "## Why these people" in second.report_md.read_text()


def test_why_these_people_matches_a_hand_computed_difference(tmp_path, embeddings):
    build = write_build(tmp_path / "w", embeddings)
    result = run_export(build, tmp_path, size=100)
    features = json.loads(result.report_json.read_text())["features"]

    table = pl.read_parquet(build.features)
    audience = set(pl.read_parquet(result.audience).get_column("user_id").to_list())
    seeds = set(population_ids(N, "int")[seed_rows()].to_list())
    values = table.get_column("purchases_30d").to_numpy()
    in_audience = table.get_column("user_id").is_in(pl.Series(list(audience)).implode()).to_numpy()
    eligible = ~table.get_column("user_id").is_in(pl.Series(list(seeds)).implode()).to_numpy()
    a, e = values[in_audience], values[eligible]
    smd = (a.mean() - e.mean()) / np.sqrt((a.var(ddof=1) + e.var(ddof=1)) / 2)

    top = features["numeric"][0]
    assert top["feature"] == "purchases_30d"
    assert top["standardized_difference"] == pytest.approx(smd)
    country = next(f for f in features["categorical"] if f["feature"] == "country")
    audience_countries = table.get_column("country").to_numpy()[in_audience]
    expected_share = np.mean(audience_countries == country["value"])
    assert country["audience_share"] == pytest.approx(expected_share)


def test_seed_file_duplicates_unknown_ids_and_bad_weights(tmp_path, embeddings):
    build = write_build(tmp_path / "w", embeddings)
    ids = population_ids(N, "int")
    rows = seed_rows()
    given = pl.concat([ids[rows], ids[rows[:6]], pl.Series("user_id", [1, 2, 3])])
    seeds = write_ids(tmp_path / "dup.csv", given, np.ones(len(given)))
    common = dict(size=50, config=CONFIG, search=ExactSearch(embeddings), progress=lambda _: None)
    result = export_audience(build, seeds, tmp_path / "a.parquet", **common)
    report = json.loads(result.report_json.read_text())["seeds"]
    counts = (report["rows_given"], report["matched"], report["duplicates"], report["unknown"])
    assert counts == (49, 40, 6, 3)
    assert report["weighted"]
    assert [w.split()[:3] for w in report["warnings"]] == [
        ["3", "seed", "ids"],
        ["6", "seed", "rows"],
        ["only", "40", "seeds"],
    ]
    bad = write_ids(tmp_path / "bad.csv", ids[rows], np.r_[np.ones(len(rows) - 1), -1.0])
    with pytest.raises(InputError, match="weight"):
        export_audience(build, bad, tmp_path / "b.parquet", **common)


def test_a_failed_write_leaves_the_previous_file(tmp_path, embeddings, monkeypatch):
    build = write_build(tmp_path / "w", embeddings)
    first = run_export(build, tmp_path, size=100)
    before = first.audience.read_bytes()

    def broken(self, batch, row_group_size=None):
        raise OSError("disk full")

    monkeypatch.setattr(pq.ParquetWriter, "write_batch", broken)
    with pytest.raises(OSError, match="disk full"):
        run_export(build, tmp_path, size=150)
    assert first.audience.read_bytes() == before
    assert sorted(p.name for p in first.audience.parent.iterdir()) == sorted(
        ["audience.parquet", "audience.report.html", "audience.report.json", "audience.report.md"]
    )


KILLED_WRITER = textwrap.dedent(
    """
    import sys, time
    import numpy as np
    import pyarrow.parquet as pq
    from lookalike.search.neighbours import ExactSearch
    from lookalike.core.config import AudienceConfig, IndexConfig, LookalikeConfig
    from lookalike.audience.export import export_audience
    from lookalike.core.workdir import BuildPaths

    write_batch = pq.ParquetWriter.write_batch

    def slow_write_batch(self, batch, row_group_size=None):
        write_batch(self, batch, row_group_size)
        print("wrote a row group", flush=True)
        time.sleep(60)

    pq.ParquetWriter.write_batch = slow_write_batch
    build = BuildPaths(__import__("pathlib").Path(sys.argv[1]))
    config = LookalikeConfig(audience=AudienceConfig(min_audience_size=10, min_seed_size=20))
    export_audience(build, sys.argv[2], sys.argv[3], size=400, config=config,
                    search=ExactSearch(np.load(build.embeddings)), progress=lambda _: None)
    """
)


def test_an_export_killed_during_the_write_leaves_the_old_file_or_the_new_one(tmp_path, embeddings):
    build = write_build(tmp_path / "w", embeddings)
    first = run_export(build, tmp_path, size=100)
    before = first.audience.read_bytes()
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    seeds = tmp_path / "seeds.csv"
    args = [sys.executable, str(script), str(build.root), str(seeds), str(first.audience)]
    env = {**os.environ, "PYTHONPATH": str(TESTS_DIR.parent)}

    writer = subprocess.Popen(args, stdout=subprocess.PIPE, text=True, env=env)
    assert writer.stdout is not None and writer.stdout.readline().strip() == "wrote a row group"
    # the new file is half written beside the old one
    assert any(".tmp-" in p.name for p in first.audience.parent.iterdir())
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert first.audience.read_bytes() == before

    run_export(build, tmp_path, size=400)
    assert pl.read_parquet(first.audience).height == 400


def test_hnsw_at_high_ef_gives_the_exact_audience(tmp_path):
    embeddings = clustered_embeddings(2000, 16, clusters=20)
    build = write_build(tmp_path / "w", embeddings, with_features=False)
    config = IndexConfig(M=16, ef_construction=200, ef=400, threads=1)
    build_index(build.embeddings, build.users, build.index_dir, config, "model-123")
    ids = population_ids(2000, "int")
    seed_rows_ = np.flatnonzero(np.arange(2000) % 20 < 2)[:150]
    seeds = write_ids(tmp_path / "seeds.parquet", ids[seed_rows_])
    exclude = write_ids(tmp_path / "exclude.parquet", ids[::9])
    for strategy in ("knn", "clusters", "centroid", "density"):
        common = dict(size=200, exclude=exclude, strategy=strategy, config=CONFIG,
                      progress=lambda _: None)
        with_index = export_audience(build, seeds, tmp_path / f"{strategy}-hnsw.parquet", **common)
        exact = export_audience(build, seeds, tmp_path / f"{strategy}-exact.parquet",
                                search=ExactSearch(embeddings), **common)
        hnsw_frame = pl.read_parquet(with_index.audience)
        exact_frame = pl.read_parquet(exact.audience)
        assert hnsw_frame.get_column("user_id").equals(exact_frame.get_column("user_id"))
        np.testing.assert_allclose(hnsw_frame.get_column("score"), exact_frame.get_column("score"),
                                   atol=1e-5)
        used = json.loads(read_audience_metadata(with_index.audience)["parameters"])["search"]
        assert used == ("AnnIndex" if strategy == "knn" else None)


def test_hybrid_export_scores_the_builds_feature_table(tmp_path, embeddings):
    build = write_build(tmp_path / "w", embeddings)
    frame = pl.read_parquet(build.features)
    spec = FeatureSpec.load(build.spec)
    result = run_export(build, tmp_path, strategy="hybrid", exclude=write_ids(
        tmp_path / "exclude.parquet", population_ids(N, "int")[::7]))
    audience = pl.read_parquet(result.audience)

    # The reference: the same strategy on the whole table encoded in memory.
    excluded = np.union1d(seed_rows(), np.arange(0, N, 7))
    problem = ExpansionProblem(
        embeddings=embeddings, seed_vectors=embeddings[seed_rows()],
        seed_weights=np.ones(len(seed_rows())), seed_rows=seed_rows(), excluded=excluded,
        n_candidates=N - len(excluded), size=90,
        features=ArrayFeatures(model_inputs(encode(frame, spec), spec.cardinalities)),
    )
    expected = expand_seeds(problem, ExactSearch(embeddings), "hybrid", CONFIG.audience)
    assert audience.get_column("user_id").to_list() == frame.get_column("user_id")[expected.rows].to_list()
    np.testing.assert_allclose(audience.get_column("score"), expected.scores, rtol=1e-9)
    assert result.summary["strategy"] == "hybrid"

    frame.reverse().write_parquet(build.features)  # rows no longer those of the embeddings
    with pytest.raises(ArtifactError, match="order"):
        run_export(build, tmp_path, strategy="hybrid", out_name="other.parquet")
    assert not (tmp_path / "out" / "other.parquet").exists()


def test_seeds_can_be_kept_in_the_audience(tmp_path, embeddings):
    build = write_build(tmp_path / "w", embeddings)
    frame = pl.read_parquet(run_export(build, tmp_path, size=80, exclude_seeds=False).audience)
    seed_ids = population_ids(N, "int")[seed_rows()]
    kept = frame.filter(pl.col("user_id").is_in(seed_ids.implode()))
    assert kept.height > 0
    assert (kept.get_column("user_id") == kept.get_column("nearest_seed")).all()


def test_a_small_eligible_list_is_searched_exactly_without_the_index(tmp_path, embeddings):
    build = write_build(tmp_path / "w", embeddings)  # no index folder: opening it would fail
    ids = population_ids(N, "int")
    eligible = write_ids(tmp_path / "eligible.parquet", ids[np.arange(0, N, 3)])
    seeds = write_ids(tmp_path / "seeds.parquet", ids[seed_rows()])
    common = dict(size=60, eligible=eligible, strategy="knn", config=CONFIG, progress=lambda _: None)
    default = export_audience(build, seeds, tmp_path / "default.parquet", **common)
    exact = export_audience(build, seeds, tmp_path / "exact.parquet",
                            search=ExactSearch(embeddings), **common)
    parameters = json.loads(read_audience_metadata(default.audience)["parameters"])
    assert parameters["search"] == "ExactSearch"
    assert pl.read_parquet(default.audience).equals(pl.read_parquet(exact.audience))


def test_inconsistent_build_artifacts_are_refused(tmp_path, embeddings):
    build = write_build(tmp_path / "w", embeddings)
    np.save(build.embeddings, embeddings[:-1])
    with pytest.raises(ArtifactError, match="another population"):
        run_export(build, tmp_path)
    np.save(build.embeddings, embeddings)
    (build.model_dir / "model.json").write_text("{}")
    with pytest.raises(ArtifactError, match="model_build_id"):
        run_export(build, tmp_path)

"""The export's quality estimate (seed hold-out): against a hand-ranked computation, in the reports,
and not optimistic on a population whose future converters are known."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from audience_fixtures import clustered_embeddings, write_build, write_ids
from threadpoolctl import threadpool_limits

from lookalike.audience.export import export_audience
from lookalike.audience.propensity import ParquetFeatures
from lookalike.audience.quality import seed_folds, split_sample
from lookalike.audience.selection import band_size
from lookalike.audience.strategies import expand_seeds
from lookalike.audience.strategies.base import ExpansionProblem
from lookalike.core.config import AudienceConfig, LookalikeConfig
from lookalike.data.spec import FeatureSpec
from lookalike.search.neighbours import ExactSearch
from lookalike.testing.toy_tables import toy_spec

N = 600


@pytest.fixture(autouse=True)
def one_openmp_thread():
    """Gradient boosting on one OpenMP thread: these tests fit many small models, and two threads
    spinning on a busy 2-core machine took this file from 12 s to 350 s (2026-12-07)."""
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


TIERS = [0.05, 0.1, 0.2]
AUDIENCE = AudienceConfig(min_audience_size=10, min_seed_size=20, tiers=TIERS, quality_folds=3)


def export(build, tmp_path, seed_ids, audience=AUDIENCE, **kwargs):
    tmp_path.mkdir(parents=True, exist_ok=True)
    seeds = write_ids(tmp_path / "seeds.parquet", seed_ids)
    return export_audience(
        build,
        seeds,
        tmp_path / "out" / "a.parquet",
        config=LookalikeConfig(audience=audience),
        progress=lambda _: None,
        search=ExactSearch(np.load(build.embeddings)),
        **kwargs,
    )


def hand_ranked_recalls(build, seed_rows, sizes, config):
    """Recall per size by a plain loop over the estimate's folds and samples: per fold, the hybrid
    fitted on the other folds against the background scores every user; a held-out seed is inside
    ``n`` when fewer than ``n * m / E`` of the ``m`` ranked users rank above it (higher score, or
    the same score and a smaller row)."""
    embeddings = np.load(build.embeddings)
    features = ParquetFeatures(build.features, FeatureSpec.load(build.spec))
    rng = np.random.default_rng(config.seed)
    folds = seed_folds(len(seed_rows), config, rng)
    eligible = np.setdiff1d(np.arange(N), seed_rows)
    ranked, background = split_sample(eligible, config, rng)
    halves = None if background is None else [background]
    fold_config = config.model_copy(
        update={"boosting_learning_rate": config.quality_boosting_learning_rate}
    )
    inside = {n: [] for n in sizes}
    for held in folds:
        trained = seed_rows[np.setdiff1d(np.arange(len(seed_rows)), held)]
        excluded = np.r_[trained, [] if background is None else background].astype(np.int64)
        problem = ExpansionProblem(embeddings, embeddings[trained], np.ones(len(trained)), trained,
                                   excluded, N - len(excluded), N - len(excluded), features,
                                   background_halves=halves)
        expansion = expand_seeds(problem, ExactSearch(embeddings), "hybrid", fold_config)
        score = dict(zip(expansion.rows.tolist(), expansion.scores.tolist(), strict=True))
        for s in seed_rows[held].tolist():
            above = sum(score[c] > score[s] or (score[c] == score[s] and c < s)
                        for c in ranked.tolist())
            for n in sizes:
                inside[n].append(above < n * len(ranked) / len(eligible))
    return {n: float(np.mean(v)) for n, v in inside.items()}, len(ranked)


SAMPLED = AUDIENCE.model_copy(
    update={"contrast_background": 100, "quality_background": 150, "quality_candidates": 300}
)


@pytest.mark.parametrize("audience", [AUDIENCE, SAMPLED], ids=["every-user", "sampled"])
def test_the_estimate_equals_a_hand_ranked_hold_out(tmp_path, audience):
    """Every eligible user ranked and the export's cross-fitting repeated (540 eligible users, up
    to contrast_background), or 300 sampled users ranked and one model per fold fitted against 150
    others (contrast_background 100)."""
    build = write_build(tmp_path / "w", clustered_embeddings(N))
    rng = np.random.default_rng(3)
    seed_rows = np.sort(np.r_[np.flatnonzero(np.arange(N) % 6 == 5)[:40],
                              rng.choice(np.flatnonzero(np.arange(N) % 6 != 5), 20, replace=False)])
    ids = pl.read_parquet(build.users).get_column("user_id")
    result = export(build, tmp_path, ids[seed_rows], audience=audience, size=50)

    quality = json.loads(result.report_json.read_text())["quality"]
    eligible = N - len(seed_rows)
    sizes = {"audience": 50, **{f"tier {t:g}": band_size(t, eligible) for t in TIERS}}
    expected, ranked = hand_ranked_recalls(build, seed_rows, set(sizes.values()), audience)
    assert [row["label"] for row in quality["sizes"]] == list(sizes)
    assert quality["held_out_seeds"] == len(seed_rows)
    assert (quality["ranked_users"], quality["eligible_users"]) == (ranked, eligible)
    for row in quality["sizes"]:
        n = sizes[row["label"]]
        assert row["size"] == n
        assert row["recall"]["value"] == pytest.approx(expected[n])
        assert row["lift"]["value"] == pytest.approx(expected[n] / (n / eligible))
        low, high = row["recall"]["ci95"]
        assert low <= row["recall"]["value"] <= high
        assert row["lift"]["ci95"] == pytest.approx([low * eligible / n, high * eligible / n])
    assert quality["sizes"][1]["lift"]["value"] > 2  # the seeds' cluster is findable


def test_the_reports_and_summary_carry_the_estimate_and_it_can_be_turned_off(tmp_path):
    build = write_build(tmp_path / "w", clustered_embeddings(N))
    ids = pl.read_parquet(build.users).get_column("user_id")
    seed_ids = ids[np.flatnonzero(np.arange(N) % 6 == 5)[:40]]
    result = export(build, tmp_path, seed_ids, fraction=0.1)

    first = json.loads(result.report_json.read_text())["quality"]["sizes"][0]
    markdown = result.report_md.read_text()
    assert "## Expected quality (seed hold-out)" in markdown
    recall = "{:.3f} ({:.3f}-{:.3f})".format(first["recall"]["value"], *first["recall"]["ci95"])
    assert f"| audience | {first['size']} | 10.00% | {recall} |" in markdown
    assert result.summary["quality"][0]["recall"] == round(first["recall"]["value"], 4)
    assert [row["size"] for row in result.summary["quality"]] == [
        "audience",
        "tier 0.05",
        "tier 0.1",
        "tier 0.2",
    ]
    assert "quality" in result.summary["timings_s"]

    off = AUDIENCE.model_copy(update={"quality_estimate": False})
    result = export(build, tmp_path / "off", seed_ids, audience=off, fraction=0.1)
    assert json.loads(result.report_json.read_text())["quality"] is None
    assert result.summary["quality"] == []
    assert "Not estimated" in result.report_md.read_text()


def test_the_export_flow_publishes_the_quality_table(tmp_path, monkeypatch):
    import flows.export

    build = write_build(tmp_path / "w", clustered_embeddings(N))
    ids = pl.read_parquet(build.users).get_column("user_id")
    result = export(build, tmp_path, ids[np.flatnonzero(np.arange(N) % 6 == 5)[:40]], size=50)
    tables = {}
    monkeypatch.setattr(flows.export, "create_markdown_artifact", lambda **_: None)
    monkeypatch.setattr(flows.export, "create_link_artifact", lambda **_: None)
    monkeypatch.setattr(flows.export, "create_table_artifact",
                        lambda key, table, description: tables.update({key: table}))
    flows.export.publish_artifacts(result.to_dict())
    assert tables["a-quality"] == result.summary["quality"]
    assert set(tables["a-quality"][0]) == {"size", "users", "recall", "recall_ci95", "lift",
                                           "lift_ci95"}


def converter_population(tmp_path, draw: int):
    """Users with a latent taste (3-d), embeddings and features that each see part of it through
    noise, and converters drawn from a logistic model of it: a seed list and the converters it
    leaves out, drawn from the same users."""
    rng = np.random.default_rng(100 + draw)
    n = 5000
    latent = rng.normal(size=(n, 3))
    vectors = np.hstack([latent, 1.2 * rng.normal(size=(n, 5))])
    embeddings = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    build = write_build(tmp_path / f"w{draw}", embeddings, with_features=False)
    features = pl.DataFrame({
        "user_id": pl.read_parquet(build.users).get_column("user_id"),
        "taste": latent[:, 0] + rng.normal(size=n),
        "visits": rng.poisson(3, size=n).astype(np.float64),
        "region": rng.choice(["n", "s", "e", "w"], size=n),
    })
    features.write_parquet(build.features)
    toy_spec(features).save(build.spec)
    converts = rng.random(n) < 1 / (1 + np.exp(-(-3.2 + 1.3 * latent[:, 0] + 0.9 * latent[:, 1])))
    converters = rng.permutation(np.flatnonzero(converts))
    seeds, unseen = np.sort(converters[:200]), np.sort(converters[200:])
    return build, seeds, unseen


@pytest.mark.parametrize("strategy", ["hybrid", "knn"])
def test_the_interval_holds_the_recall_of_converters_the_seeds_left_out(tmp_path, strategy):
    """On five draws, the recall at each tier of the converters the seed list left out (about
    200, none of them seeds) lies inside the estimate's interval in at least two cases of three,
    and the estimate is not above it on average (held-out seeds and left-out converters are
    exchangeable: both are random converters)."""
    contained, gaps = 0, []
    for draw in range(5):
        build, seeds, unseen = converter_population(tmp_path, draw)
        ids = pl.read_parquet(build.users).get_column("user_id")
        result = export(build, tmp_path / f"d{draw}", ids[seeds], fraction=max(TIERS),
                        strategy=strategy)
        audience = pl.read_parquet(result.audience)
        found = audience.get_column("user_id").is_in(ids[unseen].implode()).to_numpy()
        for row in json.loads(result.report_json.read_text())["quality"]["sizes"][1:]:
            measured = found[: row["size"]].sum() / len(unseen)
            low, high = row["recall"]["ci95"]
            contained += low <= measured <= high
            gaps.append(row["recall"]["value"] - measured)
    assert contained >= 2 / 3 * len(gaps)
    assert np.mean(gaps) < 0.03

"""HTML reports of exports and builds: every plot present, nothing fetched from the web, user
text escaped, a page redrawn from its JSON identical, the figures behind the plots checked
against naive references, and (where Chromium is installed) the page rendered by a browser."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from audience_fixtures import clustered_embeddings, write_build, write_ids

from lookalike.audience.export import export_audience
from lookalike.audience.html import NO_AUDIT, PLOTS, render_html
from lookalike.audience.report import embedding_map
from lookalike.build_report import NO_DRIFT, render_build_html
from lookalike.build_report import PLOTS as BUILD_PLOTS
from lookalike.build_steps import run_build
from lookalike.core.artifacts import read_json
from lookalike.core.config import AudienceConfig, LookalikeConfig
from lookalike.core.html import compact_histogram
from lookalike.core.workdir import Workdir, verify_build
from lookalike.search.exact import nearest_other_similarity
from lookalike.search.neighbours import ExactSearch
from lookalike.testing.fixtures import reliability_config, request_for, small_data

CHROMIUM = Path("/usr/bin/chromium")
N = 600
CONFIG = LookalikeConfig(audience=AudienceConfig(min_audience_size=10, min_seed_size=20,
                                                 tiers=[0.05, 0.1, 0.2], report_map_points=300))
IMG = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,[A-Za-z0-9+/=]+">')


def plots_in(page: str) -> list[str]:
    """The alt text of every inlined PNG of the page, in order."""
    return IMG.findall(page)


def assert_self_contained(page: str) -> None:
    assert "http://" not in page and "https://" not in page
    assert page.count("<img") == len(plots_in(page))  # every image is an inlined PNG
    assert "<script" not in page.lower() and "<link" not in page.lower()


def hand_made_report(**changes: Any) -> dict[str, Any]:
    """An audience report JSON written by hand (user text with HTML and mathtext in it)."""
    report = {
        "audience": {"path": "out/<i>vip&co.parquet", "size": 300, "eligible_users": 3000,
                     "strategy": "hybrid", "requested_size": 300},
        "metadata": {"model_build_id": "m1", "build_id": "b1", "created_at": "2026-12-07"},
        "seeds": {"matched": 120, "distinctiveness_auc": 0.81},
        "warnings": ["only 120 seeds <fewer than 1000>"],
        "tiers": [{"tier": 0.05, "users": 150, "cumulative": 150},
                  {"tier": 1.0, "users": 150, "cumulative": 300}],
        "reach_curve": [{"size": n, "mean_score": 2.0 - n / 300,
                         "mean_nearest_seed_similarity": 0.9 - n / 3000}
                        for n in (1, 10, 100, 300)],
        "quality": {"sizes": [
            {"label": "audience", "size": 300, "recall": {"value": 0.4, "ci95": [0.3, 0.5]}},
            {"label": "tier 0.05", "size": 150, "recall": {"value": 0.25, "ci95": [0.2, 0.3]}},
        ]},
        "score_histogram": {"edges": [0.0, 0.5, 1.0], "counts": [200, 100]},
        "features": {
            "numeric": [{"feature": "spend_$", "standardized_difference": 0.8},
                        {"feature": "visits", "standardized_difference": -0.3}],
            "categorical": [{"feature": "plan", "value": "<gold>", "difference": 0.12}],
        },
        "fairness": {"columns": ["age_band"], "max_gap_points": 7.5, "rows": [
            {"column": "age_band", "group": "<25", "audience_share": 0.3, "eligible_share": 0.225,
             "gap_points": 7.5},
            {"column": "age_band", "group": "25+", "audience_share": 0.7, "eligible_share": 0.775,
             "gap_points": -7.5},
        ]},
        "embedding_map": {"method": "pca", "explained_variance": [0.4, 0.2], "groups": {
            "population": {"x": [0.1, -0.2, 0.3], "y": [0.0, 0.1, -0.1]},
            "seeds": {"x": [0.5], "y": [0.4]}, "audience": {"x": [0.45, 0.55], "y": [0.35, 0.3]}}},
    }
    report.update(changes)
    return report


# --- the figures behind the plots ----------------------------------------------------------------


def test_compact_histogram_counts_like_a_naive_loop():
    values = np.random.default_rng(0).normal(size=500)
    histogram = compact_histogram(values, bins=7)
    edges = histogram["edges"]
    naive = [sum(1 for v in values if edges[i] <= round(v, 6) < edges[i + 1]) for i in range(7)]
    naive[-1] += sum(1 for v in values if round(v, 6) == edges[-1])  # last bin holds its right edge
    assert histogram["counts"] == naive and sum(naive) == 500


def test_nearest_other_similarity_matches_a_naive_loop():
    vectors = clustered_embeddings(120, seed=3)
    vectors[7] = vectors[3]  # an identical twin: its nearest other user is at similarity 1
    rows = np.array([0, 3, 7, 50, 119])
    expected = [max(float(vectors[r] @ vectors[o]) for o in range(120) if o != r) for r in rows]
    found = nearest_other_similarity(vectors, rows)
    np.testing.assert_allclose(found, expected, atol=1e-6)
    assert found[1] == pytest.approx(1.0) and found[2] == pytest.approx(1.0)


def test_embedding_map_is_the_pca_of_the_groups_when_they_fit():
    vectors = clustered_embeddings(60, seed=1)
    groups = {"population": np.arange(60), "seeds": np.array([5, 11]),
              "audience": np.arange(20, 30)}
    found = embedding_map(vectors, groups, points=300, seed=0)
    stacked = np.concatenate([vectors[rows] for rows in groups.values()]).astype(np.float64)
    centred = stacked - stacked.mean(axis=0)
    _, singular, components = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ components[:2].T
    drawn = np.concatenate([np.column_stack([g["x"], g["y"]]) for g in found["groups"].values()])
    np.testing.assert_allclose(np.abs(drawn), np.abs(projected), atol=1e-3)  # up to each sign
    share = singular[:2] ** 2 / (singular**2).sum()
    np.testing.assert_allclose(found["explained_variance"], share, atol=1e-4)

    capped = embedding_map(vectors, groups, points=9, seed=0)
    assert [len(g["x"]) for g in capped["groups"].values()] == [3, 2, 3]


# --- the audience report -------------------------------------------------------------------------


def test_the_audience_page_has_every_plot_escapes_user_text_and_fetches_nothing():
    page = render_html(hand_made_report())
    assert plots_in(page) == list(PLOTS.values())
    assert_self_contained(page)
    assert "&lt;i&gt;vip&amp;co.parquet" in page and "<i>vip" not in page
    assert "<td>&lt;25</td>" in page and "<td>+7.5</td>" in page and "<td>-7.5</td>" in page
    assert "&lt;fewer than 1000&gt;" in page
    assert NO_AUDIT not in page
    assert render_html(hand_made_report()) == page  # the same JSON draws the same bytes


def test_the_audience_page_without_quality_or_fairness_says_so():
    page = render_html(hand_made_report(quality=None, fairness=None))
    assert plots_in(page) == [PLOTS[k] for k in ("reach", "scores", "features", "map")]
    assert NO_AUDIT in page
    assert_self_contained(page)
    assert "Expected recall:" not in page


def test_an_export_writes_an_html_report_redrawn_identically_from_its_json(tmp_path):
    embeddings = clustered_embeddings(N)
    build = write_build(tmp_path / "w", embeddings)
    ids = pl.read_parquet(build.users).get_column("user_id")
    seed_rows = np.flatnonzero(np.arange(N) % 6 == 5)[:40]
    seeds = write_ids(tmp_path / "seeds.csv", ids[seed_rows])
    result = export_audience(build, seeds, tmp_path / "out" / "buyers.parquet", size=90,
                             strategy="centroid", config=CONFIG,
                             search=ExactSearch(np.load(build.embeddings)), progress=lambda _: None)

    assert result.report_html == tmp_path / "out" / "buyers.report.html"
    page = result.report_html.read_text()
    report = read_json(result.report_json)
    assert render_html(report) == page
    assert plots_in(page) == [PLOTS[k] for k in ("reach", "scores", "features", "map")]
    assert NO_AUDIT in page  # no fairness section in this report
    assert_self_contained(page)

    scores = pl.read_parquet(result.audience).get_column("score").to_numpy()
    counts, edges = np.histogram(scores, bins=CONFIG.audience.report_score_bins)
    assert report["score_histogram"]["counts"] == counts.tolist()
    np.testing.assert_allclose(report["score_histogram"]["edges"], edges, atol=1e-6)
    sizes = {name: len(g["x"]) for name, g in report["embedding_map"]["groups"].items()}
    assert sizes == {"population": 100, "seeds": 40, "audience": 90}


# --- the build report ----------------------------------------------------------------------------


def hand_made_drift() -> dict[str, Any]:
    return {
        "previous_build": "abc123",
        "features": [{"feature": "<purchases>", "psi": 0.31}, {"feature": "visits", "psi": 0.02}],
        "embedding": {"median_shift": 0.04, "p90_shift": 0.12, "nn_similarity_psi": 0.05},
        "converter_rate": [{"type": "buy", "previous": 0.01, "current": 0.02}],
        "thresholds": {"feature_psi": 0.25},
        "crossed": ["feature <purchases> PSI 0.31 > 0.25"],
    }


def test_a_build_writes_its_report_before_the_manifest_lists_it(tmp_path):
    data = small_data(tmp_path / "data")
    config = reliability_config(index={"similarity_sample": 300})
    build = run_build(Workdir(tmp_path / "w"), request_for(data, config), progress=lambda _: None)

    manifest = verify_build(build)  # report.html is listed and unchanged since
    assert "report.html" in manifest["files"]
    page = build.report_html.read_text()
    assert render_build_html(manifest) == page
    assert plots_in(page) == list(BUILD_PLOTS.values())
    assert NO_DRIFT in page
    assert_self_contained(page)

    history = read_json(build.model_dir / "model.json")["metrics"]["history"]
    assert manifest["steps"]["train"]["history"] == [
        {"epoch": h["epoch"], "loss": h["loss"], "recall": h["recall"]} for h in history
    ]
    embeddings = np.load(build.embeddings)
    rows = np.sort(np.random.default_rng(config.index.seed).choice(len(embeddings), 300,
                                                                    replace=False))
    cosine = embeddings[rows] @ embeddings.T
    cosine[np.arange(300), rows] = -np.inf  # not the user itself
    expected = compact_histogram(cosine.max(axis=1), bins=40)
    stored = manifest["steps"]["index"]["nn_similarity"]
    assert stored["sample"] == 300 and stored["counts"] == expected["counts"]
    np.testing.assert_allclose(stored["edges"], expected["edges"], atol=1e-5)


def test_the_build_page_renders_drift_tables_when_present():
    manifest = {"build_id": "<b2>", "package_version": "0.1.0",
                "steps": {"features": {"features": {"n_users": 10}}, "drift": hand_made_drift()}}
    page = render_build_html(manifest)
    assert NO_DRIFT not in page
    assert "&lt;b2&gt;" in page and "<b2>" not in page
    assert "<td>&lt;purchases&gt;</td><td>0.31</td>" in page
    assert "<td>p90_shift</td><td>0.12</td>" in page
    assert "<td>buy</td><td>0.01</td><td>0.02</td>" in page
    assert "threshold crossed: feature &lt;purchases&gt; PSI 0.31 &gt; 0.25" in page
    without = copy.deepcopy(manifest)
    without["steps"].pop("drift")
    assert NO_DRIFT in render_build_html(without)
    assert_self_contained(page)


# --- in a browser --------------------------------------------------------------------------------


def chromium(*arguments: str) -> subprocess.CompletedProcess[str]:
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return subprocess.run(
        [str(CHROMIUM), "--headless", "--disable-gpu", "--no-sandbox", "--hide-scrollbars",
         "--window-size=1000,2600", *arguments],
        capture_output=True, text=True, timeout=120, check=True,
    )


def test_chromium_renders_the_page_with_its_images(tmp_path):
    page_path = tmp_path / "report.html"
    page_path.write_text(render_html(hand_made_report()))
    dom = chromium("--dump-dom", page_path.as_uri()).stdout
    assert re.findall(r'<img alt="([^"]*)"', dom) == list(PLOTS.values())

    from PIL import Image

    shot = tmp_path / "shot.png"
    chromium(f"--screenshot={shot}", page_path.as_uri())
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    plot_blue = np.abs(pixels - [0x4C, 0x72, 0xB0]).sum(axis=2) < 30  # only the plots draw it
    assert plot_blue.sum() > 2_000

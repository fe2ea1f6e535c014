"""Evaluation: metrics against hand-computed answers and scikit-learn, the hold-out split's
guarantees, and a small end-to-end run with every baseline."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score

from lookalike.core.config import EvaluateConfig, LookalikeConfig
from lookalike.data.synthetic import generate
from lookalike.evaluation.evaluate import evaluate, seed_memorization
from lookalike.evaluation.methods import METHODS, Population
from lookalike.evaluation.metrics import (
    auc_score,
    cutoff_size,
    gains_curve,
    method_figures,
    paired_differences,
    ranking_positions,
)
from lookalike.evaluation.split import holdout_split, training_conversions


def test_cutoff_metrics_match_a_hand_computed_example() -> None:
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    is_positive = np.array([True, False, False, True, False])
    config = EvaluateConfig(cutoffs=[0.4, 0.8], bootstrap=50)
    figures = method_figures(scores, is_positive, config, np.random.default_rng(0))
    top2, top4 = figures.cutoffs[0.4], figures.cutoffs[0.8]
    assert (top2.audience_size, top2.hits, top4.audience_size, top4.hits) == (2, 1, 4, 2)
    assert top2.precision == pytest.approx(0.5) and top2.recall == pytest.approx(0.5)
    assert top2.lift == pytest.approx(0.5 / (2 / 5))
    assert top4.lift == pytest.approx(0.5 / (2 / 5))
    # positive 0.9 beats all 3 negatives, positive 0.6 beats 1 of 3
    assert figures.auc == pytest.approx((1 + 1 / 3) / 2)


@pytest.mark.parametrize("seed", range(4))
def test_auc_matches_scikit_learn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=300).astype(float)  # many ties
    scores[:20] = -np.inf
    labels = rng.random(300) < 0.2
    reference_scores = np.where(np.isinf(scores), -1e9, scores)
    assert auc_score(scores, labels) == pytest.approx(roc_auc_score(labels, reference_scores))


def test_gains_curve_matches_a_naive_count() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random(97)
    is_positive = rng.random(97) < 0.3
    positions = ranking_positions(scores, rng)
    fractions, captured = gains_curve(positions[is_positive], 97, points=10)
    order = np.argsort(-scores)
    for fraction, share in zip(fractions, captured, strict=True):
        top = order[: int(np.ceil(fraction * 97))]
        assert share == pytest.approx(is_positive[top].sum() / is_positive.sum())


def test_ranking_positions_order_by_score_and_break_ties_randomly() -> None:
    scores = np.array([1.0, 3.0, 2.0, 3.0, 3.0])
    positions = ranking_positions(scores, np.random.default_rng(0))
    assert sorted(positions[[1, 3, 4]]) == [0, 1, 2]
    assert positions[2] == 3 and positions[0] == 4
    tie_orders = {tuple(ranking_positions(scores, np.random.default_rng(s))[[1, 3, 4]]) for s in range(20)}
    assert len(tie_orders) > 1


def test_bootstrap_intervals_match_a_bootstrap_drawn_by_hand() -> None:
    data = np.random.default_rng(1)
    scores = data.random(2000)  # continuous: no ties, so the ranking is the plain sort
    is_positive = data.random(2000) < scores * 0.2
    config = EvaluateConfig(cutoffs=[0.01, 0.1], bootstrap=300)
    figures = method_figures(scores, is_positive, config, np.random.default_rng(2))

    # the same generator, drawn in the same order: the tie-break permutation, then the resamples
    hand = np.random.default_rng(2)
    hand.permutation(2000)
    n_positive = int(is_positive.sum())
    draws = hand.integers(0, n_positive, size=(300, n_positive))
    rank = np.empty(2000, dtype=int)
    rank[np.argsort(-scores)] = np.arange(2000)
    positions = rank[is_positive]
    negatives = scores[~is_positive]
    auc_terms = np.array([(negatives < s).mean() for s in scores[is_positive]])
    for fraction, k in ((0.01, 20), (0.1, 200)):
        assert cutoff_size(fraction, 2000) == k
        lifts = [(positions[d] < k).mean() * 2000 / k for d in draws]
        assert figures.lift_ci[fraction] == pytest.approx(tuple(np.percentile(lifts, [2.5, 97.5])))
    aucs = [auc_terms[d].mean() for d in draws]
    assert figures.auc_ci == pytest.approx(tuple(np.percentile(aucs, [2.5, 97.5])))


def test_paired_differences_match_the_two_methods_figures_and_a_naive_bootstrap() -> None:
    rng = np.random.default_rng(4)
    is_positive = rng.random(500) < 0.1
    good = is_positive * 1.0 + rng.random(500)
    weak = is_positive * 0.3 + rng.random(500)
    config = EvaluateConfig(cutoffs=[0.05, 0.2], bootstrap=200)
    first = method_figures(good, is_positive, config, np.random.default_rng(0))
    second = method_figures(weak, is_positive, config, np.random.default_rng(0))
    differences = paired_differences(first, second, 500, config, np.random.default_rng(9))
    assert differences["auc"].value == pytest.approx(first.auc - second.auc)
    for c in config.cutoffs:
        d = differences[f"precision@{c:g}"]
        assert d.value == pytest.approx(first.cutoffs[c].precision - second.cutoffs[c].precision)
    # the same resamples, drawn by hand: both methods measured on each draw of converters
    draws = np.random.default_rng(9).integers(0, is_positive.sum(), size=(200, is_positive.sum()))
    k = cutoff_size(0.2, 500)
    naive = [((first.positive_positions[d] < k).sum() - (second.positive_positions[d] < k).sum()) / k
             for d in draws]
    assert differences["precision@0.2"].ci95 == pytest.approx(tuple(np.percentile(naive, [2.5, 97.5])))
    assert differences["auc"].clear and differences["auc"].ci95[0] > 0


def test_a_method_against_itself_differs_by_exactly_zero() -> None:
    rng = np.random.default_rng(5)
    is_positive = rng.random(300) < 0.2
    figures = method_figures(rng.random(300), is_positive, EvaluateConfig(), rng)
    for d in paired_differences(figures, figures, 300, EvaluateConfig(), rng).values():
        assert d.value == 0 and d.ci95 == (0, 0) and not d.clear


def test_seed_memorization_is_chance_for_alike_groups_and_high_for_memorized_ones() -> None:
    rng = np.random.default_rng(6)
    raw = rng.standard_normal((4000, 8))
    seeds, heldout = np.arange(0, 1500), np.arange(1500, 3000)

    def figures(embedding: np.ndarray, seed_rows: np.ndarray = seeds) -> dict:
        population = Population(pl.Series("user_id", np.arange(4000)), raw, None, embedding, embedding)
        return seed_memorization(population, seed_rows, heldout, LookalikeConfig())

    alike = figures(raw.copy())
    assert abs(alike["embedding"] - 0.5) < 0.05 and not alike["flagged"]
    assert alike["embedding_low"] < alike["embedding"] < alike["embedding_high"] < 0.6
    memorized = raw.copy()
    memorized[seeds, 0] += 1.5  # the training converters pulled together along one direction
    judged = figures(memorized)
    assert judged["embedding"] > 0.8 and judged["flagged"]
    assert (judged["seeds"], judged["heldout"]) == (1500, 1500)
    assert np.isnan(figures(raw, seeds[:3])["embedding"])


def conversions_frame(with_times: bool) -> pl.DataFrame:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [(u, "a", start + timedelta(days=u)) for u in range(40)]
    rows += [(u, "b", start + timedelta(days=100 - u)) for u in range(20, 60)]
    frame = pl.DataFrame(rows, schema=["user_id", "conversion_type", "conversion_time"], orient="row")
    frame = frame.with_columns(pl.col("conversion_time").dt.cast_time_unit("us"))
    if not with_times:
        frame = frame.with_columns(pl.lit(None, dtype=pl.Datetime("us", "UTC")).alias("conversion_time"))
    return frame


def test_time_split_holds_out_the_latest_converters() -> None:
    splits = holdout_split(conversions_frame(with_times=True), 0.25, seed=0)
    assert splits["a"].method == "time"
    assert splits["a"].heldout.to_list() == list(range(30, 40))
    assert splits["b"].heldout.to_list() == list(range(20, 30))  # b's latest are its lowest ids


@pytest.mark.parametrize("with_times", [True, False])
def test_no_heldout_converter_is_a_seed_or_a_training_positive(with_times: bool) -> None:
    conversions = conversions_frame(with_times)
    splits = holdout_split(conversions, 0.3, seed=4)
    heldout = set().union(*(s.heldout.to_list() for s in splits.values()))
    trained_on = set(training_conversions(conversions, splits).get_column("user_id").to_list())
    for split in splits.values():
        assert not heldout & set(split.seeds.to_list())
        assert split.heldout.len() == round(0.3 * 40)
        assert split.method == ("time" if with_times else "random")
    assert not heldout & trained_on
    assert trained_on | heldout == set(conversions.get_column("user_id").to_list())


def test_random_split_is_seeded() -> None:
    conversions = conversions_frame(with_times=False)
    first, again = (holdout_split(conversions, 0.3, seed=4) for _ in range(2))
    other = holdout_split(conversions, 0.3, seed=5)
    assert first["a"].heldout.to_list() == again["a"].heldout.to_list()
    assert first["a"].heldout.to_list() != other["a"].heldout.to_list()


@pytest.mark.slow  # about 15 s idle, 30 s on busy cores
def test_small_end_to_end_run_reports_every_method(tmp_path: Path) -> None:
    data = generate(tmp_path / "data", 3000, events_per_user=10.0, seed=2, progress=None)
    truth = json.loads(data.truth_json.read_text())
    config = LookalikeConfig.model_validate({
        "ingest": {"categorical_int_columns": ["region_code", "plan_code", "store_code"]},
        "model": {"embedding_dim": 16, "hidden_dims": [32], "numeric_bins": 4},
        "train": {"epochs": 3, "converters_per_type": 16, "negatives_per_batch": 64,
                  "min_steps_per_epoch": 20, "validation_background": 1000, "health_sample": 500,
                  "threads": 1, "held_back_types": [truth["held_back_type"]],
                  # seconds of training do not leave the near-collapsed start; this test checks
                  # the report, not the model's quality
                  "max_mean_cosine": 1.0},
        "evaluate": {"bootstrap": 20, "background_sample": 1000},
    })
    result = evaluate(tmp_path / "work", str(data.conversions), tmp_path / "out",
                      events=str(data.events), profiles=str(data.profiles), as_of=truth["as_of"],
                      config=config, progress=None)
    report = json.loads(result.report_json.read_text())
    assert set(report["types"]) == set(pl.read_parquet(data.conversions)["conversion_type"].unique())
    assert report["types"][truth["held_back_type"]]["trained"] is False
    markdown = result.report_md.read_text()
    for figures in report["types"].values():
        assert set(figures["methods"]) == set(METHODS)
        assert set(figures["methods"]["random"]["cutoffs"]) == {"0.01", "0.05", "0.1", "0.2"}
    for method in METHODS:
        assert f"| {method} |" in markdown
    for figures in report["types"].values():
        default = figures["default_method"]
        assert default == "two_tower_" + config.audience.strategy
        assert set(figures["default_minus"]) == set(METHODS) - {default, "random"}
        versus_lr = figures["default_minus"]["logistic_regression"]["auc"]["value"]
        own = figures["methods"]
        assert versus_lr == pytest.approx(own[default]["auc"]["value"] - own["logistic_regression"]["auc"]["value"])
    assert markdown.count("(the default) minus each other method") == len(report["types"])
    assert markdown.count("Best two-tower strategy on this type") == len(report["types"])
    for figures in report["types"].values():
        strategies = {m: f for m, f in figures["methods"].items() if m.startswith("two_tower_")}
        best = figures["best_two_tower"]
        assert strategies[best["auc"]]["auc"]["value"] == max(f["auc"]["value"] for f in strategies.values())
        for cutoff in ("0.01", "0.05", "0.1", "0.2"):
            top = max(f["cutoffs"][cutoff]["precision"]["value"] for f in strategies.values())
            assert strategies[best[f"precision@{cutoff}"]]["cutoffs"][cutoff]["precision"]["value"] == top
    for figures in report["types"].values():
        m = figures["memorization"]
        assert set(m) == {"embedding", "raw", "embedding_low", "embedding_high", "seeds", "heldout",
                          "flagged"}
        assert 0.0 <= m["embedding_low"] <= m["embedding"] <= m["embedding_high"] <= 1.0
        assert 0.0 <= m["raw"] <= 1.0 and (m["seeds"], m["heldout"]) == (figures["seeds"], figures["heldout"])
    assert markdown.count("Seeds vs held-out converters of this type") == len(report["types"])
    assert result.gains_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    trained_on = pl.read_parquet(next((tmp_path / "work").rglob("training_conversions.parquet")))
    heldout = pl.concat([t.split.heldout for t in result.types.values()])
    assert not trained_on.get_column("user_id").is_in(heldout.implode()).any()


def test_cli_without_events_or_profiles_fails_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["evaluate", "--workdir", str(tmp_path), "--conversions",
                                      "c.parquet", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert result.output.strip() == "error: give at least one of --events or --profiles"

"""Seed validation and expansion strategies against naive brute-force references."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import polars as pl
import pytest
from audience_fixtures import clustered_embeddings, population_ids
from hypothesis import given, settings
from hypothesis import strategies as st

import lookalike.audience.selection as selection_module
import lookalike.core.blocks as blocks_module
from lookalike.audience.strategies import STRATEGIES, expand_seeds
from lookalike.search.neighbours import ExactSearch
from lookalike.audience.strategies.base import ExpansionProblem
from lookalike.audience.selection import assign_tiers, candidate_mask, nearest_seeds, resolve_size, top_ranked
from lookalike.audience.strategies.contrast import contrast_log_odds
from lookalike.audience.strategies.clusters import default_cluster_count, fit_seed_centres
from lookalike.audience.strategies.density import kernel_log_sums
from lookalike.audience.seeds import load_seed_vectors, match_ids, seed_distinctiveness, validate_seeds
from lookalike.audience.strategies.knn import mean_top_m
from lookalike.audience.crossfit import random_halves, subsample_halves
from lookalike.core.config import AudienceConfig
from lookalike.core.errors import AudienceError
import lookalike.audience.quality as quality_module
from lookalike.audience.quality import estimate_quality
from lookalike.audience.propensity import ArrayFeatures, boosted_log_odds

# --- naive references ---------------------------------------------------------------------------


def naive_neighbours(embeddings, query, allowed, k) -> list[tuple[float, int]]:
    """The k most similar allowed rows to one query, by a Python loop and a full sort."""
    pairs = [
        (float(np.dot(embeddings[row].astype(np.float64), query)), int(row))
        for row in np.flatnonzero(allowed)
    ]
    pairs.sort(key=lambda p: (-p[0], p[1]))
    return pairs[:k]


def naive_knn(embeddings, seed_vectors, weights, allowed, k, m, size) -> tuple[list, list]:
    """Mean of the top-m weighted similarities of each candidate found in the seeds' k-NN lists."""
    relative = weights / weights.mean()
    found: dict[int, list[float]] = {}
    for s, query in enumerate(seed_vectors.astype(np.float64)):
        for sim, row in naive_neighbours(embeddings, query, allowed, k):
            found.setdefault(row, []).append(sim * relative[s])
    scores = {row: sum(sorted(v, reverse=True)[:m]) / m for row, v in found.items()}
    ranked = sorted(scores.items(), key=lambda p: (-p[1], p[0]))[:size]
    return [r for r, _ in ranked], [s for _, s in ranked]


def naive_listing_seed(embeddings, seed_vectors, allowed, k, rows) -> list[tuple[int, float]]:
    """Per row: the seed with the largest similarity among the seeds whose k-NN lists hold it."""
    best: dict[int, tuple[int, float]] = {}
    for s, query in enumerate(seed_vectors.astype(np.float64)):
        for sim, row in naive_neighbours(embeddings, query, allowed, k):
            if row not in best or sim > best[row][1]:
                best[row] = (s, sim)
    return [best[row] for row in rows]


def newton_logistic(x, y, sample_weight, c) -> np.ndarray:
    """[w..., b] minimizing c * sum(s_i * logloss_i) + |w|^2 / 2 by Newton steps (no sklearn)."""
    design = np.c_[x, np.ones(len(x))].astype(np.float64)
    penalty = np.eye(design.shape[1]) / c
    penalty[-1, -1] = 0.0
    theta = np.zeros(design.shape[1])
    for _ in range(50):
        p = 1.0 / (1.0 + np.exp(-design @ theta))
        gradient = design.T @ (sample_weight * (p - y)) + penalty @ theta
        hessian = (design * (sample_weight * p * (1 - p))[:, None]).T @ design + penalty
        theta -= np.linalg.solve(hessian, gradient)
    return theta


def naive_contrast(embeddings, seed_vectors, seed_weights, allowed, c, seed=0) -> dict[int, float]:
    """Cross-fitted balanced logistic regression, every allowed row in the background sample."""
    rows = np.flatnonzero(allowed)
    halves = random_halves(rows, len(rows), seed)
    thetas = []
    for half in halves:
        x = np.vstack([seed_vectors, embeddings[half]])
        y = np.r_[np.ones(len(seed_vectors)), np.zeros(len(half))]
        balance = np.where(y == 1, len(y) / (2 * len(seed_vectors)), len(y) / (2 * len(half)))
        relative = seed_weights / seed_weights.mean()
        thetas.append(newton_logistic(x, y, balance * np.r_[relative, np.ones(len(half))], c))
    scores = {}
    for half, theta in zip(halves, reversed(thetas), strict=True):
        for row in half:
            logit = float(np.dot(embeddings[row], theta[:-1]) + theta[-1])
            scores[int(row)] = 1.0 / (1.0 + np.exp(-logit))
    return scores


def naive_density(embeddings, seed_rows, seed_weights, allowed, temperature) -> dict[int, float]:
    """log(weighted mean seed kernel) - log(mean kernel over the other allowed rows), by loops."""
    vectors = embeddings.astype(np.float64)
    candidates = np.flatnonzero(allowed)
    scores = {}
    for row in candidates:
        seed_sum = sum(w * math.exp(vectors[row] @ vectors[s] / temperature)
                       for s, w in zip(seed_rows, seed_weights, strict=True))
        others = [b for b in candidates if b != row]
        background_sum = sum(math.exp(vectors[row] @ vectors[b] / temperature) for b in others)
        scores[int(row)] = (math.log(seed_sum / sum(seed_weights))
                            - math.log(background_sum / len(others)))
    return scores


def naive_max_cosine(embeddings, centres, allowed, size) -> tuple[list[int], list[float]]:
    """Every allowed row scored by its largest cosine to any centre, best first."""
    scores = []
    for row in np.flatnonzero(allowed):
        vector = embeddings[row].astype(np.float64)
        best = max(float(np.dot(vector, c.astype(np.float64))) for c in centres)
        scores.append((best, int(row)))
    scores.sort(key=lambda p: (-p[0], p[1]))
    return [r for _, r in scores[:size]], [s for s, _ in scores[:size]]


def naive_weighted_centroid(vectors: np.ndarray, weights: np.ndarray) -> np.ndarray:
    total = np.zeros(vectors.shape[1])
    for vector, weight in zip(vectors.astype(np.float64), weights, strict=True):
        total += weight * vector
    return total / np.linalg.norm(total)


# --- fixtures -----------------------------------------------------------------------------------

N, D = 600, 8


@pytest.fixture(scope="module")
def embeddings() -> np.ndarray:
    return clustered_embeddings(N, D)


def make_problem(embeddings, seed_rows, size, *, weights=None, excluded_rows=None,
                 eligible_rows=None, features=None):
    """The expansion problem of ``seed_rows``; the hybrid's features default to the embeddings."""
    allowed = candidate_mask(
        len(embeddings), seed_rows=seed_rows, excluded_rows=excluded_rows,
        eligible_rows=eligible_rows,
    )
    problem = ExpansionProblem(
        embeddings=embeddings,
        seed_vectors=np.asarray(embeddings[seed_rows]),
        seed_weights=np.ones(len(seed_rows)) if weights is None else weights,
        seed_rows=np.asarray(seed_rows),
        excluded=np.flatnonzero(~allowed),
        n_candidates=int(allowed.sum()),
        size=size,
        features=ArrayFeatures(embeddings if features is None else features),
    )
    return problem, allowed


def seeds_in_clusters(n: int, clusters: tuple[int, ...], count: int) -> np.ndarray:
    rows = np.flatnonzero(np.isin(np.arange(n) % 6, clusters))
    return np.random.default_rng(3).choice(rows, count, replace=False)


# --- exact search ---------------------------------------------------------------------------------


def test_exact_search_matches_a_full_sort_with_exclusions(embeddings):
    queries = embeddings[[3, 50, 400]]
    exclude = np.arange(0, N, 7)
    allowed = np.ones(N, dtype=bool)
    allowed[exclude] = False
    labels, sims = ExactSearch(embeddings).query(queries, 25, exclude)
    for q, query in enumerate(queries.astype(np.float64)):
        expected = naive_neighbours(embeddings, query, allowed, 25)
        assert labels[q].tolist() == [r for _, r in expected]
        np.testing.assert_allclose(sims[q], [s for s, _ in expected], atol=1e-6)


def test_exact_search_on_a_subset_returns_population_rows(embeddings):
    rows = np.arange(1, N, 3)
    exclude = rows[::5]
    allowed = np.zeros(N, dtype=bool)
    allowed[rows] = True
    allowed[exclude] = False
    search = ExactSearch(embeddings, rows)
    labels, _ = search.query(embeddings[[10]], 30, exclude)
    assert search.live_count == len(rows)
    expected = naive_neighbours(embeddings, embeddings[10].astype(np.float64), allowed, 30)
    assert labels[0].tolist() == [r for _, r in expected]


def test_exact_search_returns_every_allowed_row_when_k_exceeds_them(embeddings):
    labels, _ = ExactSearch(embeddings[:20]).query(embeddings[:2], 50, np.arange(5))
    assert labels.shape == (2, 15)
    assert sorted(labels[0].tolist()) == list(range(5, 20))


# --- strategies against references --------------------------------------------------------------


@pytest.mark.parametrize("weighted", [False, True])
def test_knn_matches_the_naive_reference(embeddings, weighted):
    seeds = seeds_in_clusters(N, (0, 1), 40)
    weights = np.random.default_rng(5).uniform(0.1, 3.0, len(seeds)) if weighted else None
    excluded = np.arange(0, N, 11)
    problem, allowed = make_problem(embeddings, seeds, 80, weights=weights, excluded_rows=excluded)
    config = AudienceConfig(neighbours_per_seed=15, top_m=4)
    result = expand_seeds(problem, ExactSearch(embeddings), "knn", config)
    k = result.effort["neighbours_per_seed"]
    rows, scores = naive_knn(embeddings, problem.seed_vectors, problem.seed_weights, allowed, k, 4,
                             80)
    assert result.rows.tolist() == rows
    np.testing.assert_allclose(result.scores, scores, atol=1e-6)
    nearest, similarity = result.listed_nearest
    expected = naive_listing_seed(embeddings, problem.seed_vectors, allowed, k, rows)
    assert nearest.tolist() == [seed for seed, _ in expected]
    np.testing.assert_allclose(similarity, [sim for _, sim in expected], atol=1e-6)


def test_knn_grows_k_until_enough_distinct_candidates(embeddings):
    seeds = seeds_in_clusters(N, (2,), 30)
    problem, allowed = make_problem(embeddings, seeds, 250)
    config = AudienceConfig(neighbours_per_seed=3, top_m=3)
    result = expand_seeds(problem, ExactSearch(embeddings), "knn", config)
    k = result.effort["neighbours_per_seed"]
    assert k > 3 and result.effort["query_rounds"] > 1
    assert len(result.rows) == 250
    rows, scores = naive_knn(embeddings, problem.seed_vectors, problem.seed_weights, allowed, k, 3,
                             250)
    assert result.rows.tolist() == rows
    np.testing.assert_allclose(result.scores, scores, atol=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
def test_clusters_match_max_cosine_to_the_centres(embeddings, weighted):
    seeds = seeds_in_clusters(N, (0, 3, 4), 90)
    weights = np.random.default_rng(6).uniform(0.1, 3.0, len(seeds)) if weighted else None
    eligible = np.arange(0, N, 2)
    problem, allowed = make_problem(embeddings, seeds, 120, weights=weights, eligible_rows=eligible)
    config = AudienceConfig(n_clusters=3)
    result = expand_seeds(problem, ExactSearch(embeddings), "clusters", config)
    centres = fit_seed_centres(problem.seed_vectors, problem.seed_weights, 3, config.seed)
    rows, scores = naive_max_cosine(embeddings, centres, allowed, 120)
    assert result.rows.tolist() == rows
    np.testing.assert_allclose(result.scores, scores, atol=1e-6)


@pytest.mark.parametrize("weighted", [False, True])
def test_centroid_matches_cosine_to_the_weighted_mean(embeddings, weighted):
    seeds = seeds_in_clusters(N, (1, 5), 60)
    weights = np.random.default_rng(7).uniform(0.1, 3.0, len(seeds)) if weighted else None
    problem, allowed = make_problem(embeddings, seeds, 150, weights=weights)
    result = expand_seeds(problem, ExactSearch(embeddings), "centroid", AudienceConfig())
    centre = naive_weighted_centroid(problem.seed_vectors, problem.seed_weights)
    rows, scores = naive_max_cosine(embeddings, [centre], allowed, 150)
    assert result.rows.tolist() == rows
    np.testing.assert_allclose(result.scores, scores, atol=1e-6)


def test_mean_top_m_by_hand():
    labels = np.array([[1, 2, -1], [2, 3, 1]])
    contributions = np.array([[0.9, 0.5, 0.7], [0.8, 0.1, 0.2]])
    rows, scores = mean_top_m(labels, contributions, 2)
    assert rows.tolist() == [1, 2, 3]
    np.testing.assert_allclose(scores, [(0.9 + 0.2) / 2, (0.8 + 0.5) / 2, 0.1 / 2])


def test_weights_pull_the_knn_audience_towards_heavy_seeds(embeddings):
    first, second = seeds_in_clusters(N, (0,), 20), seeds_in_clusters(N, (3,), 20)
    first_direction = embeddings[first].mean(axis=0)

    def closeness_to_first(weights: np.ndarray) -> float:
        problem, _ = make_problem(embeddings, np.r_[first, second], 60, weights=weights)
        config = AudienceConfig(neighbours_per_seed=30)
        result = expand_seeds(problem, ExactSearch(embeddings), "knn", config)
        return float((embeddings[result.rows] @ first_direction).mean())

    heavy_first = np.r_[np.full(20, 10.0), np.full(20, 0.1)]
    assert closeness_to_first(heavy_first) > closeness_to_first(heavy_first[::-1]) + 0.1


def test_default_cluster_count_grows_with_seeds_and_is_capped():
    assert [default_cluster_count(s, 32) for s in (1, 8, 200, 50_000)] == [1, 2, 10, 32]


@pytest.mark.parametrize("weighted", [False, True])
def test_contrast_matches_a_newton_logistic_regression(embeddings, weighted):
    seeds = seeds_in_clusters(N, (1,), 40)
    weights = np.random.default_rng(8).uniform(0.2, 2.0, len(seeds)) if weighted else None
    problem, allowed = make_problem(embeddings, seeds, 90, weights=weights,
                                    excluded_rows=np.arange(0, N, 9))
    config = AudienceConfig(contrast_background=N, contrast_c=0.5)
    result = expand_seeds(problem, ExactSearch(embeddings), "contrast", config)
    expected = naive_contrast(embeddings, problem.seed_vectors, problem.seed_weights, allowed, 0.5)
    ranked = sorted(expected.items(), key=lambda p: (-p[1], p[0]))[:90]
    np.testing.assert_allclose(result.scores, [score for _, score in ranked], atol=2e-4)
    assert len(set(result.rows.tolist()) ^ {row for row, _ in ranked}) <= 4  # ties at the edge


def test_contrast_recovers_a_half_space():
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(3000, 8))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    direction = np.eye(8)[0]
    projection = vectors @ direction
    seeds = rng.choice(np.flatnonzero(projection > 0.6), 60, replace=False)
    problem, _ = make_problem(vectors, seeds, 50)
    result = expand_seeds(problem, ExactSearch(vectors), "contrast", AudienceConfig())
    assert projection[result.rows].min() > 0.5


@pytest.mark.parametrize("weighted", [False, True])
def test_density_matches_a_naive_kernel_sum(weighted):
    vectors = clustered_embeddings(300, 6, clusters=5)
    seeds = np.random.default_rng(4).choice(300, 25, replace=False)
    weights = np.random.default_rng(9).uniform(0.2, 2.0, len(seeds)) if weighted else None
    problem, allowed = make_problem(vectors, seeds, 60, weights=weights,
                                    excluded_rows=np.arange(0, 300, 7))
    config = AudienceConfig(density_temperature=0.2, density_background=300)
    result = expand_seeds(problem, ExactSearch(vectors), "density", config)
    expected = naive_density(vectors, seeds, problem.seed_weights, allowed, 0.2)
    ranked = sorted(expected.items(), key=lambda p: (-p[1], p[0]))[:60]
    np.testing.assert_allclose(result.scores, [score for _, score in ranked], atol=1e-4)
    assert len(set(result.rows.tolist()) ^ {row for row, _ in ranked}) <= 2  # ties at the edge
    assert result.effort == {"background": int(allowed.sum()), "centres": 25}


def test_kernel_sums_stay_exact_where_float32_terms_underflow():
    """At t = 0.01 a row opposite every centre has terms of exp(-200): zero in float32."""
    centres = np.array([[1.0, 0.0], [0.8, 0.6]], dtype=np.float32)
    vectors = np.array([[-1.0, 0.0], [0.6, 0.8], [1.0, 0.0]], dtype=np.float32)
    log_weights = np.log([0.25, 0.75])
    sums = kernel_log_sums(vectors, np.arange(3), centres, log_weights, 0.01)
    expected = [math.log(sum(math.exp(lw + float(v @ c) / 0.01)
                             for c, lw in zip(centres.astype(np.float64), log_weights, strict=True)))
                for v in vectors.astype(np.float64)]
    np.testing.assert_allclose(sums, expected, rtol=1e-6)


def two_regions(crowded: int, sparse: int, seeds_each: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around e0 (``crowded`` users) and e1 (``sparse``), seeds_each seeds in each."""
    rng = np.random.default_rng(12)
    centre = np.repeat(np.eye(8)[:2], [crowded, sparse], axis=0)
    vectors = centre + 0.15 * rng.normal(size=(crowded + sparse, 8))
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    seeds = np.r_[rng.choice(crowded, seeds_each, replace=False),
                  crowded + rng.choice(sparse, seeds_each, replace=False)]
    return vectors, seeds


def test_density_prefers_where_seeds_are_dense_relative_to_everyone():
    """As many seeds in a crowded region (1% of its users) as in a sparse one (10%): a user of the
    sparse region is ten times as likely to be seed-like, and the density audience comes from it;
    a plain vote of the seeds (the centroid) cannot tell the two regions apart."""
    vectors, seeds = two_regions(crowded=6000, sparse=600, seeds_each=60)
    problem, _ = make_problem(vectors, seeds, 300)
    density = expand_seeds(problem, ExactSearch(vectors), "density", AudienceConfig())
    centroid = expand_seeds(problem, ExactSearch(vectors), "centroid", AudienceConfig())
    assert np.mean(density.rows >= 6000) > 0.9
    assert np.mean(centroid.rows >= 6000) < 0.7


def test_density_finds_both_modes_of_a_two_mode_seed_list():
    rng = np.random.default_rng(3)
    poles = np.repeat(np.array([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]), 100, axis=0)
    members = poles + 0.1 * rng.normal(size=poles.shape)
    background = rng.normal(size=(2000, 4))
    vectors = np.vstack([members, background])
    vectors = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)
    seeds = np.r_[np.arange(0, 100, 2), np.arange(100, 200, 2)]
    problem, _ = make_problem(vectors, seeds, 100)
    density = expand_seeds(problem, ExactSearch(vectors), "density", AudienceConfig())
    centroid = expand_seeds(problem, ExactSearch(vectors), "centroid", AudienceConfig())
    near_a_pole = np.abs(vectors[:, 0]) > 0.9
    assert near_a_pole[density.rows].mean() > 0.9
    assert near_a_pole[centroid.rows].mean() < 0.5


def test_density_uses_at_most_max_seeds_kernel_centres(embeddings):
    seeds = seeds_in_clusters(N, (0, 2), 60)
    problem, _ = make_problem(embeddings, seeds, 50)
    capped = expand_seeds(problem, ExactSearch(embeddings), "density",
                          AudienceConfig(density_max_seeds=20, density_background=500))
    assert capped.effort == {"background": 500, "centres": 20}
    uncapped = AudienceConfig(density_max_seeds=60, density_background=500)
    assert expand_seeds(problem, ExactSearch(embeddings), "density", uncapped).effort["centres"] == 60


def test_random_halves_are_a_seeded_random_partition_of_a_sample():
    rows = np.arange(1000, 3000)
    halves = random_halves(rows, 800, seed=4)
    both = np.concatenate(halves)
    assert [len(h) for h in halves] == [400, 400] and len(np.unique(both)) == 800
    assert np.isin(both, rows).all() and all((np.diff(h) > 0).all() for h in halves)
    # Each half spans the whole row range, unlike the low and high rows of a sorted sample.
    assert all(np.mean(h < 2000) == pytest.approx(0.5, abs=0.1) for h in halves)
    assert all(np.array_equal(a, b) for a, b in zip(halves, random_halves(rows, 800, 4), strict=True))


def test_contrast_is_not_fooled_by_rows_ordered_by_period():
    """Rows sorted by period (as a table ordered by date is), seeds from every period: the
    audience must follow the seed direction in both periods, not pick one period."""
    rng = np.random.default_rng(5)
    n = 4000
    period = np.where(np.arange(n) < n // 2, 1.0, -1.0)
    signal = rng.normal(size=n)
    vectors = np.column_stack([period, signal, rng.normal(size=(n, 6))]).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    seeds = rng.choice(np.flatnonzero(signal > 1.0), 150, replace=False)
    problem, _ = make_problem(vectors, seeds, 200)
    result = expand_seeds(problem, ExactSearch(vectors), "contrast", AudienceConfig())
    assert np.mean(signal[result.rows] > 1.0) > 0.9
    assert 0.3 < np.mean(result.rows < n // 2) < 0.7


@pytest.mark.parametrize("weighted", [False, True])
def test_hybrid_adds_weighted_contrast_and_boosted_log_odds(embeddings, weighted):
    rng = np.random.default_rng(6)
    features = np.column_stack([np.arange(N) % 6 == 1, rng.normal(size=(N, 3))]).astype(np.float32)
    seeds = seeds_in_clusters(N, (1,), 40)
    weights = rng.uniform(0.2, 2.0, len(seeds)) if weighted else np.ones(len(seeds))
    problem, allowed = make_problem(embeddings, seeds, 90, weights=weights, features=features,
                                    excluded_rows=np.arange(0, N, 9))
    config = AudienceConfig(contrast_background=N, contrast_c=0.5)
    result = expand_seeds(problem, ExactSearch(embeddings), "hybrid", config)

    rows = np.flatnonzero(allowed)
    contrast = naive_contrast(embeddings, problem.seed_vectors, weights, allowed, 0.5)
    contrast_logits = np.array([math.log(contrast[r] / (1 - contrast[r])) for r in rows])
    boosted = boosted_log_odds(ArrayFeatures(features), seeds, weights / weights.mean(),
                               random_halves(rows, len(rows), 0), rows, random_state=0,
                               linear_share=config.hybrid_linear_share)  # 40 seeds: blended

    score = config.hybrid_embedding_weight * contrast_logits + boosted
    expected = dict(zip(rows.tolist(), score, strict=True))
    ranked = sorted(expected.items(), key=lambda p: (-p[1], p[0]))[:90]
    np.testing.assert_allclose(result.scores, [score for _, score in ranked], atol=1e-3)
    assert len(set(result.rows.tolist()) ^ {row for row, _ in ranked}) <= 4  # ties at the edge


@pytest.mark.parametrize("signal_in", ["features", "embeddings"])
def test_hybrid_finds_seeds_signal_in_either_space(signal_in):
    """Seeds defined by a feature the embeddings do not hold, or by an embedding cluster the
    features do not hold: the hybrid audience follows the signal either way."""
    rng = np.random.default_rng(7)
    n = 3000
    embeddings = clustered_embeddings(n, 8)
    features = rng.normal(size=(n, 4)).astype(np.float32)
    if signal_in == "features":
        member = features[:, 0] > 1.0
    else:
        member = np.arange(n) % 6 == 2
    seeds = rng.choice(np.flatnonzero(member), 120, replace=False)
    problem, _ = make_problem(embeddings, seeds, 150, features=features)
    hybrid = expand_seeds(problem, ExactSearch(embeddings), "hybrid", AudienceConfig())
    contrast = expand_seeds(problem, ExactSearch(embeddings), "contrast", AudienceConfig())
    assert member[hybrid.rows].mean() > 0.8
    if signal_in == "features":
        assert member[contrast.rows].mean() < 0.4  # the embeddings alone cannot find it


def test_hybrid_fits_its_boosting_on_at_most_max_seeds(embeddings):
    seeds = seeds_in_clusters(N, (1, 2), 60)
    problem, _ = make_problem(embeddings, seeds, 50)
    capped = expand_seeds(problem, ExactSearch(embeddings), "hybrid",
                          AudienceConfig(boosting_max_seeds=25))
    assert capped.effort["boosting_seeds"] == 25
    uncapped = expand_seeds(problem, ExactSearch(embeddings), "hybrid", AudienceConfig())
    assert uncapped.effort["boosting_seeds"] == 60
    assert not np.array_equal(capped.scores, uncapped.scores)


def test_hybrid_fits_its_boosting_against_a_sample_of_each_half(embeddings):
    rng = np.random.default_rng(8)
    features = np.column_stack([np.arange(N) % 6 == 1, rng.normal(size=(N, 3))]).astype(np.float32)
    seeds = seeds_in_clusters(N, (1,), 40)
    problem, allowed = make_problem(embeddings, seeds, 60, features=features)
    config = AudienceConfig(contrast_background=400, boosting_background=150)
    result = expand_seeds(problem, ExactSearch(embeddings), "hybrid", config)
    assert result.effort["background"] == 400 and result.effort["boosting_background"] == 150

    rows = np.flatnonzero(allowed)
    halves = random_halves(rows, 400, config.seed)
    sampled = subsample_halves(halves, 150, config.seed)
    assert [len(h) for h in sampled] == [75, 75]
    assert all(np.isin(part, half).all() for part, half in zip(sampled, halves, strict=True))
    embedding = contrast_log_odds(problem, halves, config.contrast_c)[rows]
    boosted = boosted_log_odds(ArrayFeatures(features), seeds, np.ones(len(seeds)), sampled, rows,
                               random_state=config.seed, linear_share=config.hybrid_linear_share)
    score = config.hybrid_embedding_weight * embedding + boosted
    reference_rows, reference_scores = top_ranked(rows, score, 60)
    np.testing.assert_array_equal(result.rows, reference_rows)
    np.testing.assert_allclose(result.scores, reference_scores)


def test_hybrid_blends_a_linear_model_only_below_its_seed_count(embeddings):
    """The blend itself is checked against scikit-learn in the tests above (40 seeds)."""
    rng = np.random.default_rng(9)
    features = np.column_stack([np.arange(N) % 6 == 1, rng.normal(size=(N, 3))]).astype(np.float32)
    seeds = seeds_in_clusters(N, (1,), 40)
    problem, _ = make_problem(embeddings, seeds, 60, features=features)
    search = ExactSearch(embeddings)
    at_limit, below = (expand_seeds(problem, search, "hybrid",
                                    AudienceConfig(hybrid_linear_max_seeds=limit))
                       for limit in (40, 41))
    assert at_limit.effort["linear_share"] == 0.0
    assert below.effort["linear_share"] == AudienceConfig().hybrid_linear_share > 0
    assert not np.allclose(at_limit.scores, below.scores)


@pytest.mark.parametrize("limit", [30, 41])
def test_the_quality_estimates_folds_blend_the_feature_model_as_the_export_does(
        embeddings, monkeypatch, limit):
    """40 seeds: the export blends only below ``limit``; its folds (about 27 seeds) must agree."""
    rng = np.random.default_rng(10)
    features = np.column_stack([np.arange(N) % 6 == 1, rng.normal(size=(N, 3))]).astype(np.float32)
    problem, _ = make_problem(embeddings, seeds_in_clusters(N, (1,), 40), 60, features=features)
    shares: list[float] = []

    def recorded(*args, **kwargs):
        expansion = expand_seeds(*args, **kwargs)
        shares.append(expansion.effort["linear_share"])
        return expansion

    monkeypatch.setattr(quality_module, "expand_seeds", recorded)
    config = AudienceConfig(hybrid_linear_max_seeds=limit, quality_folds=3)
    assert estimate_quality(problem, "hybrid", config, 60) is not None
    exported = expand_seeds(problem, ExactSearch(embeddings), "hybrid", config).effort["linear_share"]
    assert len(shares) == 3 and set(shares) == {exported}


def test_hybrid_without_features_is_refused(embeddings):
    problem, _ = make_problem(embeddings, np.arange(10), 5)
    problem = dataclasses.replace(problem, features=None)
    with pytest.raises(AudienceError, match="feature table"):
        expand_seeds(problem, ExactSearch(embeddings), "hybrid", AudienceConfig())


def test_unknown_strategy_is_refused(embeddings):
    problem, _ = make_problem(embeddings, np.arange(10), 5)
    with pytest.raises(AudienceError, match="unknown strategy"):
        expand_seeds(problem, ExactSearch(embeddings), "magic", AudienceConfig())


def test_knn_nearest_seed_is_exact_when_the_lists_reach_every_candidate(embeddings):
    seeds = seeds_in_clusters(N, (0, 3), 25)
    problem, _ = make_problem(embeddings, seeds, 60)
    config = AudienceConfig(neighbours_per_seed=N, top_m=3)
    result = expand_seeds(problem, ExactSearch(embeddings), "knn", config)
    exact, exact_similarity = nearest_seeds(embeddings, result.rows, problem.seed_vectors)
    assert result.listed_nearest[0].tolist() == exact.tolist()
    np.testing.assert_allclose(result.listed_nearest[1], exact_similarity, atol=1e-6)


def test_nearest_seeds_match_argmax(embeddings):
    seed_vectors = embeddings[[5, 77, 300]]
    rows = np.array([1, 2, 400, 599])
    best, sims = nearest_seeds(embeddings, rows, seed_vectors)
    expected = [int(np.argmax([np.dot(embeddings[r], s) for s in seed_vectors])) for r in rows]
    assert best.tolist() == expected
    np.testing.assert_allclose(sims, (embeddings[rows] @ seed_vectors.T).max(axis=1), atol=1e-6)


def test_nearest_seeds_across_tiles_match_argmax(embeddings, monkeypatch):
    monkeypatch.setattr(blocks_module, "BLOCK_VALUES", 7 * 5)  # 7 rows x 5 seeds a tile
    monkeypatch.setattr(selection_module, "_TILE_SEEDS", 5)
    seed_vectors = embeddings[np.r_[np.arange(0, 600, 29), 29]]  # the last duplicates seed 1
    rows = np.arange(3, 600, 11)
    best, sims = nearest_seeds(embeddings, rows, seed_vectors)
    similarities = embeddings[rows] @ seed_vectors.T
    assert best.tolist() == np.argmax(similarities, axis=1).tolist()  # ties go to the first seed
    np.testing.assert_allclose(sims, similarities.max(axis=1), atol=1e-6)


def test_seed_vectors_come_from_query_embeddings_when_present(tmp_path, embeddings):
    path = tmp_path / "embeddings.npy"
    np.save(path, embeddings)
    np.testing.assert_array_equal(load_seed_vectors(path, np.array([4, 2])), embeddings[[4, 2]])
    np.save(tmp_path / "query_embeddings.npy", -embeddings)
    np.testing.assert_array_equal(load_seed_vectors(path, np.array([4, 2])), -embeddings[[4, 2]])


# --- hard rules and size: property test ---------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    data=st.data(),
    n=st.integers(20, 90),
    strategy=st.sampled_from(sorted(STRATEGIES)),
    use_eligible=st.booleans(),
)
def test_audience_respects_the_hard_rules_and_the_size(data, n, strategy, use_eligible):
    embeddings = clustered_embeddings(n, 4, seed=n)
    rows = st.lists(st.integers(0, n - 1), unique=True)
    seeds = np.array(data.draw(rows.filter(lambda r: len(r) >= 2), label="seeds"), dtype=np.int64)
    excluded = np.array(data.draw(rows, label="excluded"), dtype=np.int64)
    eligible = np.array(data.draw(rows, label="eligible"), dtype=np.int64) if use_eligible else None
    allowed = candidate_mask(n, seed_rows=seeds, excluded_rows=excluded, eligible_rows=eligible)
    if not allowed.any():
        with pytest.raises(AudienceError):
            resolve_size(1, None, 0, 1)
        return
    asked = data.draw(st.integers(1, n), label="size")
    size = resolve_size(asked, None, int(allowed.sum()), 1)
    problem, _ = make_problem(
        embeddings, seeds, size, excluded_rows=excluded, eligible_rows=eligible
    )
    config = AudienceConfig(neighbours_per_seed=data.draw(st.integers(1, 5), label="k"), top_m=2)
    result = expand_seeds(problem, ExactSearch(embeddings), strategy, config)
    chosen = set(result.rows.tolist())
    assert len(result.rows) == min(asked, int(allowed.sum())) == len(chosen)
    assert not chosen & set(seeds.tolist())
    assert not chosen & set(excluded.tolist())
    if eligible is not None:
        assert chosen <= set(eligible.tolist())
    assert np.all(np.diff(result.scores) <= 0)


def test_resolve_size_rules():
    assert resolve_size(None, 0.05, 1000, 10) == 50
    assert resolve_size(5000, None, 1000, 10) == 1000
    with pytest.raises(AudienceError, match="exactly one"):
        resolve_size(10, 0.1, 1000, 1)
    with pytest.raises(AudienceError, match="min_audience_size"):
        resolve_size(5, None, 1000, 10)
    with pytest.raises(AudienceError, match="only 8 users are eligible"):
        resolve_size(20, None, 8, 10)


# --- tiers --------------------------------------------------------------------------------------


def test_tiers_by_hand():
    tiers = assign_tiers(120, [0.05, 0.01, 0.1], 1000)
    expected = [0.01] * 10 + [0.05] * 40 + [0.1] * 50 + [1.0] * 20
    assert tiers.tolist() == expected


@given(
    n=st.integers(0, 400),
    eligible=st.integers(1, 2000),
    bands=st.lists(st.integers(1, 100), min_size=1, max_size=5),
)
def test_tiers_are_nested(n, eligible, bands):
    fractions = [b / 100 for b in bands]
    n = min(n, eligible)  # an audience never outnumbers the eligible users
    tiers = assign_tiers(n, fractions, eligible)
    for t in fractions:
        within = np.flatnonzero(tiers <= t)
        assert within.tolist() == list(range(min(n, int(t * eligible + 1e-9))))


def test_tier_band_is_robust_to_float_products():
    assert (assign_tiers(40, [0.29], 100) == 0.29).sum() == 29


# --- seeds --------------------------------------------------------------------------------------


def test_match_ids_counts_unknown_duplicates_and_nulls():
    population = population_ids(10, "int")
    given = pl.Series(["1003", "1001", "1003", "99", "x", None, "1001", "1009"])
    match = match_ids(given, population)
    assert match.rows.tolist() == [3, 1, 9]
    assert match.positions.tolist() == [0, 1, 7]
    assert (match.unknown, match.duplicates) == (3, 2)
    assert match.rows_given == len(match.rows) + match.unknown + match.duplicates
    assert match.unknown_examples == ["99"]


def test_match_ids_casts_int_ids_to_a_string_population():
    match = match_ids(pl.Series([1002, 1004]), pl.Series(["1001", "1002", "1004"]))
    assert match.rows.tolist() == [1, 2]


def _seed_frame(ids: list, weights: list | None = None) -> pl.DataFrame:
    frame = pl.DataFrame({"user_id": ids})
    return frame if weights is None else frame.with_columns(pl.Series("weight", weights))


def test_too_few_seeds_refuse(embeddings):
    ids = population_ids(N, "int")
    with pytest.raises(AudienceError, match="only 50 distinct seed ids"):
        validate_seeds(_seed_frame(ids[:50].to_list()), ids, embeddings, AudienceConfig())


def test_all_unknown_seeds_refuse_naming_the_id_type(embeddings):
    ids = population_ids(N, "string")
    with pytest.raises(AudienceError, match="none of the 200 seed ids.*String"):
        validate_seeds(_seed_frame(list(range(200))), ids, embeddings, AudienceConfig())


def test_duplicates_unknown_and_small_seeds_warn(embeddings):
    ids = population_ids(N, "int").to_list()
    given = ids[:150] + ids[:30] + [1, 2]
    seeds = validate_seeds(_seed_frame(given), population_ids(N, "int"), embeddings,
                           AudienceConfig())
    report = seeds.report
    counts = (report.rows_given, report.matched, report.unknown, report.duplicates)
    assert counts == (182, 150, 2, 30)
    assert seeds.rows.tolist() == list(range(150))
    text = " ".join(report.warnings)
    assert "2 seed ids are not in the population" in text
    assert "30 seed rows repeat" in text
    assert "fewer than 1000" in text


def test_duplicates_merged_by_the_reader_still_count_as_given(embeddings):
    ids = population_ids(N, "int")
    seeds = _seed_frame(ids[:120].to_list())
    report = validate_seeds(seeds, ids, embeddings, AudienceConfig(), merged_duplicates=7).report
    assert (report.rows_given, report.matched, report.duplicates) == (127, 120, 7)


def test_seed_weights_follow_their_ids(embeddings):
    ids = population_ids(N, "int")
    given = [ids[5], 1, ids[3]] + ids[10:130].to_list()
    weights = [5.0, 9.0, 3.0] + [1.0] * 120
    seeds = validate_seeds(_seed_frame(given, weights), ids, embeddings, AudienceConfig())
    assert seeds.report.weighted
    assert seeds.rows[:2].tolist() == [5, 3] and seeds.weights[:2].tolist() == [5.0, 3.0]


def test_distinctiveness_separates_clustered_from_random_seeds():
    embeddings = clustered_embeddings(3000, 8)
    config = AudienceConfig(distinctiveness_sample=1000)
    clustered = seeds_in_clusters(3000, (2,), 300)
    random_rows = np.random.default_rng(9).choice(3000, 300, replace=False)
    assert seed_distinctiveness(embeddings, clustered, config) > 0.85
    assert 0.35 < seed_distinctiveness(embeddings, random_rows, config) < 0.65
    ids = population_ids(3000, "int")
    report = validate_seeds(_seed_frame(ids[random_rows].to_list()), ids, embeddings, config).report
    assert any("hard to tell apart" in w for w in report.warnings)
    report = validate_seeds(_seed_frame(ids[clustered].to_list()), ids, embeddings, config).report
    assert not any("hard to tell apart" in w for w in report.warnings)

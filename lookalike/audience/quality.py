"""The expected quality of an export, estimated by seed hold-out: recall and lift per size.

The seeds (at most ``audience.quality_max_seeds``, a seeded sample beyond it) are split into
``audience.quality_folds`` seeded folds. For each fold the export's own strategy runs with the
other folds' seeds as the seed list, on a sub-population: eligible users who are not seeds, plus
the fold's seeds as ordinary candidates. Up to ``audience.contrast_background`` eligible users,
that is all of them, and each fold repeats the export (cross-fitting included). Beyond it, a
seeded sample of ``audience.quality_candidates`` is ranked, and contrast and hybrid fit one model
against a further ``audience.quality_background`` sampled users, who are not ranked: the export
scores most users by the mean of two models cross-fitted on its background, and the estimate's
cost is mostly its fits (``audience.quality_boosting_learning_rate`` 0.2 would halve the
hybrid's, at a lower estimate). Each held-out seed is placed in the strategy's own order (score,
then row): with ``m`` users ranked out of ``E`` eligible, it counts as within a size ``n`` when
fewer than ``n * m / E`` ranked users come before it (when ``m = E``: its rank among the eligible
users and itself is at most ``n``). Then, over all held-out seeds:

- recall@n = share of held-out seeds within ``n``: the expected share of future converters like
  the seeds that an audience of ``n`` finds;
- lift@n = recall@n / (n / E): how many times more than a random audience of ``n`` (1.0).

Intervals: 95% percentile bootstrap over the held-out seeds (``audience.quality_bootstrap``
resamples). What they leave out, all pessimistic but the last: each fold trains on
``(k - 1) / k`` of the seeds (and, sampled, one model instead of the mean of two); held-out seeds
that the encoder trained on as converters can rank above converters it never saw (memorization:
optimistic on a trained conversion type). benchmarks/estimate_calibration.py checks the interval
against converters a build never saw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from lookalike.audience.propensity import ArrayFeatures
from lookalike.audience.selection import band_size
from lookalike.audience.strategies import expand_seeds
from lookalike.audience.strategies.base import ExpansionProblem, allowed_mask
from lookalike.audience.strategies.hybrid import linear_share
from lookalike.core.blocks import float32_rows
from lookalike.core.bootstrap import percentile_interval
from lookalike.core.config import AudienceConfig
from lookalike.core.parallel import thread_map
from lookalike.search.neighbours import ExactSearch


@dataclass(frozen=True)
class HeldOutRanks:
    """Where each held-out seed ranked among ``ranked`` users standing for ``eligible`` users."""

    seeds: np.ndarray  # int64 [H]: positions in the seed list, fold by fold
    above: np.ndarray  # int64 [H]: ranked users before the seed (``ranked``: beyond every size)
    folds: int
    ranked: int
    eligible: int

    def within(self, size: int) -> np.ndarray:
        """bool [H]: the held-out seeds inside an audience of ``size`` eligible users.

        Example (all 10 eligible users ranked, so ``above`` is the rank among them)::

            >>> ranks = HeldOutRanks(np.arange(3), np.array([0, 4, 10]), 3, 10, 10)
            >>> ranks.within(4).tolist(), ranks.within(5).tolist()
            ([True, False, False], [True, True, False])
        """
        return self.above < size * self.ranked / self.eligible


def estimate_quality(
    problem: ExpansionProblem, strategy: str, config: AudienceConfig, audience_size: int
) -> dict[str, Any] | None:
    """The report's quality section: recall and lift at the audience's size and at each tier.

    Args:
        problem: the export's problem (seeds, eligible users as the rows not excluded).
        strategy: the export's strategy, a name in :data:`lookalike.audience.strategies.STRATEGIES`.
        config: ``quality_*`` fields for the estimate, the rest for the strategy.
        audience_size: users in the exported audience.

    Returns ``None`` when ``config.quality_estimate`` is off or the seeds are fewer than two per
    fold. Example::

        quality = estimate_quality(problem, "hybrid", AudienceConfig(), 10_000)
        quality["sizes"][0]  # {"label": "audience", "size": 10000, "recall": {...}, ...}
    """
    if not config.quality_estimate:
        return None
    eligible = problem.n_candidates
    tiers = [(f"tier {t:g}", t, band_size(t, eligible)) for t in config.tiers]
    sizes = [
        (label, tier, n) for label, tier, n in [("audience", None, audience_size), *tiers] if n
    ]
    depth = max((n for _, _, n in sizes), default=0) / max(eligible, 1)
    ranks = held_out_ranks(problem, strategy, config, depth)
    if ranks is None:
        return None
    rng = np.random.default_rng(config.seed)
    resamples = rng.integers(0, len(ranks.above), size=(config.quality_bootstrap, len(ranks.above)))
    return {
        "method": "seed hold-out",
        "folds": ranks.folds,
        "held_out_seeds": len(ranks.above),
        "ranked_users": ranks.ranked,
        "eligible_users": eligible,
        "bootstrap": config.quality_bootstrap,
        "sizes": [size_figures(ranks, label, n, resamples, tier) for label, tier, n in sizes],
    }


def quality_table(quality: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The quality section as flat rows (one per size) for a table artifact; [] without one.

    Example::

        >>> row = {"label": "tier 0.01", "tier": 0.01, "size": 100, "fraction": 0.01,
        ...        "recall": {"value": 0.2, "ci95": [0.1, 0.3]},
        ...        "lift": {"value": 20.0, "ci95": [10.0, 30.0]}}
        >>> quality_table({"sizes": [row]})[0]["recall_ci95"]
        '0.100-0.300'
    """
    if quality is None:
        return []
    return [
        {
            "size": row["label"],
            "users": row["size"],
            "recall": round(row["recall"]["value"], 4),
            "recall_ci95": "{:.3f}-{:.3f}".format(*row["recall"]["ci95"]),
            "lift": round(row["lift"]["value"], 3),
            "lift_ci95": "{:.2f}-{:.2f}".format(*row["lift"]["ci95"]),
        }
        for row in quality["sizes"]
    ]


def size_figures(
    ranks: HeldOutRanks, label: str, size: int, resamples: np.ndarray, tier: float | None = None
) -> dict[str, Any]:
    """Recall and lift at ``size`` with bootstrap intervals (``resamples``: rows of held-out seed
    positions, one row per resample).

    Example::

        >>> ranks = HeldOutRanks(np.arange(4), np.array([0, 1, 5, 9]), 2, 10, 10)
        >>> row = size_figures(ranks, "tier 0.2", 2, np.array([[0, 1, 2, 3]]), 0.2)
        >>> row["recall"]["value"], row["lift"]["value"]
        (0.5, 2.5)
    """
    inside = ranks.within(size)
    share = size / ranks.eligible
    recalls = inside[resamples].mean(axis=1)
    low, high = percentile_interval(recalls)
    recall = float(inside.mean())
    return {
        "label": label,
        "tier": tier,
        "size": size,
        "fraction": share,
        "recall": {"value": recall, "ci95": [low, high]},
        "lift": {"value": recall / share, "ci95": [low / share, high / share]},
    }


def held_out_ranks(
    problem: ExpansionProblem, strategy: str, config: AudienceConfig, depth: float
) -> HeldOutRanks | None:
    """Rank every fold's seeds against sampled eligible users, the strategy fitted on the others.

    Args:
        problem: the export's problem.
        strategy: the strategy to run on each fold.
        config: ``quality_folds``, ``quality_max_seeds``, ``quality_candidates``,
            ``quality_background``, ``seed``, and the strategy's own fields.
        depth: the deepest share of the eligible users asked about: the strategy returns only
            that deep a list (a held-out seed below it counts as beyond every size).

    Returns ``None`` with fewer than two seeds per fold. The strategy runs on the sub-population
    (:func:`split_sample`'s users and the seeds) in memory, knn with exact search over it and its
    lists as deep into the ranked users as into the eligible ones; the folds on one thread per
    core.
    """
    rng = np.random.default_rng(config.seed)
    folds = seed_folds(len(problem.seed_rows), config, rng)
    if folds is None:
        return None
    seeds = np.sort(np.concatenate(folds))
    others = np.setdiff1d(np.flatnonzero(allowed_mask(problem)), problem.seed_rows)
    ranked, background = split_sample(others, config, rng)
    halves = None if background is None else [background]
    background = np.empty(0, dtype=np.int64) if background is None else background
    rows = np.concatenate([ranked, background, problem.seed_rows[seeds]])
    order = np.argsort(rows)
    rows = rows[order]
    position = np.empty(len(rows), dtype=np.int64)
    position[order] = np.arange(len(rows))  # of each input row in the sorted sub-population
    local_background = np.sort(position[len(ranked) : len(ranked) + len(background)])
    local_seeds = np.zeros(len(problem.seed_rows), dtype=np.int64)
    local_seeds[seeds] = position[len(ranked) + len(background) :]
    embeddings = float32_rows(problem.embeddings, rows)
    features = None if problem.features is None else ArrayFeatures(problem.features.take(rows))
    # knn's lists reach as far into the ranked sample as into the eligible users
    rate = len(ranked) / max(problem.n_candidates, 1)
    depth_k = max(1, round(config.neighbours_per_seed * rate))
    # the folds fit fewer seeds than the export: they blend the hybrid's feature model as it does
    exported_share = linear_share(min(len(problem.seed_rows), config.boosting_max_seeds), config)
    fold_config = config.model_copy(
        update={
            "neighbours_per_seed": depth_k,
            "boosting_learning_rate": config.quality_boosting_learning_rate,
            "hybrid_linear_share": exported_share,
        }
    )

    def rank_fold(held: np.ndarray) -> np.ndarray:
        trained = np.setdiff1d(seeds, held)
        fold = ExpansionProblem(
            embeddings=embeddings,
            seed_vectors=problem.seed_vectors[trained],
            seed_weights=problem.seed_weights[trained],
            seed_rows=local_seeds[trained],
            excluded=np.concatenate([local_seeds[trained], local_background]),
            n_candidates=len(ranked) + len(held),
            size=min(len(ranked), math.ceil(depth * len(ranked))) + len(held),
            features=features,
            background_halves=None if halves is None else [local_background],
        )
        expansion = expand_seeds(fold, ExactSearch(embeddings), strategy, fold_config)
        return sampled_above(expansion.rows, local_seeds[held], len(ranked))

    above = np.concatenate(thread_map(rank_fold, folds))
    return HeldOutRanks(
        np.concatenate(folds), above, len(folds), len(ranked), problem.n_candidates
    )


def split_sample(
    rows: np.ndarray, config: AudienceConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray | None]:
    """(ranked, background) users of the estimate, sorted, out of the eligible ``rows``.

    When the export's own background holds every eligible user (``config.contrast_background``
    or fewer), all of them are ranked and there is no background: each fold repeats the export's
    cross-fitting, where every user is scored by the model that did not see it. Otherwise (an
    export scores most users by the mean of two models) ``config.quality_background`` users (at
    most half) for each fold's one model, and up to ``config.quality_candidates`` others ranked.

    Example::

        >>> config = AudienceConfig(contrast_background=5, quality_background=3)
        >>> ranked, background = split_sample(np.arange(10), config, np.random.default_rng(0))
        >>> len(ranked), len(background), sorted([*ranked, *background]) == list(range(10))
        (7, 3, True)
        >>> split_sample(np.arange(10), AudienceConfig(), np.random.default_rng(0))[1] is None
        True
    """
    if len(rows) <= config.contrast_background:
        return np.sort(rows), None
    shuffled = rng.permutation(rows)
    split = min(config.quality_background, len(rows) // 2)
    ranked = shuffled[split : split + config.quality_candidates]
    return np.sort(ranked), np.sort(shuffled[:split])


def seed_folds(
    n_seeds: int, config: AudienceConfig, rng: np.random.Generator
) -> list[np.ndarray] | None:
    """``config.quality_folds`` random folds of seed positions (of at most
    ``config.quality_max_seeds`` sampled ones); ``None`` with fewer than two seeds a fold.

    Example::

        >>> folds = seed_folds(7, AudienceConfig(quality_folds=3), np.random.default_rng(0))
        >>> [len(f) for f in folds], sorted(np.concatenate(folds).tolist())
        ([3, 2, 2], [0, 1, 2, 3, 4, 5, 6])
    """
    seeds = np.arange(n_seeds)
    if n_seeds > config.quality_max_seeds:
        seeds = np.sort(rng.choice(seeds, config.quality_max_seeds, replace=False))
    if len(seeds) < 2 * config.quality_folds:
        return None
    return np.array_split(rng.permutation(seeds), config.quality_folds)


def sampled_above(ranked: np.ndarray, held: np.ndarray, sampled: int) -> np.ndarray:
    """Per row of ``held``: the rows of ``ranked`` (best first) before it that are not in
    ``held``; ``sampled`` for a row missing from ``ranked``.

    Example::

        >>> sampled_above(np.array([7, 3, 9, 4, 8]), np.array([3, 8, 5]), 10).tolist()
        [1, 3, 10]
    """
    is_held = np.isin(ranked, held)
    above = np.full(len(held), sampled, dtype=np.int64)
    order = np.argsort(held)
    found = order[np.searchsorted(held[order], ranked[is_held])]
    above[found] = np.cumsum(~is_held)[is_held]
    return above

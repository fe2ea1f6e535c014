"""Audience quality figures on held-out converters, with bootstrap and paired intervals.

Offline evaluation of audiences on held-out converters, against baselines on the same split.

Definitions, for an audience A (the top K users by score), the eligible population N (everyone but
the seeds) and the held-out converters P (none of whom were seeds or training positives):

- precision@K = |A ∩ P| / |A|
- recall@K    = |A ∩ P| / |P|
- lift@K      = precision@K / (|P| / |N|): how many times more converters the audience holds than
  a random audience of the same size (1.0 = random).
- AUC         = probability that a held-out converter outscores an eligible non-converter (ties
  count one half); the Mann-Whitney statistic, as ``sklearn.metrics.roc_auc_score``.
- gains curve = share of P inside the top x of N, for x from 0 to 1.

Every figure is a mean over held-out converters (of "is in the top K" or of "share of negatives
ranked below"), so its bootstrap confidence interval resamples held-out converters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from lookalike.core.bootstrap import percentile_interval
from lookalike.core.config import EvaluateConfig


@dataclass(frozen=True)
class AudienceHits:
    """Held-out converters found by one audience."""

    audience_size: int
    positives: int
    population: int
    hits: int

    @property
    def precision(self) -> float:
        return self.hits / self.audience_size if self.audience_size else 0.0

    @property
    def recall(self) -> float:
        return self.hits / self.positives if self.positives else 0.0

    @property
    def lift(self) -> float:
        base_rate = self.positives / self.population if self.population else 0.0
        return self.precision / base_rate if base_rate else 0.0


def audience_hits(audience_ids: pl.Series, positive_ids: pl.Series, population: int) -> AudienceHits:
    """Count held-out converters (``positive_ids``) inside an audience of a given population."""
    audience = audience_ids.unique()
    positives = positive_ids.unique()
    hits = int(audience.is_in(positives.implode()).sum())
    return AudienceHits(audience.len(), positives.len(), population, hits)


def ranking_positions(scores: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """0-based rank of every candidate by score, best first; ties in a seeded random order."""
    tie_break = rng.permutation(len(scores))
    order = np.lexsort((tie_break, -scores))
    positions = np.empty(len(scores), dtype=np.int64)
    positions[order] = np.arange(len(scores))
    return positions


def cutoff_size(fraction: float, n_eligible: int) -> int:
    """Audience size of a cutoff: ``ceil(fraction * N)``, at least 1."""
    return max(1, math.ceil(fraction * n_eligible))


def negatives_below(scores: np.ndarray, is_positive: np.ndarray) -> np.ndarray:
    """Per positive: share of negatives scoring lower, ties counting one half (its AUC term)."""
    negatives = np.sort(scores[~is_positive])
    positive_scores = scores[is_positive]
    below = np.searchsorted(negatives, positive_scores, side="left")
    tied = np.searchsorted(negatives, positive_scores, side="right") - below
    return (below + 0.5 * tied) / max(len(negatives), 1)


def auc_score(scores: np.ndarray, is_positive: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the boolean labels ``is_positive`` (Mann-Whitney, ties = 1/2)."""
    return float(negatives_below(scores, is_positive).mean())


def gains_curve(positive_positions: np.ndarray, n_eligible: int, points: int) -> tuple[list[float], list[float]]:
    """Cumulative gains: (share of the eligible population targeted, share of positives found)."""
    fractions = np.linspace(0.0, 1.0, points + 1)
    sizes = np.ceil(fractions * n_eligible)
    found = np.searchsorted(np.sort(positive_positions), sizes, side="left")
    return fractions.tolist(), (found / max(len(positive_positions), 1)).tolist()


@dataclass(frozen=True)
class MethodFigures:
    """One method's figures on one conversion type: point values and bootstrap intervals."""

    auc: float
    auc_ci: tuple[float, float]
    cutoffs: dict[float, AudienceHits]
    lift_ci: dict[float, tuple[float, float]]
    precision_ci: dict[float, tuple[float, float]]
    recall_ci: dict[float, tuple[float, float]]
    gains: tuple[list[float], list[float]]
    # Per held-out converter, in one fixed order shared by every method of a type (for pairing):
    positive_positions: np.ndarray  # 0-based rank among the eligible users
    positive_auc_terms: np.ndarray  # share of eligible non-converters ranked below

    def to_json(self) -> dict[str, Any]:
        return {
            "auc": {"value": self.auc, "ci95": list(self.auc_ci)},
            "cutoffs": {
                f"{fraction:g}": {
                    "k": hits.audience_size, "hits": hits.hits,
                    "precision": {"value": hits.precision, "ci95": list(self.precision_ci[fraction])},
                    "recall": {"value": hits.recall, "ci95": list(self.recall_ci[fraction])},
                    "lift": {"value": hits.lift, "ci95": list(self.lift_ci[fraction])},
                }
                for fraction, hits in self.cutoffs.items()
            },
            "gains": {"fraction": self.gains[0], "captured": self.gains[1]},
        }


def method_figures(
    scores: np.ndarray, is_positive: np.ndarray, config: EvaluateConfig, rng: np.random.Generator
) -> MethodFigures:
    """All figures of one score vector over the eligible users (``is_positive``: held out)."""
    n_eligible, n_positive = len(scores), int(is_positive.sum())
    positions = ranking_positions(scores, rng)[is_positive]
    auc_terms = negatives_below(scores, is_positive)
    resamples = rng.integers(0, n_positive, size=(config.bootstrap, n_positive))
    cutoffs, lift_ci, precision_ci, recall_ci = {}, {}, {}, {}
    for fraction in config.cutoffs:
        k = cutoff_size(fraction, n_eligible)
        inside = positions < k
        cutoffs[fraction] = AudienceHits(k, n_positive, n_eligible, int(inside.sum()))
        recalls = inside[resamples].mean(axis=1) if config.bootstrap else np.array([np.nan])
        recall_ci[fraction] = percentile_interval(recalls)
        precision_ci[fraction] = percentile_interval(recalls * n_positive / k)
        lift_ci[fraction] = percentile_interval(recalls * n_eligible / k)
    aucs = auc_terms[resamples].mean(axis=1) if config.bootstrap else np.array([np.nan])
    return MethodFigures(
        float(auc_terms.mean()), percentile_interval(aucs), cutoffs, lift_ci, precision_ci,
        recall_ci,
        gains_curve(positions, n_eligible, config.gains_points), positions, auc_terms,
    )


@dataclass(frozen=True)
class Difference:
    """A figure of one method minus the same figure of another, on the same held-out converters."""

    value: float
    ci95: tuple[float, float]

    @property
    def clear(self) -> bool:
        """True when the 95% interval excludes zero (the two methods differ beyond resampling)."""
        return self.ci95[0] > 0 or self.ci95[1] < 0

    def to_json(self) -> dict[str, Any]:
        return {"value": self.value, "ci95": list(self.ci95)}


def paired_differences(
    first: MethodFigures, second: MethodFigures, n_eligible: int, config: EvaluateConfig,
    rng: np.random.Generator,
) -> dict[str, Difference]:
    """``first`` minus ``second``: AUC and precision at every cutoff, with a paired bootstrap.

    Each resample draws held-out converters once and measures both methods on that draw, so the
    interval is of the difference itself: much narrower than comparing the two methods' own
    intervals, which ignore that both are measured on the same converters.
    """
    n_positive = len(first.positive_positions)
    resamples = rng.integers(0, n_positive, size=(config.bootstrap, n_positive))
    per_positive = {"auc": first.positive_auc_terms - second.positive_auc_terms}
    for fraction in config.cutoffs:
        k = cutoff_size(fraction, n_eligible)
        inside = (first.positive_positions < k).astype(float) - (second.positive_positions < k)
        per_positive[f"precision@{fraction:g}"] = inside * n_positive / k
    return {
        name: Difference(
            float(terms.mean()),
            percentile_interval(
                terms[resamples].mean(axis=1) if config.bootstrap else np.array([np.nan])
            ),
        )
        for name, terms in per_positive.items()
    }

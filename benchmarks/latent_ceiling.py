"""What each scoring rule reaches in the TRUE latent space of the synthetic data (its truth table).

Uses the evaluation's own hold-out split (`lookalike.evaluation.evaluate.holdout_split`) and figures
(`method_figures`), with the latent vectors u in place of learned embeddings. It separates "the
encoder recovers u imperfectly" from "this way of scoring cannot rank half-space converters":

    python benchmarks/latent_ceiling.py --data /tmp/syn200k      # from `lookalike generate`
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from lookalike.audience.strategies.base import normalize_rows
from lookalike.core.config import LookalikeConfig
from lookalike.evaluation.methods import Population, ScoringTask, propensity_scores, strategy_scores
from lookalike.evaluation.split import holdout_split
from lookalike.evaluation.metrics import method_figures

TOP_M = 10  # the knn strategy's default top_m
BLOCK = 20_000


def inner_product_knn(u: np.ndarray, eligible: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Mean of the TOP_M largest inner products with the seeds (knn without normalization)."""
    return np.concatenate([
        np.sort(u[eligible[start : start + BLOCK]] @ u[seeds].T, axis=1)[:, -TOP_M:].mean(axis=1)
        for start in range(0, len(eligible), BLOCK)
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder written by `lookalike generate`")
    args = parser.parse_args()
    truth = pl.read_parquet(args.data / "truth.parquet").sort("user_id")
    conversions = pl.read_parquet(args.data / "conversions.parquet")
    config = LookalikeConfig()
    ids = truth.get_column("user_id")
    u = truth.select(pl.col("^latent_\\d+$")).to_numpy().astype(np.float32)
    unit = normalize_rows(u)
    population = Population(ids, u, None, unit, unit)
    for name, split in holdout_split(conversions, config.evaluate.holdout_fraction,
                                     config.evaluate.seed).items():
        seeds = np.flatnonzero(ids.is_in(split.seeds.implode()).to_numpy())
        heldout = ids.is_in(split.heldout.implode()).to_numpy()
        eligible = np.setdiff1d(np.arange(len(ids)), seeds)

        def task(index: int) -> ScoringTask:
            return ScoringTask(population, seeds, eligible, config, np.random.default_rng([0, index]))

        methods: dict[str, Callable[[int], np.ndarray]] = {
            "oracle: true probability": lambda i: truth.get_column(f"p_{name}").to_numpy()[eligible],
            "logistic regression on u": lambda i: propensity_scores(
                task(i), lambda: LogisticRegression(max_iter=2000)),
            "gradient boosting on u": lambda i: propensity_scores(
                task(i), lambda: HistGradientBoostingClassifier(random_state=0)),
            "knn, cosine on u": lambda i: strategy_scores(task(i), unit, unit[seeds], "knn"),
            "centroid, cosine on u": lambda i: strategy_scores(task(i), unit, unit[seeds], "centroid"),
            "contrast, cosine on u": lambda i: strategy_scores(task(i), unit, unit[seeds], "contrast"),
            "knn, inner product on u": lambda i: inner_product_knn(u, eligible, seeds),
            "centroid, inner product on u": lambda i: u[eligible] @ u[seeds].mean(axis=0),
        }
        print(f"\n#### {name}: {len(seeds)} seeds, {int(heldout.sum())} held out\n")
        print("| scoring in the true latent space | AUC | P@1% | lift@1% | lift@10% |\n|---|---|---|---|---|")
        for index, (method, score) in enumerate(methods.items()):
            figures = method_figures(score(index), heldout[eligible], config.evaluate,
                                     np.random.default_rng([0, index]))
            top, tenth = figures.cutoffs[0.01], figures.cutoffs[0.1]
            print(f"| {method} | {figures.auc:.3f} | {top.precision:.3f} | {top.lift:.2f} | {tenth.lift:.2f} |")


if __name__ == "__main__":
    main()

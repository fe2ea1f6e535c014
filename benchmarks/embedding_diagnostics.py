"""Where a trained embedding loses signal, on a saved evaluation build of synthetic data.

Three measurements on the split ``lookalike evaluate`` uses (per type: its seeds and held-out
converters), each printed as AUC / precision at 1% of the eligible users:

1. The same ``EncoderTower`` trained directly as a classifier (one linear head, binary
   cross-entropy of one type's seeds against random eligible users, logit = head(embedding) /
   the training temperature as in training, best epoch by AUC on 10% of the seeds), against logistic regression and gradient boosting on the raw features.
2. Seed aggregations on the saved embedding: centroid, centroid minus the population mean,
   whitened centroid, logistic regression and gradient boosting on the embedding.
3. A linear read-out (ridge) of each type's true latent direction from the embedding, against
   gradient boosting on the raw features (R^2 on held-out users; the generator's ``truth.parquet``).
4. Memorization: how well a logistic regression tells a type's seeds (the encoder's training
   converters) from its held-out converters (5-fold AUC; 0.5 = treated alike), on the embedding and
   on the raw features, and the mean cosine of each group to the seeds' centroid.
   ``--memorization-only`` prints just this (seconds, no truth file needed).

    python benchmarks/embedding_diagnostics.py \\
        --build /tmp/w200-s1/evaluations/builds/<id> --truth /tmp/syn200k-s1/truth.parquet
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from sklearn.ensemble import (
    HistGradientBoostingClassifier,
    HistGradientBoostingRegressor,
)
from sklearn.linear_model import LogisticRegression, RidgeCV
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lookalike.core.config import LookalikeConfig, ModelConfig
from lookalike.data.spec import EncodedFeatures, FeatureSpec, encode
from lookalike.encoder.model import EncoderTower
from lookalike.evaluation.evaluate import MODEL_FOLDER, seed_memorization
from lookalike.evaluation.methods import Population, load_population
from lookalike.evaluation.split import holdout_split

# Each synthetic type's weights on the 5-d latent (lookalike.data.synthetic's table).
DIRECTIONS = {"subscribe": [1, 1, 0, 0, 0], "premium_upgrade": [0, 0, 1, -1, 0],
              "loyalty_join": [0, 1, 0, -1, 0], "card_signup": [1, 0, 1, 0, 0]}
BACKGROUND = 20_000
TEMPERATURE = 0.2  # TrainConfig's default: cosine logits are scaled like in training


def precision_at(scores: np.ndarray, positive: np.ndarray, fraction: float = 0.01) -> float:
    k = round(fraction * len(scores))
    return float(positive[np.argpartition(-scores, k)[:k]].mean())


def figures(scores: np.ndarray, positive: np.ndarray) -> str:
    return f"{roc_auc_score(positive, scores):.3f} / {precision_at(scores, positive):.4f}"


def direct_classifier(
    encoded: EncodedFeatures, spec: FeatureSpec, seeds: np.ndarray, eligible: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Scores of ``eligible`` by the tower trained as a one-type classifier."""
    torch.manual_seed(0)
    numeric, categorical = torch.from_numpy(encoded.numeric), torch.from_numpy(encoded.categorical)
    tower = EncoderTower(encoded.numeric.shape[1], spec.cardinalities, ModelConfig())
    head = torch.nn.Linear(ModelConfig().embedding_dim, 1)
    optimizer = torch.optim.AdamW([*tower.parameters(), *head.parameters()], lr=5e-3, weight_decay=1e-2)
    shuffled = rng.permutation(seeds)
    held, fit = shuffled[: len(seeds) // 10], shuffled[len(seeds) // 10 :]
    check = np.r_[held, rng.choice(eligible, BACKGROUND, replace=False)]
    check_labels = np.r_[np.ones(len(held)), np.zeros(BACKGROUND)]

    def score(rows: np.ndarray) -> np.ndarray:
        tower.eval()
        with torch.no_grad():
            return np.concatenate([
                head(tower(numeric[rows[i : i + 8192]], categorical[rows[i : i + 8192]]) / TEMPERATURE).squeeze(1).numpy()
                for i in range(0, len(rows), 8192)
            ])

    best_auc, best = -1.0, None
    for _epoch in range(30):
        tower.train()
        for _step in range(40):
            rows = torch.from_numpy(np.r_[rng.choice(fit, 256), rng.choice(eligible, 512)])
            target = torch.cat([torch.ones(256), torch.zeros(512)])
            logits = head(tower(numeric[rows], categorical[rows]) / TEMPERATURE).squeeze(1)
            loss = F.binary_cross_entropy_with_logits(logits, target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        auc = roc_auc_score(check_labels, score(check))
        if auc > best_auc:
            best_auc, best = auc, ({k: v.clone() for k, v in tower.state_dict().items()},
                                   {k: v.clone() for k, v in head.state_dict().items()})
    tower.load_state_dict(best[0])
    head.load_state_dict(best[1])
    return score(eligible)


def aggregations(embeddings: np.ndarray, seeds: np.ndarray, eligible: np.ndarray,
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    mean = embeddings.mean(axis=0)
    covariance = np.cov(embeddings.T) + 1e-3 * np.eye(embeddings.shape[1])
    seed_mean = embeddings[seeds].mean(axis=0)
    background = rng.choice(eligible, BACKGROUND, replace=False)
    x = np.vstack([embeddings[seeds], embeddings[background]])
    y = np.r_[np.ones(len(seeds)), np.zeros(BACKGROUND)]
    return {
        "centroid": embeddings @ seed_mean,
        "centroid - population mean": embeddings @ (seed_mean - mean),
        "whitened centroid": embeddings @ np.linalg.solve(covariance, seed_mean - mean),
        "logistic regression on embedding": LogisticRegression(max_iter=2000).fit(x, y).decision_function(embeddings),
        "gradient boosting on embedding": HistGradientBoostingClassifier(random_state=0).fit(x, y).predict_proba(embeddings)[:, 1],
    }


def memorization(population: Population, seeds: np.ndarray, heldout: np.ndarray) -> str:
    """Seeds-vs-held-out AUC on the embedding and raw features, and cosines to the seed centroid."""
    figures = seed_memorization(population, seeds, heldout, LookalikeConfig())
    embedded, raw = figures["embedding"], figures["raw"]
    centroid = population.candidates[seeds].mean(axis=0)
    centroid /= np.linalg.norm(centroid)
    return (f"seeds vs held-out converters AUC: embedding {embedded:.3f}, raw {raw:.3f}; cosine to "
            f"the seed centroid: seeds {np.mean(population.candidates[seeds] @ centroid):.3f}, "
            f"held out {np.mean(population.candidates[heldout] @ centroid):.3f}")


def latent_readout(population: Population, truth: Path) -> None:
    latent = (pl.DataFrame({"user_id": population.user_ids}).join(pl.read_parquet(truth), on="user_id", how="left")
              .select([f"latent_{k}" for k in range(5)]).to_numpy())
    order = np.random.default_rng(0).permutation(len(latent))
    fit, test = order[:40_000], order[40_000:80_000]
    for name, weights in DIRECTIONS.items():
        target = latent @ np.asarray(weights, dtype=float)
        embedded = RidgeCV().fit(population.candidates[fit], target[fit]).score(population.candidates[test], target[test])
        raw = HistGradientBoostingRegressor(random_state=0).fit(population.raw[fit], target[fit]).score(population.raw[test], target[test])
        print(f"{name}: R^2 of w.u, embedding (linear) {embedded:.3f}, raw features (boosting) {raw:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, required=True, help="an evaluation build folder")
    parser.add_argument("--model", type=Path, default=None, help=f"default: BUILD/{MODEL_FOLDER}")
    parser.add_argument("--truth", type=Path, default=None, help="the generator's truth.parquet")
    parser.add_argument("--memorization-only", action="store_true", help="print only part 4")
    parser.add_argument("--types", default="subscribe,premium_upgrade,card_signup")
    args = parser.parse_args()
    if args.truth is None and not args.memorization_only:
        parser.error("--truth is needed unless --memorization-only")
    torch.set_num_threads(1)
    build = args.build
    population = load_population(build / "features.parquet", build / "feature_spec.json", args.model or build / MODEL_FOLDER)
    spec = FeatureSpec.load(build / "feature_spec.json")
    encoded = encode(pl.read_parquet(build / "features.parquet", columns=spec.columns), spec)
    splits = holdout_split(pl.read_parquet(build / "conversions.parquet"), 0.3, 0)
    ids = population.user_ids
    for name in args.types.split(","):
        seeds = np.flatnonzero(ids.is_in(splits[name].seeds.implode()).to_numpy())
        positive = ids.is_in(splits[name].heldout.implode()).to_numpy()
        eligible = np.setdiff1d(np.arange(len(ids)), seeds)
        print(f"== {name}: {memorization(population, seeds, np.flatnonzero(positive))}", flush=True)
        if args.memorization_only:
            continue
        rng = np.random.default_rng(0)
        background = rng.choice(eligible, BACKGROUND, replace=False)
        x = np.vstack([population.raw[seeds], population.raw[background]])
        y = np.r_[np.ones(len(seeds)), np.zeros(BACKGROUND)]
        print(f"== {name} (AUC / P@1% on {positive.sum()} held-out converters)", flush=True)
        for label, model in [("logistic regression, raw", LogisticRegression(max_iter=2000)),
                             ("gradient boosting, raw", HistGradientBoostingClassifier(random_state=0))]:
            print(f"{label}: {figures(model.fit(x, y).predict_proba(population.raw[eligible])[:, 1], positive[eligible])}", flush=True)
        scores = direct_classifier(encoded, spec, seeds, eligible, rng)
        print(f"tower as a direct classifier: {figures(scores, positive[eligible])}", flush=True)
        for label, all_scores in aggregations(population.candidates.astype(np.float64), seeds, eligible, rng).items():
            print(f"{label}: {figures(all_scores[eligible], positive[eligible])}", flush=True)
    if not args.memorization_only:
        latent_readout(population, args.truth)


if __name__ == "__main__":
    main()

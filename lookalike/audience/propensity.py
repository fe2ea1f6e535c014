"""A gradient-boosted propensity model on the encoded input features: the hybrid strategy's other half.

The two-tower embedding is a lossy 32-number summary of each user; what it adds is structure
learned from every conversion type (it serves seed lists of kinds it never trained on). A
gradient-boosted classifier of one list's seeds against a population sample, on the encoded
features themselves, draws that list's own non-linear boundary there. The hybrid strategy
(:func:`lookalike.audience.strategies.hybrid.score_hybrid`) adds its log-odds to half of contrast's; on the synthetic
draws it ranks held-out converters above either alone (benchmarks/RESULTS.md, issue 7).

Features come through :class:`FeatureRows`: :class:`ArrayFeatures` over a matrix in memory (the
evaluation's), :class:`ParquetFeatures` over a build's ``features.parquet``, read batch by batch so
that an export never holds the population's features at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from lookalike.audience.crossfit import cross_fitted_scores
from lookalike.core.errors import ArtifactError
from lookalike.core.parallel import thread_map
from lookalike.data.parquet_rows import read_rows
from lookalike.data.spec import FeatureSpec, encode, model_inputs

BATCH_ROWS = 65_536
PREDICT_CHUNK_ROWS = 4096
# The held-out tenth that early stopping scores needs a few rows of each class.
MIN_ROWS_FOR_EARLY_STOPPING = 20
BlockScorer = Callable[[np.ndarray], np.ndarray]


class FeatureRows(Protocol):
    """Model-input rows (:func:`model_inputs`, or any column-wise monotone transform of them) of
    the population, aligned with the embedding rows."""

    def take(self, rows: np.ndarray) -> np.ndarray:
        """float32 [len(rows), width], in the order of ``rows``."""
        ...

    def map_rows(self, rows: np.ndarray, score: BlockScorer) -> np.ndarray:
        """``score`` applied block by block to the ``rows`` (sorted ascending), concatenated."""
        ...


@dataclass(frozen=True)
class ArrayFeatures:
    """:class:`FeatureRows` over a matrix in memory."""

    matrix: np.ndarray

    def take(self, rows: np.ndarray) -> np.ndarray:
        return np.asarray(self.matrix[rows], dtype=np.float32)

    def map_rows(self, rows: np.ndarray, score: BlockScorer) -> np.ndarray:
        blocks = [score(self.take(rows[i : i + BATCH_ROWS])) for i in range(0, len(rows), BATCH_ROWS)]
        return np.concatenate(blocks) if blocks else np.empty(0)


@dataclass(frozen=True)
class ParquetFeatures:
    """:class:`FeatureRows` read from a build's feature table, encoded with its spec."""

    path: Path
    spec: FeatureSpec
    batch_rows: int = BATCH_ROWS

    @property
    def columns(self) -> list[str]:
        return self.spec.columns[1:]  # the features without user_id

    def check_rows(self, user_ids: pl.Series) -> None:
        """Refuse a feature table whose users are not ``user_ids`` in the same order."""
        ids = pl.read_parquet(self.path, columns=["user_id"]).get_column("user_id")
        if len(ids) != len(user_ids) or not ids.equals(user_ids, check_names=False):
            raise ArtifactError(
                f"{self.path} does not list the embeddings' users in their order; the build is "
                "inconsistent: re-run the build"
            )

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Read one batch at a time (:func:`lookalike.data.parquet_rows.read_rows`): a polars scan
        with a row-index filter held the table's columns (10M users, 40,000 rows: 2.2 GiB, 7.1 s,
        2026-12-07)."""
        wanted, positions = np.unique(rows, return_inverse=True)
        frames = [self._frame(batch) for batch in read_rows(pq.ParquetFile(self.path), wanted,
                                                            self.columns, self.batch_rows)]
        frame = pl.concat(frames) if frames else pl.read_parquet(self.path, columns=self.columns,
                                                                 n_rows=0)
        return self._inputs(frame)[positions]

    def map_rows(self, rows: np.ndarray, score: BlockScorer) -> np.ndarray:
        out, done = np.empty(len(rows)), 0
        for batch in read_rows(pq.ParquetFile(self.path), rows, self.columns, self.batch_rows):
            out[done : done + batch.num_rows] = score(self._inputs(self._frame(batch)))
            done += batch.num_rows
        return out

    @staticmethod
    def _frame(batch: pa.RecordBatch) -> pl.DataFrame:
        return cast(pl.DataFrame, pl.from_arrow(batch))

    def _inputs(self, frame: pl.DataFrame) -> np.ndarray:
        return model_inputs(encode(frame, self.spec), self.spec.cardinalities)


def boosted_log_odds(
    features: FeatureRows,
    seed_rows: np.ndarray,
    seed_weights: np.ndarray,
    halves: Sequence[np.ndarray],
    rows: np.ndarray,
    random_state: int,
    learning_rate: float = 0.1,
    linear_share: float = 0.0,
) -> np.ndarray:
    """Cross-fitted log-odds of "seed" for ``rows`` (sorted) from gradient-boosted classifiers.

    Each half of the population sample trains one scikit-learn ``HistGradientBoostingClassifier``
    of the seeds (label 1, weighted by ``seed_weights``) against that half (label 0), stopping
    when a held-out tenth stops improving (with at least 20 rows of each class), so features
    without signal leave it near-constant rather than fitted to noise. A sampled row
    is scored by the model that did not see it, every other row by the mean of both models'
    log-odds, so no row's score comes from a model that saw it labelled 0. Every sampled row must
    be among ``rows``. With ``linear_share`` above 0 each half's model is a :class:`BlendedModel`:
    that share of the log-odds comes from a logistic regression (L2, C=1) on standardized inputs.
    The two fits, and then the prediction chunks, run on one thread per core with one OpenMP
    thread each.
    """
    halves = [h for h in halves if len(h)]
    seeds, *sampled = np.split(  # one read of the table for seeds and sample
        features.take(np.concatenate([seed_rows, *halves])),
        np.cumsum([len(seed_rows), *map(len, halves)])[:-1],
    )
    # scikit-learn bins weighted rows 15x slower: pass weights only when they differ
    unweighted = np.all(seed_weights == 1.0)

    def fit(i: int) -> BlendedModel:
        x = np.vstack([seeds, sampled[i]])
        y = np.r_[np.ones(len(seeds)), np.zeros(len(sampled[i]))]
        weights = None if unweighted else np.r_[seed_weights, np.ones(len(sampled[i]))]
        stopping = min(len(seeds), len(sampled[i])) >= MIN_ROWS_FOR_EARLY_STOPPING
        model = HistGradientBoostingClassifier(
            learning_rate=learning_rate, early_stopping=stopping, random_state=random_state
        )
        boosted = model.fit(x, y, sample_weight=weights)
        if linear_share == 0.0:
            return BlendedModel(boosted, None, 0.0)
        scaler = StandardScaler().fit(x)
        linear = LogisticRegression(max_iter=1000).fit(scaler.transform(x), y, sample_weight=weights)
        return BlendedModel(boosted, (scaler, linear), linear_share)

    return cross_fitted_scores(
        halves, fit,
        lambda models, some: features.map_rows(rows if some is None else some,
                                               lambda block: mean_log_odds(models, block)),
        rows,
        score_half=lambda model, i: mean_log_odds([model], sampled[i]),
        openmp_threads=1,
    )


@dataclass(frozen=True)
class BlendedModel:
    """Log-odds ``(1 - share) * boosted + share * linear`` (the linear model on standardized inputs)."""

    boosted: HistGradientBoostingClassifier
    linear: tuple[StandardScaler, LogisticRegression] | None
    share: float

    def decision_function(self, inputs: np.ndarray) -> np.ndarray:
        out = self.boosted.decision_function(inputs)
        if self.linear is None:
            return out
        scaler, linear = self.linear
        return (1.0 - self.share) * out + self.share * linear.decision_function(scaler.transform(inputs))


def mean_log_odds(models: Sequence[BlendedModel], inputs: np.ndarray) -> np.ndarray:
    """The models' mean ``decision_function``, in chunks converted to float64 once for all models
    (on one thread per core, one OpenMP thread each).

    scikit-learn converts its input to float64 on every call; a fresh copy of a 65k-row block of
    635 columns cost 0.7 s in page faults alone, against 0.1 s for two models on 4,096-row chunks.
    """
    def score(start: int) -> np.ndarray:
        chunk = np.asarray(inputs[start : start + PREDICT_CHUNK_ROWS], dtype=np.float64)
        return np.mean([m.decision_function(chunk) for m in models], axis=0)

    blocks = thread_map(score, range(0, len(inputs), PREDICT_CHUNK_ROWS), openmp_threads=1)
    return np.concatenate(blocks) if blocks else np.empty(0)

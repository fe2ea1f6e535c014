"""How far the population moved in the embedding between two builds, under one encoder.

A sample of users present in both feature tables is embedded twice by the same encoder (the
previous build's, with its feature spec): from their old and from their new features. The shift
of a user is the cosine distance ``1 - cos(old, new)`` (embeddings are unit vectors); the report
gives its median and 90th percentile. The nearest-neighbour similarity of a sampled user is its
highest cosine to another sampled user; the PSI of that distribution (old vs new, in the old
distribution's quantile bins) says whether the population got denser or sparser as a whole.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import polars as pl

from lookalike.data.drift import binned_shares, psi, quantile_edges
from lookalike.data.schema import USER_ID
from lookalike.data.spec import FeatureSpec
from lookalike.encoder.embed import embed_frame
from lookalike.encoder.model import load_model


@dataclass(frozen=True)
class EmbeddingDrift:
    """Figures of :func:`embedding_drift` (cosine distances and a PSI)."""

    median_shift: float
    p90_shift: float
    nn_similarity_psi: float
    users: int  # sampled users present in both builds

    def to_dict(self) -> dict[str, float]:
        """The manifest's ``steps.drift.embedding`` (the sample size is left out)."""
        figures = asdict(self)
        figures.pop("users")
        return figures


def common_sample(previous: Path, current: Path, size: int, seed: int) -> pl.Series:
    """Up to ``size`` user ids (seeded sample, sorted) found in both feature tables."""
    old = pl.scan_parquet(previous).select(USER_ID)
    both = pl.scan_parquet(current).select(USER_ID).join(old, on=USER_ID, how="semi").collect()
    ids = both.get_column(USER_ID)
    return (ids.sample(size, seed=seed) if ids.len() > size else ids).sort()


def rows_of(features: Path, ids: pl.Series, columns: list[str]) -> pl.DataFrame:
    """The feature rows of ``ids`` (all present), in the order of ``ids``."""
    wanted = pl.LazyFrame({USER_ID: ids})
    return wanted.join(pl.scan_parquet(features).select(columns), on=USER_ID, how="left",
                       maintain_order="left").collect()


def nearest_similarities(embeddings: np.ndarray) -> np.ndarray:
    """Each row's highest cosine to another row (unit rows): float64 [n]."""
    sims = embeddings.astype(np.float64) @ embeddings.T.astype(np.float64)
    np.fill_diagonal(sims, -np.inf)
    return sims.max(axis=1)


def embedding_drift(previous_features: Path, current_features: Path, spec_path: Path,
                    model_dir: Path, *, sample: int = 2000, seed: int = 0,
                    bins: int = 10) -> EmbeddingDrift | None:
    """Embedding shift and nearest-neighbour similarity PSI of users in both feature tables,
    both embedded by the encoder in ``model_dir`` through the spec it was trained with.

    None when it cannot be computed: the current table lacks a column the spec needs, or fewer
    than two users are in both. Use it before deciding whether a build may reuse the encoder.

    Example::

        drift = embedding_drift(old / "features.parquet", new / "features.parquet",
                                old / "feature_spec.json", old / "model")
    """
    spec = FeatureSpec.load(spec_path)
    if not set(spec.columns) <= set(pl.read_parquet_schema(current_features)):
        return None
    ids = common_sample(previous_features, current_features, sample, seed)
    if ids.len() < 2:
        return None
    model = load_model(model_dir)
    old = embed_frame(rows_of(previous_features, ids, spec.columns), spec, model, "candidate")
    new = embed_frame(rows_of(current_features, ids, spec.columns), spec, model, "candidate")
    shift = 1.0 - np.sum(old.astype(np.float64) * new, axis=1)
    old_nn, new_nn = nearest_similarities(old), nearest_similarities(new)
    edges = quantile_edges(old_nn, bins)
    return EmbeddingDrift(
        median_shift=round(float(np.median(shift)), 6),
        p90_shift=round(float(np.quantile(shift, 0.9)), 6),
        nn_similarity_psi=round(psi(binned_shares(old_nn, edges), binned_shares(new_nn, edges)), 6),
        users=int(ids.len()),
    )

"""A small latent-variable feature table with known structure, for tests and benchmarks.

Each user has a latent vector ``u``. A few *signal* columns are noisy functions of ``u``; many
*noise* columns are heavy-tailed and independent of ``u``; one categorical column is driven by
``u`` too. Each conversion type ``t`` converts the users scoring highest on its own latent direction
``d_t`` (plus noise), so the types overlap a little and some users convert to several. Distances on
the raw (scaled) features are dominated by the noise columns; a model that finds the signal columns
places converters of one type together.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

from lookalike.core.artifacts import atomic_write
from lookalike.data.spec import CategoricalFeature, FeatureSpec, NumericFeature, fit_quantiles


@dataclass(frozen=True)
class ToyPaths:
    """Files written by :func:`write_toy_tables`."""

    features: Path
    spec: Path
    conversions: Path


def toy_tables(
    n_users: int,
    *,
    seed: int = 0,
    n_latent: int = 4,
    n_signal: int = 8,
    n_noise: int = 24,
    conversion_types: tuple[str, ...] = ("purchase", "signup", "upgrade"),
    conversion_rate: float = 0.05,
    string_ids: bool = False,
    unknown_converters: int = 0,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Return ``(features, conversions)``: raw feature table and validated-conversions table.

    ``unknown_converters`` adds conversions of users absent from the feature table.
    """
    rng = np.random.default_rng(seed)
    latent = rng.standard_normal((n_users, n_latent))
    ids: pl.Series = pl.Series("user_id", np.arange(n_users, dtype=np.int64) * 7 + 1000)
    if string_ids:
        ids = ("u" + ids.cast(pl.String)).alias("user_id")
    columns: dict[str, object] = {"user_id": ids}
    mixing = rng.standard_normal((n_latent, n_signal))
    noise = 0.3 * rng.standard_normal((n_users, n_signal))
    signal = np.exp(latent @ mixing / np.sqrt(n_latent) + noise)
    for j in range(n_signal):
        columns[f"signal_{j}"] = signal[:, j]
    for j in range(n_noise):
        columns[f"noise_{j}"] = rng.lognormal(0.0, 2.0, n_users) * 1000.0
    with_missing = signal[:, 0].copy()
    with_missing[rng.random(n_users) < 0.1] = np.nan
    columns["signal_0"] = with_missing
    regions = np.digitize(latent[:, 0] + 0.5 * rng.standard_normal(n_users), [-1.0, -0.3, 0.3, 1.0])
    columns["region"] = np.array(["north", "east", "south", "west", "centre"])[regions]
    features = pl.DataFrame(columns)

    conversions = _conversions(latent, ids, conversion_types, conversion_rate, rng)
    if unknown_converters:
        unknown = _unknown_conversions(unknown_converters, ids.dtype, conversion_types[0])
        conversions = pl.concat([conversions, unknown])
    return features, conversions


def _conversions(
    latent: np.ndarray,
    ids: pl.Series,
    types: tuple[str, ...],
    rate: float,
    rng: np.random.Generator,
) -> pl.DataFrame:
    directions = rng.standard_normal((len(types), latent.shape[1]))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    frames = []
    for direction, name in zip(directions, types, strict=True):
        score = latent @ direction + 0.5 * rng.standard_normal(latent.shape[0])
        converted = np.flatnonzero(score > np.quantile(score, 1.0 - rate))
        times = [datetime(2026, 1, 1, tzinfo=UTC)] * len(converted)
        frames.append(
            pl.DataFrame(
                {
                    "user_id": ids.gather(converted),
                    "conversion_type": name,
                    "conversion_time": times,
                }
            )
        )
    return pl.concat(frames).with_columns(pl.col("conversion_time").dt.cast_time_unit("us"))


def _unknown_conversions(n: int, dtype: pl.DataType, name: str) -> pl.DataFrame:
    unknown = pl.Series("user_id", -np.arange(1, n + 1, dtype=np.int64)).cast(dtype)
    return pl.DataFrame(
        {"user_id": unknown, "conversion_type": name, "conversion_time": None},
        schema={
            "user_id": dtype,
            "conversion_type": pl.String,
            "conversion_time": pl.Datetime("us", "UTC"),
        },
    )


def toy_spec(features: pl.DataFrame, n_quantiles: int = 64) -> FeatureSpec:
    """Fit the spec of a toy table: float columns numeric, string columns categorical."""
    numeric, categorical = [], []
    for name, dtype in features.schema.items():
        if name == "user_id":
            continue
        column = features.get_column(name)
        if dtype == pl.String:
            vocabulary = column.drop_nulls().value_counts(sort=True).get_column(name).to_list()
            categorical.append(CategoricalFeature(name=name, vocabulary=vocabulary))
        else:
            values = column.cast(pl.Float64).to_numpy()
            numeric.append(
                NumericFeature(
                    name=name,
                    quantiles=fit_quantiles(values, n_quantiles),
                    has_missing=bool(np.isnan(values).any()),
                )
            )
    return FeatureSpec(
        id_dtype=str(features.schema["user_id"]),
        as_of="2026-01-01T00:00:00+00:00",
        n_users=features.height,
        numeric=numeric,
        categorical=categorical,
    )


def write_toy_tables(folder: Path, n_users: int, **options: object) -> ToyPaths:
    """Write the toy feature table, its spec and its conversions under ``folder``."""
    features, conversions = toy_tables(n_users, **options)  # type: ignore[arg-type]
    paths = ToyPaths(
        features=folder / "features.parquet",
        spec=folder / "feature_spec.json",
        conversions=folder / "conversions.parquet",
    )
    with atomic_write(paths.features) as tmp:
        features.write_parquet(tmp)
    with atomic_write(paths.conversions) as tmp:
        conversions.write_parquet(tmp)
    toy_spec(features).save(paths.spec)
    return paths

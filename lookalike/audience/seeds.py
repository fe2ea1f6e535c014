"""Seed validation and seed expansion: who, in the population, looks like the seeds.

A seed list is matched to the population's ``user_id`` (unknown ids and duplicates are counted, too
few seeds refuse the export) and checked for distinctiveness: the cross-validated AUC of a logistic
regression telling seeds from a random population sample in the embedding space. An AUC near 0.5
means the seeds look like everybody, so any "lookalike" audience is close to a random one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lookalike.core.blocks import float32_rows
from lookalike.core.config import AudienceConfig
from lookalike.core.errors import AudienceError
from lookalike.encoder.health import separability_auc

QUERY_EMBEDDINGS_NAME = "query_embeddings.npy"


EXAMPLES_SHOWN = 5


@dataclass(frozen=True)
class IdMatch:
    """A list of user ids matched to population rows.

    ``rows_given == len(rows) + unknown + duplicates``; a null or unparseable id counts as unknown.
    """

    rows: np.ndarray  # int64 population rows of the distinct known ids, in first-appearance order
    positions: np.ndarray  # int64 input positions those rows came from (first occurrences)
    rows_given: int
    unknown: int
    duplicates: int
    unknown_examples: list[str]


def match_ids(ids: pl.Series, population_ids: pl.Series, merged_duplicates: int = 0) -> IdMatch:
    """Match ``ids`` (any dtype; cast to the population's) to rows of ``population_ids``.

    ``merged_duplicates``: duplicate rows the reader already merged (counted as given duplicates).
    """
    cast = ids.cast(population_ids.dtype, strict=False)
    given = pl.DataFrame({"user_id": cast}).with_row_index("position")
    is_null = given.get_column("user_id").is_null()
    first = given.get_column("user_id").is_first_distinct() & ~is_null
    population = pl.DataFrame({"user_id": population_ids}).with_row_index("row")
    distinct = given.filter(first).join(population, on="user_id", how="left", maintain_order="left")
    known = distinct.filter(pl.col("row").is_not_null())
    unknown = distinct.filter(pl.col("row").is_null()).get_column("user_id")
    return IdMatch(
        rows=known.get_column("row").to_numpy().astype(np.int64),
        positions=known.get_column("position").to_numpy().astype(np.int64),
        rows_given=given.height + merged_duplicates,
        unknown=unknown.len() + int(is_null.sum()),
        duplicates=int((~first & ~is_null).sum()) + merged_duplicates,
        unknown_examples=[str(v) for v in unknown.head(EXAMPLES_SHOWN).to_list()],
    )


@dataclass(frozen=True)
class SeedReport:
    """What the seed list held and how usable it is."""

    rows_given: int
    matched: int
    unknown: int
    duplicates: int
    unknown_examples: list[str]
    weighted: bool
    distinctiveness_auc: float | None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Seeds:
    """Validated seeds: population rows, their weights (all 1 when unweighted) and the report."""

    rows: np.ndarray
    weights: np.ndarray
    report: SeedReport


def validate_seeds(
    seeds: pl.DataFrame,
    population_ids: pl.Series,
    embeddings: np.ndarray,
    config: AudienceConfig,
    *,
    source: str = "seeds",
    merged_duplicates: int = 0,
) -> Seeds:
    """Match a seed table (``user_id``, optional ``weight``) to the population and check it.

    ``seeds`` is what :func:`lookalike.data.ingest.load_user_list` returns (ids normalized, duplicates
    merged with their weights summed, weights finite and positive); ``merged_duplicates`` is the
    count it merged, so the report still shows every row given. Ids repeated in ``seeds`` itself
    keep their first row.

    Raises :class:`AudienceError` when no id or fewer than ``config.min_seed_size`` distinct ids
    match. Warnings (in the report): unknown ids, duplicates, fewer than ``config.warn_seed_size``
    seeds, distinctiveness AUC below ``config.min_distinctiveness_auc``.
    """
    match = match_ids(seeds.get_column("user_id"), population_ids, merged_duplicates)
    _require_enough_seeds(match, population_ids.dtype, config, source)
    weighted = "weight" in seeds.columns
    weights = (
        seeds.get_column("weight").cast(pl.Float64).to_numpy()[match.positions]
        if weighted
        else np.ones(len(match.rows))
    )
    auc = seed_distinctiveness(embeddings, match.rows, config)
    report = SeedReport(
        rows_given=match.rows_given,
        matched=len(match.rows),
        unknown=match.unknown,
        duplicates=match.duplicates,
        unknown_examples=match.unknown_examples,
        weighted=weighted,
        distinctiveness_auc=auc,
        warnings=_seed_warnings(match, auc, config),
    )
    return Seeds(rows=match.rows, weights=weights, report=report)


def _require_enough_seeds(
    match: IdMatch, id_dtype: pl.DataType, config: AudienceConfig, source: str
) -> None:
    if len(match.rows) == 0:
        raise AudienceError(
            f"{source}: none of the {match.rows_given} seed ids is in the population "
            f"(examples: {match.unknown_examples}); the population's user_id is {id_dtype}: check "
            "that the seed file uses the same ids as the input tables"
        )
    if len(match.rows) < config.min_seed_size:
        raise AudienceError(
            f"{source}: only {len(match.rows)} distinct seed ids match the population "
            f"({match.unknown} unknown, {match.duplicates} duplicates); at least "
            f"{config.min_seed_size} are needed for a stable audience: add seeds, or lower "
            "audience.min_seed_size in the config to accept a noisier audience"
        )


def _seed_warnings(match: IdMatch, auc: float | None, config: AudienceConfig) -> list[str]:
    warnings = []
    if match.unknown:
        warnings.append(
            f"{match.unknown} seed ids are not in the population and were ignored "
            f"(examples: {match.unknown_examples})"
        )
    if match.duplicates:
        warnings.append(f"{match.duplicates} seed rows repeat an earlier id; merged into one seed")
    if len(match.rows) < config.warn_seed_size:
        warnings.append(
            f"only {len(match.rows)} seeds (fewer than {config.warn_seed_size}): the audience will "
            "be noisy; more seeds give a more reliable audience"
        )
    if auc is not None and auc < config.min_distinctiveness_auc:
        warnings.append(
            f"the seeds are hard to tell apart from the population (AUC {auc:.3f} < "
            f"{config.min_distinctiveness_auc}): the audience will be close to a random sample"
        )
    return warnings


def seed_distinctiveness(
    embeddings: np.ndarray, seed_rows: np.ndarray, config: AudienceConfig
) -> float | None:
    """Cross-validated ROC AUC of a logistic regression telling seeds from the other users.

    Uses at most ``config.distinctiveness_sample`` seeds and as many non-seed users drawn at random;
    0.5 means the seeds look like the population, 1.0 that they are perfectly separable. ``None``
    when there are too few seeds or other users for the folds.
    """
    folds = config.distinctiveness_folds
    others = np.setdiff1d(np.arange(len(embeddings)), seed_rows, assume_unique=True)
    if len(seed_rows) < 2 * folds or len(others) < 2 * folds:
        return None
    rng = np.random.default_rng(config.seed)
    sample = config.distinctiveness_sample
    seed_sample = np.sort(rng.choice(seed_rows, min(sample, len(seed_rows)), replace=False))
    background = np.sort(rng.choice(others, min(sample, len(others)), replace=False))
    seed_vectors = float32_rows(embeddings, seed_sample)
    return separability_auc(seed_vectors, float32_rows(embeddings, background), folds, config.seed)


def load_seed_vectors(embeddings_path: Path, rows: np.ndarray) -> np.ndarray:
    """Seed vectors: rows of ``query_embeddings.npy`` beside the embeddings if present, else the
    population embeddings themselves (shared towers)."""
    query_path = embeddings_path.with_name(QUERY_EMBEDDINGS_NAME)
    source = query_path if query_path.is_file() else embeddings_path
    return float32_rows(np.load(source, mmap_mode="r"), rows)

"""Seed validation and seed expansion: who, in the population, looks like the seeds.

A seed list is matched to the population's ``user_id`` (unknown ids and duplicates are counted, too
few seeds refuse the export) and checked for distinctiveness: the cross-validated AUC of a logistic
regression telling seeds from a random population sample in the embedding space. An AUC near 0.5
means the seeds look like everybody, so any "lookalike" audience is close to a random one.

Expansion strategies, all on L2-normalized embeddings with cosine similarity (hybrid also on the
input features), each returning the ``size`` best candidates (eligible, not excluded, not seeds
by default) best first:

- ``knn``: every seed's ``k`` nearest candidates from the index; a candidate scores the
  mean of its ``top_m`` largest seed similarities, each scaled by the seed's relative weight, with
  missing similarities counted as 0. ``k`` starts at ``neighbours_per_seed`` and grows until the
  lists hold at least ``size`` distinct candidates.
- ``clusters``: k-means on the seed vectors; a candidate scores its largest cosine to a normalized
  cluster centre. Scored exactly by one pass over the embeddings: for a few centres that is
  cheaper than index queries ``size / centres`` deep.
- ``centroid``: the (weighted) mean seed vector, normalized; a baseline (RALM, KDD 2019, found the
  mean seed below simple baselines), scored like a single cluster.
- ``contrast``: a logistic regression in the embedding space telling the seeds from a random
  sample of the candidates (positive-unlabeled), scoring every row by one exact pass. Where the
  centroid only asks "how close to the average seed", this asks "how much more seed-like than
  the population", which corrects for directions every user shares. The best AUC of the
  embedding-only strategies on all 12 synthetic type-draws (three draws, four types).
- ``density``: the seeds' kernel density over a candidate sample's at each candidate (a soft vote
  of every seed, divided by how crowded the space is there), one exact pass against seeds plus
  sample. The best top 1% on Bank Marketing; below contrast on AUC on the synthetic draws.
- ``hybrid``: half of contrast's log-odds plus those of a gradient-boosted classifier of the
  same seeds against part of the same sample on the encoded input features
  (:mod:`lookalike.audience.propensity`). The embedding brings what every trained conversion type taught
  the encoder, the boosted model this list's own non-linear boundary in the raw features. The only
  strategy that reads the feature table (``ExpansionProblem.features``). The default: above
  gradient boosting alone and above contrast on AUC on all 12 synthetic type-draws
  (benchmarks/RESULTS.md, issue 7).

Seed weights (a ``weight`` column: value-based lookalikes) weight the knn mean, the k-means fit,
the centroid, the contrast regression, the density's seed kernel and the hybrid's two models.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
import torch
from sklearn.cluster import MiniBatchKMeans
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

from lookalike.core.config import AudienceConfig
from lookalike.core.errors import AudienceError
from lookalike.search.index import exact_search
from lookalike.audience.propensity import FeatureRows, boosted_log_odds

QUERY_EMBEDDINGS_NAME = "query_embeddings.npy"
EXAMPLES_SHOWN = 5
_ROW_BLOCK = 65_536
# nearest_seeds works on tiles of rows x seeds: 8 MiB of similarities stay in cache, where a
# 64 MiB block of rows x all 50,000 seeds went to memory and back (7.1 s against 3.3 s).
_TILE_ROWS, _TILE_SEEDS = 2048, 1024
_KERNEL_BLOCK_ELEMENTS = 1 << 22  # kernel sums: 16 MiB blocks stay in cache (1.8x faster than 64)


class NeighbourSearch(Protocol):
    """Nearest-neighbour search over population rows (``lookalike.search.index.AnnIndex`` satisfies it)."""

    @property
    def live_count(self) -> int:
        """Rows the search can return."""
        ...

    def query(
        self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Labels (int64 row positions, -1 pads short rows) and similarities [q, k'], best first."""
        ...


class ExactSearch:
    """Exact :class:`NeighbourSearch` over all population rows or a subset of them.

    Used when an eligible list leaves few candidates (filtering an HNSW index that excludes most of
    its items is slow and loses recall) and as the reference the index is checked against.
    """

    def __init__(self, embeddings: np.ndarray, rows: np.ndarray | None = None) -> None:
        self._rows = None if rows is None else np.sort(np.asarray(rows, dtype=np.int64))
        self._vectors = embeddings if self._rows is None else np.asarray(embeddings[self._rows])

    @property
    def live_count(self) -> int:
        return len(self._vectors)

    def query(
        self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if self._rows is None:
            return exact_search(self._vectors, queries, k, exclude)
        labels, sims = exact_search(self._vectors, queries, k, self._local_positions(exclude))
        return self._rows[labels], sims

    def _local_positions(self, rows: np.ndarray | None) -> np.ndarray | None:
        if rows is None:
            return None
        assert self._rows is not None
        positions = np.searchsorted(self._rows, rows)
        inside = positions < len(self._rows)
        inside[inside] = self._rows[positions[inside]] == rows[inside]
        return positions[inside]


# --- seeds -----------------------------------------------------------------------------------


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
    features = np.concatenate([embeddings[seed_sample], embeddings[background]]).astype(np.float32)
    labels = np.r_[np.ones(len(seed_sample)), np.zeros(len(background))]
    model = LogisticRegression(max_iter=1000, class_weight="balanced")
    splits = StratifiedKFold(folds, shuffle=True, random_state=config.seed)
    return float(cross_val_score(model, features, labels, cv=splits, scoring="roc_auc").mean())


def load_seed_vectors(embeddings_path: Path, rows: np.ndarray) -> np.ndarray:
    """Seed vectors: rows of ``query_embeddings.npy`` beside the embeddings if present, else the
    population embeddings themselves (shared towers)."""
    query_path = embeddings_path.with_name(QUERY_EMBEDDINGS_NAME)
    source = query_path if query_path.is_file() else embeddings_path
    return np.asarray(np.load(source, mmap_mode="r")[rows], dtype=np.float32)


# --- who may be returned, and how many ------------------------------------------------------------


def candidate_mask(
    n_users: int,
    *,
    seed_rows: np.ndarray,
    excluded_rows: np.ndarray | None = None,
    eligible_rows: np.ndarray | None = None,
    exclude_seeds: bool = True,
) -> np.ndarray:
    """Boolean mask of users who may be in the audience: eligible, not excluded, not seeds."""
    mask = np.full(n_users, eligible_rows is None)
    if eligible_rows is not None:
        mask[eligible_rows] = True
    if excluded_rows is not None:
        mask[excluded_rows] = False
    if exclude_seeds:
        mask[seed_rows] = False
    return mask


def band_size(fraction: float, count: int) -> int:
    """Users in the top ``fraction`` of ``count`` (floor, robust to 0.29 * 100 = 28.999...)."""
    return math.floor(fraction * count + 1e-9)


def resolve_size(
    size: int | None, fraction: float | None, n_candidates: int, min_audience_size: int
) -> int:
    """The audience size: ``size`` users or ``fraction`` of the candidates, at most all candidates.

    Raises :class:`AudienceError` unless exactly one of ``size`` and ``fraction`` is given, or when
    the result is below ``min_audience_size``.
    """
    asked = _asked_size(size, fraction, n_candidates)
    if asked < min_audience_size:
        raise AudienceError(
            f"an audience of {asked} users is below audience.min_audience_size "
            f"({min_audience_size}); ask for more users, or lower min_audience_size in the config"
        )
    if n_candidates < min_audience_size:
        raise AudienceError(
            f"only {n_candidates} users are eligible and not excluded, below "
            f"audience.min_audience_size ({min_audience_size}); widen the eligible list, shorten "
            "the exclusions, or lower min_audience_size in the config"
        )
    return min(asked, n_candidates)


def _asked_size(size: int | None, fraction: float | None, n_candidates: int) -> int:
    if size is not None and fraction is None:
        return size
    if fraction is not None and size is None:
        if not 0 < fraction <= 1:
            raise AudienceError(f"fraction must be in (0, 1], got {fraction}")
        return band_size(fraction, n_candidates)
    raise AudienceError("give exactly one of size (a user count) and fraction (of eligible users)")


def assign_tiers(n: int, tiers: list[float], eligible_count: int) -> np.ndarray:
    """Tier of ranks 1..n: the smallest band ``t`` with ``rank <= t * eligible_count``, else 1.0."""
    ranks = np.arange(1, n + 1)
    tier = np.ones(n, dtype=np.float64)
    for band in sorted(tiers, reverse=True):
        tier[ranks <= band_size(band, eligible_count)] = band
    return tier


# --- expansion strategies -----------------------------------------------------------------------


@dataclass(frozen=True)
class ExpansionProblem:
    """Everything a strategy needs: the population, the seeds and who may be returned."""

    embeddings: np.ndarray  # float32 [N, d], L2-normalized
    seed_vectors: np.ndarray  # float32 [S, d]
    seed_weights: np.ndarray  # float64 [S], >= 0
    seed_rows: np.ndarray  # int64 [S], the seeds' population rows
    excluded: np.ndarray  # int64 rows that may not be returned (outside eligible, excluded, seeds)
    n_candidates: int
    size: int
    features: FeatureRows | None = None  # the model inputs, rows aligned (hybrid strategy)


@dataclass(frozen=True)
class Expansion:
    """The ``size`` best candidates, best first, and what the strategy did to find them."""

    rows: np.ndarray  # int64 population rows
    scores: np.ndarray  # float64, non-increasing
    effort: dict[str, int]  # {"neighbours_per_seed": 200, "query_rounds": 2}, {"centres": 12}
    # Per row: position of the most similar seed among those whose neighbour lists reached it, and
    # that similarity. Set by knn (its lists already hold them); None means "compute exactly".
    listed_nearest: tuple[np.ndarray, np.ndarray] | None = None

    def head(self, n: int) -> Expansion:
        """The ``n`` best."""
        nearest = None
        if self.listed_nearest is not None:
            nearest = (self.listed_nearest[0][:n], self.listed_nearest[1][:n])
        return Expansion(self.rows[:n], self.scores[:n], self.effort, nearest)


Strategy = Callable[[ExpansionProblem, NeighbourSearch, AudienceConfig], Expansion]


def score_knn(
    problem: ExpansionProblem, search: NeighbourSearch, config: AudienceConfig
) -> Expansion:
    """Mean of each candidate's ``top_m`` weighted seed similarities among the seeds' k-NN lists."""
    cap = min(problem.n_candidates, search.live_count)
    k = min(config.neighbours_per_seed, cap)
    rounds = 0
    while True:
        labels, sims = search.query(problem.seed_vectors, k, problem.excluded)
        rounds += 1
        found = len(np.unique(labels[labels >= 0]))
        if found >= problem.size or k >= cap:
            break
        k = min(cap, max(2 * k, math.ceil(1.25 * k * problem.size / max(found, 1))))
    relative_weights = problem.seed_weights / problem.seed_weights.mean()
    contributions = sims.astype(np.float64) * relative_weights[:, None]
    rows, scores = mean_top_m(labels, contributions, config.top_m)
    rows, scores = top_ranked(rows, scores, problem.size)
    effort = {"neighbours_per_seed": k, "query_rounds": rounds}
    return Expansion(rows, scores, effort, most_similar_listing_seed(labels, sims, rows))


def _allowed(problem: ExpansionProblem) -> np.ndarray:
    allowed = np.ones(len(problem.embeddings), dtype=bool)
    allowed[problem.excluded] = False
    return allowed


def most_similar_listing_seed(
    labels: np.ndarray, sims: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``rows``: the seed (row of ``labels``) that lists it with the largest similarity.

    Reading it off the neighbour lists avoids a rows x seeds product (5.5 s for 50k x 50k), at the
    price that a seed whose ``k`` lists are full of closer users is not considered.
    """
    seed_of_pair = np.broadcast_to(np.arange(len(labels))[:, None], labels.shape)
    keep = np.isin(labels, rows)
    pair_rows, pair_seeds, pair_sims = labels[keep], seed_of_pair[keep], sims[keep]
    order = np.lexsort((pair_seeds, -pair_sims, pair_rows))
    pair_rows, pair_seeds, pair_sims = pair_rows[order], pair_seeds[order], pair_sims[order]
    firsts = np.flatnonzero(np.r_[True, pair_rows[1:] != pair_rows[:-1]])
    at = np.searchsorted(pair_rows[firsts], rows)
    return pair_seeds[firsts][at].astype(np.int64), pair_sims[firsts][at].astype(np.float64)


def mean_top_m(
    labels: np.ndarray, contributions: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per distinct label: the sum of its ``m`` largest contributions divided by ``m``."""
    valid = labels >= 0
    candidates, values = labels[valid], contributions[valid]
    order = np.lexsort((-values, candidates))
    candidates, values = candidates[order], values[order]
    starts = np.flatnonzero(np.r_[True, candidates[1:] != candidates[:-1]])
    group_lengths = np.diff(np.r_[starts, len(candidates)])
    rank_in_group = np.arange(len(candidates)) - np.repeat(starts, group_lengths)
    sums = np.add.reduceat(np.where(rank_in_group < m, values, 0.0), starts)
    return candidates[starts], sums / m


def score_clusters(
    problem: ExpansionProblem, search: NeighbourSearch, config: AudienceConfig
) -> Expansion:
    """Largest cosine to a normalized k-means centre of the (weighted) seed vectors."""
    n_seeds = len(problem.seed_vectors)
    n_clusters = config.n_clusters or default_cluster_count(n_seeds, config.max_clusters)
    centres = fit_seed_centres(problem.seed_vectors, problem.seed_weights, n_clusters, config.seed)
    return rank_by_centres(problem, centres)


def score_centroid(
    problem: ExpansionProblem, search: NeighbourSearch, config: AudienceConfig
) -> Expansion:
    """Cosine to the normalized (weighted) mean seed vector."""
    centroid = np.average(problem.seed_vectors, axis=0, weights=problem.seed_weights)
    return rank_by_centres(problem, normalize_rows(centroid[None, :]))


def score_contrast(
    problem: ExpansionProblem, search: NeighbourSearch, config: AudienceConfig
) -> Expansion:
    """Probability of "seed" from logistic regressions of seeds against sampled candidates.

    Seeds and sample are both read from the population embeddings (the candidate tower), so an
    unshared query tower cannot be what separates them. The models are cross-fitted on two halves
    of ``config.contrast_background`` sampled candidates (:func:`contrast_log_odds`).
    """
    candidates = np.flatnonzero(_allowed(problem))
    halves = random_halves(candidates, min(config.contrast_background, len(candidates)), config.seed)
    logits = contrast_log_odds(problem, halves, config.contrast_c)
    rows, best = top_ranked(candidates, _sigmoid(logits[candidates]), problem.size)
    return Expansion(rows, best, {"background": sum(map(len, halves))})


def score_hybrid(
    problem: ExpansionProblem, search: NeighbourSearch, config: AudienceConfig
) -> Expansion:
    """contrast's log-odds in the embedding space plus a gradient-boosted model's on the features.

    Both models are cross-fitted on the two halves of ``config.contrast_background`` sampled
    candidates (the boosting, :func:`lookalike.audience.propensity.boosted_log_odds`, on a sample of each
    half), and the score is the boosting's log-odds plus ``config.hybrid_embedding_weight`` (0.5)
    times contrast's: the two models' odds multiplied, as for two pieces of evidence, the
    embedding's discounted because it is overconfident on the conversion types the encoder trained
    on (their seeds are its training converters). The embedding carries what every trained
    conversion type taught the encoder; the boosted model draws this list's own non-linear
    boundary in the raw features, which the 32-d embedding summarizes lossily. A model that finds
    nothing (early stopping on a held-out tenth) stays near-constant instead of adding noise. The
    boosting sees at most ``config.boosting_max_seeds`` seeds and ``config.boosting_background``
    of the sampled candidates (seeded samples). Needs ``problem.features``.
    """
    if problem.features is None:
        raise AudienceError(
            "the hybrid strategy scores the build's feature table, and none was given; "
            "export from a build (which has features.parquet) or choose another strategy"
        )
    candidates = np.flatnonzero(_allowed(problem))
    halves = random_halves(candidates, min(config.contrast_background, len(candidates)), config.seed)
    embedding = contrast_log_odds(problem, halves, config.contrast_c)[candidates]
    fitted = np.arange(len(problem.seed_rows))
    if len(fitted) > config.boosting_max_seeds:
        rng = np.random.default_rng(config.seed)
        fitted = np.sort(rng.choice(fitted, config.boosting_max_seeds, replace=False))
    weights = problem.seed_weights[fitted]
    boosting_halves = subsample_halves(halves, config.boosting_background, config.seed)
    boosted = boosted_log_odds(
        problem.features, problem.seed_rows[fitted], weights / weights.mean(), boosting_halves,
        candidates, config.seed,
    )
    score = config.hybrid_embedding_weight * embedding + boosted
    rows, best = top_ranked(candidates, score, problem.size)
    effort = {"background": sum(map(len, halves)), "boosting_seeds": len(fitted),
              "boosting_background": sum(map(len, boosting_halves))}
    return Expansion(rows, best, effort)


def score_density(
    problem: ExpansionProblem, search: NeighbourSearch, config: AudienceConfig
) -> Expansion:
    """Log ratio of the seeds' kernel density to the population's at each candidate.

    With kernel ``exp(cosine / t)`` (``t`` = ``config.density_temperature``) a candidate ``u``
    scores ``log(sum_s w_s exp(u.s / t) / sum_s w_s) - log(mean_b exp(u.b / t))``: seeds ``s``
    (at most ``config.density_max_seeds``, a seeded sample beyond that) against a random sample
    ``b`` of ``config.density_background`` candidates, a sampled user's own term left out. Every
    seed votes for the users near it, as in knn, but softly and over all seeds, and the vote is
    divided by how crowded the space is there, so a user is not chosen only for sitting where
    everyone sits. Like ``contrast`` it reads seeds and sample from the candidate tower. Cost: one
    exact pass over the candidates against ``seeds + background`` vectors.
    """
    candidates = np.flatnonzero(_allowed(problem))
    rng = np.random.default_rng(config.seed)
    background = np.sort(
        rng.choice(candidates, min(config.density_background, len(candidates)), replace=False)
    )
    centres = np.arange(len(problem.seed_rows))
    if len(centres) > config.density_max_seeds:
        centres = np.sort(rng.choice(centres, config.density_max_seeds, replace=False))
    weights = problem.seed_weights[centres] / problem.seed_weights[centres].sum()
    seeds = problem.embeddings[problem.seed_rows[centres]]
    t = config.density_temperature
    seed_density = kernel_log_sums(problem.embeddings, candidates, seeds, np.log(weights), t)
    own = np.full(len(candidates), -1)  # a sampled candidate's position in the sample
    if len(background) > 1:  # leaving out the only sampled user would leave nothing
        own[np.searchsorted(candidates, background)] = np.arange(len(background))
    background_sums = kernel_log_sums(
        problem.embeddings, candidates, problem.embeddings[background],
        np.zeros(len(background)), t, leave_out=own,
    )
    background_density = background_sums - np.log(len(background) - (own >= 0))
    rows, best = top_ranked(candidates, seed_density - background_density, problem.size)
    return Expansion(rows, best, {"background": len(background), "centres": len(centres)})


def kernel_log_sums(
    embeddings: np.ndarray,
    rows: np.ndarray,
    centres: np.ndarray,
    log_weights: np.ndarray,
    temperature: float,
    leave_out: np.ndarray | None = None,
) -> np.ndarray:
    """Per row of ``embeddings[rows]``: ``log sum_c exp(log_weights[c] + row.centre_c / temperature)``.

    ``leave_out[i]`` >= 0 drops centre ``leave_out[i]`` from row ``i``'s sum (the row's own
    vector among the centres: a leave-one-out sum); -1 keeps every term. Rows and centres are
    unit vectors, so ``(row.centre - 1) / temperature`` <= 0 and its exponential cannot overflow:
    one in-place exp and one product with the weights replace a logsumexp (4x faster, measured);
    a block where a row's every term underflows float32 (far from all centres at a small
    temperature) is recomputed in float64, exact down to a temperature of 0.003.
    """
    scaled = torch.from_numpy(np.ascontiguousarray(centres.T / temperature, dtype=np.float32))
    top = float(np.max(log_weights))
    weights = torch.from_numpy(np.exp(np.asarray(log_weights) - top).astype(np.float32))
    step = max(1, _KERNEL_BLOCK_ELEMENTS // max(len(centres), 1))
    sums = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), step):
        block = torch.from_numpy(np.asarray(embeddings[rows[start : start + step]], dtype=np.float32))
        hit, own = _own_terms(leave_out, start, len(block))
        total = _kernel_terms(block, scaled, temperature, hit, own) @ weights
        if bool((total == 0).any()):  # float32 underflow: redo the block in float64
            total = _kernel_terms(block.double(), scaled.double(), temperature, hit, own) @ weights.double()
        sums[start : start + len(block)] = total.double().log().numpy()
    return sums + 1.0 / temperature + top


def _own_terms(
    leave_out: np.ndarray | None, start: int, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows of the block, centre positions) of the terms that ``leave_out`` drops."""
    if leave_out is None:
        empty = torch.empty(0, dtype=torch.int64)
        return empty, empty
    own = torch.from_numpy(leave_out[start : start + count].astype(np.int64))
    hit = torch.nonzero(own >= 0).flatten()
    return hit, own[hit]


def _kernel_terms(
    block: torch.Tensor, scaled: torch.Tensor, temperature: float, hit: torch.Tensor,
    own: torch.Tensor,
) -> torch.Tensor:
    """``exp((row.centre - 1) / temperature)`` for a block of rows, dropped terms set to 0."""
    terms = (block @ scaled).sub_(1.0 / temperature).exp_()
    terms[hit, own] = 0.0
    return terms


def random_halves(rows: np.ndarray, sample_size: int, seed: int) -> list[np.ndarray]:
    """A seeded random sample of ``rows`` split into two random halves (each sorted).

    The halves must be random, not the low and high rows of a sorted sample: tables are often
    ordered by time or source, and two models trained on different periods as "population" each
    learn the other period as seed-like (on Bank Marketing, ordered by date, that split cut the
    contrast strategy's precision at 1% from 0.44 to 0.12).
    """
    sample = np.random.default_rng(seed).choice(rows, sample_size, replace=False)
    return [np.sort(half) for half in np.array_split(sample, 2)]


def subsample_halves(halves: list[np.ndarray], size: int, seed: int) -> list[np.ndarray]:
    """At most ``size // 2`` rows of each half: a seeded sample, sorted."""
    rng = np.random.default_rng(seed)
    per_half = max(1, size // 2)
    return [np.sort(rng.choice(half, min(per_half, len(half)), replace=False)) for half in halves]


def contrast_log_odds(problem: ExpansionProblem, halves: list[np.ndarray], c: float) -> np.ndarray:
    """Cross-fitted log-odds of "seed" for every population row, in the embedding space.

    Each half trains one logistic regression (seeds weighted by their relative weight, classes
    balanced); a sampled row is scored by the model that did not see it, every other row by the
    mean of both models' log-odds.
    """
    relative_weights = problem.seed_weights / problem.seed_weights.mean()
    directions = [_seed_contrast(problem, half, relative_weights, c) for half in halves if len(half)]
    logits = _log_odds(problem.embeddings, np.mean(directions, axis=0))
    if len(directions) == 2:
        for half, other_model in zip(halves, reversed(directions), strict=True):
            logits[half] = _log_odds(problem.embeddings[half], other_model)
    return logits


def _seed_contrast(
    problem: ExpansionProblem, background: np.ndarray, seed_weights: np.ndarray, c: float
) -> np.ndarray:
    """[coefficients..., intercept] of a balanced logistic regression, seeds against background."""
    seeds = np.asarray(problem.embeddings[problem.seed_rows])
    features = np.concatenate([seeds, problem.embeddings[background]])
    labels = np.r_[np.ones(len(seeds)), np.zeros(len(background))]
    weights = np.r_[seed_weights, np.ones(len(background))]
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=1000, tol=1e-6)
    model.fit(features.astype(np.float32), labels, sample_weight=weights)
    return np.r_[model.coef_[0], model.intercept_[0]]


def _log_odds(embeddings: np.ndarray, direction: np.ndarray) -> np.ndarray:
    """``embeddings @ coefficients + intercept`` for ``direction`` = [coefficients..., intercept]."""
    return max_cosine(embeddings, direction[None, :-1]) + direction[-1]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def default_cluster_count(n_seeds: int, cap: int) -> int:
    """clamp(round(sqrt(S / 2)), 1, cap): more seeds, more modes worth separating."""
    return int(np.clip(round(math.sqrt(n_seeds / 2)), 1, cap))


def fit_seed_centres(
    vectors: np.ndarray, weights: np.ndarray, n_clusters: int, seed: int
) -> np.ndarray:
    """Normalized k-means centres of the seed vectors (MiniBatchKMeans with sample weights)."""
    n_clusters = min(n_clusters, len(vectors))
    kmeans = MiniBatchKMeans(n_clusters=n_clusters, n_init=3, random_state=seed, batch_size=4096)
    kmeans.fit(vectors, sample_weight=weights)
    return normalize_rows(kmeans.cluster_centers_)


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32)."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def rank_by_centres(problem: ExpansionProblem, centres: np.ndarray) -> Expansion:
    """Top ``size`` candidates by largest cosine to any centre, from one exact pass over all rows.

    A handful of centres needs neighbour lists about ``size / centres`` deep; at that depth HNSW
    (ef >= k) costs more than scanning every row once, and the scan is exact.
    """
    scores = max_cosine(problem.embeddings, centres)
    rows = np.flatnonzero(_allowed(problem))
    rows, best = top_ranked(rows, scores[rows], problem.size)
    return Expansion(rows, best, {"centres": len(centres)})


def max_cosine(embeddings: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Largest inner product of every embedding row with any centre (float64 [N])."""
    transposed = np.ascontiguousarray(centres, dtype=np.float32).T
    scores = np.empty(len(embeddings), dtype=np.float64)
    for start in range(0, len(embeddings), _ROW_BLOCK):
        block = np.asarray(embeddings[start : start + _ROW_BLOCK], dtype=np.float32)
        scores[start : start + len(block)] = (block @ transposed).max(axis=1)
    return scores


def top_ranked(rows: np.ndarray, scores: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``size`` best (row, score) pairs, by score descending then row ascending."""
    if len(scores) > size:
        threshold = np.partition(scores, len(scores) - size)[len(scores) - size]
        contenders = scores >= threshold
        rows, scores = rows[contenders], scores[contenders]
    order = np.lexsort((rows, -scores))[:size]
    return rows[order], scores[order]


STRATEGIES: dict[str, Strategy] = {
    "knn": score_knn,
    "clusters": score_clusters,
    "centroid": score_centroid,
    "contrast": score_contrast,
    "density": score_density,
    "hybrid": score_hybrid,
}
FEATURE_STRATEGIES = frozenset({"hybrid"})  # strategies that read ExpansionProblem.features


def expand_seeds(
    problem: ExpansionProblem, search: NeighbourSearch, strategy: str, config: AudienceConfig
) -> Expansion:
    """Run one of :data:`STRATEGIES` (knn, clusters, centroid, contrast, density, hybrid).

    Example (the 10 users most like the first 20, who are excluded as seeds)::

        >>> vectors = normalize_rows(np.random.default_rng(0).normal(size=(200, 8)))
        >>> problem = ExpansionProblem(vectors, vectors[:20], np.ones(20), np.arange(20),
        ...                            np.arange(20), 180, 10)
        >>> result = expand_seeds(problem, ExactSearch(vectors), "knn", AudienceConfig())
        >>> len(result.rows), bool((result.rows >= 20).all()), result.effort["query_rounds"]
        (10, True, 1)
    """
    if strategy not in STRATEGIES:
        raise AudienceError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    return STRATEGIES[strategy](problem, search, config)


def nearest_seeds(
    embeddings: np.ndarray, rows: np.ndarray, seed_vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per row of ``embeddings[rows]``: position of its most similar seed, and that similarity."""
    seeds = torch.from_numpy(np.ascontiguousarray(seed_vectors, dtype=np.float32))
    best = np.empty(len(rows), dtype=np.int64)
    similarity = np.empty(len(rows), dtype=np.float64)
    for start in range(0, len(rows), _TILE_ROWS):
        block = torch.from_numpy(np.asarray(embeddings[rows[start : start + _TILE_ROWS]], dtype=np.float32))
        top = torch.full((len(block),), -torch.inf)
        position = torch.zeros(len(block), dtype=torch.int64)
        for first in range(0, len(seeds), _TILE_SEEDS):
            values, positions = (block @ seeds[first : first + _TILE_SEEDS].T).max(dim=1)
            better = values > top  # strict: the earlier seed keeps a tie
            top = torch.where(better, values, top)
            position = torch.where(better, positions + first, position)
        best[start : start + len(block)] = position.numpy()
        similarity[start : start + len(block)] = top.numpy()
    return best, similarity

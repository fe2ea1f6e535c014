"""Export a lookalike audience: an atomically written Parquet file and a report beside it.

The audience file has one row per user, best first:

============  ========================  =========================================================
column        type                      meaning
============  ========================  =========================================================
user_id       the population's id type  a user who looks like the seeds
rank          int64                     1 = most similar
score         float64                   the strategy's score, non-increasing with rank
tier          float64                   smallest configured band t with rank <= t * eligible
                                        users, else 1.0 (``WHERE tier <= 0.05``)
nearest_seed  the population's id type  the seed most similar to this user (knn: among the
                                        seeds whose neighbour lists reached the user)
============  ========================  =========================================================

"Eligible users" are the population users on the eligible list (everyone without one), minus the
exclusion list and the seeds; ``fraction`` and the tiers are relative to their count.

Parquet key-value metadata (all strings): ``lookalike.model_build_id``, ``lookalike.build_id``,
``lookalike.index_manifest_sha256`` (sha256 of ``index/index.json``, empty when the build has
none), ``lookalike.seed_sha256`` (sha256 of the matched seed ids as text, sorted by id, one per
line), ``lookalike.parameters`` (JSON), ``lookalike.created_at`` (ISO 8601, UTC). Read them with
:func:`read_audience_metadata`.

Beside ``<stem>.parquet`` go ``<stem>.report.json``, ``<stem>.report.md`` and the self-contained
``<stem>.report.html`` with plots (see :mod:`lookalike.audience.report` and
:mod:`lookalike.audience.html`); the ids of the last export of each audience name are kept in
``<workdir>/audiences/<name>/last.parquet`` for the overlap section. Every file is written through
:func:`~lookalike.core.artifacts.atomic_write`: a killed or failed export leaves the previous file.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lookalike.core.artifacts import (
    ReportFiles,
    atomic_write,
    read_json,
    sha256_file,
    sweep_temp_files_of,
    verify_checksum,
)
from lookalike.audience.strategies import FEATURE_STRATEGIES, expand_seeds
from lookalike.audience.trust import trusted_config
from lookalike.search.neighbours import ExactSearch, NeighbourSearch
from lookalike.search.vectors import open_embeddings
from lookalike.audience.strategies.base import Expansion, ExpansionProblem
from lookalike.audience.seeds import IdMatch, Seeds, load_seed_vectors, match_ids, validate_seeds
from lookalike.audience.selection import assign_tiers, candidate_mask, nearest_seeds, resolve_size
from lookalike.audience.quality import estimate_quality, quality_table
from lookalike.audience.report import (
    embedding_map,
    feature_differences,
    reach_curve,
    report_paths,
    score_histogram,
    score_quantiles,
    tier_counts,
    write_report,
)
from lookalike.core.config import AudienceConfig, LookalikeConfig, PrivacyConfig
from lookalike.core.errors import ArtifactError, AudienceError, InputError
from lookalike.privacy.hashing import Kind, Platform, hash_identifiers
from lookalike.search.index import AnnIndex
from lookalike.data.ingest import load_user_list, scan_table
from lookalike.privacy.audit import audit_shares, gap_warnings, read_audit_columns
from lookalike.privacy.proxies import seed_overlap_guard
from lookalike.audience.propensity import FeatureRows, ParquetFeatures
from lookalike.data.schema import USER_ID
from lookalike.data.spec import FeatureSpec
from lookalike.privacy.suppression import is_listed, suppressed_ids
from lookalike.core.workdir import BuildPaths, Workdir, load_manifest
from lookalike.core.progress import Progress

METADATA_PREFIX = "lookalike."
ROW_GROUP_SIZE = 1_000_000
LAST_EXPORT_NAME = "last.parquet"
LAST_SEEDS_NAME = "last_seeds.parquet"  # keyed hashes of the last export's seed ids, never the ids
SEED_KEY_NAME = ".seed_key"  # per-workdir HMAC key: ids cannot be recovered by hashing candidates
# Files of a build an export reads, verified against the build manifest before any is parsed.
EXPORT_READS = (
    "embeddings/users.parquet",
    "embeddings/embeddings.npy",
    "embeddings/embeddings.json",
    "features.parquet",
    "feature_spec.json",
    "model/model.json",
    "index/index.json",
)



@dataclass(frozen=True)
class ExportResult(ReportFiles):
    """Where the export and its report went, and a small JSON-able summary (size, tiers,
    warnings, timings)."""

    audience: Path | str  # a URL after an upload (lookalike.object_store.upload_export)
    summary: dict[str, Any]
    report_html: Path | str
    report_json: Path | str
    report_md: Path | str

    def to_dict(self) -> dict[str, Any]:
        """The paths as text and the summary (what the export flow returns)."""
        return {"audience": str(self.audience), "report_md": str(self.report_md),
                "report_json": str(self.report_json), "report_html": str(self.report_html),
                "summary": self.summary}


@dataclass(frozen=True)
class Population:
    """The build's users: ids (row i = embedding row i) and memory-mapped embeddings."""

    ids: pl.Series
    embeddings: np.ndarray


@dataclass(frozen=True)
class Selection:
    """Validated seeds and who may be in the audience."""

    seeds: Seeds
    excluded: IdMatch | None
    eligible: IdMatch | None
    candidates: np.ndarray  # bool [N]: eligible, not excluded/suppressed, not a seed (unless kept)
    suppressed: int  # population users on the suppression list (never exported)

    @property
    def n_candidates(self) -> int:
        return int(self.candidates.sum())


def export_audience(
    build: BuildPaths,
    seeds: Path | str,
    out: Path | str,
    *,
    size: int | None = None,
    fraction: float | None = None,
    exclude: Path | str | None = None,
    eligible: Path | str | None = None,
    strategy: str | None = None,
    min_score: float | None = None,
    name: str | None = None,
    exclude_seeds: bool = True,
    config: LookalikeConfig = LookalikeConfig(),
    search: NeighbourSearch | None = None,
    hashing: HashingRequest | None = None,
    audit_profiles: Path | str | None = None,
    progress: Progress = print,
) -> ExportResult:
    """Expand a seed list into the ``size`` (or ``fraction`` of eligible) most similar users.

    Args:
        build: a complete build (embeddings, users, model, index).
        seeds: Parquet or CSV with ``user_id`` and an optional ``weight`` column.
        out: the audience Parquet file; the reports go beside it.
        size, fraction: exactly one: a user count, or a fraction of the eligible users.
        exclude, eligible: user lists (Parquet or CSV with ``user_id``): hard rules.
        strategy: a name in :data:`lookalike.audience.strategies.STRATEGIES`; default ``config.audience.strategy``.
        min_score: drop users scoring below it (the audience may then be smaller than asked).
        name: the audience's name for the overlap report; default the stem of ``out``.
        exclude_seeds: keep seeds out of the audience (default).
        search: replaces the build's index (the default; exact search over the eligible users
            when an eligible list leaves at most ``audience.exact_search_max_candidates``).
        hashing: add a ``hashed_email`` or ``hashed_phone`` column for ad-platform upload.
        audit_profiles: the profiles table that ``privacy.audit_columns`` are read from; default
            the build's own profiles input (its manifest's ``inputs.profiles``).
        progress: called with one line per stage.

    Privacy rules: users on ``privacy.suppression_list`` are never exported (nor used as seeds),
    even when the build predates their opt-out; a seed list differing from the previous export of
    the same name in fewer than ``privacy.min_seed_difference`` users (but not zero) is refused.
    With ``privacy.audit_columns``, the report's ``fairness`` section compares each group's share
    of the audience and of the eligible users (:mod:`lookalike.privacy.audit`) and warns beyond
    ``privacy.max_audit_gap_points``.
    The build's files are verified against its manifest before any is read; nothing is written
    unless every check passes.

    Raises:
        AudienceError: too few seeds, an audience below ``audience.min_audience_size``, a seed
            list too close to the previous export's, audit columns without a profiles table.
        InputError: an unreadable or invalid seed, exclusion or eligible file, or an audit
            column missing from the profiles table.
        ArtifactError: a missing or inconsistent build artifact.

    Example::

        build = Workdir("work").current()
        result = export_audience(build, "seeds.csv", "out/buyers.parquet", fraction=0.05)
        print(result.summary["size"], result.report_md)
    """
    cfg = config.audience
    out = Path(out)
    strategy = strategy or cfg.strategy
    timings: dict[str, float] = {}
    last_export = last_export_path(build, name or out.stem)
    for target in (out, *report_paths(out), last_export, last_export.with_name(LAST_SEEDS_NAME)):
        sweep_temp_files_of(target)
    with _timed(timings, "load"):
        verify_export_inputs(build)
        population = load_population(build)
        model_build_id = build.model_build_id()
        audit = read_audit(build, population, audit_profiles, config)
    with _timed(timings, "seeds"):
        lists = {"seeds": seeds, "exclude": exclude, "eligible": eligible}
        selection = select_users(population, lists, exclude_seeds, config, progress)
        seed_ids = population.ids[selection.seeds.rows]
        guard_seed_difference(seed_ids, last_export.with_name(LAST_SEEDS_NAME), config)
        target = resolve_size(size, fraction, selection.n_candidates, cfg.min_audience_size)
    cfg, trust_warnings = trusted_config(build.model_dir, build.conversions, seed_ids, strategy, cfg)
    export_warnings = [*trust_warnings, *_size_warnings(size, selection.n_candidates)]
    for warning in export_warnings:
        progress(f"warning: {warning}")
    if search is None:
        search = _LazySearch(
            lambda: _build_search(build, population, selection, cfg, model_build_id)
        )
    seed_vectors = load_seed_vectors(build.embeddings, selection.seeds.rows)
    problem = ExpansionProblem(
        embeddings=population.embeddings,
        seed_vectors=seed_vectors,
        seed_weights=selection.seeds.weights,
        seed_rows=selection.seeds.rows,
        excluded=np.flatnonzero(~selection.candidates),
        n_candidates=selection.n_candidates,
        size=target,
        features=_feature_rows(build, population, strategy),
    )
    progress(f"expanding {len(seed_vectors)} seeds to {target} of {problem.n_candidates} users")
    with _timed(timings, "expand"):
        expansion = _apply_min_score(expand_seeds(problem, search, strategy, cfg), min_score, cfg)
    with _timed(timings, "nearest_seed"):
        nearest, similarity = expansion.listed_nearest or nearest_seeds(
            population.embeddings, expansion.rows, seed_vectors
        )
    with _timed(timings, "quality"):
        quality = estimate_quality(problem, strategy, cfg, len(expansion.rows))
    tiers = assign_tiers(len(expansion.rows), cfg.tiers, selection.n_candidates)
    table = audience_table(population.ids, expansion, tiers, seed_ids[nearest])
    with _timed(timings, "fairness"):
        fairness = fairness_section(audit, population, expansion, selection, config.privacy)
    fairness_warnings = [] if fairness is None else gap_warnings(
        fairness["rows"], fairness["max_gap_points"])
    for warning in fairness_warnings:
        progress(f"warning: {warning}")
    hashed = None
    if hashing is not None:
        with _timed(timings, "hash"):
            table, hashed = add_hashed_identifiers(table, hashing, config.ingest.csv_separator)
    parameters = {
        **{k: None if v is None else str(v) for k, v in lists.items()},
        "strategy": strategy,
        "size": size,
        "fraction": fraction,
        "min_score": min_score,
        "exclude_seeds": exclude_seeds,
        "effort": expansion.effort,
        "search": _search_name(search),
        "audience_config": cfg.model_dump(mode="json"),
    }
    metadata = {
        "model_build_id": model_build_id,
        "build_id": build.build_id,
        "index_manifest_sha256": _index_manifest_sha256(build),
        "seed_sha256": seed_hash(seed_ids),
        "parameters": json.dumps(parameters, sort_keys=True),
        "created_at": datetime.now(UTC).isoformat(),
    }
    with _timed(timings, "write"):
        write_audience(table, out, metadata)
    progress(f"wrote {table.num_rows} users to {out}")
    with _timed(timings, "report"):
        report = {
            "audience": {
                "path": str(out),
                "size": table.num_rows,
                "requested_size": target,
                "eligible_users": selection.n_candidates,
                "strategy": strategy,
            },
            "metadata": {**metadata, "parameters": parameters},
            "seeds": selection.seeds.report.to_dict(),
            "lists": {
                "exclude": _list_counts(selection.excluded),
                "eligible": _list_counts(selection.eligible),
            },
            "tiers": tier_counts(tiers, cfg.tiers),
            "score_quantiles": score_quantiles(expansion.scores),
            "score_histogram": score_histogram(expansion.scores, cfg.report_score_bins),
            "reach_curve": reach_curve(expansion.scores, similarity),
            "features": _why_these_people(build, population, expansion, selection, cfg),
            "overlap": overlap_with_previous(table.column("user_id"), last_export),
            "fairness": fairness,
            "warnings": [*selection.seeds.report.warnings, *export_warnings, *fairness_warnings],
            "suppressed_users": selection.suppressed,
            "hashing": hashed,
            "quality": quality,
            "embedding_map": _embedding_map(population, selection, expansion, cfg),
            "timings_s": timings,
        }
        report_json, report_md, report_html = write_report(report, out)
        remember_export(table.column("user_id"), seed_ids, last_export, metadata)
    summary = {
        "size": table.num_rows,
        "strategy": strategy,
        "seeds_matched": selection.seeds.report.matched,
        "eligible_users": selection.n_candidates,
        "tiers": report["tiers"],
        "overlap_jaccard": None if report["overlap"] is None else report["overlap"]["jaccard"],
        "quality": quality_table(quality),
        "fairness": None if fairness is None else fairness["rows"],
        "hashing": hashed,
        "warnings": report["warnings"],
        "timings_s": timings,
    }
    return ExportResult(report_json=report_json, report_md=report_md, report_html=report_html,
                        audience=out, summary=summary)


def _size_warnings(size: int | None, n_candidates: int) -> list[str]:
    """A warning when the asked size exceeds the eligible users (the audience is all of them)."""
    if size is None or size <= n_candidates:
        return []
    return [f"asked for {size:,} users but only {n_candidates:,} are eligible: the audience is "
            f"capped at {n_candidates:,}"]


def _feature_rows(build: BuildPaths, population: Population, strategy: str) -> FeatureRows | None:
    """The build's model inputs when the strategy reads them, checked to be the embeddings' rows."""
    if strategy not in FEATURE_STRATEGIES:
        return None
    features = ParquetFeatures(build.features, FeatureSpec.load(build.spec))
    features.check_rows(population.ids)
    return features


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = round(time.perf_counter() - start, 3)


# --- inputs -------------------------------------------------------------------------------------


def verify_export_inputs(build: BuildPaths) -> None:
    """Check the files an export reads against the build manifest (or, in a build folder without
    one, the embeddings against ``embeddings.json``) before any is parsed.

    Raises:
        ArtifactError: a file listed there that is missing or whose sha256 differs.
    """
    if build.manifest.is_file():
        listed = read_json(build.manifest).get("files", {})
        for name in EXPORT_READS:
            if name in listed:
                verify_checksum(build.root / name, listed[name])
        return
    embeddings_json = build.embeddings_dir / "embeddings.json"
    if embeddings_json.is_file():
        info = read_json(embeddings_json)
        verify_checksum(build.embeddings, info["embeddings_sha256"])
        verify_checksum(build.users, info["users_sha256"])


def load_population(build: BuildPaths) -> Population:
    """The population's ids and embeddings (memory-mapped), checked to have as many rows."""
    for path in (build.users, build.embeddings):
        if not path.is_file():
            raise ArtifactError(f"{path} is missing; the build is incomplete: rebuild it")
    ids = pl.read_parquet(build.users, columns=["user_id"]).get_column("user_id")
    embeddings = open_embeddings(build.embeddings)
    if embeddings.shape[0] != len(ids):
        raise ArtifactError(
            f"{build.embeddings} has shape {embeddings.shape} but {build.users} has {len(ids)} "
            "users; the embeddings belong to another population: re-run the embedding step"
        )
    return Population(ids, embeddings)


def select_users(
    population: Population,
    lists: dict[str, Path | str | None],
    exclude_seeds: bool,
    config: LookalikeConfig,
    progress: Progress,
) -> Selection:
    """Read the seed, exclusion and eligible lists (keys of ``lists``) and validate the seeds."""
    separator = config.ingest.csv_separator
    seed_table, seed_read = load_user_list(
        str(lists["seeds"]), kind="seed list", with_weight=True, csv_separator=separator
    )
    suppressed = suppressed_ids(config)
    opted_out = np.zeros(len(population.ids), dtype=bool)
    if suppressed is not None:
        seed_table = seed_table.filter(~is_listed(pl.col(USER_ID), suppressed))
        opted_out = population.ids.to_frame().select(is_listed(pl.col(USER_ID), suppressed))
        opted_out = opted_out.to_series().to_numpy()
    seeds = validate_seeds(
        seed_table,
        population.ids,
        population.embeddings,
        config.audience,
        source=str(lists["seeds"]),
        merged_duplicates=seed_read.duplicates_dropped,
    )
    _announce_seeds(seeds, progress)
    excluded = _matched_list(lists["exclude"], population.ids, "exclusion list", separator)
    eligible = _matched_list(lists["eligible"], population.ids, "eligible list", separator)
    candidates = candidate_mask(
        len(population.ids),
        seed_rows=seeds.rows,
        excluded_rows=None if excluded is None else excluded.rows,
        eligible_rows=None if eligible is None else eligible.rows,
        exclude_seeds=exclude_seeds,
    )
    return Selection(seeds, excluded, eligible, candidates & ~opted_out, int(opted_out.sum()))


def _matched_list(
    path: Path | str | None, population_ids: pl.Series, kind: str, separator: str
) -> IdMatch | None:
    if path is None:
        return None
    frame, report = load_user_list(str(path), kind=kind, csv_separator=separator)
    return match_ids(frame.get_column("user_id"), population_ids, report.duplicates_dropped)


def _announce_seeds(seeds: Seeds, progress: Progress) -> None:
    report = seeds.report
    auc = "n/a" if report.distinctiveness_auc is None else f"{report.distinctiveness_auc:.3f}"
    progress(
        f"seeds: {report.rows_given} rows, {report.matched} matched, {report.unknown} unknown, "
        f"{report.duplicates} duplicates, distinctiveness AUC {auc}"
    )
    for warning in report.warnings:
        progress(f"warning: {warning}")


def _list_counts(match: IdMatch | None) -> dict[str, int] | None:
    if match is None:
        return None
    return {
        "rows_given": match.rows_given,
        "matched": len(match.rows),
        "unknown": match.unknown,
        "duplicates": match.duplicates,
    }


# --- fairness audit ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditColumns:
    """The audit columns of the population's users and the profiles table they came from."""

    profiles: str
    table: pl.DataFrame  # user_id (the population's id type) and privacy.audit_columns


def read_audit(
    build: BuildPaths, population: Population, audit_profiles: Path | str | None,
    config: LookalikeConfig,
) -> AuditColumns | None:
    """Read ``privacy.audit_columns`` (None when there are none) before anything is written.

    Raises:
        AudienceError: an ``audit_profiles`` table without audit columns, or audit columns and
            neither ``audit_profiles`` nor a profiles input recorded in the build's manifest.
        InputError: an audit column absent from the profiles table.
    """
    columns = config.privacy.audit_columns
    if not columns:
        if audit_profiles is not None:
            raise AudienceError(f"an audit profiles table ({audit_profiles}) was given but "
                                "privacy.audit_columns is empty: name the columns to audit in "
                                "the config")
        return None
    path = str(audit_profiles) if audit_profiles is not None else build_profiles_input(build)
    if path is None:
        raise AudienceError(f"privacy.audit_columns {columns} need a profiles table, and build "
                            f"{build.build_id} records none: pass one (--audit-profiles)")
    table = read_audit_columns(path, columns, population.ids.dtype,
                               csv_separator=config.ingest.csv_separator)
    return AuditColumns(path, table)


def build_profiles_input(build: BuildPaths) -> str | None:
    """The profiles table the build was made from (its manifest's ``inputs``), if any."""
    if not build.is_complete():
        return None
    return load_manifest(build)["inputs"].get("profiles", {}).get("path")


def fairness_section(
    audit: AuditColumns | None, population: Population, expansion: Expansion,
    selection: Selection, privacy: PrivacyConfig,
) -> dict[str, Any] | None:
    """The report's ``fairness`` section: group shares of the audience against the eligible
    users (the candidates: eligible list, minus exclusions, opt-outs and seeds)."""
    if audit is None:
        return None
    rows = audit_shares(population.ids[expansion.rows],
                        population.ids.filter(pl.Series(selection.candidates)),
                        audit.table, privacy.audit_columns)
    return {
        "columns": privacy.audit_columns,
        "max_gap_points": privacy.max_audit_gap_points,
        "profiles": audit.profiles,
        "rows": rows,
    }


# --- search -------------------------------------------------------------------------------------


def _build_search(
    build: BuildPaths,
    population: Population,
    selection: Selection,
    cfg: AudienceConfig,
    model_build_id: str,
) -> NeighbourSearch:
    """Exact search over the eligible users when a list leaves few; else the build's index."""
    if selection.eligible is not None and selection.n_candidates <= cfg.exact_search_max_candidates:
        return ExactSearch(population.embeddings, np.flatnonzero(selection.candidates))
    return AnnIndex.load(build.index_dir, model_build_id)


class _LazySearch:
    """The build's search, opened on first use: the centre strategies scan and never need it."""

    def __init__(self, open_search: Callable[[], NeighbourSearch]) -> None:
        self._open_search = open_search
        self.opened: NeighbourSearch | None = None

    def _search(self) -> NeighbourSearch:
        if self.opened is None:
            self.opened = self._open_search()
        return self.opened

    @property
    def live_count(self) -> int:
        return self._search().live_count

    def query(
        self, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        return self._search().query(queries, k, exclude)


def _search_name(search: NeighbourSearch) -> str | None:
    """Class name of the search that answered queries; None when none was needed."""
    used = search.opened if isinstance(search, _LazySearch) else search
    return None if used is None else type(used).__name__


def _apply_min_score(
    expansion: Expansion, min_score: float | None, cfg: AudienceConfig
) -> Expansion:
    if min_score is None:
        return expansion
    keep = int((expansion.scores >= min_score).sum())  # scores are non-increasing: a prefix
    if keep < cfg.min_audience_size:
        raise AudienceError(
            f"only {keep} users score at least {min_score}, below audience.min_audience_size "
            f"({cfg.min_audience_size}); lower min_score, or min_audience_size in the config"
        )
    return expansion.head(keep)


# --- the audience file --------------------------------------------------------------------------


def audience_table(
    population_ids: pl.Series, expansion: Expansion, tiers: np.ndarray, nearest_seed_ids: pl.Series
) -> pa.Table:
    """The audience as an Arrow table in the documented column order and types."""
    return pa.table(
        {
            "user_id": population_ids[expansion.rows].to_arrow(),
            "rank": pa.array(np.arange(1, len(expansion.rows) + 1, dtype=np.int64)),
            "score": pa.array(expansion.scores.astype(np.float64)),
            "tier": pa.array(tiers.astype(np.float64)),
            "nearest_seed": nearest_seed_ids.to_arrow(),
        }
    )


def write_audience(
    table: pa.Table, path: Path, metadata: dict[str, str], row_group_size: int = ROW_GROUP_SIZE
) -> Path:
    """Write ``table`` with ``lookalike.*`` metadata; readers see the old file or the new one."""
    table = table.replace_schema_metadata({METADATA_PREFIX + k: v for k, v in metadata.items()})
    with atomic_write(path) as tmp, pq.ParquetWriter(tmp, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=row_group_size):
            writer.write_batch(batch)
    return path


def read_audience_metadata(path: Path | str) -> dict[str, str]:
    """The ``lookalike.*`` key-value metadata of an audience file, prefix removed."""
    raw = pq.read_metadata(path).metadata or {}
    prefix = METADATA_PREFIX.encode()
    return {k[len(prefix) :].decode(): v.decode() for k, v in raw.items() if k.startswith(prefix)}


def seed_hash(seed_ids: pl.Series) -> str:
    """sha256 of the seed ids as text, sorted by id, one per line."""
    text = "\n".join(str(v) for v in seed_ids.sort().to_list())
    return hashlib.sha256(text.encode()).hexdigest()


def _index_manifest_sha256(build: BuildPaths) -> str:
    manifest = build.index_dir / "index.json"
    return sha256_file(manifest) if manifest.is_file() else ""


# --- report inputs that need the build or earlier exports ---------------------------------------


def _why_these_people(
    build: BuildPaths,
    population: Population,
    expansion: Expansion,
    selection: Selection,
    cfg: AudienceConfig,
) -> dict[str, Any] | None:
    """Feature differences between (samples of) the audience and the eligible users."""
    if not build.features.is_file():
        return None
    rng = np.random.default_rng(cfg.seed)

    def sample(rows: np.ndarray) -> pl.Series:
        chosen = rng.choice(rows, min(cfg.report_sample, len(rows)), replace=False)
        return population.ids[np.sort(chosen)]

    spec = FeatureSpec.load(build.spec) if build.spec.is_file() else None
    categorical = set() if spec is None else {f.name for f in spec.categorical}
    audience, eligible = sample(expansion.rows), sample(np.flatnonzero(selection.candidates))
    return feature_differences(build.features, audience, eligible, categorical)


def _embedding_map(
    population: Population, selection: Selection, expansion: Expansion, cfg: AudienceConfig
) -> dict[str, Any]:
    """The report's 2-D map: samples of the whole population, the seeds and the audience."""
    groups = {
        "population": np.arange(len(population.ids)),
        "seeds": selection.seeds.rows,
        "audience": expansion.rows,
    }
    return embedding_map(population.embeddings, groups, cfg.report_map_points, cfg.seed)


def overlap_with_previous(current_ids: pa.ChunkedArray, last_export: Path) -> dict[str, Any] | None:
    """Counts and Jaccard index between this audience and the previous export of the same name."""
    if not last_export.is_file():
        return None
    previous = pl.read_parquet(last_export, columns=["user_id"]).get_column("user_id")
    previous = previous.cast(pl.String)
    current = pl.Series(current_ids).cast(pl.String)
    common = int(current.is_in(previous.implode()).sum())
    union = len(current) + len(previous) - common
    return {
        "previous_size": len(previous),
        "current_size": len(current),
        "common": common,
        "added": len(current) - common,
        "removed": len(previous) - common,
        "jaccard": common / union if union else 1.0,
        "previous_created_at": read_audience_metadata(last_export).get("created_at"),
    }


def last_export_path(build: BuildPaths, name: str) -> Path:
    """Where the ids of the last export named ``name`` are kept (in the build's workdir)."""
    return Workdir(build.root.parent.parent).audience_dir(name) / LAST_EXPORT_NAME


def remember_export(
    user_ids: pa.ChunkedArray, seed_ids: pl.Series, last_export: Path, metadata: dict[str, str]
) -> None:
    """Keep this export's ids (for the overlap report) and its hashed seed ids (for the guard)."""
    write_audience(pa.table({"user_id": user_ids}), last_export, metadata)
    seeds = pa.table({"seed_sha256": hashed_ids(seed_ids, seed_key(last_export.parent)).to_arrow()})
    write_audience(seeds, last_export.with_name(LAST_SEEDS_NAME), metadata)


def hashed_ids(ids: pl.Series, key: bytes) -> pl.Series:
    """HMAC-SHA256 hex of each id's text: comparable between exports without keeping the ids
    (a plain hash of an integer id is reversed by hashing every possible id)."""
    text = ids.cast(pl.String).to_list()
    return pl.Series(
        "seed_sha256", [hmac.new(key, t.encode(), hashlib.sha256).hexdigest() for t in text]
    )


def seed_key(audience_dir: Path) -> bytes:
    """The workdir's random key for :func:`hashed_ids` (``audiences/.seed_key``), made once."""
    path = audience_dir.parent / SEED_KEY_NAME
    if not path.is_file():
        with atomic_write(path) as tmp:
            tmp.write_bytes(secrets.token_bytes(32))
    return path.read_bytes()


def guard_seed_difference(seed_ids: pl.Series, last_seeds: Path, config: LookalikeConfig) -> None:
    """Refuse seeds that differ from the previous export's in a few users (differencing attack).

    Raises:
        AudienceError: ``0 < difference < privacy.min_seed_difference``.
    """
    if not last_seeds.is_file():
        return
    previous = pl.read_parquet(last_seeds).get_column("seed_sha256")
    current = hashed_ids(seed_ids, seed_key(last_seeds.parent))
    check = seed_overlap_guard(previous, current, config.privacy.min_seed_difference)
    check.raise_if_flagged()


def erase_from_last_export(audience_dir: Path, erased: pl.Series) -> int:
    """Drop erased users from an audience name's last export and hashed seeds; rows removed."""
    removed = 0
    last_export, last_seeds = audience_dir / LAST_EXPORT_NAME, audience_dir / LAST_SEEDS_NAME
    if last_export.is_file():
        removed += _drop_rows(last_export, ~is_listed(pl.col(USER_ID), erased))
    if last_seeds.is_file():
        erased_hashes = hashed_ids(erased, seed_key(audience_dir)).implode()
        removed += _drop_rows(last_seeds, ~pl.col("seed_sha256").is_in(erased_hashes))
    return removed


def _drop_rows(path: Path, keep: pl.Expr) -> int:
    metadata = read_audience_metadata(path)
    table = pl.read_parquet(path)
    kept = table.filter(keep)
    if kept.height < table.height:
        write_audience(kept.to_arrow(), path, metadata)
    return table.height - kept.height


# --- identifiers hashed for ad platforms --------------------------------------------------------


@dataclass(frozen=True)
class HashingRequest:
    """Map audience users to emails or phones and hash them for ``platform``.

    ``identifiers`` is a table (Parquet/CSV) with ``user_id`` and the identifier column, named
    ``column`` (default: ``kind``, i.e. ``email`` or ``phone``). ``default_country_code`` reads
    national phone numbers (see :mod:`lookalike.privacy.hashing`).
    """

    kind: Kind
    platform: Platform
    identifiers: str
    column: str | None = None
    default_country_code: str | None = None


def add_hashed_identifiers(
    table: pa.Table, request: HashingRequest, csv_separator: str = ","
) -> tuple[pa.Table, dict[str, Any]]:
    """The audience with a ``hashed_<kind>`` column (null where missing or invalid) and counts."""
    column = request.column or request.kind
    frame, _ = scan_table(request.identifiers, csv_separator=csv_separator)
    names = frame.collect_schema().names()
    if USER_ID not in names or column not in names:
        raise InputError(request.identifiers, f"needs columns {USER_ID!r} and {column!r}",
                         fix="pass a table of user ids and their identifiers, or --id-column")
    mapping = (
        frame.select(pl.col(USER_ID).cast(pl.String), pl.col(column).cast(pl.String))
        .unique(subset=USER_ID, keep="first")
    )
    audience = pl.DataFrame({USER_ID: pl.Series(table.column(USER_ID)).cast(pl.String)})
    values = audience.lazy().join(mapping, on=USER_ID, how="left", maintain_order="left")
    values = values.collect().get_column(column)
    missing = int(values.is_null().sum())
    result = hash_identifiers(values, request.kind, platform=request.platform,
                              default_country_code=request.default_country_code)
    counts = {
        "kind": request.kind,
        "platform": request.platform,
        "hashed": int(result.hashes.is_not_null().sum()),
        "prehashed": result.prehashed,
        "missing": missing,
        "invalid": result.invalid - missing,
    }
    return table.append_column(f"hashed_{request.kind}", result.hashes.to_arrow()), counts

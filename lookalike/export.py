"""Export a lookalike audience: an atomically written Parquet file and a report beside it.

The audience file has one row per user, best first:

==============  ===========================  ==================================================
column          type                         meaning
==============  ===========================  ==================================================
user_id         the population's id type     a user who looks like the seeds
rank            int64                        1 = most similar
score           float64                      the strategy's score, non-increasing with rank
tier            float64                      smallest configured band t with rank <= t * eligible
                                             users, else 1.0 (``WHERE tier <= 0.05``)
nearest_seed    the population's id type     the seed most similar to this user
==============  ===========================  ==================================================

Parquet key-value metadata (all strings): ``lookalike.model_build_id``,
``lookalike.index_manifest_sha256`` (sha256 of ``index/index.json``, empty when the build has
none), ``lookalike.seed_sha256`` (sha256 of the matched seed ids as text, sorted by id, joined by
newlines), ``lookalike.parameters`` (JSON), ``lookalike.created_at`` (ISO 8601, UTC),
``lookalike.build_id``. Read them with :func:`read_audience_metadata`.

Beside ``<stem>.parquet`` the export writes ``<stem>.report.json`` and ``<stem>.report.md``: seed
validation, size per tier, score quantiles, the reach curve, the features that differ most between
the audience and the eligible population, and the overlap with the previous export of the same
audience name (whose ids are kept in ``<workdir>/audiences/<name>/last.parquet``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
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

from lookalike.artifacts import atomic_write, read_json, sha256_file, write_json
from lookalike.audience import (
    ExactSearch,
    Expansion,
    ExpansionProblem,
    IdMatch,
    NeighbourSearch,
    Seeds,
    assign_tiers,
    candidate_mask,
    expand_seeds,
    load_seed_vectors,
    match_ids,
    nearest_seeds,
    resolve_size,
    validate_seeds,
)
from lookalike.config import AudienceConfig, LookalikeConfig
from lookalike.errors import ArtifactError, AudienceError
from lookalike.index import AnnIndex
from lookalike.ingest import load_user_list
from lookalike.spec import FeatureSpec
from lookalike.workdir import BuildPaths, Workdir

METADATA_PREFIX = "lookalike."
ROW_GROUP_SIZE = 1_000_000
SCORE_QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
REACH_POINTS = 20
TOP_FEATURES = 10
LAST_EXPORT_NAME = "last.parquet"

Progress = Callable[[str], Any]


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and a small JSON-able summary (size, strategy, warnings, timings)."""

    audience: Path
    report_json: Path
    report_md: Path
    summary: dict[str, Any]


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
    progress: Progress = print,
) -> ExportResult:
    """Expand a seed list into the ``size`` (or ``fraction`` of eligible) most similar users.

    Args:
        build: a complete build (embeddings, users, model, index).
        seeds: Parquet or CSV with ``user_id`` and an optional ``weight`` column.
        out: the audience Parquet file; the reports go beside it.
        size, fraction: exactly one: a user count, or a fraction of the eligible users (eligible
            list, minus exclusions and seeds).
        exclude, eligible: user lists (Parquet or CSV with ``user_id``): hard rules.
        strategy: ``knn``, ``clusters`` or ``centroid``; default ``config.audience.strategy``.
        min_score: drop users scoring below it (the audience may then be smaller than asked).
        name: the audience's name for the overlap report; default the stem of ``out``.
        exclude_seeds: keep seeds out of the audience (default).
        search: a :class:`~lookalike.audience.NeighbourSearch` replacing the build's index.
        progress: called with one line per stage.

    Raises:
        AudienceError: too few seeds, an audience below ``audience.min_audience_size``.
        InputError: an unreadable seed, exclusion or eligible file.
        ArtifactError: a missing or inconsistent build artifact.

    Example::

        result = export_audience(Workdir("w").current(), "seeds.csv", "out/buyers.parquet", fraction=0.05)
        print(result.summary["size"], result.report_md)
    """
    cfg = config.audience
    out = Path(out)
    timings: dict[str, float] = {}
    strategy = strategy or cfg.strategy
    with _timed(timings, "load"):
        population_ids, embeddings = load_population(build)
        model_build_id = read_model_build_id(build)
    with _timed(timings, "seeds"):
        separator = config.ingest.csv_separator
        seed_table, seed_read = load_user_list(str(seeds), kind="seed list", with_weight=True, csv_separator=separator)
        valid_seeds = validate_seeds(
            seed_table,
            population_ids,
            embeddings,
            cfg,
            source=str(seeds),
            merged_duplicates=seed_read.duplicates_dropped,
        )
        _announce_seeds(valid_seeds, progress)
        excluded = _matched_list(exclude, population_ids, "exclusion list", separator)
        eligible_match = _matched_list(eligible, population_ids, "eligible list", separator)
        candidates = candidate_mask(
            len(population_ids),
            seed_rows=valid_seeds.rows,
            excluded_rows=None if excluded is None else excluded.rows,
            eligible_rows=None if eligible_match is None else eligible_match.rows,
            exclude_seeds=exclude_seeds,
        )
        n_candidates = int(candidates.sum())
        target = resolve_size(size, fraction, n_candidates, cfg.min_audience_size)
    if search is None:
        search = _LazySearch(
            lambda: _default_search(build, embeddings, candidates, eligible is not None, cfg, model_build_id)
        )
    seed_vectors = load_seed_vectors(build.embeddings, valid_seeds.rows)
    problem = ExpansionProblem(
        embeddings=embeddings,
        seed_vectors=seed_vectors,
        seed_weights=valid_seeds.weights,
        excluded=np.flatnonzero(~candidates),
        n_candidates=n_candidates,
        size=target,
    )
    progress(f"expanding {len(valid_seeds.rows)} seeds to {target} users ({strategy}, {n_candidates} eligible)")
    with _timed(timings, "expand"):
        expansion = _apply_min_score(expand_seeds(problem, search, strategy, cfg), min_score, cfg)
    with _timed(timings, "nearest_seed"):
        nearest, nearest_similarity = nearest_seeds(embeddings, expansion.rows, seed_vectors)
    tiers = assign_tiers(len(expansion.rows), cfg.tiers, n_candidates)
    table = audience_table(population_ids, expansion, tiers, population_ids[valid_seeds.rows][nearest])
    parameters = {
        "strategy": strategy,
        "size": size,
        "fraction": fraction,
        "min_score": min_score,
        "exclude_seeds": exclude_seeds,
        "seeds": str(seeds),
        "exclude": None if exclude is None else str(exclude),
        "eligible": None if eligible is None else str(eligible),
        "effort": expansion.effort,
        "search": _search_name(search),
        "audience_config": cfg.model_dump(mode="json"),
    }
    metadata = {
        "model_build_id": model_build_id,
        "build_id": build.build_id,
        "index_manifest_sha256": _index_manifest_sha256(build),
        "seed_sha256": seed_hash(population_ids[valid_seeds.rows]),
        "parameters": json.dumps(parameters, sort_keys=True),
        "created_at": datetime.now(UTC).isoformat(),
    }
    with _timed(timings, "write"):
        write_audience(table, out, metadata)
    progress(f"wrote {table.num_rows} users to {out}")
    last_export = Workdir(build.root.parent.parent).audience_dir(name or out.stem) / LAST_EXPORT_NAME
    with _timed(timings, "report"):
        report = {
            "audience": {
                "path": str(out),
                "size": table.num_rows,
                "requested_size": target,
                "eligible_users": n_candidates,
                "strategy": strategy,
            },
            "metadata": {**metadata, "parameters": parameters},
            "seeds": valid_seeds.report.to_dict(),
            "lists": {"exclude": _list_summary(excluded), "eligible": _list_summary(eligible_match)},
            "tiers": tier_counts(tiers, cfg.tiers),
            "score_quantiles": score_quantiles(expansion.scores),
            "reach_curve": reach_curve(expansion.scores, nearest_similarity),
            "features": _feature_section(build, population_ids, expansion.rows, candidates, cfg),
            "overlap": overlap_with_previous(table.column("user_id"), last_export),
            "warnings": valid_seeds.report.warnings,
            "timings_s": timings,
        }
        report_json, report_md = write_report(report, out)
        remember_export(table.column("user_id"), last_export, metadata)
    summary = {
        "size": table.num_rows,
        "strategy": strategy,
        "seeds_matched": valid_seeds.report.matched,
        "eligible_users": n_candidates,
        "tiers": report["tiers"],
        "overlap_jaccard": None if report["overlap"] is None else report["overlap"]["jaccard"],
        "warnings": report["warnings"],
        "timings_s": timings,
    }
    return ExportResult(out, report_json, report_md, summary)


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    timings[stage] = round(time.perf_counter() - start, 3)


# --- inputs -----------------------------------------------------------------------------------------


def _matched_list(path: Path | str | None, population_ids: pl.Series, kind: str, separator: str) -> IdMatch | None:
    if path is None:
        return None
    frame, report = load_user_list(str(path), kind=kind, csv_separator=separator)
    return match_ids(frame.get_column("user_id"), population_ids, report.duplicates_dropped)


def load_population(build: BuildPaths) -> tuple[pl.Series, np.ndarray]:
    """The population's ids and embeddings (memory-mapped), checked to have as many rows."""
    for path in (build.users, build.embeddings):
        if not path.is_file():
            raise ArtifactError(f"{path} is missing; the build is incomplete: rebuild it")
    user_ids = pl.read_parquet(build.users, columns=["user_id"]).get_column("user_id")
    embeddings = np.load(build.embeddings, mmap_mode="r")
    if embeddings.ndim != 2 or embeddings.shape[0] != len(user_ids):
        raise ArtifactError(
            f"{build.embeddings} has shape {embeddings.shape} but {build.users} has {len(user_ids)} users; "
            "the embeddings belong to another population: re-run the embedding step"
        )
    return user_ids, embeddings


def read_model_build_id(build: BuildPaths) -> str:
    """The ``model_build_id`` from ``model/model.json``."""
    model_json = build.model_dir / "model.json"
    info = read_json(model_json)
    if "model_build_id" not in info:
        raise ArtifactError(f"{model_json} has no model_build_id; re-run training")
    return str(info["model_build_id"])


def _default_search(
    build: BuildPaths,
    embeddings: np.ndarray,
    candidates: np.ndarray,
    has_eligible_list: bool,
    cfg: AudienceConfig,
    model_build_id: str,
) -> NeighbourSearch:
    if has_eligible_list and candidates.sum() <= cfg.exact_search_max_candidates:
        return ExactSearch(embeddings, np.flatnonzero(candidates))
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


def _index_manifest_sha256(build: BuildPaths) -> str:
    manifest = build.index_dir / "index.json"
    return sha256_file(manifest) if manifest.is_file() else ""


def _announce_seeds(seeds: Seeds, progress: Progress) -> None:
    report = seeds.report
    auc = "n/a" if report.distinctiveness_auc is None else f"{report.distinctiveness_auc:.3f}"
    progress(
        f"seeds: {report.rows_given} rows, {report.matched} matched, {report.unknown} unknown, "
        f"{report.duplicates} duplicates, distinctiveness AUC {auc}"
    )
    for warning in report.warnings:
        progress(f"warning: {warning}")


def _apply_min_score(expansion: Expansion, min_score: float | None, cfg: AudienceConfig) -> Expansion:
    if min_score is None:
        return expansion
    keep = int((expansion.scores >= min_score).sum())  # scores are non-increasing: a prefix
    if keep < cfg.min_audience_size:
        raise AudienceError(
            f"only {keep} users score at least {min_score}, below audience.min_audience_size "
            f"({cfg.min_audience_size}); lower min_score, or min_audience_size in the config"
        )
    return expansion.head(keep)


def seed_hash(seed_ids: pl.Series) -> str:
    """sha256 of the seed ids as text, sorted by id, one per line."""
    text = "\n".join(str(v) for v in seed_ids.sort().to_list())
    return hashlib.sha256(text.encode()).hexdigest()


# --- the audience file ------------------------------------------------------------------------------


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
    """Write ``table`` with ``lookalike.*`` key-value metadata; readers see the old file or the new one."""
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


# --- the report -------------------------------------------------------------------------------------


def tier_counts(tiers: np.ndarray, bands: list[float]) -> list[dict[str, float | int]]:
    """Users per tier value and cumulatively (``tier <= t``), for every band and 1.0."""
    rows = []
    for band in [*sorted(bands), 1.0]:
        rows.append({"tier": band, "users": int((tiers == band).sum()), "cumulative": int((tiers <= band).sum())})
    return rows


def score_quantiles(scores: np.ndarray) -> dict[str, float]:
    if len(scores) == 0:
        return {}
    return {f"{q:g}": float(v) for q, v in zip(SCORE_QUANTILES, np.quantile(scores, SCORE_QUANTILES), strict=True)}


def reach_curve(scores: np.ndarray, nearest_similarity: np.ndarray) -> list[dict[str, float | int]]:
    """Mean score and mean nearest-seed similarity of the top n, at geometrically spaced n."""
    if len(scores) == 0:
        return []
    sizes = np.unique(np.geomspace(1, len(scores), REACH_POINTS).round().astype(np.int64))
    score_means = np.cumsum(scores)[sizes - 1] / sizes
    similarity_means = np.cumsum(nearest_similarity)[sizes - 1] / sizes
    return [
        {"size": int(n), "mean_score": float(s), "mean_nearest_seed_similarity": float(m)}
        for n, s, m in zip(sizes, score_means, similarity_means, strict=True)
    ]


def _feature_section(
    build: BuildPaths, population_ids: pl.Series, audience_rows: np.ndarray, candidates: np.ndarray, cfg: AudienceConfig
) -> dict[str, Any] | None:
    if not build.features.is_file():
        return None
    rng = np.random.default_rng(cfg.seed)
    eligible_rows = np.flatnonzero(candidates)
    audience_sample = rng.choice(audience_rows, min(cfg.report_sample, len(audience_rows)), replace=False)
    eligible_sample = rng.choice(eligible_rows, min(cfg.report_sample, len(eligible_rows)), replace=False)
    categorical = {f.name for f in FeatureSpec.load(build.spec).categorical} if build.spec.is_file() else set()
    return feature_differences(
        build.features, population_ids[np.sort(audience_sample)], population_ids[np.sort(eligible_sample)], categorical
    )


def feature_differences(
    features: Path, audience_ids: pl.Series, eligible_ids: pl.Series, categorical: set[str], top: int = TOP_FEATURES
) -> dict[str, list[dict[str, Any]]]:
    """Features whose distribution differs most between the audience and the eligible users.

    Numeric columns: standardized mean difference, (mean_a - mean_e) / sqrt((var_a + var_e) / 2).
    Categorical columns (``categorical`` names, strings, booleans): the value whose share differs
    most. Each list holds the ``top`` largest absolute differences.
    """
    lazy = pl.scan_parquet(features)
    schema = lazy.collect_schema()
    groups = pl.concat(
        [
            pl.DataFrame({"user_id": audience_ids, "group": "audience"}),
            pl.DataFrame({"user_id": eligible_ids, "group": "eligible"}),
        ]
    ).with_columns(pl.col("user_id").cast(schema["user_id"]))
    frame = lazy.join(groups.lazy(), on="user_id", how="inner").collect()
    audience = frame.filter(pl.col("group") == "audience")
    eligible = frame.filter(pl.col("group") == "eligible")
    columns = [c for c in schema.names() if c != "user_id"]
    is_categorical = {c: c in categorical or schema[c] in (pl.String, pl.Boolean) or schema[c] == pl.Categorical for c in columns}
    numeric = [_standardized_difference(audience, eligible, c) for c in columns if schema[c].is_numeric() and not is_categorical[c]]
    shares = [_largest_share_difference(audience, eligible, c) for c in columns if is_categorical[c]]
    return {
        "numeric": _largest(numeric, "standardized_difference", top),
        "categorical": _largest(shares, "difference", top),
    }


def _standardized_difference(audience: pl.DataFrame, eligible: pl.DataFrame, column: str) -> dict[str, Any] | None:
    def moments(frame: pl.DataFrame) -> tuple[float | None, float | None]:
        values = frame.get_column(column).cast(pl.Float64).fill_nan(None)
        return values.mean(), values.var()  # type: ignore[return-value]

    (mean_a, var_a), (mean_e, var_e) = moments(audience), moments(eligible)
    if None in (mean_a, var_a, mean_e, var_e) or var_a + var_e <= 0:  # type: ignore[operator]
        return None
    smd = (mean_a - mean_e) / np.sqrt((var_a + var_e) / 2)  # type: ignore[operator]
    return {"feature": column, "audience_mean": mean_a, "eligible_mean": mean_e, "standardized_difference": float(smd)}


def _largest_share_difference(audience: pl.DataFrame, eligible: pl.DataFrame, column: str) -> dict[str, Any] | None:
    def shares(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        values = frame.select(pl.col(column).cast(pl.String).fill_null("(missing)").alias("value"))
        return values.group_by("value").len().with_columns((pl.col("len") / frame.height).alias(name)).drop("len")

    if audience.height == 0 or eligible.height == 0:
        return None
    joined = (
        shares(audience, "audience_share")
        .join(shares(eligible, "eligible_share"), on="value", how="full", coalesce=True)
        .fill_null(0.0)
        .with_columns((pl.col("audience_share") - pl.col("eligible_share")).alias("difference"))
        .sort([pl.col("difference").abs(), pl.col("value")], descending=[True, False])
    )
    best = joined.row(0, named=True)
    return {"feature": column, **best}


def _largest(rows: list[dict[str, Any] | None], key: str, top: int) -> list[dict[str, Any]]:
    present = [r for r in rows if r is not None]
    return sorted(present, key=lambda r: -abs(r[key]))[:top]


def overlap_with_previous(current_ids: pa.ChunkedArray, last_export: Path) -> dict[str, Any] | None:
    """Counts and Jaccard index between this audience and the previous export of the same name."""
    if not last_export.is_file():
        return None
    previous = pl.read_parquet(last_export, columns=["user_id"]).get_column("user_id").cast(pl.String)
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


def remember_export(user_ids: pa.ChunkedArray, last_export: Path, metadata: dict[str, str]) -> None:
    """Keep this export's ids for the next export's overlap report."""
    write_audience(pa.table({"user_id": user_ids}), last_export, metadata)


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    """``<stem>.report.json`` and ``<stem>.report.md`` beside ``out``, each written atomically."""
    json_path = out.with_name(f"{out.stem}.report.json")
    md_path = out.with_name(f"{out.stem}.report.md")
    write_json(json_path, report)
    with atomic_write(md_path) as tmp:
        tmp.write_text(render_markdown(report))
    return json_path, md_path


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown for people."""
    audience, seeds = report["audience"], report["seeds"]
    auc = seeds["distinctiveness_auc"]
    lines = [
        f"# Audience report: {Path(audience['path']).name}",
        "",
        f"{audience['size']} users ({audience['strategy']}) out of {audience['eligible_users']} eligible; "
        f"model build {report['metadata']['model_build_id']}, created {report['metadata']['created_at']}.",
        "",
        "## Seeds",
        "",
        _md_table(
            ["rows given", "matched", "unknown", "duplicates", "weighted", "distinctiveness AUC"],
            [[seeds["rows_given"], seeds["matched"], seeds["unknown"], seeds["duplicates"], seeds["weighted"],
              "n/a" if auc is None else f"{auc:.3f}"]],
        ),
        "",
        *(f"- warning: {w}" for w in report["warnings"]),
        "",
        "## Size per tier",
        "",
        _md_table(["tier", "users", "cumulative"], [[t["tier"], t["users"], t["cumulative"]] for t in report["tiers"]]),
        "",
        "## Score distribution",
        "",
        _md_table(["quantile", "score"], [[q, f"{v:.4f}"] for q, v in report["score_quantiles"].items()]),
        "",
        "## Reach curve",
        "",
        _md_table(
            ["size", "mean score", "mean nearest-seed similarity"],
            [[p["size"], f"{p['mean_score']:.4f}", f"{p['mean_nearest_seed_similarity']:.4f}"] for p in report["reach_curve"]],
        ),
        "",
        "## Why these people",
        "",
        *_features_markdown(report["features"]),
        "",
        "## Overlap with the previous export",
        "",
        *_overlap_markdown(report["overlap"]),
        "",
    ]
    return "\n".join(lines)


def _features_markdown(features: dict[str, Any] | None) -> list[str]:
    if features is None:
        return ["No feature table in this build."]
    return [
        _md_table(
            ["numeric feature", "audience mean", "eligible mean", "standardized difference"],
            [[f["feature"], f"{f['audience_mean']:.4g}", f"{f['eligible_mean']:.4g}", f"{f['standardized_difference']:+.3f}"]
             for f in features["numeric"]],
        ),
        "",
        _md_table(
            ["categorical feature", "value", "audience share", "eligible share", "difference"],
            [[f["feature"], f["value"], f"{f['audience_share']:.3f}", f"{f['eligible_share']:.3f}", f"{f['difference']:+.3f}"]
             for f in features["categorical"]],
        ),
    ]


def _overlap_markdown(overlap: dict[str, Any] | None) -> list[str]:
    if overlap is None:
        return ["First export under this name."]
    return [
        _md_table(
            ["previous", "current", "common", "added", "removed", "Jaccard"],
            [[overlap["previous_size"], overlap["current_size"], overlap["common"], overlap["added"],
              overlap["removed"], f"{overlap['jaccard']:.3f}"]],
        ),
        f"Previous export created {overlap['previous_created_at']}.",
    ]


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _list_summary(match: IdMatch | None) -> dict[str, int] | None:
    if match is None:
        return None
    return {"rows_given": match.rows_given, "matched": len(match.rows), "unknown": match.unknown,
            "duplicates": match.duplicates}

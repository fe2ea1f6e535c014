"""The report beside an exported audience: sections as JSON-able dicts, and their Markdown.

Sections: seed validation, users per tier, the expected quality (recall and lift of held-out seeds
per size, :mod:`lookalike.audience.quality`), score quantiles, the reach curve (mean score and mean
nearest-seed similarity of the top n), "why these people" (the features whose distribution differs
most between the audience and the eligible users), the fairness audit (each audited group's share
of the audience against the eligible users, :mod:`lookalike.privacy.audit`) and the overlap with
the previous export; for the HTML report (:mod:`lookalike.audience.html`) also a score histogram
and a 2-D PCA map of the embeddings (population, seeds, audience).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from lookalike.audience.html import render_html
from lookalike.core.artifacts import atomic_write, read_json, write_json
from lookalike.core.html import compact_histogram
from lookalike.privacy.audit import MISSING_GROUP

SCORE_QUANTILES = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
REACH_POINTS = 20
TOP_FEATURES = 10
MAP_DIGITS = 3  # map coordinates of unit vectors: 0.001 is below a pixel of the plot


def tier_counts(tiers: np.ndarray, bands: list[float]) -> list[dict[str, float | int]]:
    """Users per tier value and cumulatively (``tier <= t``), for every band and 1.0."""
    return [
        {
            "tier": band,
            "users": int((tiers == band).sum()),
            "cumulative": int((tiers <= band).sum()),
        }
        for band in [*sorted(bands), 1.0]
    ]


def score_quantiles(scores: np.ndarray) -> dict[str, float]:
    """Quantiles of the audience's scores, keyed by the quantile ("0.5": median)."""
    if len(scores) == 0:
        return {}
    values = np.quantile(scores, SCORE_QUANTILES)
    return {f"{q:g}": float(v) for q, v in zip(SCORE_QUANTILES, values, strict=True)}


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


def score_histogram(scores: np.ndarray, bins: int) -> dict[str, list[Any]]:
    """The audience's scores in ``bins`` equal bins (edges and counts), for the HTML report."""
    return compact_histogram(scores, bins)


def embedding_map(
    embeddings: np.ndarray, groups: dict[str, np.ndarray], points: int, seed: int
) -> dict[str, Any]:
    """A 2-D PCA map of a seeded sample of each group of embedding rows (rounded coordinates).

    Each group (e.g. population, seeds, audience: row positions) gives at most
    ``points // len(groups)`` rows; the PCA is fitted on all of them together. Returns
    ``{"method": "pca", "explained_variance": [pc1, pc2], "groups": {name: {"x": [...],
    "y": [...]}}}``, small enough for the report JSON, so the plot can be redrawn from it.

    Example::

        >>> vectors = np.eye(4, dtype=np.float32)
        >>> found = embedding_map(vectors, {"a": np.arange(2), "b": np.arange(2, 4)}, 4, seed=0)
        >>> sorted(found["groups"]), len(found["groups"]["a"]["x"])
        (['a', 'b'], 2)
    """
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    per_group = max(1, points // max(len(groups), 1))
    sampled = {
        name: np.sort(rng.choice(rows, min(per_group, len(rows)), replace=False))
        for name, rows in groups.items()
    }
    vectors = {name: np.asarray(embeddings[rows], np.float64) for name, rows in sampled.items()}
    stacked = np.concatenate(list(vectors.values()))
    if len(stacked) < 2:
        return {"method": "pca", "explained_variance": [], "groups": {}}
    pca = PCA(n_components=min(2, *stacked.shape), random_state=seed).fit(stacked)
    coordinates = {
        name: pca.transform(v) if len(v) else np.zeros((0, 2)) for name, v in vectors.items()
    }
    return {
        "method": "pca",
        "explained_variance": [round(float(r), 4) for r in pca.explained_variance_ratio_],
        "groups": {
            name: {"x": _rounded(xy[:, 0]), "y": _rounded(xy[:, -1])}
            for name, xy in coordinates.items()
        },
    }


def _rounded(values: np.ndarray, digits: int = MAP_DIGITS) -> list[float]:
    return [round(float(v), digits) for v in values]


def feature_differences(
    features: Path,
    audience_ids: pl.Series,
    eligible_ids: pl.Series,
    categorical: set[str],
    top: int = TOP_FEATURES,
) -> dict[str, list[dict[str, Any]]]:
    """Features whose distribution differs most between the audience and the eligible users.

    Numeric columns: standardized mean difference, (mean_a - mean_e) / sqrt((var_a + var_e) / 2).
    Categorical columns (names in ``categorical``, strings, booleans): the value whose share
    differs most, nulls counted as ``"(missing)"``. Each list holds the ``top`` largest absolute
    differences.
    """
    lazy = pl.scan_parquet(features)
    schema = lazy.collect_schema()
    groups = pl.concat(
        [
            pl.DataFrame({"user_id": audience_ids, "group": "audience"}),
            pl.DataFrame({"user_id": eligible_ids, "group": "eligible"}),
        ]
    ).with_columns(pl.col("user_id").cast(schema["user_id"]))
    # Sorted: a join's row order varies between runs and float means depend on it.
    wanted = lazy.filter(pl.col("user_id").is_in(groups.get_column("user_id").implode()))
    frame = wanted.collect(engine="streaming").join(groups, on="user_id").sort("user_id")
    audience = frame.filter(pl.col("group") == "audience")
    eligible = frame.filter(pl.col("group") == "eligible")
    columns = [c for c in schema.names() if c != "user_id"]
    kinds = {c: _kind(c, schema[c], categorical) for c in columns}
    numeric = [_standardized_difference(audience, eligible, c) for c in _of(kinds, "numeric")]
    shares = [_share_difference(audience, eligible, c) for c in _of(kinds, "categorical")]
    return {
        "numeric": _largest(numeric, "standardized_difference", top),
        "categorical": _largest(shares, "difference", top),
    }


def _of(kinds: dict[str, str | None], kind: str) -> list[str]:
    return [column for column, k in kinds.items() if k == kind]


def _kind(column: str, dtype: pl.DataType, categorical: set[str]) -> str | None:
    if column in categorical or dtype in (pl.String, pl.Boolean, pl.Categorical):
        return "categorical"
    return "numeric" if dtype.is_numeric() else None


def _standardized_difference(
    audience: pl.DataFrame, eligible: pl.DataFrame, column: str
) -> dict[str, Any] | None:
    def moments(frame: pl.DataFrame) -> tuple[Any, Any]:
        values = frame.get_column(column).cast(pl.Float64).fill_nan(None)
        return values.mean(), values.var()

    (mean_a, var_a), (mean_e, var_e) = moments(audience), moments(eligible)
    if None in (mean_a, var_a, mean_e, var_e) or var_a + var_e <= 0:
        return None
    return {
        "feature": column,
        "audience_mean": mean_a,
        "eligible_mean": mean_e,
        "standardized_difference": float((mean_a - mean_e) / np.sqrt((var_a + var_e) / 2)),
    }


def _share_difference(
    audience: pl.DataFrame, eligible: pl.DataFrame, column: str
) -> dict[str, Any] | None:
    def shares(frame: pl.DataFrame, name: str) -> pl.DataFrame:
        values = pl.col(column).cast(pl.String).fill_null(MISSING_GROUP).alias("value")
        counts = frame.select(values).group_by("value").len()
        return counts.with_columns((pl.col("len") / frame.height).alias(name)).drop("len")

    if audience.height == 0 or eligible.height == 0:
        return None
    joined = (
        shares(audience, "audience_share")
        .join(shares(eligible, "eligible_share"), on="value", how="full", coalesce=True)
        .fill_null(0.0)
        .with_columns((pl.col("audience_share") - pl.col("eligible_share")).alias("difference"))
        .sort([pl.col("difference").abs(), pl.col("value")], descending=[True, False])
    )
    return {"feature": column, **joined.row(0, named=True)}


def _largest(rows: list[dict[str, Any] | None], key: str, top: int) -> list[dict[str, Any]]:
    present = [r for r in rows if r is not None]
    return sorted(present, key=lambda r: -abs(r[key]))[:top]


def write_report(report: dict[str, Any], out: Path) -> tuple[Path, Path, Path]:
    """``<stem>.report.json``, ``<stem>.report.md`` and ``<stem>.report.html`` beside ``out``,
    each written atomically; the HTML is rendered from the JSON as written, so re-rendering the
    JSON file (:func:`lookalike.audience.html.render_html`) gives the same page."""
    json_path, md_path, html_path = report_paths(out)
    write_json(json_path, report)
    with atomic_write(md_path) as tmp:
        tmp.write_text(render_markdown(report))
    with atomic_write(html_path) as tmp:
        tmp.write_text(render_html(read_json(json_path)))
    return json_path, md_path, html_path


def report_paths(out: Path) -> tuple[Path, Path, Path]:
    """Where :func:`write_report` puts the JSON, Markdown and HTML reports of audience ``out``."""
    return (out.with_name(f"{out.stem}.report.json"), out.with_name(f"{out.stem}.report.md"),
            out.with_name(f"{out.stem}.report.html"))


def render_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown for people."""
    audience, metadata = report["audience"], report["metadata"]
    lines = [
        f"# Audience report: {Path(audience['path']).name}",
        "",
        f"{audience['size']} users ({audience['strategy']}) out of {audience['eligible_users']} "
        f"eligible; model build {metadata['model_build_id']}, created {metadata['created_at']}.",
        "",
        "## Seeds",
        "",
        _seeds_markdown(report["seeds"]),
        "",
        *(f"- warning: {w}" for w in report["warnings"]),
        "",
        "## Size per tier",
        "",
        _md_table(
            ["tier", "users", "cumulative"],
            [[t["tier"], t["users"], t["cumulative"]] for t in report["tiers"]],
        ),
        "",
        "## Expected quality (seed hold-out)",
        "",
        *_quality_markdown(report.get("quality")),
        "",
        "## Score distribution",
        "",
        _md_table(
            ["quantile", "score"], [[q, f"{v:.4f}"] for q, v in report["score_quantiles"].items()]
        ),
        "",
        "## Reach curve",
        "",
        _md_table(
            ["size", "mean score", "mean nearest-seed similarity"],
            [
                [p["size"], f"{p['mean_score']:.4f}", f"{p['mean_nearest_seed_similarity']:.4f}"]
                for p in report["reach_curve"]
            ],
        ),
        "",
        "## Why these people",
        "",
        *_features_markdown(report["features"]),
        "",
        "## Fairness audit",
        "",
        *_fairness_markdown(report.get("fairness")),
        "",
        "## Overlap with the previous export",
        "",
        *_overlap_markdown(report["overlap"]),
        "",
    ]
    return "\n".join(lines)


def _seeds_markdown(seeds: dict[str, Any]) -> str:
    auc = seeds["distinctiveness_auc"]
    return _md_table(
        ["rows given", "matched", "unknown", "duplicates", "weighted", "distinctiveness AUC"],
        [
            [
                seeds["rows_given"],
                seeds["matched"],
                seeds["unknown"],
                seeds["duplicates"],
                seeds["weighted"],
                "n/a" if auc is None else f"{auc:.3f}",
            ]
        ],
    )


def _features_markdown(features: dict[str, Any] | None) -> list[str]:
    if features is None:
        return ["No feature table in this build."]
    numeric = _md_table(
        ["numeric feature", "audience mean", "eligible mean", "standardized difference"],
        [
            [
                f["feature"],
                f"{f['audience_mean']:.4g}",
                f"{f['eligible_mean']:.4g}",
                f"{f['standardized_difference']:+.3f}",
            ]
            for f in features["numeric"]
        ],
    )
    categorical = _md_table(
        ["categorical feature", "value", "audience share", "eligible share", "difference"],
        [
            [
                f["feature"],
                f["value"],
                f"{f['audience_share']:.3f}",
                f"{f['eligible_share']:.3f}",
                f"{f['difference']:+.3f}",
            ]
            for f in features["categorical"]
        ],
    )
    return [numeric, "", categorical]


def _quality_markdown(quality: dict[str, Any] | None) -> list[str]:
    """The quality estimate's table and how it was made, or why there is none."""
    if quality is None:
        return ["Not estimated (audience.quality_estimate is off, or fewer than two seeds a fold)."]
    rows = [
        [
            row["label"],
            row["size"],
            f"{row['fraction']:.2%}",
            "{:.3f} ({:.3f}-{:.3f})".format(row["recall"]["value"], *row["recall"]["ci95"]),
            "{:.2f} ({:.2f}-{:.2f})".format(row["lift"]["value"], *row["lift"]["ci95"]),
        ]
        for row in quality["sizes"]
    ]
    return [
        _md_table(["size", "users", "of eligible", "recall (95% interval)", "lift (95% interval)"],
                  rows),
        "",
        (
            f"{quality['held_out_seeds']} seeds held out in {quality['folds']} folds, each ranked "
            f"by the strategy fitted on the other folds among {quality['ranked_users']} eligible "
            "users. Recall: share of held-out seeds inside the size, the expected share of future "
            "converters like the seeds; lift: recall over the share of eligible users (1.0 = "
            f"random). Intervals: bootstrap over held-out seeds ({quality['bootstrap']} resamples)."
        ),
    ]


def _fairness_markdown(fairness: dict[str, Any] | None) -> list[str]:
    """Each audited group's shares and gap, flagged beyond the allowed gap."""
    if fairness is None:
        return ["No audit columns (privacy.audit_columns)."]
    limit = fairness["max_gap_points"]
    rows = [
        [
            r["column"],
            r["group"],
            f"{r['audience_share']:.1%}",
            f"{r['eligible_share']:.1%}",
            f"{r['gap_points']:+.1f}" + (" (over limit)" if abs(r["gap_points"]) > limit else ""),
        ]
        for r in fairness["rows"]
    ]
    return [
        _md_table(["column", "group", "audience share", "eligible share", "gap (points)"], rows),
        "",
        f"Groups read from {fairness['profiles']}; a gap beyond {limit:g} points "
        "(privacy.max_audit_gap_points) is a warning.",
    ]


def _overlap_markdown(overlap: dict[str, Any] | None) -> list[str]:
    if overlap is None:
        return ["First export under this name."]
    keys = ["previous_size", "current_size", "common", "added", "removed"]
    return [
        _md_table(
            ["previous", "current", "common", "added", "removed", "Jaccard"],
            [[overlap[k] for k in keys] + [f"{overlap['jaccard']:.3f}"]],
        ),
        "",
        f"Previous export created {overlap['previous_created_at']}.",
    ]


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)

"""The audience report as one self-contained HTML page with plots, rendered from the report JSON.

Plots (each an inlined PNG whose ``alt`` names it): the reach curve beside the expected quality
per size, the score distribution, the features that differ most, the fairness gaps and a 2-D map
of the embeddings. Sections whose data the report lacks (the quality estimate off, no audit
columns, a report written before a key existed) say so instead of failing. :func:`render_html`
takes only the report JSON, so ``<stem>.report.html`` can be redrawn from ``<stem>.report.json``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lookalike.core.html import (
    figure_html,
    histogram_figure_html,
    new_figure,
    note_html,
    page_html,
    paragraph_html,
    plain_label,
    section_html,
    table_html,
)

PLOTS = {  # section -> the alt text of its plot
    "reach": "reach curve and expected quality",
    "scores": "score distribution",
    "features": "feature differences",
    "fairness": "fairness gaps",
    "map": "embedding map",
}
NO_AUDIT = "No audit columns configured: no fairness gaps measured."
# group -> (colour, marker area, opacity), in drawing order: the small groups stay visible on top
MAP_STYLE = {"population": ("#9a9a9a", 6, 0.35), "audience": ("#4c72b0", 8, 0.75),
             "seeds": ("#dd8452", 16, 0.9)}
OTHER_GROUP_STYLE = ("#8172b2", 8, 0.75)


def render_html(report: dict[str, Any]) -> str:
    """The report (as read from ``<stem>.report.json``) as a self-contained HTML page.

    Use it to redraw a report, e.g. after changing this module::

        from lookalike.core.artifacts import read_json
        page = render_html(read_json("out/buyers.report.json"))
        Path("out/buyers.report.html").write_text(page)
    """
    audience, metadata = report["audience"], report["metadata"]
    return page_html(
        f"Audience report: {Path(audience['path']).name}",
        _summary(report),
        section_html("Reach and expected quality", _reach_figure(report)),
        section_html("Score distribution", _scores(report)),
        section_html("Features that differ most", _features(report.get("features"))),
        section_html("Fairness gaps", *_fairness(report.get("fairness"))),
        section_html("Embedding map", _map(report.get("embedding_map"))),
        paragraph_html(f"Model build {metadata['model_build_id']}, build {metadata['build_id']}, "
                       f"created {metadata['created_at']}."),
    )


def _summary(report: dict[str, Any]) -> str:
    audience, seeds = report["audience"], report["seeds"]
    auc = seeds.get("distinctiveness_auc")
    return "".join([
        paragraph_html(f"{audience['size']:,} users ({audience['strategy']}) out of "
                       f"{audience['eligible_users']:,} eligible, from {seeds['matched']:,} "
                       f"matched seeds (distinctiveness AUC "
                       f"{'n/a' if auc is None else f'{auc:.3f}'})."),
        *(note_html(f"warning: {w}") for w in report.get("warnings", [])),
        table_html(["tier", "users", "cumulative"],
                   [[f"{t['tier']:g}", f"{t['users']:,}", f"{t['cumulative']:,}"]
                    for t in report.get("tiers", [])]),
    ])


def _reach_figure(report: dict[str, Any]) -> str:
    """Left: mean score and mean nearest-seed similarity of the top n; right: the expected recall
    per size with its 95% interval, or why there is none."""
    curve, quality = report.get("reach_curve", []), report.get("quality")
    if not curve:
        return note_html("Empty audience: no reach curve.")
    figure, (reach, recall) = new_figure(columns=2)
    sizes = [p["size"] for p in curve]
    reach.plot(sizes, [p["mean_score"] for p in curve], color="#4c72b0", marker=".")
    _size_axis(reach)
    reach.set_xlabel("audience size (top n)")
    reach.set_ylabel("mean score", color="#4c72b0")
    similarity = reach.twinx()
    similarity.plot(sizes, [p["mean_nearest_seed_similarity"] for p in curve], color="#dd8452",
                    marker=".")
    similarity.set_ylabel("mean nearest-seed similarity", color="#dd8452")
    reach.set_title("reach curve")
    _quality_axes(recall, quality)
    caption = ("Expected recall: share of held-out seeds an audience of that size finds "
               "(seed hold-out, 95% bootstrap interval).")
    return figure_html(figure, PLOTS["reach"], caption if quality else "")


def _size_axis(axes: Any) -> None:
    """A log axis of user counts labelled 1, 10, 1,000 (not 10^3)."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    axes.set_xscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:,.0f}"))
    axes.xaxis.set_minor_formatter(NullFormatter())


def _quality_axes(axes: Any, quality: dict[str, Any] | None) -> None:
    if not quality or not quality.get("sizes"):
        axes.set_axis_off()
        axes.text(0.5, 0.5, "expected quality not estimated\n(audience.quality_estimate off,\n"
                  "or too few seeds)", ha="center", va="center", transform=axes.transAxes)
        return
    rows = sorted(quality["sizes"], key=lambda r: r["size"])
    sizes = np.array([r["size"] for r in rows], dtype=float)
    values = np.array([r["recall"]["value"] for r in rows])
    bounds = np.array([r["recall"]["ci95"] for r in rows])
    errors = np.vstack([values - bounds[:, 0], bounds[:, 1] - values]).clip(min=0)
    axes.errorbar(sizes, values, yerr=errors, fmt="o-", color="#55a868", capsize=3)
    labels: dict[tuple[float, float], list[str]] = {}
    for size, value, row in zip(sizes, values, rows, strict=True):
        labels.setdefault((size, value), []).append(row["label"])  # the audience may be a tier
    for point, names in labels.items():
        axes.annotate(plain_label(" = ".join(names)), point, textcoords="offset points",
                      xytext=(-4, 6), ha="right", fontsize=7)
    axes.set_xlim(0, sizes.max() * 1.15)
    axes.set_ylim(0, 1)
    axes.set_xlabel("audience size")
    axes.set_ylabel("expected recall of held-out seeds")
    axes.set_title("expected quality")


def _scores(report: dict[str, Any]) -> str:
    histogram = report.get("score_histogram")
    if histogram is None:
        return note_html("This report has no score histogram (written by an older version).")
    return histogram_figure_html(histogram, PLOTS["scores"], "score (the strategy's scale)")


def _features(features: dict[str, Any] | None) -> str:
    """Standardized mean differences of numeric features and share differences (points) of the
    categorical values that differ most, audience minus eligible users."""
    if not features or not (features.get("numeric") or features.get("categorical")):
        return note_html("No feature table in this build: no feature differences.")
    numeric, categorical = features.get("numeric", []), features.get("categorical", [])
    figure, (left, right) = new_figure(height=_bars_height(max(len(numeric), len(categorical))),
                                       columns=2)
    _bars(left, [f["feature"] for f in numeric],
          [f["standardized_difference"] for f in numeric], "standardized mean difference")
    _bars(right, [f"{f['feature']} = {f['value']}" for f in categorical],
          [100 * f["difference"] for f in categorical], "share difference (points)")
    return figure_html(figure, PLOTS["features"], "Audience minus eligible users; largest first.")


def _bars_height(bars: int) -> float:
    return max(2.0, 0.3 * bars + 1.0)


def _bars(axes: Any, labels: list[str], values: list[float], xlabel: str) -> None:
    if not labels:
        axes.set_axis_off()
        axes.text(0.5, 0.5, "none", ha="center", va="center", transform=axes.transAxes)
        return
    positions = np.arange(len(labels))[::-1]
    axes.barh(positions, values, color=["#4c72b0" if v >= 0 else "#c44e52" for v in values])
    axes.set_yticks(positions, [plain_label(label) for label in labels], fontsize=7)
    axes.axvline(0, color="#333", linewidth=0.8)
    axes.set_xlabel(xlabel)


def _fairness(fairness: dict[str, Any] | None) -> list[str]:
    """Bars of each group's gap (audience share minus eligible share, points) and the table."""
    if not fairness or not fairness.get("rows"):
        return [note_html(NO_AUDIT)]
    rows = fairness["rows"]
    figure, axes = new_figure(height=_bars_height(len(rows)))
    _bars(axes, [f"{r['column']} = {r['group']}" for r in rows], [r["gap_points"] for r in rows],
          "audience share - eligible share (points)")
    caption = (f"Audit columns: {', '.join(map(str, fairness.get('columns', [])))}; largest gap "
               f"{fairness['max_gap_points']:.1f} points.")
    table = table_html(
        ["column", "group", "audience share", "eligible share", "gap (points)"],
        [[r["column"], r["group"], f"{r['audience_share']:.3f}", f"{r['eligible_share']:.3f}",
          f"{r['gap_points']:+.1f}"] for r in rows],
    )
    return [figure_html(figure, PLOTS["fairness"], caption), table]


def _map(embedding_map: dict[str, Any] | None) -> str:
    """Population, audience and seeds on the first two principal components of their sample."""
    if not embedding_map or not embedding_map.get("groups"):
        return note_html("This report has no embedding map.")
    figure, axes = new_figure(width=6.0, height=4.6)
    groups = embedding_map["groups"]
    for name in sorted(groups, key=_drawing_order):
        points = groups[name]
        colour, area, opacity = MAP_STYLE.get(name, OTHER_GROUP_STYLE)
        axes.scatter(points["x"], points["y"], s=area, alpha=opacity, linewidths=0, color=colour,
                     label=plain_label(f"{name} ({len(points['x']):,})"))
    variance = [*embedding_map.get("explained_variance", []), None, None]
    axes.set_xlabel(_component_label(1, variance[0]))
    axes.set_ylabel(_component_label(2, variance[1]))
    axes.legend(loc="upper right", fontsize=8, markerscale=2)
    return figure_html(figure, PLOTS["map"], "PCA of a seeded sample of each group's embeddings: "
                       "the audience should sit where the seeds are.")


def _drawing_order(group: str) -> int:
    order = list(MAP_STYLE)
    return order.index(group) if group in order else len(order)


def _component_label(number: int, share: float | None) -> str:
    return f"PC{number}" if share is None else f"PC{number} ({share:.0%} of the sample's variance)"

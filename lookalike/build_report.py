"""The build report: ``report.html`` in the build folder, a self-contained page with plots.

It shows the training curve (per-epoch loss and held-out recall, ``steps.train.history``), how
close users sit to their nearest other user (``steps.index.nn_similarity``, a histogram of a
sample) and the drift since the previous build (``steps.drift``; a first build has none). It is
rendered from the manifest's content (every key but ``files``) before the manifest is written, so
the manifest lists its checksum and is still written last, and :func:`render_build_html` of
``manifest.json`` gives the same page. It holds no timestamp or timing: a rebuild of the same
inputs writes the same bytes.
"""

from __future__ import annotations

from typing import Any

from lookalike.core.artifacts import atomic_write, json_round_trip
from lookalike.core.html import (
    figure_html,
    histogram_figure_html,
    new_figure,
    note_html,
    page_html,
    paragraph_html,
    section_html,
    table_html,
)
from lookalike.core.workdir import BuildPaths

PLOTS = {"training": "training curve", "similarity": "nearest-neighbour similarity"}
NO_DRIFT = "First build: no drift (no previous build to compare with)."


def write_build_report(build: BuildPaths, manifest: dict[str, Any]) -> None:
    """Write ``report.html`` into the build folder from the manifest's content (atomically)."""
    with atomic_write(build.report_html) as tmp:
        tmp.write_text(render_build_html(json_round_trip(manifest)))


def render_build_html(manifest: dict[str, Any]) -> str:
    """The build report page from a build manifest (``files`` and timings are not shown).

    Example::

        from lookalike.core.workdir import Workdir, load_manifest
        page = render_build_html(load_manifest(Workdir("work").current()))
    """
    steps = manifest["steps"]
    return page_html(
        f"Build report: {manifest['build_id']}",
        _summary(manifest),
        section_html("Training curve", _training(steps.get("train", {}))),
        section_html("Nearest-neighbour similarity", _similarity(steps.get("index", {}))),
        section_html("Drift since the previous build", *_drift(steps.get("drift"))),
    )


def _summary(manifest: dict[str, Any]) -> str:
    steps = manifest["steps"]
    features = steps.get("features", {}).get("features", {})
    train, index = steps.get("train", {}), steps.get("index", {})
    lines = [f"Package {manifest.get('package_version')}, as of {features.get('as_of')}: "
             f"{features.get('n_users', 0):,} users, {features.get('n_numeric', 0)} numeric and "
             f"{features.get('n_categorical', 0)} categorical features."]
    if train:
        lines.append(f"Model {train['model_build_id']}: best epoch {train['best_epoch']} of "
                     f"{train['epochs_run']} ({train['stop_reason']}), held-out recall "
                     f"{train['validation_recall']:.3f}.")
    if index:
        lines.append(f"Index: {index['count']:,} users in {index['shards']} shard(s), recall@10 "
                     f"{index['recall_at_10']:.3f}, recall@100 {index['recall_at_100']:.3f}.")
    return "".join(paragraph_html(line) for line in lines)


def _training(train: dict[str, Any]) -> str:
    """Mean training loss and mean held-out recall per epoch; the kept epoch dashed."""
    history = train.get("history")
    if not history:
        return note_html("No training history in this build's manifest.")
    epochs = [h["epoch"] for h in history]
    figure, loss = new_figure()
    loss.plot(epochs, [h["loss"] for h in history], marker="o", color="#4c72b0")
    loss.set_xlabel("epoch")
    loss.set_ylabel("training loss", color="#4c72b0")
    recall = loss.twinx()
    recall.plot(epochs, [h["recall"] for h in history], marker="o", color="#55a868")
    recall.set_ylabel("held-out recall (top 1%)", color="#55a868")
    loss.axvline(train["best_epoch"], color="#333", linestyle="--", linewidth=0.8)
    loss.set_xticks(epochs)
    return figure_html(figure, PLOTS["training"],
                       f"The model kept is epoch {train['best_epoch']} (dashed): the best held-out "
                       "recall of converters among the top 1% of sampled users.")


def _similarity(index: dict[str, Any]) -> str:
    histogram = index.get("nn_similarity")
    if not histogram:
        return note_html("No nearest-neighbour similarities in this build's manifest.")
    return histogram_figure_html(
        histogram, PLOTS["similarity"], "cosine similarity to the nearest other user",
        f"{histogram['sample']:,} sampled users, exact search over the whole population: "
        "a peak near 1 means crowded, near-duplicate users.")


def _drift(drift: dict[str, Any] | None) -> list[str]:
    """The drift tables: feature PSI, embedding shifts, converter rates, thresholds crossed."""
    if not drift or drift.get("previous_build") is None:
        return [note_html(NO_DRIFT)]
    embedding = drift.get("embedding") or {}
    crossed = drift.get("crossed") or []
    parts = [
        paragraph_html(f"Compared with build {drift.get('previous_build')}."),
        *(note_html(f"threshold crossed: {c}") for c in crossed),
        table_html(["feature", "PSI"],
                   [[f["feature"], _number(f["psi"])] for f in drift.get("features", [])]),
        table_html(["embedding", "value"], [[k, _number(v)] for k, v in sorted(embedding.items())]),
        table_html(["conversion type", "previous rate", "current rate"],
                   [[r["type"], _number(r["previous"]), _number(r["current"])]
                    for r in drift.get("converter_rate", [])]),
        table_html(["threshold", "value"],
                   [[k, _number(v)] for k, v in sorted((drift.get("thresholds") or {}).items())]),
    ]
    if not crossed:
        parts.insert(1, paragraph_html("No drift threshold crossed."))
    return parts


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)

"""Self-contained HTML reports: a page skeleton, escaped tables and matplotlib figures inlined as
base64 PNG, so a report opens offline and from an e-mail attachment (no script, stylesheet or
image is fetched from anywhere).

The audience report (:mod:`lookalike.audience.html`) and the build report
(:mod:`lookalike.build_report`) are made of these pieces. Every text that may come from a user
(file names, feature names, group values) goes through :func:`html.escape` here, so a renderer
never writes raw text into the page. Figures use matplotlib's ``Figure`` directly (the Agg
canvas, no pyplot state, no display needed), and the same figure data gives the same PNG bytes:
a report re-rendered from its JSON is byte-identical.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_DPI = 90
STYLE = """
body { font-family: sans-serif; max-width: 60rem; margin: 1.5rem auto; padding: 0 1rem;
       color: #222; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.2rem; margin-top: 2rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.9rem; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.5rem; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
figure { margin: 0.5rem 0; } figcaption { font-size: 0.85rem; color: #555; }
img { max-width: 100%; } .note { color: #555; font-style: italic; }
"""


def compact_histogram(values: np.ndarray, bins: int, value_range: tuple[float, float] | None = None,
                      digits: int = 6) -> dict[str, list[float] | list[int]]:
    """A histogram small enough for a JSON report: ``bins + 1`` rounded edges and ``bins`` counts.

    Counts are :func:`numpy.histogram`'s (the last bin includes its right edge); an empty input
    gives empty lists. Use it for any distribution a report plots and a later run compares.

    Example:
        >>> compact_histogram(np.array([0.0, 0.1, 0.6, 1.0]), bins=2)
        {'edges': [0.0, 0.5, 1.0], 'counts': [2, 2]}
    """
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {"edges": [], "counts": []}
    counts, edges = np.histogram(values, bins=bins, range=value_range)
    return {"edges": [round(float(e), digits) for e in edges], "counts": counts.tolist()}


def figure_data_uri(figure: Figure) -> str:
    """The figure as a ``data:image/png;base64,...`` URI (PNG without a timestamp)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=FIGURE_DPI, bbox_inches="tight",
                   metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def new_figure(width: float = 7.5, height: float = 3.4, columns: int = 1) -> tuple[Figure, Any]:
    """A matplotlib figure (Agg, no pyplot) and its axes (an array when ``columns`` > 1)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots(1, columns)
    return figure, axes


def figure_html(figure: Figure, alt: str, caption: str = "") -> str:
    """An ``<figure>`` with the figure inlined as PNG; ``alt`` names the plot (tests and screen
    readers find it by this text)."""
    uri = figure_data_uri(figure)
    text = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img alt="{html.escape(alt)}" src="{uri}">{text}</figure>'


def histogram_figure_html(histogram: dict[str, list[Any]], alt: str, xlabel: str,
                          caption: str = "") -> str:
    """A bar plot of a :func:`compact_histogram`, or a note when it is empty."""
    edges, counts = histogram.get("edges", []), histogram.get("counts", [])
    if not counts:
        return note_html(f"{alt}: no values.")
    figure, axes = new_figure(height=3.0)
    axes.stairs(counts, edges, fill=True, color="#4c72b0")
    axes.set_xlabel(xlabel)
    axes.set_ylabel("users")
    return figure_html(figure, alt, caption)


def plain_label(text: object) -> str:
    r"""``text`` for a matplotlib label, with ``$`` escaped: a user's name such as ``cost$`` would
    otherwise start mathtext and fail the drawing.

    Example:
        >>> plain_label("spend_$")
        'spend_\\$'
    """
    return str(text).replace("$", r"\$")


def table_html(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """An HTML table; every cell is escaped text."""
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def note_html(text: str) -> str:
    """A paragraph of escaped explanatory text."""
    return f'<p class="note">{html.escape(text)}</p>'


def paragraph_html(text: str) -> str:
    """A paragraph of escaped text."""
    return f"<p>{html.escape(text)}</p>"


def section_html(title: str, *parts: str) -> str:
    """A titled section; ``parts`` are HTML made by the functions of this module."""
    return f"<section><h2>{html.escape(title)}</h2>{''.join(parts)}</section>"


def page_html(title: str, *sections: str) -> str:
    """A complete page: inline style, no external resource.

    Example:
        >>> page = page_html("<b>report</b>", section_html("Seeds", paragraph_html("40 matched")))
        >>> "&lt;b&gt;report&lt;/b&gt;" in page and "http" not in page
        True
    """
    escaped = html.escape(title)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{escaped}</title><style>{STYLE}</style></head>\n<body><h1>{escaped}</h1>\n"
        + "\n".join(sections)
        + "\n</body></html>\n"
    )

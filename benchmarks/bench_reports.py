"""What the HTML reports cost: the figures computed at build and export time, and the rendering.

On ``--users`` clustered unit vectors of ``--dim`` numbers (the shape of a build's embeddings),
times, each the median of ``--repeats`` runs after one warm-up:

- the build's nearest-neighbour similarities
  (:func:`lookalike.search.exact.nearest_other_similarity` of ``index.similarity_sample`` users
  over everyone, as :func:`lookalike.build_steps.nn_similarity_histogram` runs it);
- the export's embedding map (:func:`lookalike.audience.report.embedding_map`: a seeded sample of
  the population, 1,000 seeds and a 5% audience, PCA);
- rendering the audience page (full-size sections: the map, 40 score bins, 10 + 10 features,
  5 quality rows, 8 fairness rows) and the build page, with each page's size in bytes.

Prints one Markdown table; ``--out`` also writes the figures as JSON.

Example::

    python benchmarks/bench_reports.py --users 100000 --out bench_reports.json
"""

from __future__ import annotations

import argparse

import numpy as np
from bench_index import median_time

from lookalike.audience.html import render_html
from lookalike.audience.report import embedding_map, reach_curve
from lookalike.build_report import render_build_html
from lookalike.core.artifacts import write_json
from lookalike.core.config import AudienceConfig, IndexConfig
from lookalike.core.html import compact_histogram
from lookalike.search.exact import nearest_other_similarity


def clustered_vectors(users: int, dim: int, seed: int = 0) -> np.ndarray:
    """Unit float32 vectors around 50 random directions."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(50, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 50, users)] + 0.5 * rng.normal(size=(users, dim)).astype(
        np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def audience_report(vectors: np.ndarray, scores: np.ndarray, config: AudienceConfig) -> dict:
    """A report JSON with every section the page draws, at full size."""
    n = len(vectors)
    rng = np.random.default_rng(1)
    audience = np.arange(n // 20)
    groups = {"population": np.arange(n), "seeds": rng.choice(n, 1000, replace=False),
              "audience": audience}
    sizes = [int(n * t) for t in (0.01, 0.02, 0.05, 0.1)]
    return {
        "audience": {"path": "out/buyers.parquet", "size": len(audience), "eligible_users": n,
                     "strategy": "hybrid"},
        "metadata": {"model_build_id": "m", "build_id": "b", "created_at": "2026-12-07"},
        "seeds": {"matched": 1000, "distinctiveness_auc": 0.8},
        "tiers": [{"tier": 0.05, "users": len(audience), "cumulative": len(audience)}],
        "reach_curve": reach_curve(scores, np.linspace(0.95, 0.8, len(scores))),
        "quality": {"sizes": [{"label": f"tier {s}", "size": s,
                               "recall": {"value": 0.1 + i / 10, "ci95": [i / 10, 0.2 + i / 10]}}
                              for i, s in enumerate([len(audience), *sizes])]},
        "score_histogram": compact_histogram(scores, config.report_score_bins),
        "features": {
            "numeric": [{"feature": f"numeric_{i}", "standardized_difference": 1 - i / 5}
                        for i in range(10)],
            "categorical": [{"feature": f"category_{i}", "value": "a", "difference": 0.1 - i / 50}
                            for i in range(10)],
        },
        "fairness": {"columns": ["age_band"], "max_gap_points": 4.0, "rows": [
            {"column": "age_band", "group": str(g), "audience_share": 0.125,
             "eligible_share": 0.125, "gap_points": 4.0 - g} for g in range(8)]},
        "embedding_map": embedding_map(vectors, groups, config.report_map_points, config.seed),
    }


def build_manifest(vectors: np.ndarray, similarity: dict) -> dict:
    return {"build_id": "b", "package_version": "0", "steps": {
        "features": {"features": {"n_users": len(vectors)}},
        "train": {"model_build_id": "m", "best_epoch": 8, "epochs_run": 12, "stop_reason": "x",
                  "validation_recall": 0.3,
                  "history": [{"epoch": e, "loss": 5 - e / 4, "recall": 0.3}
                              for e in range(1, 13)]},
        "index": {"count": len(vectors), "shards": 1, "recall_at_10": 0.99, "recall_at_100": 0.98,
                  "nn_similarity": similarity},
    }}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    audience_config, index_config = AudienceConfig(), IndexConfig()
    vectors = clustered_vectors(args.users, args.dim)
    rng = np.random.default_rng(index_config.seed)
    rows = np.sort(rng.choice(args.users, index_config.similarity_sample, replace=False))
    scores = np.sort(rng.normal(size=args.users // 20))[::-1]

    nn_s, similarities = median_time(lambda: nearest_other_similarity(vectors, rows),
                                        args.repeats)
    histogram = {"sample": len(rows), **compact_histogram(similarities, 40)}
    map_s, report = median_time(lambda: audience_report(vectors, scores, audience_config),
                                   args.repeats)
    page_s, page = median_time(lambda: render_html(report), args.repeats)
    build_s, build_page = median_time(
        lambda: render_build_html(build_manifest(vectors, histogram)), args.repeats)
    figures = {
        "users": args.users, "dim": args.dim,
        "nn_similarity_s": round(nn_s, 3), "embedding_map_s": round(map_s, 3),
        "audience_page_s": round(page_s, 3), "audience_page_bytes": len(page.encode()),
        "build_page_s": round(build_s, 3), "build_page_bytes": len(build_page.encode()),
    }
    print("| " + " | ".join(figures) + " |")
    print("|" + "---|" * len(figures))
    print("| " + " | ".join(str(v) for v in figures.values()) + " |")
    if args.out:
        write_json(args.out, figures)


if __name__ == "__main__":
    main()

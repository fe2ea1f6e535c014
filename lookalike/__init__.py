"""lookalike: lookalike audiences from a company's own behavioural data.

The pipeline runs one way, one subpackage per stage::

    data       input tables -> point-in-time features          (lookalike.data)
    encoder    features -> two-tower encoder -> embeddings       (lookalike.encoder)
    search     embeddings -> sharded HNSW index                  (lookalike.search)
    audience   seed list -> scored, tiered Parquet audience      (lookalike.audience)

``core`` holds what every stage shares (config, errors, artifacts, the workdir), ``privacy`` what
keeps people's data in bounds, ``build_steps`` runs the stages into a versioned build, and
``evaluation`` measures audience quality on held-out converters. ``flows/`` runs the same
functions as Prefect flows and holds the command line.

For notebooks, three calls take paths and return paths or small results::

    import lookalike
    build = lookalike.build("work", profiles="profiles.parquet", conversions="conversions.parquet")
    result = lookalike.export_audience("work", "seeds.csv", "buyers.parquet", fraction=0.05)
    report = lookalike.evaluate("work", "conversions.parquet", "evaluation",
                                profiles="profiles.parquet")
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # the stages load torch, scikit-learn and hnswlib: imported only when called
    from lookalike.audience.export import ExportResult
    from lookalike.core.config import LookalikeConfig
    from lookalike.core.progress import Progress
    from lookalike.evaluation.report import EvaluationResult

__all__ = ["build", "evaluate", "export_audience"]


def build(
    workdir: str | Path,
    *,
    conversions: str,
    events: str | None = None,
    profiles: str | None = None,
    as_of: str | None = None,
    config: LookalikeConfig | str | Path | None = None,
    mode: Literal["auto", "refresh", "retrain"] = "auto",
    progress: Progress = print,
) -> Path | str:
    """Build features, encoder, embeddings and index into ``workdir`` and make the build current.

    Inputs follow the contract in ``data/README.md`` (events, profiles or both, plus conversions);
    ``config`` is a :class:`~lookalike.core.config.LookalikeConfig` or a YAML/JSON/TOML file. The
    same inputs and config reuse the existing build. ``mode``: ``auto`` reuses the current build's
    encoder unless a retrain is due, ``refresh`` always reuses it, ``retrain`` always trains
    (:mod:`lookalike.build_steps`). Returns the build's folder. ``workdir`` may be an
    ``s3://bucket/prefix`` URL (:mod:`lookalike.object_store`): the build's URL is returned.
    """
    from lookalike.build_steps import BuildRequest, run_build
    from lookalike.object_store import build_at, is_remote

    request = BuildRequest(events, profiles, conversions, as_of, _config(config), mode)
    _, where = build_at(workdir, lambda local: run_build(local, request, progress=progress))
    return where if is_remote(where) else Path(where)


def export_audience(
    workdir: str | Path,
    seeds: str | Path,
    out: str | Path,
    *,
    size: int | None = None,
    fraction: float | None = None,
    config: LookalikeConfig | str | Path | None = None,
    progress: Progress = print,
    **options: Any,
) -> ExportResult:
    """Export the ``size`` users (or ``fraction`` of eligible users) most like the seeds.

    Uses the workdir's current build. ``options`` are those of
    :func:`lookalike.audience.export.export_audience` (``strategy``, ``exclude``, ``eligible``,
    ``name``, ``min_score``, ...). Returns where the audience and its reports went.
    ``workdir`` and ``out`` may be ``s3://`` URLs (:mod:`lookalike.object_store`).
    """
    from lookalike.audience.export import export_audience as export
    from lookalike.object_store import export_at

    return export_at(workdir, out, lambda build, path: export(
        build, seeds, path, size=size, fraction=fraction, config=_config(config),
        progress=progress, **options))


def evaluate(
    workdir: str | Path,
    conversions: str,
    out: str | Path,
    *,
    events: str | None = None,
    profiles: str | None = None,
    as_of: str | None = None,
    config: LookalikeConfig | str | Path | None = None,
    progress: Progress = print,
) -> EvaluationResult:
    """Hold out converters, train without them and compare every method on them (see
    :func:`lookalike.evaluation.evaluate.evaluate`); writes ``evaluation.md``/``.json`` to ``out``."""
    from lookalike.evaluation.evaluate import evaluate as run_evaluation

    return run_evaluation(Path(workdir), conversions, Path(out), events=events, profiles=profiles,
                          as_of=as_of, config=_config(config), progress=progress)


def _config(config: LookalikeConfig | str | Path | None) -> LookalikeConfig:
    from lookalike.core.config import LookalikeConfig, load_config

    return config if isinstance(config, LookalikeConfig) else load_config(config)

"""How much an export may lean on the learned embedding, from the build's own held-out evidence.

Training records, per conversion type, whether the encoder memorized its training converters
(:func:`lookalike.encoder.train.memorization`: a classifier tells them from the type's held-out
converters in the embedding, but not on the raw features). A seed list made mostly of such
converters sits where the encoder put *those* users, and evidence measured on it is optimistic:
the hybrid strategy then scores without the embedding (its weight set to 0), and every export
of such seeds says so in its report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from lookalike.core.artifacts import read_json
from lookalike.core.config import AudienceConfig
from lookalike.encoder.model import MANIFEST_FILE

MEMORIZED_SEED_SHARE = 0.5  # seeds of a memorized type above this share make the list "memorized"


def memorized_types(model_dir: Path) -> dict[str, dict[str, Any]]:
    """The model's memorization figures of the conversion types it flagged (none for a model
    trained before the figures were recorded)."""
    figures = read_json(model_dir / MANIFEST_FILE).get("memorization", {})
    return {name: f for name, f in figures.items() if f["flagged"]}


def trusted_config(
    model_dir: Path, conversions: Path, seed_ids: pl.Series, strategy: str, config: AudienceConfig
) -> tuple[AudienceConfig, list[str]]:
    """The audience config to score ``seed_ids`` with, and the warnings for the report.

    ``model_dir`` holds the trained model (its ``model.json``), ``conversions`` the conversions it
    was trained on.

    When more than half of the seeds are converters of a type the build flagged as memorized,
    ``hybrid`` scores with ``hybrid_embedding_weight`` 0 (the gradient-boosted model on the input
    features alone); the embedding-only strategies keep scoring, with a warning.
    """
    flagged = memorized_types(model_dir)
    if not flagged or seed_ids.len() == 0:
        return config, []
    converters = pl.read_parquet(conversions, columns=["user_id", "conversion_type"])
    for name, figures in sorted(flagged.items()):
        of_type = converters.filter(pl.col("conversion_type") == name).get_column("user_id")
        share = float(seed_ids.is_in(of_type.implode()).mean())
        if share > MEMORIZED_SEED_SHARE:
            found = (f"{share:.0%} of the seeds are '{name}' converters the encoder memorized "
                     f"(seeds vs held-out AUC {figures['embedding']:.3f} in the embedding, "
                     f"{figures['raw']:.3f} on the raw features)")
            if strategy == "hybrid":
                return (config.model_copy(update={"hybrid_embedding_weight": 0.0}),
                        [f"{found}: scored without the embedding"])
            return config, [f"{found}: the {strategy} strategy scores in the embedding only and "
                            "will find fewer new converters than these seeds suggest; the hybrid "
                            "strategy scores without it"]
    return config, []

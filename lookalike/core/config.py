"""All configuration in one typed place.

A config file (YAML, JSON or TOML) mirrors :class:`LookalikeConfig`; every field has a default, so
an empty file (or no file) is a valid config. Unknown keys are rejected so a typo never silently
falls back to a default.

Example YAML::

    features:
      windows_days: [7, 30, 90, 365]
    ingest:
      categorical_int_columns: [region_code]
    train:
      epochs: 20
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from lookalike.core.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IngestConfig(_Section):
    """How input tables are read and which profile columns are used."""

    categorical_int_columns: list[str] = Field(
        default_factory=list,
        description="Integer profile columns that are codes (region 17, plan 3), not quantities.",
    )
    deny_columns: list[str] = Field(
        default_factory=list,
        description="Profile columns that must never become features (sensitive attributes).",
    )
    csv_separator: str = ","


class FeatureConfig(_Section):
    """Per-user, point-in-time feature computation."""

    windows_days: list[int] = Field(default_factory=lambda: [7, 30, 90, 365])
    max_event_types: int = Field(32, ge=1, description="Most frequent event types kept; rest pooled.")
    top_categories: int = Field(16, ge=0, description="Categories with their own affinity feature.")
    category_hash_buckets: int = Field(8, ge=0, description="Buckets for the remaining categories.")
    max_categorical_cardinality: int = Field(
        1000, ge=2, description="Profile categories kept per column; rarer values share one code."
    )
    n_quantiles: int = Field(256, ge=8, description="Quantiles saved per numeric feature for scaling.")
    scaling_sample: int = Field(200_000, ge=1000, description="Rows sampled to fit the scaling.")
    partition_events: int = Field(
        20_000_000, ge=1000, description="Events per user partition when computing event features; "
        "bounds memory (duplicate removal and the per-user sums hold one partition at a time)."
    )

    @field_validator("windows_days")
    @classmethod
    def _positive_windows(cls, v: list[int]) -> list[int]:
        if not v or any(w <= 0 for w in v):
            raise ValueError("windows_days must be a non-empty list of positive day counts")
        return sorted(set(v))


EmbeddingStorage = Literal["float32", "float16"]


class ModelConfig(_Section):
    """Two-tower encoder shape."""

    embedding_dim: int = Field(
        32, ge=2, description="32 with one hidden layer of 128 beat 64 with [256, 128] on held-out "
        "converters (benchmarks/RESULTS.md, issue 7): most input columns are noise."
    )
    hidden_dims: list[int] = Field(default_factory=lambda: [128])
    numeric_bins: int = Field(16, ge=1, description="Piecewise-linear encoding bins per numeric feature.")
    max_categorical_embedding_dim: int = Field(16, ge=1)
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    share_towers: bool = Field(
        True, description="One tower for seeds and population (held-out recall measured higher)."
    )
    bf16: bool = Field(
        False, description="bfloat16 autocast in the towers, for training and inference (CPU)."
    )
    embedding_storage: EmbeddingStorage = Field(
        "float32", description="dtype of the population's embeddings.npy; every reader computes "
        "in float32, a block of rows at a time. float16 halves the file (64 B per user at 32 "
        "dims) but is not the default: recall@100 0.9987 against float32 at 1M users, its misses "
        "ties within 2e-4 cosine (benchmarks/RESULTS.md, compact embeddings, 2026-12-07).",
    )


class TrainConfig(_Section):
    """Contrastive training of the encoder."""

    loss: Literal["info_nce", "margin"] = "info_nce"
    propensity_weight: float = Field(
        0.0, ge=0.0, description="Weight of a per-type logistic loss on the embedding (a linear "
        "propensity head trained with the contrastive loss); 0 turns the head off. 1.0 raised AUC "
        "and lift at 10% but lowered precision at 1% (benchmarks/RESULTS.md, issue 7).",
    )
    self_supervised_weight: float = Field(
        1.0, ge=0.0, description="Weight of the SCARF term: every batch user must find its own "
        "corrupted view among the batch's (lookalike.encoder.augment). It keeps what the features say about "
        "a user beyond the trained conversions; 0 turns it off (benchmarks/RESULTS.md, issue 7).",
    )
    corruption_rate: float = Field(
        0.6, gt=0.0, lt=1.0, description="Share of features replaced in a corrupted view (SCARF's 0.6)."
    )
    anchor_corruption_rate: float = Field(
        0.15, ge=0.0, lt=1.0, description="Share of each anchor's features replaced, as in the "
        "self-supervised term, before the converter loss. Without it the encoder memorizes its "
        "training converters (they sit closer together than new converters of the same type), and "
        "seed lists are usually those converters; 0 turns it off (benchmarks/RESULTS.md, issue 7).",
    )
    temperature: float = Field(
        0.2, gt=0.0, description="InfoNCE temperature; 0.2 beat 0.1 on held-out converters (RESULTS.md)."
    )
    margin: float = Field(0.5, description="Cosine-distance margin for the margin loss.")
    converters_per_type: int = Field(64, ge=2, description="Converters of each type in every batch.")
    negatives_per_batch: int = Field(512, ge=1, description="Non-converters sampled into every batch.")
    epochs: int = Field(30, ge=1)
    steps_per_epoch: int | None = Field(
        None, ge=1, description="Default: one pass over converters, at least min_steps_per_epoch."
    )
    min_steps_per_epoch: int = Field(
        20, ge=1, description="Floor on steps between validations: few converters still train."
    )
    converter_loss_full_at: int = Field(
        200, ge=0, description="A trained type with fewer training converters than this has its "
        "converter loss scaled by its count / this (0: off). Counting each converter once an "
        "epoch still let the encoder memorize 90 of them over its epochs (UCI Bank Marketing, "
        "100 seeds: seeds vs held-out AUC in the embedding 0.60-0.75 without, 0.54-0.57 with, "
        "hybrid AUC 0.759 -> 0.766). 300 also reached Bank-3000 (213 converters, not memorized) "
        "and put a cell there clearly below logistic regression; 600 and 1,000 left "
        "two_tower_knn below or level with raw_feature_knn at 5% (benchmarks/RESULTS.md, "
        "2026-12-07).",
    )
    learning_rate: float = Field(5e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0, description="AdamW decay; 1e-4 with the smaller model.")
    seed: int = 0
    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    validation_top_fraction: float = Field(0.01, gt=0.0, le=1.0)
    validation_background: int = Field(50_000, ge=100)
    validation_max_seeds: int = Field(
        5000, ge=10, description="Training converters per type used as validation seeds (a sample)."
    )
    validation_top_m: int = Field(
        10, ge=1, description="Seed similarities averaged per validation candidate (1 = the maximum)."
    )
    min_converters_per_type: int = Field(
        10, ge=3, description="Conversion types with fewer converters are left out of training."
    )
    patience: int = Field(10, ge=1, description="Epochs without validation gain before stopping.")
    memorization_limit: float = Field(
        0.6, ge=0.5, le=1.0, description="A trained type whose training converters a logistic "
        "regression tells from its held-out converters in the embedding with a 95% interval "
        "reaching above this AUC (and a higher AUC than on the raw features) is flagged as "
        "memorized (lookalike.encoder.health.memorization_figures); exports of its converters "
        "then score without the embedding.",
    )
    memorization_min_heldout: int = Field(
        30, ge=5, description="Held-out converters a type needs for a memorization verdict: on "
        "UCI Bank Marketing with 100 seeds, a flag from 10 held-out converters fired on the draw "
        "least memorized by the evaluation's 4,540-converter measure, and the hybrid without the "
        "embedding lost 0.026 AUC there (benchmarks/RESULTS.md, 2026-12-07).",
    )
    time_budget_seconds: float = Field(
        240.0, gt=0.0, description="Training stops after this many seconds of epochs (1M users: ~5 min in all)."
    )
    held_back_types: list[str] = Field(
        default_factory=list, description="Conversion types never used in training."
    )
    min_effective_rank: float = Field(2.0, ge=1.0, description="Below this the model is collapsed.")
    max_mean_cosine: float = Field(
        0.95, gt=0.0, le=1.0, description="Above this mean pairwise cosine the model is collapsed."
    )
    health_sample: int = Field(5000, ge=100, description="Users embedded for the health statistics.")
    population_sample: int = Field(
        1_000_000, ge=1000, description="Users besides the trained types' converters that "
        "training reads: all of them up to this many (then the data is exactly the whole table), "
        "else a uniform sample of this size seeded from seed; every converter of a trained type is "
        "read either way. Negatives, the validation background and the health sample need no "
        "more. At 1,000,000 builds with up to a million others train exactly as on the whole "
        "table, and training on 5M toy users peaked at 1.9 GiB against 5.6 GiB reading every row "
        "(10M: 2.2 GiB); a 300,000 sample at 1M users moved held-out recall by under 0.001 "
        "(benchmarks/RESULTS.md, 2026-12-07).",
    )
    threads: int | None = Field(None, ge=1, description="torch threads; default all cores.")
    retrain_interval_days: float | None = Field(
        7.0, gt=0.0, description="A build retrains the encoder when its as-of time is this many "
        "days or more after the as-of time of the build that trained the current encoder; "
        "between retrains a build refreshes (reuses the encoder on the new features). None: "
        "never by age, only on drift, changed settings or --retrain.",
    )


class DriftConfig(_Section):
    """Drift between a build and the previous one, and when it forces the encoder to retrain.

    A build that would refresh (reuse the previous encoder) retrains instead when any limit is
    crossed; a build asked to refresh (``--refresh``) only reports it.
    """

    feature_psi: float = Field(
        0.25, gt=0.0, description="A feature whose population stability index against the "
        "previous build exceeds this has drifted (0.25 is the conventional 'major shift').",
    )
    max_drifted_share: float = Field(
        0.1, ge=0.0, le=1.0, description="Retrain when more than this share of the features "
        "has drifted (see feature_psi).",
    )
    max_embedding_shift: float = Field(
        0.1, gt=0.0, le=2.0, description="Retrain when the median cosine distance between a "
        "user's old and new embedding (same encoder, users in both builds) exceeds this.",
    )
    max_nn_similarity_psi: float = Field(
        0.25, gt=0.0, description="Retrain when the PSI of the nearest-neighbour similarity "
        "distribution (old vs new embeddings of the sampled users) exceeds this.",
    )
    bins: int = Field(
        10, ge=2, le=100, description="Quantile bins of each numeric feature's sketch (PSI bins)."
    )
    max_categories: int = Field(
        50, ge=1, description="Most frequent values per categorical feature kept in its sketch; "
        "the rest share one bin.",
    )
    sample: int = Field(
        2000, ge=100, description="Users present in both builds (a seeded sample) embedded twice "
        "for the embedding shift and nearest-neighbour similarities.",
    )
    seed: int = Field(0, description="Random state of the user sample.")


class IndexConfig(_Section):
    """HNSW index over the population embeddings."""

    M: int = Field(16, ge=2)
    ef_construction: int = Field(
        100, ge=10, description="Build effort: 100 builds 1M users in about 2 min on 2 cores."
    )
    ef: int = Field(200, ge=10, description="Query effort; raised to k automatically.")
    shards: int = Field(1, ge=1, description="Index shards (at least; see max_shard_users).")
    max_shard_users: int = Field(
        1_000_000, ge=1000, description="More users than this add shards: an HNSW build grows "
        "faster than N log N once the graph leaves the CPU cache (benchmarks/RESULTS.md, issue 8), "
        "and bounded shards keep it linear and let a task runner build them at once.",
    )
    recall_floor: float = Field(0.95, ge=0.0, le=1.0, description="Build fails below recall@100.")
    recall_queries: int = Field(500, ge=10)
    threads: int | None = Field(None, ge=1, description="hnswlib threads; default all cores.")
    seed: int = Field(100, description="hnswlib level seed and recall-sample seed.")
    similarity_sample: int = Field(
        1_000, ge=10, description="Users (a seeded sample) whose similarity to their nearest "
        "other user, by exact search over the whole population, makes the build report's "
        "histogram: how crowded the embedding space is.",
    )
    add_batch_rows: int = Field(
        100_000, ge=1, description="Embedding rows read and added to hnswlib at a time (bounds memory)."
    )
    locality_clusters: int = Field(
        1024, ge=0, description="Most k-means clusters (one per 1,000 users) by which users are "
        "inserted, so that neighbours sit close in memory: halves the 1M-user build at equal "
        "recall (benchmarks/RESULTS.md, issue 8). 0 inserts in row order.",
    )
    locality_skeleton: float = Field(
        0.1, ge=0.0, le=1.0, description="Share of users inserted first, in random order, before "
        "the cluster-by-cluster order: the long links between clusters (recall@100 0.90 -> 0.98 "
        "on tightly clustered 1M users; benchmarks/RESULTS.md, issue 8).",
    )
    locality_sample: int = Field(
        100_000, ge=1, description="Users the locality k-means is fitted on."
    )


StrategyName = Literal["knn", "clusters", "centroid", "contrast", "density", "hybrid"]


class AudienceConfig(_Section):
    """Seed expansion and export rules."""

    strategy: StrategyName = Field(
        "hybrid", description="hybrid (contrast plus gradient boosting on the features) ranked "
        "held-out converters above gradient boosting alone and above every embedding-only strategy "
        "on AUC on the synthetic draws; density is best at 1% on Bank Marketing "
        "(benchmarks/RESULTS.md, issue 7).",
    )
    neighbours_per_seed: int = Field(100, ge=1)
    top_m: int = Field(10, ge=1, description="Seed similarities averaged per candidate (knn).")
    n_clusters: int | None = Field(None, ge=1, description="Seed clusters; default grows with seeds.")
    min_seed_size: int = Field(100, ge=1)
    warn_seed_size: int = Field(1000, ge=1)
    min_audience_size: int = Field(1000, ge=1)
    tiers: list[float] = Field(default_factory=lambda: [0.01, 0.02, 0.05, 0.10])
    distinctiveness_sample: int = Field(
        20_000, ge=100, description="Population users (and at most as many seeds) in the seed AUC."
    )
    distinctiveness_folds: int = Field(3, ge=2, description="Cross-validation folds of the AUC.")
    min_distinctiveness_auc: float = Field(0.6, ge=0.5, le=1.0)
    max_clusters: int = Field(32, ge=1, description="Cap of the default seed cluster count.")
    contrast_background: int = Field(
        50_000, ge=2, description="Candidates sampled as the unlabeled class (contrast and hybrid)."
    )
    contrast_c: float = Field(
        1.0, gt=0, description="Inverse L2 strength of the contrast strategy's logistic regression."
    )
    density_temperature: float = Field(
        0.1, ge=0.01, description="Kernel exp(cosine / t) of the density strategy; smaller is more "
        "local (0.1 against 0.07 and 0.15 on Bank Marketing and synthetic data, RESULTS.md).",
    )
    density_background: int = Field(
        8192, ge=2, description="Candidates sampled as the population's density (density "
        "strategy); cost grows with it. 8192 matched 16384 on Bank Marketing (RESULTS.md).",
    )
    density_max_seeds: int = Field(
        8192, ge=1, description="Seeds used as kernel centres (a seeded sample beyond it).",
    )
    boosting_max_seeds: int = Field(
        10_000, ge=1, description="Seeds the hybrid strategy's gradient boosting is fitted on (a "
        "seeded sample beyond it): fitting dominates its cost for large seed lists.",
    )
    hybrid_embedding_weight: float = Field(
        0.5, ge=0.0, description="Weight of contrast's log-odds in the hybrid score (the boosting's "
        "weighs 1): 0.5 ranked held-out converters above 1.0 on 9 of 12 synthetic type-draws and on "
        "Bank (RESULTS.md, 2026-12-01).",
    )
    hybrid_linear_share: float = Field(
        0.5, ge=0.0, le=1.0, description="Share of a logistic regression's log-odds in the "
        "hybrid's model of the input features when fewer than hybrid_linear_max_seeds seeds are "
        "fitted (the gradient boosting's share is 1 minus it): with few seeds the boosting is "
        "noisy and a linear model ranks the top better (RESULTS.md, real data, 2026-12-07).",
    )
    hybrid_linear_max_seeds: int = Field(
        1000, ge=0, description="From this many fitted seeds on, the hybrid's feature model is the "
        "gradient boosting alone (on Bank and Adult with 1,000 or more seeds the blend was lower).",
    )
    boosting_background: int = Field(
        20_000, ge=2, description="Sampled candidates the hybrid strategy's gradient boosting is "
        "fitted against, half per cross-fitted model (a seeded sample of contrast's): 20,000 "
        "ranked as well as 50,000 with fits 27-58% faster (RESULTS.md, 2026-12-01).",
    )
    boosting_learning_rate: float = Field(
        0.1, gt=0.0, le=1.0, description="Learning rate of the hybrid strategy's gradient boosting "
        "(scikit-learn's default); 0.2 fits about half the trees at AUC -0.0009 on average over 12 "
        "synthetic type-draws (RESULTS.md, 2026-12-01).",
    )
    exact_search_max_candidates: int = Field(
        200_000,
        ge=0,
        description="With an eligible list leaving at most this many candidates, search them "
        "exactly instead of filtering the HNSW index (slow when most users are excluded).",
    )
    report_sample: int = Field(
        100_000, ge=100, description="Eligible users sampled to compare feature distributions."
    )
    report_map_points: int = Field(
        1_500, ge=3, le=20_000, description="Points in the HTML report's 2-D embedding map (PCA), "
        "a seeded third each from the population, the seeds and the audience; stored rounded in "
        "the report JSON (about 35 bytes a point).",
    )
    report_score_bins: int = Field(
        40, ge=2, le=1_000, description="Bins of the audience's score histogram in the report.",
    )
    quality_estimate: bool = Field(
        True, description="Estimate every export's recall and lift at its size and each tier by "
        "seed hold-out (report section 'Expected quality'); false skips it.",
    )
    quality_folds: int = Field(
        3, ge=2, le=10, description="Seeded folds of the seeds in the quality estimate: each fold "
        "is held out once while the strategy runs on the others (cost grows with the folds).",
    )
    quality_candidates: int = Field(
        20_000, ge=100, description="Eligible users (a seeded sample) the held-out seeds are "
        "ranked against in the quality estimate when they outnumber contrast_background (else all "
        "of them); the estimate's cost does not grow with the population.",
    )
    quality_background: int = Field(
        10_000, ge=2, description="Eligible users (a seeded sample, never ranked) that contrast and "
        "hybrid fit one model against in each fold of the quality estimate when the eligible users "
        "outnumber contrast_background (an export then cross-fits two): one boosting half's size.",
    )
    quality_boosting_learning_rate: float = Field(
        0.1, gt=0.0, le=1.0, description="boosting_learning_rate in the quality estimate's folds, "
        "whose fits are most of its cost: 0.2 fits half the trees (estimate / export CPU at 1M "
        "users 1.21 instead of 1.27) but put the estimate 0.01-0.02 low on Bank Marketing, its "
        "interval holding the unseen converters' recall on 3 of 5 draws instead of 4 (RESULTS.md, "
        "2026-12-07).",
    )
    quality_max_seeds: int = Field(
        1000, ge=2, description="Seeds the quality estimate splits into folds (a seeded sample "
        "beyond it): its strategy runs see (folds - 1) / folds of them.",
    )
    quality_bootstrap: int = Field(
        200, ge=1, description="Bootstrap resamples of the held-out seeds for the quality "
        "estimate's 95% intervals.",
    )
    seed: int = Field(0, description="Random state of the AUC sample, its folds and k-means.")

    @field_validator("tiers")
    @classmethod
    def _sorted_fractions(cls, v: list[float]) -> list[float]:
        if any(not 0 < t <= 1 for t in v):
            raise ValueError("tiers must be fractions in (0, 1]")
        return sorted(set(v))


class EvaluateConfig(_Section):
    """Offline evaluation on held-out converters."""

    holdout_fraction: float = Field(0.3, gt=0.0, lt=1.0)
    cutoffs: list[float] = Field(default_factory=lambda: [0.01, 0.05, 0.10, 0.20])
    bootstrap: int = Field(200, ge=0)
    background_sample: int = Field(
        20_000, ge=100, description="Eligible users the propensity baselines train on as unlabeled."
    )
    gains_points: int = Field(100, ge=2, description="Points of the cumulative gains curve.")
    seed: int = Field(0, description="Random state of the hold-out, the baselines and the bootstrap.")


class PrivacyConfig(_Section):
    """Checks that keep sensitive attributes and individual seeds from leaking through audiences."""

    proxy_threshold: float = Field(
        0.5, ge=0.0, le=1.0,
        description="Association (Cramér's V, |Spearman| or correlation ratio, all in [0, 1]) at or "
        "above which an allowed feature is reported as a proxy for a denied column; 0.5 is the "
        "conventional lower bound of a strong association.",
    )
    proxy_sample: int = Field(
        200_000, ge=1000, description="Users sampled (seeded) to measure proxy associations."
    )
    min_seed_difference: int = Field(
        100, ge=1,
        description="Two exports whose seed lists differ in fewer users than this (but not zero) are "
        "flagged: the difference of their audiences would reveal the few changed seeds.",
    )
    suppression_list: str | None = Field(
        None,
        description="User list (Parquet/CSV with a user_id column) of opted-out users: dropped from "
        "every input table at ingest (so from features, training, embeddings and index) and never "
        "exported, even from a build made before they opted out. Its content is part of the build id.",
    )
    audit_columns: list[str] = Field(
        default_factory=list,
        description="Profile columns (sex, age band) whose groups every export audits: each "
        "group's share of the audience against its share of the eligible users, in the report's "
        "'fairness' section. Read from the profiles table even when listed in "
        "ingest.deny_columns, so they can be audited without ever reaching the model.",
    )
    max_audit_gap_points: float = Field(
        10.0, ge=0.0,
        description="An audited group whose audience share differs from its eligible share by "
        "more than this many percentage points is a warning in the export's report and log.",
    )


class AudienceSpec(_Section):
    """One audience the scheduled pipeline refreshes."""

    name: str
    seeds: str
    size: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0.0, le=1.0)
    exclude: str | None = None
    eligible: str | None = None
    strategy: StrategyName | None = None
    out: str


class ScheduleConfig(_Section):
    """Inputs and cron schedules for deployments served by ``lookalike serve``."""

    workdir: str | None = None
    events: str | None = None
    profiles: str | None = None
    conversions: str | None = None
    cron: str = "0 3 * * *"
    timezone: str = "UTC"
    audiences: list[AudienceSpec] = Field(default_factory=list)


class LookalikeConfig(_Section):
    """The whole pipeline's configuration."""

    ingest: IngestConfig = Field(default_factory=IngestConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    audience: AudienceConfig = Field(default_factory=AudienceConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    drift: DriftConfig = Field(default_factory=DriftConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)

    def fingerprint(self) -> str:
        """Stable hash of every setting that can change a build's output.

        When to retrain (``drift``, ``train.retrain_interval_days``) is left out: it decides which
        encoder a build uses, and that encoder's source is part of the build id instead.
        """
        payload = self.model_dump(mode="json", exclude={
            "schedule": True, "audience": True, "evaluate": True, "privacy": True, "drift": True,
            "train": {"retrain_interval_days"}})
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def encoder_settings(self) -> dict[str, object]:
        """The settings an encoder depends on (ingest, features, model, training): a build may
        reuse a previous build's encoder only when these are equal."""
        return self.model_dump(mode="json", include={"ingest", "features", "model", "train"},
                               exclude={"train": {"retrain_interval_days"}})


def load_config(path: str | Path | None = None) -> LookalikeConfig:
    """Read a YAML, JSON or TOML config file; ``None`` gives the defaults."""
    if path is None:
        return LookalikeConfig()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        if path.suffix in {".yaml", ".yml"}:
            raw = yaml.safe_load(text) or {}
        elif path.suffix == ".json":
            raw = json.loads(text)
        elif path.suffix == ".toml":
            raw = tomllib.loads(text)
        else:
            raise ConfigError(f"config file {path}: use .yaml, .yml, .json or .toml")
    except (yaml.YAMLError, json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix[1:]}: {exc}") from exc
    try:
        return LookalikeConfig.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ConfigError(f"config file {path}: {where}: {first['msg']}") from exc

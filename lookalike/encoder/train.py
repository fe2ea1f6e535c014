"""Contrastive training of the two-tower encoder on converters and sampled non-converters.

:func:`train` reads the feature table, its spec and the validated conversions, holds out a share of
each type's converters, trains with :mod:`lookalike.encoder.losses` on batches from
:mod:`lookalike.encoder.sampler`, selects the epoch with the best held-out recall
(:mod:`lookalike.encoder.heldout`), checks the embeddings have not collapsed (:mod:`lookalike.encoder.health`)
and writes ``model.safetensors`` and ``model.json`` to ``out_dir``.

Every epoch seeds numpy and torch from ``(train.seed, epoch)`` and ends with a checkpoint in
``out_dir/checkpoints``, so a run resumed from a checkpoint reproduces an uninterrupted run exactly.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from lookalike.core.artifacts import (
    atomic_write,
    read_json,
    sha256_file,
    verify_checksum,
    write_json,
)
from lookalike.core.config import LookalikeConfig, TrainConfig
from lookalike.core.errors import InputError, TrainingError
from lookalike.core.parallel import usable_cores
from lookalike.core.progress import Progress, eta
from lookalike.data.spec import (
    EncodedFeatures,
    FeatureSpec,
    encode,
    raw_feature_vectors,
)
from lookalike.encoder.augment import corrupt_features
from lookalike.encoder.health import (
    EmbeddingHealth,
    check_not_collapsed,
    embedding_health,
    memorization_figures,
)
from lookalike.encoder.heldout import heldout_recall, split_converters
from lookalike.encoder.losses import (
    loss_function,
    mean_pair_loss,
    pair_masks,
    view_info_nce_loss,
)
from lookalike.encoder.model import (
    MANIFEST_FILE,
    WEIGHTS_FILE,
    Architecture,
    Tower,
    TwoTowerEncoder,
    embed_encoded,
    read_weights,
    save_model,
    save_weights,
)
from lookalike.encoder.sampler import Batch, ConverterBatchSampler

CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "state.json"
# Independent random streams derived from train.seed (and the epoch number, for training batches).
SPLIT_STREAM, VALIDATION_STREAM, HEALTH_STREAM, EPOCH_STREAM, MEMORIZATION_STREAM = 1, 2, 3, 4, 5
POPULATION_STREAM = 6
# Settings that may change between a run and its resumption without invalidating checkpoints.
RESUMABLE_SETTINGS = {"epochs", "patience", "time_budget_seconds", "threads"}


@dataclass(frozen=True)
class TrainingData:
    """Encoded features of the users training reads and the trained types' multi-hot labels.

    These are the whole population, or, where it has more than ``train.population_sample`` users
    besides the trained types' converters, all those converters and a seeded uniform sample of the
    others (:func:`load_training_data`); rows keep the feature table's order either way.
    """

    features: EncodedFeatures
    labels: np.ndarray  # bool [n_rows, n_types]
    types: list[str]
    skipped_types: dict[str, int]  # types with too few converters -> their converter count
    ignored_converters: int  # converting users absent from the feature table
    population: int  # users in the feature table
    rows: np.ndarray  # the feature table's row number of each row, ascending
    # Rows (of ``features``) forming a uniform sample of the population: every row when nothing
    # was sampled; else the sampled others and the same share of the converters. Population-wide
    # samples (validation background, health) are drawn from these, never from the rows that
    # over-represent converters.
    population_rows: np.ndarray

    @property
    def sampled(self) -> bool:
        return len(self.features) < self.population

    def converters_by_type(self) -> list[np.ndarray]:
        return [np.flatnonzero(self.labels[:, t]) for t in range(len(self.types))]

    def negative_pool(self) -> np.ndarray:
        return np.flatnonzero(~self.labels.any(axis=1))


@dataclass(frozen=True)
class ValidationSet:
    """Per trained type: training converters, validation seeds (a sample of them), held-out
    converters and background users (rows of the feature table)."""

    train: list[np.ndarray]
    seeds: list[np.ndarray]
    heldout: list[np.ndarray]
    background: list[np.ndarray]


@dataclass
class TrainState:
    """Progress of a run, saved with every checkpoint."""

    epoch: int = 0
    best_recall: float = -1.0
    best_epoch: int = 0
    epochs_without_gain: int = 0
    elapsed_seconds: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` produced and how the run went."""

    model_dir: Path
    weights: Path
    manifest: Path
    model_build_id: str
    best_epoch: int
    epochs_run: int
    stop_reason: str
    validation_recall: float
    validation_recall_by_type: dict[str, float]
    converters: dict[str, dict[str, int]]
    memorization: dict[str, dict[str, Any]]  # per type; see :func:`memorization`
    ignored_converters: int
    health: EmbeddingHealth
    elapsed_seconds: float


def train(
    features_path: Path,
    spec_path: Path,
    conversions_path: Path,
    out_dir: Path,
    config: LookalikeConfig = LookalikeConfig(),  # noqa: B008 (frozen, so a shared default is safe)
    *,
    resume: bool = True,
    progress: Progress | None = print,
) -> TrainResult:
    """Train the encoder and write ``model.safetensors`` + ``model.json`` into ``out_dir``.

    Conversion types in ``config.train.held_back_types`` are never used; converters missing from
    the feature table are ignored and counted. With ``resume``, training continues from the last
    checkpoint in ``out_dir/checkpoints`` if it was made with the same data and settings.
    Raises :class:`TrainingError` when there is nothing to train on or the embeddings collapse.
    """
    say = progress or (lambda _message: None)
    tc = config.train
    torch.set_num_threads(tc.threads or usable_cores())
    started = time.monotonic()
    spec = FeatureSpec.load(spec_path)
    data = load_training_data(Path(features_path), spec, Path(conversions_path), tc)
    _report_data(data, say)
    validation = validation_set(data, tc)
    torch.manual_seed(tc.seed)
    head_types = len(data.types) if tc.propensity_weight > 0 else 0
    model = TwoTowerEncoder(Architecture.for_spec(spec, config.model, head_types))
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=tc.learning_rate, weight_decay=tc.weight_decay
    )
    checkpoints = Path(out_dir) / CHECKPOINT_DIR
    run_id = _run_fingerprint(config, spec_path, features_path, conversions_path)
    state, best_weights = _start_state(checkpoints, run_id, model, optimizer, resume, say)
    say(f"set-up took {time.monotonic() - started:.1f}s")

    run = _Run(model, optimizer, data, validation, tc, checkpoints, run_id, say)
    while (stop_reason := _stop_reason(state, tc)) is None:
        best_weights = run.epoch(state, best_weights)
    say(f"stopped after epoch {state.epoch}: {stop_reason}; best epoch {state.best_epoch}")

    model.load_state_dict(best_weights)
    health = _health(model, data, validation, tc)
    check_not_collapsed(health, tc.min_effective_rank, tc.max_mean_cosine)
    memorized = memorization(model, data, validation, spec, tc)
    for name, figures in memorized.items():
        if figures["flagged"]:
            say(f"warning: the encoder may have memorized its '{name}' converters (seeds vs "
                f"held-out AUC {figures['embedding']:.3f} [{figures['embedding_low']:.3f}, "
                f"{figures['embedding_high']:.3f}] in the embedding, {figures['raw']:.3f} on the "
                f"raw features, {figures['heldout']} held out): exports of these converters will "
                "not lean on the embedding")
    return _write_model(
        Path(out_dir), model, spec_path, config, data, validation, state, stop_reason, health,
        memorized,
    )


def load_training_data(
    features_path: Path, spec: FeatureSpec, conversions_path: Path, tc: TrainConfig
) -> TrainingData:
    """Encode the rows training needs and turn conversions into multi-hot labels of the trained
    types.

    The feature table is scanned lazily (a file, or a directory or glob of Parquet parts): first
    the user ids of converters, then the rows to train on. Where the users besides the trained
    types' converters are at most ``tc.population_sample``, that is every row, exactly as a full
    read; otherwise all those converters and a uniform sample of ``tc.population_sample`` others
    seeded from ``tc.seed``, so memory follows the sample and the converters, not the population.
    """
    scan = pl.scan_parquet(features_path)
    schema = scan.collect_schema()
    missing = [name for name in spec.columns if name not in schema]
    if missing:
        raise InputError(
            str(features_path), f"a column of the feature spec is missing ({', '.join(missing)})",
            fix="recompute the features and their spec together",
        )
    conversions = _trained_conversions(conversions_path, schema["user_id"], tc)
    found = (
        scan.select("user_id").with_row_index("row")
        .filter(pl.col("user_id").is_in(conversions.get_column("user_id").unique().implode()))
        .collect(engine="streaming")
    )
    matched = conversions.join(found, on="user_id", how="left")
    ignored = matched.filter(pl.col("row").is_null()).get_column("user_id").n_unique()
    matched = matched.drop_nulls("row").unique(["row", "conversion_type"])
    counts = dict(matched.get_column("conversion_type").value_counts().iter_rows())
    types = sorted(t for t, n in counts.items() if n >= tc.min_converters_per_type)
    if not types:
        raise TrainingError(
            f"{conversions_path}: no conversion type has {tc.min_converters_per_type} or more "
            f"converters in the feature table (found {counts or 'none'}, {ignored} converting "
            "users not in the feature table); add conversions or lower "
            "train.min_converters_per_type"
        )
    population = scan.select(pl.len()).collect().item()
    converters = np.unique(
        matched.filter(pl.col("conversion_type").is_in(types)).get_column("row").to_numpy()
    ).astype(np.int64)
    selection = _population_sample(population, converters, tc)
    if selection is None:
        frame = scan.select(spec.columns).collect(engine="streaming")
        rows, population_rows = None, np.arange(population)
    else:
        rows, population_rows = selection
        frame = (
            scan.with_row_index("row")
            .filter(pl.col("row").is_in(pl.Series(rows).cast(pl.UInt32).implode()))
            .select(spec.columns)
            .collect(engine="streaming")
        )
        if frame.height != len(rows):
            raise InputError(str(features_path), "rows changed while they were read",
                             fix="train once the feature table is written")
    labels = np.zeros((frame.height, len(types)), dtype=bool)
    for t, name in enumerate(types):
        of_type = matched.filter(pl.col("conversion_type") == name).get_column("row").to_numpy()
        labels[of_type if rows is None else np.searchsorted(rows, of_type), t] = True
    return TrainingData(
        features=encode(frame, spec),
        labels=labels,
        types=types,
        skipped_types={t: n for t, n in counts.items() if t not in types},
        ignored_converters=ignored,
        population=population,
        rows=np.arange(population) if rows is None else rows,
        population_rows=population_rows,
    )


def _population_sample(
    population: int, converters: np.ndarray, tc: TrainConfig
) -> tuple[np.ndarray, np.ndarray] | None:
    """``None`` where every row is read; else the table rows to read (sorted: the ``converters``
    and a uniform sample of ``tc.population_sample`` other rows) and the positions among them of a
    uniform population sample (the sampled others and the same share of the converters)."""
    others = population - len(converters)
    if others <= tc.population_sample:
        return None
    rng = _rng(tc.seed, POPULATION_STREAM)
    picked = np.sort(rng.choice(others, size=tc.population_sample, replace=False))
    # the k-th row that is not a converter is k plus the converters at or before it
    sampled = picked + np.searchsorted(converters - np.arange(len(converters)), picked, "right")
    rows = np.union1d(converters, sampled)
    share = tc.population_sample / others
    converters_kept = _sorted_sample(converters, round(share * len(converters)), rng)
    population_rows = np.searchsorted(rows, np.union1d(sampled, converters_kept))
    return rows, population_rows


def _trained_conversions(path: Path, id_dtype: pl.DataType, tc: TrainConfig) -> pl.DataFrame:
    conversions = pl.read_parquet(path, columns=["user_id", "conversion_type"])
    if conversions.schema["user_id"] != id_dtype:
        raise InputError(
            str(path), "user_id has a different type than the feature table's user_id",
            column="user_id", expected=str(id_dtype), examples=[str(conversions.schema["user_id"])],
            fix="validate the conversions against the same population as the features",
        )
    return conversions.filter(~pl.col("conversion_type").is_in(tc.held_back_types))


def _report_data(data: TrainingData, say: Progress) -> None:
    per_type = zip(data.types, data.labels.sum(axis=0), strict=True)
    counts = ", ".join(f"{name} {int(n)}" for name, n in per_type)
    if data.sampled:
        say(f"training on {len(data.features)} of {data.population} users (every converter of "
            f"the trained types, a uniform sample of the others); converters per type: {counts}")
    else:
        say(f"training on {len(data.features)} users; converters per type: {counts}")
    if data.skipped_types:
        say(f"left out (too few converters): {data.skipped_types}")
    if data.ignored_converters:
        say(f"ignored {data.ignored_converters} converting users absent from the feature table")


def _rng(seed: int, stream: int, epoch: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, stream, epoch])


def validation_set(data: TrainingData, tc: TrainConfig) -> ValidationSet:
    """Hold out converters of each type; the rest are training converters.

    The validation seeds of a type are up to ``validation_max_seeds`` of its training converters;
    its background is a fixed sample of users who did not convert to it, drawn from
    ``data.population_rows`` so that it stands for the population when training reads a sample.
    """
    split = split_converters(
        data.converters_by_type(), tc.validation_fraction, _rng(tc.seed, SPLIT_STREAM)
    )
    if any(len(rows) == 0 for rows in split.train):
        raise TrainingError("a conversion type has no training converters left after the hold-out")
    rng = _rng(tc.seed, VALIDATION_STREAM)
    seeds = [_sorted_sample(rows, tc.validation_max_seeds, rng) for rows in split.train]
    sample = _sorted_sample(data.population_rows, tc.validation_background, rng)
    background = [sample[~data.labels[sample, t]] for t in range(len(data.types))]
    return ValidationSet(split.train, seeds, split.heldout, background)


def _sorted_sample(rows: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(rows, size=min(size, len(rows)), replace=False))


class _Run:
    """The fixed parts of one training run; :meth:`epoch` trains, validates and checkpoints."""

    def __init__(
        self,
        model: TwoTowerEncoder,
        optimizer: torch.optim.Optimizer,
        data: TrainingData,
        validation: ValidationSet,
        tc: TrainConfig,
        checkpoints: Path,
        run_id: dict[str, Any],
        say: Progress,
    ) -> None:
        self.model, self.optimizer, self.data, self.validation = model, optimizer, data, validation
        self.tc, self.checkpoints, self.run_id, self.say = tc, checkpoints, run_id, say
        self.sampler = ConverterBatchSampler(
            validation.train, data.negative_pool(), tc.converters_per_type, tc.negatives_per_batch
        )
        self.steps = tc.steps_per_epoch or max(tc.min_steps_per_epoch, self.sampler.default_steps())
        # A converter counts at most once an epoch: where the min_steps_per_epoch floor draws few
        # converters many times, their loss is scaled down, or the encoder learns *these* users
        # (UCI Bank Marketing, 3,000 clients: memorization AUC 0.93-0.97 without, 0.54-0.57 with).
        self.converter_weight = min(1.0, self.sampler.default_steps() / self.steps)
        # Few converters are learned by heart over the epochs even at once an epoch (UCI Bank
        # Marketing, 90 training converters: memorization AUC 0.60-0.75): a type below
        # train.converter_loss_full_at converters weighs in proportion to its count (0.54-0.57).
        self.type_weights = _type_weights(validation.train, tc.converter_loss_full_at)
        self.loss_fn = loss_function(tc.loss, temperature=tc.temperature, margin=tc.margin)
        self.numeric = torch.from_numpy(data.features.numeric)
        self.categorical = torch.from_numpy(data.features.categorical)
        self.labels = torch.from_numpy(data.labels)

    def epoch(self, state: TrainState, best_weights: dict[str, Tensor]) -> dict[str, Tensor]:
        """Run the next epoch; return the best weights so far."""
        started = time.monotonic()
        state.epoch += 1
        loss, tuples = self.train_steps(state.epoch)
        trained = time.monotonic()
        recalls = validation_recalls(self.model, self.data.features, self.validation, self.tc)
        finished = time.monotonic()
        state.elapsed_seconds += finished - started
        epoch = {
            "loss": loss,
            "recall_by_type": dict(zip(self.data.types, recalls, strict=True)),
            "steps": self.steps,
            "tuples": tuples,
            "train_seconds": trained - started,
            "validation_seconds": finished - trained,
        }
        best_weights = _record_epoch(state, self.model, best_weights, epoch)
        _save_checkpoint(
            self.checkpoints, self.run_id, self.model, self.optimizer, best_weights, state
        )
        self.say(_epoch_line(state, self.tc))
        return best_weights

    def train_steps(self, epoch: int) -> tuple[float, int]:
        """The epoch's batches, seeded from ``(seed, epoch)``: mean loss and tuples seen."""
        rng = _rng(self.tc.seed, EPOCH_STREAM, epoch)
        torch.manual_seed(int(rng.integers(2**62)))
        self.model.train()
        total_loss, tuples = 0.0, 0
        for batch in self.sampler.batches(self.steps, rng):
            loss, positive, negative = self._step(batch)
            total_loss += loss
            tuples += int((positive.sum(dim=1) * negative.sum(dim=1)).sum())
        return total_loss / self.steps, tuples

    def _anchor_queries(self, numeric: Tensor, categorical: Tensor, candidates: Tensor) -> Tensor:
        """The anchors' query embeddings, from corrupted copies of their rows when configured."""
        rate = self.tc.anchor_corruption_rate
        if rate > 0:
            return self._corrupted_embeddings(numeric, categorical, rate, "query")
        # one tower: the anchors' candidate embeddings are their queries
        return candidates if self.model.shared else self.model(numeric, categorical, "query")

    def _corrupted_embeddings(
        self, numeric: Tensor, categorical: Tensor, rate: float, tower: Tower
    ) -> Tensor:
        """Embeddings of copies of the rows with a ``rate`` share of features replaced (SCARF)."""
        return self.model(corrupt_features(numeric, rate), corrupt_features(categorical, rate), tower)

    def _step(self, batch: Batch) -> tuple[float, Tensor, Tensor]:
        rows = torch.from_numpy(batch.rows)
        anchors = batch.n_anchors
        numeric, categorical = self.numeric[rows], self.categorical[rows]
        candidates = self.model(numeric, categorical, "candidate")
        queries = self._anchor_queries(numeric[:anchors], categorical[:anchors], candidates[:anchors])
        positive, negative = pair_masks(
            rows[:anchors], torch.from_numpy(batch.anchor_types), rows, self.labels[rows]
        )
        pairs = self.loss_fn(queries, candidates, positive, negative)
        if self.type_weights is not None:
            weights = self.type_weights[torch.from_numpy(batch.anchor_types)[pairs.anchors]]
            pairs = replace(pairs, losses=pairs.losses * weights)
        loss = self.converter_weight * mean_pair_loss(pairs)
        if self.tc.self_supervised_weight > 0:
            views = self._corrupted_embeddings(numeric, categorical, self.tc.corruption_rate, "candidate")
            pairs = view_info_nce_loss(views, candidates, self.tc.temperature)
            loss = loss + self.tc.self_supervised_weight * mean_pair_loss(pairs)
        if self.model.propensity is not None:
            logits = self.model.propensity(candidates.float())
            targets = self.labels[rows].float()
            loss = loss + self.tc.propensity_weight * F.binary_cross_entropy_with_logits(logits, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return float(loss.detach()), positive, negative


def _type_weights(train: list[np.ndarray], full_at: int) -> Tensor | None:
    """Per trained type, the weight of its anchors' converter loss: its training converters /
    ``full_at``, at most 1; ``None`` when every type has weight 1."""
    counts = np.array([len(rows) for rows in train], dtype=np.float32)
    if full_at == 0 or counts.min() >= full_at:
        return None
    return torch.from_numpy(np.minimum(1.0, counts / full_at))


def validation_recalls(
    model: TwoTowerEncoder, features: EncodedFeatures, validation: ValidationSet, tc: TrainConfig
) -> list[float]:
    """Held-out recall per trained type (seeds: query tower; candidates: candidate tower)."""
    seed_rows = np.unique(np.concatenate(validation.seeds))
    candidate_rows = np.unique(np.concatenate([*validation.heldout, *validation.background]))
    seed_emb = embed_encoded(model, features.rows(seed_rows), "query")
    candidate_emb = embed_encoded(model, features.rows(candidate_rows), "candidate")
    return [
        heldout_recall(
            seed_emb[np.searchsorted(seed_rows, seeds)],
            candidate_emb[np.searchsorted(candidate_rows, heldout)],
            candidate_emb[np.searchsorted(candidate_rows, background)],
            top_fraction=tc.validation_top_fraction,
            top_m=tc.validation_top_m,
        )
        for seeds, heldout, background in zip(
            validation.seeds, validation.heldout, validation.background, strict=True
        )
    ]


def _record_epoch(
    state: TrainState,
    model: TwoTowerEncoder,
    best_weights: dict[str, Tensor],
    epoch: dict[str, Any],
) -> dict[str, Tensor]:
    """Append the epoch to the history; return the best weights so far (this epoch's if better)."""
    recall = float(np.mean(list(epoch["recall_by_type"].values())))
    state.history.append({"epoch": state.epoch, "recall": recall, **epoch})
    if recall > state.best_recall:
        state.best_recall, state.best_epoch, state.epochs_without_gain = recall, state.epoch, 0
        return copy.deepcopy(model.state_dict())
    state.epochs_without_gain += 1
    return best_weights


def _stop_reason(state: TrainState, tc: TrainConfig) -> str | None:
    if state.epoch >= tc.epochs:
        return f"reached {tc.epochs} epochs"
    if state.epochs_without_gain >= tc.patience:
        return f"no validation gain for {tc.patience} epochs"
    if state.history and (
        state.elapsed_seconds + _epoch_seconds(state.history[-1]) > tc.time_budget_seconds
    ):
        return f"another epoch would exceed the time budget of {tc.time_budget_seconds:g}s"
    return None


def _epoch_line(state: TrainState, tc: TrainConfig) -> str:
    """The epoch's figures, the time so far and an ETA: the remaining epochs at this run's pace,
    within the time budget (early stopping may end training sooner)."""
    last = state.history[-1]
    budget_left = max(0.0, tc.time_budget_seconds - state.elapsed_seconds)
    epochs = min(tc.epochs, state.epoch + math.floor(budget_left / max(_epoch_seconds(last), 1e-6)))
    return (
        f"epoch {state.epoch}/{tc.epochs}: loss {last['loss']:.4f}, held-out recall in top "
        f"{tc.validation_top_fraction:.0%} {last['recall']:.3f} (best {state.best_recall:.3f} "
        f"at epoch {state.best_epoch}), {state.elapsed_seconds:.1f}s"
        f"{eta(state.epoch, epochs, state.elapsed_seconds)}"
    )


def _epoch_seconds(epoch: dict[str, Any]) -> float:
    return epoch["train_seconds"] + epoch["validation_seconds"]


def _run_fingerprint(
    config: LookalikeConfig, spec_path: Path, features_path: Path, conversions_path: Path
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the data and the settings that shape training."""
    return {
        "model": config.model.model_dump(mode="json"),
        "train": config.train.model_dump(mode="json", exclude=RESUMABLE_SETTINGS),
        "spec_sha256": sha256_file(spec_path),
        "features_sha256": sha256_file(features_path),
        "conversions_sha256": sha256_file(conversions_path),
    }


def _start_state(
    checkpoints: Path,
    run_id: dict[str, Any],
    model: TwoTowerEncoder,
    optimizer: torch.optim.Optimizer,
    resume: bool,
    say: Progress,
) -> tuple[TrainState, dict[str, Tensor]]:
    """Load the last checkpoint when resuming one of this run; otherwise a fresh state."""
    state_path = checkpoints / STATE_FILE
    if resume and state_path.is_file():
        saved = read_json(state_path)
        if saved["run"] == run_id:
            say(f"resuming after epoch {saved['state']['epoch']} from {checkpoints}")
            return _load_checkpoint(checkpoints, saved, model, optimizer)
        say(f"ignoring checkpoints in {checkpoints}: they belong to other data or settings")
    state_path.unlink(missing_ok=True)
    _prune_checkpoints(checkpoints, keep=set())
    return TrainState(), copy.deepcopy(model.state_dict())


def _load_checkpoint(
    checkpoints: Path,
    saved: dict[str, Any],
    model: TwoTowerEncoder,
    optimizer: torch.optim.Optimizer,
) -> tuple[TrainState, dict[str, Tensor]]:
    files, sha256 = saved["files"], saved["sha256"]
    model.load_state_dict(read_weights(checkpoints / files["model"], sha256["model"]))
    verify_checksum(checkpoints / files["optimizer"], sha256["optimizer"])
    optimizer.load_state_dict(torch.load(checkpoints / files["optimizer"], weights_only=True))
    best_weights = read_weights(checkpoints / files["best"], sha256["best"])
    return TrainState(**saved["state"]), best_weights


def _save_checkpoint(
    checkpoints: Path,
    run_id: dict[str, Any],
    model: TwoTowerEncoder,
    optimizer: torch.optim.Optimizer,
    best_weights: dict[str, Tensor],
    state: TrainState,
) -> None:
    """Write this epoch's files, then the state that names them (the commit), then prune."""
    files = {
        "model": f"epoch-{state.epoch:04d}.safetensors",
        "optimizer": f"epoch-{state.epoch:04d}-optimizer.pt",
        "best": f"best-{state.best_epoch:04d}.safetensors",
    }
    sha256 = {"model": save_weights(model.state_dict(), checkpoints / files["model"])}
    with atomic_write(checkpoints / files["optimizer"]) as tmp:
        torch.save(optimizer.state_dict(), tmp)
    sha256["optimizer"] = sha256_file(checkpoints / files["optimizer"])
    best_path = checkpoints / files["best"]
    if state.best_epoch == state.epoch or not best_path.is_file():
        save_weights(best_weights, best_path)
    sha256["best"] = sha256_file(best_path)
    write_json(
        checkpoints / STATE_FILE,
        {"run": run_id, "files": files, "sha256": sha256, "state": asdict(state)},
    )
    _prune_checkpoints(checkpoints, keep=set(files.values()))


def _prune_checkpoints(checkpoints: Path, keep: set[str]) -> None:
    for path in [*checkpoints.glob("epoch-*"), *checkpoints.glob("best-*")]:
        if path.name not in keep:
            path.unlink()


def memorization(
    model: TwoTowerEncoder, data: TrainingData, validation: ValidationSet, spec: FeatureSpec,
    tc: TrainConfig,
) -> dict[str, dict[str, Any]]:
    """Per trained type: has the encoder memorized its training converters?

    Up to ``validation_max_seeds`` of the type's training converters against as many of its
    held-out converters, in the embedding and on the raw features, measured and judged by
    :func:`lookalike.encoder.health.memorization_figures` (the measure the evaluation reports):
    flagged when the embedding's interval reaches above ``tc.memorization_limit`` and the
    embedding scores above the raw features. The encoder then put *these* users somewhere new
    converters do not follow, and an audience built on them in the embedding would find fewer new
    converters than its seeds suggest. ``None`` figures: fewer than ``tc.memorization_min_heldout``
    held-out converters, too few to judge.
    """
    rng = _rng(tc.seed, MEMORIZATION_STREAM)
    figures = {}
    for name, train_rows, heldout in zip(data.types, validation.train, validation.heldout,
                                         strict=True):
        seeds = _sorted_sample(train_rows, tc.validation_max_seeds, rng)
        heldout = _sorted_sample(heldout, tc.validation_max_seeds, rng)  # the evaluation's cap too
        rows = np.concatenate([seeds, heldout])
        if len(heldout) < tc.memorization_min_heldout:
            figures[name] = {"embedding": None, "raw": None, "heldout": len(heldout),
                             "flagged": False}
            continue
        encoded = data.features.rows(rows)
        embedding = embed_encoded(model, encoded, "candidate")
        raw = raw_feature_vectors(encoded, spec.cardinalities)
        n = len(seeds)
        figures[name] = memorization_figures((embedding[:n], embedding[n:]), (raw[:n], raw[n:]),
                                             tc.memorization_limit, tc.seed)
    return figures


def _health(
    model: TwoTowerEncoder, data: TrainingData, validation: ValidationSet, tc: TrainConfig
) -> EmbeddingHealth:
    """Health of a population sample; alignment of held-out converters with same-type seeds."""
    rng = _rng(tc.seed, HEALTH_STREAM)
    n = len(data.population_rows)
    sample = data.population_rows[rng.choice(n, size=min(n, tc.health_sample), replace=False)]
    embeddings = embed_encoded(model, data.features.rows(np.sort(sample)), "candidate")
    seeds = np.concatenate(
        [
            rng.choice(train, size=len(heldout))
            for train, heldout in zip(validation.train, validation.heldout, strict=True)
        ]
    )
    heldout = np.concatenate(validation.heldout)
    pairs = (
        embed_encoded(model, data.features.rows(seeds), "query"),
        embed_encoded(model, data.features.rows(heldout), "candidate"),
    )
    return embedding_health(embeddings, pairs)


def _write_model(
    out_dir: Path,
    model: TwoTowerEncoder,
    spec_path: Path,
    config: LookalikeConfig,
    data: TrainingData,
    validation: ValidationSet,
    state: TrainState,
    stop_reason: str,
    health: EmbeddingHealth,
    memorized: dict[str, dict[str, Any]],
) -> TrainResult:
    best = next(h for h in state.history if h["epoch"] == state.best_epoch)
    converters = {
        name: {"train": len(train), "heldout": len(heldout)}
        for name, train, heldout in zip(
            data.types, validation.train, validation.heldout, strict=True
        )
    }
    metrics = {
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "stop_reason": stop_reason,
        "validation_recall": state.best_recall,
        "validation_recall_by_type": best["recall_by_type"],
        "elapsed_seconds": state.elapsed_seconds,
        "history": state.history,
    }
    manifest = save_model(
        model,
        out_dir,
        spec_sha256=sha256_file(spec_path),
        metadata={
            "train_config": config.train.model_dump(mode="json"),
            "conversion_types": data.types,
            "held_back_types": config.train.held_back_types,
            "skipped_types": data.skipped_types,
            "converters": converters,
            "ignored_converters": data.ignored_converters,
            "population": {"users": data.population, "read": len(data.features)},
            "metrics": metrics,
            "health": health.to_json(),
            "memorization": memorized,
        },
    )
    return TrainResult(
        model_dir=out_dir,
        weights=out_dir / WEIGHTS_FILE,
        manifest=out_dir / MANIFEST_FILE,
        model_build_id=manifest["model_build_id"],
        best_epoch=state.best_epoch,
        epochs_run=state.epoch,
        stop_reason=stop_reason,
        validation_recall=state.best_recall,
        validation_recall_by_type=best["recall_by_type"],
        converters=converters,
        memorization=memorized,
        ignored_converters=data.ignored_converters,
        health=health,
        elapsed_seconds=state.elapsed_seconds,
    )

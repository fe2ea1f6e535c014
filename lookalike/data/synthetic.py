"""Synthetic first-party data (events, profiles, conversions) with a known, hidden latent model.

Every user ``i`` has a latent vector ``u_i ~ N(0, I_5)`` and an activity level
``exp(N(0, 1) - 1/2)`` (lognormal, mean 1, heavy tail). Conversion type ``t`` happens with probability
``sigmoid(a_t + w_t . u_i)``, independently per type, at a uniform time in
``[as_of, as_of + 60 days)``. The types load on different latent directions, each with
``|w_t| = 1.2 * sqrt(2)`` (the true latent ranks each type with AUC about 0.87):

=================  ============  ===========  ==========================================
type               target rate   weights      note
=================  ============  ===========  ==========================================
subscribe          2.5%          u0 + u1
premium_upgrade    1.5%          u2 - u3
loyalty_join       1.0%          u1 - u3
card_signup        0.8%          u0 + u2      held back; = subscribe + premium - loyalty
=================  ============  ===========  ==========================================

(each ``u`` term with weight 1.2). The held-back direction lies in the span of the three training
directions but has cosine 0.5, 0.5 and 0 with each of them: a model that learned all three
generalizes to it, one fitted to a single type does not. About 5.7% of users convert to at least
one type. The intercepts ``a_t`` are solved exactly (Gauss-Hermite quadrature) so that the
population rates hit the targets.

The signal lives in a few places only; everything else is noise with large variance or heavy tails,
so nearest neighbours in raw standardized feature space are dominated by noise:

* ``u0``: rate of ``wishlist_add`` events, profile ``age``.
* ``u1``: rate of ``coupon_click`` events, profile ``region_code`` (one of its two bins).
* ``u2``: category mix of shopping events (``product_view``, ``add_to_cart``, ``purchase``) and
  ``region_code`` (the other bin).
* ``u3``: rate of ``review_write`` events, category mix, profile ``tenure_days``.
* ``u4``: a distractor that no conversion depends on: rate of ``video_view`` and profile ``device``.

``region_code`` (1..60) is ``REGION_CODES[6 * bin10(u1 + e) + bin6(u2 + e')]`` with a seed-dependent
permutation, so its integer order means nothing: it must be treated as a categorical code.
The category mix: with probability 0.35 a shopping event is in the user's preferred category, one of
8 chosen by the angle of ``(u2, u3)``; otherwise categories follow a Zipf-like base distribution.
Event counts are ``Poisson(events_per_user * activity * share * exp(loading . u - |loading|^2/2))``
per event type, so the total count tracks activity, which no conversion depends on.

Time ranges: event times are uniform in ``[as_of - 365 days, as_of + 30 days)`` (the table was
extracted 30 days after ``as_of``: about 7.6% of the events lie at or after ``as_of`` and must be
ignored by point-in-time features). As a leakage trap, every conversion before that extraction
also emits a ``purchase`` event at its conversion time: a pipeline that reads events at or after
``as_of`` sees the label and evaluates suspiciously well.

User ids are ``10_000_000_000 + (i * 2654435761 mod 2**32)`` for ``i`` in ``0..n_users-1``: unique,
scattered, not contiguous and not sorted, so code that confuses ids with row positions fails.
Users are generated in fixed blocks of :data:`BLOCK_USERS`, each with its own random stream seeded
by ``(seed, block)``, so the data does not depend on ``chunk_users`` (only memory use and the
Parquet row-group layout do).

Throughput (``benchmarks/bench_synthetic.py --users 200000``, one thread, on the shared 2-core
machine at load average 4.7): 10.0M events, 147 MiB of Parquet in 5.0 s = 2.0M events/s, peak RSS
660 MiB; writing the same tables alone takes 2.45 s, so half of the time is Parquet I/O.

Files (Parquet, row groups of at most 1M rows, strings read back as plain strings):

* ``events.parquet``: ``user_id`` int64, ``event_time`` timestamp[us, UTC], ``event_type`` string,
  ``item_id`` int64 and ``category`` string (null for events without an item), ``value`` float64
  (null except on ``add_to_cart`` and ``purchase``). Rows are grouped by user, not sorted by time.
* ``profiles.parquet``: ``user_id`` and 22 attributes (signal, distractor and noise columns above
  and in ``truth.json``), with 3-18% nulls in nine columns.
* ``conversions.parquet``: ``user_id``, ``conversion_type`` string, ``conversion_time``
  timestamp[us, UTC]; at most one row per user and type.
* ``truth.parquet``: ``user_id``, ``latent_0..4``, ``activity``, ``p_<type>`` for each type.
* ``truth.json``: the generating parameters; ``config.yaml``: a sample pipeline config.

Example::

    from pathlib import Path
    from lookalike.data.synthetic import generate

    data = generate(Path("/tmp/demo"), 20_000, seed=1)
    print(data.events, data.n_events)
"""

from __future__ import annotations

import contextlib
import functools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from lookalike.core.artifacts import atomic_write, write_json
from lookalike.core.errors import LookalikeError

DEFAULT_AS_OF = datetime(2026, 1, 1, tzinfo=UTC)
LATENT_DIM = 5
BLOCK_USERS = 10_000
ROW_GROUP_ROWS = 1_000_000
HISTORY_DAYS = 365
EVENTS_AFTER_AS_OF_DAYS = 30
CONVERSION_WINDOW_DAYS = 60
USER_ID_OFFSET = 10_000_000_000
USER_ID_MULTIPLIER = 2_654_435_761
MAX_USERS = 2**32
ACTIVITY_SIGMA = 1.0
PREFERRED_CATEGORY_PROBABILITY = 0.35
REGION_BINS = (10, 6)  # bins of (u1 + noise) x bins of (u2 + noise) = 60 region codes
REGION_NOISE = 0.7
_US_PER_DAY = 86_400 * 1_000_000
_BLOCK_STREAM = 1
_WORLD_STREAM = 2


@dataclass(frozen=True)
class EventType:
    """An event type: its share of an average user's events and its latent loading."""

    name: str
    share: float
    loading: tuple[float, ...] = (0.0,) * LATENT_DIM
    has_item: bool = False
    has_value: bool = False
    shopping: bool = False


@dataclass(frozen=True)
class ConversionType:
    """A conversion type: target population rate and latent weights ``w_t``."""

    name: str
    rate: float
    weights: tuple[float, ...]


EVENT_TYPES: tuple[EventType, ...] = (
    EventType("page_view", 0.28),
    EventType("product_view", 0.20, has_item=True, shopping=True),
    EventType("search", 0.10),
    EventType("add_to_cart", 0.06, has_item=True, has_value=True, shopping=True),
    EventType("purchase", 0.03, has_item=True, has_value=True, shopping=True),
    EventType("app_open", 0.10),
    EventType("newsletter_open", 0.05),
    EventType("wishlist_add", 0.03, (0.6, 0, 0, 0, 0), has_item=True),
    EventType("coupon_click", 0.03, (0, 0.6, 0, 0, 0)),
    EventType("review_write", 0.02, (0, 0, 0, 0.7, 0), has_item=True),
    EventType("video_view", 0.05, (0, 0, 0, 0, 0.6)),
    EventType("support_chat", 0.01),
    EventType("share", 0.04, has_item=True),
)
CONVERSION_TYPES: tuple[ConversionType, ...] = (
    ConversionType("subscribe", 0.025, (1.2, 1.2, 0, 0, 0)),
    ConversionType("premium_upgrade", 0.015, (0, 0, 1.2, -1.2, 0)),
    ConversionType("loyalty_join", 0.010, (0, 1.2, 0, -1.2, 0)),
    ConversionType("card_signup", 0.008, (1.2, 0, 1.2, 0, 0)),  # = subscribe + premium - loyalty
)
HELD_BACK_TYPE = "card_signup"
_HAS_ITEM = np.array([t.has_item for t in EVENT_TYPES])
_HAS_VALUE = np.array([t.has_value for t in EVENT_TYPES])
_SHOPPING = np.array([t.shopping for t in EVENT_TYPES])
_PURCHASE = next(i for i, t in enumerate(EVENT_TYPES) if t.name == "purchase")
CATEGORIES: tuple[str, ...] = (
    "electronics", "fashion", "home", "beauty", "sports", "toys", "books", "grocery",
    "garden", "automotive", "music", "movies", "pets", "health", "jewelry", "office",
    "baby", "tools", "travel", "crafts",
)  # fmt: skip
N_AFFINITY_CATEGORIES = 8
SIGNAL_PROFILE_COLUMNS = {"age": "u0", "region_code": "u1, u2", "tenure_days": "u3"}
DISTRACTOR_PROFILE_COLUMNS = {"device": "u4"}
NOISE_PROFILE_COLUMNS = [
    "browser", "acquisition_channel", "language", "plan_code", "store_code", "email_opt_in",
    "push_enabled", "is_business", *(f"attr_{k:02d}" for k in range(10)),
]  # fmt: skip
CATEGORICAL_INT_COLUMNS = ("region_code", "plan_code", "store_code")
_DEVICES = ("android", "ios", "desktop", "tablet")
_BROWSERS = ("chrome", "safari", "firefox", "edge", "samsung", "opera")
_CHANNELS = ("organic", "paid_search", "social", "email", "referral", "affiliate", "tv", "other")
_LANGUAGES = ("en", "es", "de", "fr", "it", "pt", "nl", "pl", "sv", "ja")


@dataclass(frozen=True)
class GeneratedData:
    """Paths of the generated files and their row counts."""

    events: Path
    profiles: Path
    conversions: Path
    truth: Path
    truth_json: Path
    config: Path
    n_users: int
    n_events: int
    n_conversions: int


@dataclass(frozen=True)
class _Settings:
    """Run-wide inputs shared by every block."""

    seed: int
    events_per_user: float
    as_of_us: int
    intercepts: np.ndarray  # [n_types]
    weights: np.ndarray  # [n_types, LATENT_DIM]
    region_codes: np.ndarray  # [60] code of each (u1 bin, u2 bin) cell
    affinity_categories: np.ndarray  # [8] category index preferred by each (u2, u3) sector
    base_category_cdf: np.ndarray  # [n_categories]


def generate(
    out_dir: Path,
    n_users: int,
    *,
    events_per_user: float = 50.0,
    seed: int = 0,
    chunk_users: int = 200_000,
    as_of: datetime = DEFAULT_AS_OF,
    progress: Callable[[str], None] | None = None,
) -> GeneratedData:
    """Write synthetic events, profiles, conversions, ground truth and a sample config to ``out_dir``.

    ``events_per_user`` is the mean event count of a user (activity is lognormal, so the median is
    lower). ``chunk_users`` users are generated and written per batch (rounded up to whole blocks of
    :data:`BLOCK_USERS`); it bounds memory and shapes row groups but never changes the data, which
    depends only on ``n_users``, ``events_per_user``, ``seed`` and ``as_of``. ``progress`` receives
    one line per batch. Every file is written atomically.
    """
    _check_arguments(n_users, events_per_user, chunk_users, as_of)
    out_dir = Path(out_dir)
    settings = _settings(seed, events_per_user, as_of)
    paths = {name: out_dir / f"{name}.parquet" for name in ("events", "profiles", "conversions", "truth")}
    blocks_per_batch = math.ceil(chunk_users / BLOCK_USERS)
    n_blocks = math.ceil(n_users / BLOCK_USERS)
    totals = {name: 0 for name in paths}
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        temps = {name: stack.enter_context(atomic_write(path)) for name, path in paths.items()}
        writers: dict[str, pq.ParquetWriter] = {}
        for first in range(0, n_blocks, blocks_per_batch):
            blocks = [
                _generate_block(settings, b, min(BLOCK_USERS, n_users - b * BLOCK_USERS))
                for b in range(first, min(first + blocks_per_batch, n_blocks))
            ]
            for name in paths:
                table = pa.concat_tables([block[name] for block in blocks])
                if name not in writers:  # closed by the stack before its atomic rename
                    writer = pq.ParquetWriter(temps[name], table.schema, store_schema=False)
                    writers[name] = stack.enter_context(writer)
                writers[name].write_table(table, row_group_size=ROW_GROUP_ROWS)
                totals[name] += table.num_rows
            if progress is not None:
                progress(
                    f"users {totals['profiles']:,}/{n_users:,}, events {totals['events']:,} "
                    f"({time.perf_counter() - started:.1f} s)"
                )
    truth_json = write_json(out_dir / "truth.json", _truth_document(settings, n_users, as_of))
    config = _write_sample_config(out_dir / "config.yaml")
    return GeneratedData(
        events=paths["events"],
        profiles=paths["profiles"],
        conversions=paths["conversions"],
        truth=paths["truth"],
        truth_json=truth_json,
        config=config,
        n_users=n_users,
        n_events=totals["events"],
        n_conversions=totals["conversions"],
    )


def user_ids(index: np.ndarray) -> np.ndarray:
    """The user id of each user index (a bijection of ``0..2**32-1`` onto scattered int64 ids)."""
    index = np.asarray(index, dtype=np.uint64)
    return (index * np.uint64(USER_ID_MULTIPLIER) % np.uint64(MAX_USERS)).astype(np.int64) + USER_ID_OFFSET


def intercept_for_rate(rate: float, weight_norm: float) -> float:
    """The ``a`` with ``E[sigmoid(a + weight_norm * z)] = rate`` for ``z ~ N(0, 1)``.

    Since ``u ~ N(0, I)``, ``w . u`` is ``N(0, |w|^2)``: the expectation is a one-dimensional
    Gauss-Hermite quadrature, and it increases with ``a``, so bisection finds the intercept.
    """
    nodes, node_weights = _standard_normal_quadrature()

    def mean_probability(a: float) -> float:
        return float(node_weights @ _sigmoid(a + weight_norm * nodes))

    low, high = -40.0, 40.0
    for _ in range(200):
        mid = 0.5 * (low + high)
        low, high = (mid, high) if mean_probability(mid) < rate else (low, mid)
    return 0.5 * (low + high)


@functools.cache
def _standard_normal_quadrature(degree: int = 101) -> tuple[np.ndarray, np.ndarray]:
    nodes, weights = np.polynomial.hermite_e.hermegauss(degree)
    return nodes, weights / weights.sum()


def _check_arguments(n_users: int, events_per_user: float, chunk_users: int, as_of: datetime) -> None:
    if not 1 <= n_users <= MAX_USERS:
        raise LookalikeError(f"--users must be between 1 and {MAX_USERS:,}, got {n_users:,}")
    if not (events_per_user >= 0 and math.isfinite(events_per_user)):
        raise LookalikeError(f"--events-per-user must be a finite number >= 0, got {events_per_user}")
    if chunk_users < 1:
        raise LookalikeError(f"chunk_users must be at least 1, got {chunk_users}")
    if as_of.tzinfo is None:
        raise LookalikeError(f"as_of {as_of} has no time zone; pass an aware datetime, e.g. in UTC")


def _settings(seed: int, events_per_user: float, as_of: datetime) -> _Settings:
    world = np.random.default_rng([_WORLD_STREAM, seed])
    weights = np.array([t.weights for t in CONVERSION_TYPES], dtype=np.float64)
    intercepts = np.array(
        [intercept_for_rate(t.rate, float(np.linalg.norm(w))) for t, w in zip(CONVERSION_TYPES, weights)]
    )
    zipf = 1.0 / np.arange(1, len(CATEGORIES) + 1)
    base = world.permutation(zipf) / zipf.sum()
    return _Settings(
        seed=seed,
        events_per_user=events_per_user,
        as_of_us=_epoch_us(as_of),
        intercepts=intercepts,
        weights=weights,
        region_codes=world.permutation(math.prod(REGION_BINS)) + 1,
        affinity_categories=world.choice(len(CATEGORIES), N_AFFINITY_CATEGORIES, replace=False),
        base_category_cdf=np.cumsum(base),
    )


def _epoch_us(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _generate_block(settings: _Settings, block: int, n: int) -> dict[str, pa.Table]:
    """All four tables for users ``block * BLOCK_USERS`` .. ``+ n``, from the block's own stream."""
    rng = np.random.default_rng([_BLOCK_STREAM, settings.seed, block])
    ids = user_ids(np.arange(block * BLOCK_USERS, block * BLOCK_USERS + n))
    latent = rng.standard_normal((n, LATENT_DIM))
    activity = np.exp(ACTIVITY_SIGMA * rng.standard_normal(n) - ACTIVITY_SIGMA**2 / 2)
    probabilities = _sigmoid(settings.intercepts + latent @ settings.weights.T)
    preferred = settings.affinity_categories[_sector(latent[:, 2], latent[:, 3])]
    conversions = _conversions(rng, settings, probabilities)
    return {
        "events": _events(rng, settings, ids, latent, activity, preferred, conversions),
        "profiles": _profiles(rng, settings, ids, latent),
        "conversions": pa.table(
            {
                "user_id": ids[conversions["user"]],
                "conversion_type": _strings(conversions["type"], [t.name for t in CONVERSION_TYPES]),
                "conversion_time": _timestamps(conversions["time"]),
            },
        ),
        "truth": _truth_table(ids, latent, activity, probabilities),
    }


def _sector(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Which of N_AFFINITY_CATEGORIES equal angular sectors each point (x, y) lies in."""
    fraction = (np.arctan2(y, x) + np.pi) / (2 * np.pi)
    return np.minimum((fraction * N_AFFINITY_CATEGORIES).astype(np.int64), N_AFFINITY_CATEGORIES - 1)


def _conversions(
    rng: np.random.Generator, settings: _Settings, probabilities: np.ndarray
) -> dict[str, np.ndarray]:
    """Independent Bernoulli draws per (user, type); rows ordered by user, then type."""
    user, kind = np.nonzero(rng.random(probabilities.shape) < probabilities)
    offset = rng.integers(0, CONVERSION_WINDOW_DAYS * _US_PER_DAY, user.size)
    return {"user": user, "type": kind, "time": settings.as_of_us + offset}


def _events(
    rng: np.random.Generator,
    settings: _Settings,
    ids: np.ndarray,
    latent: np.ndarray,
    activity: np.ndarray,
    preferred: np.ndarray,
    conversions: dict[str, np.ndarray],
) -> pa.Table:
    user, kind, event_time = _behaviour(rng, settings, latent, activity)
    trap = conversions["time"] < settings.as_of_us + EVENTS_AFTER_AS_OF_DAYS * _US_PER_DAY
    user = np.concatenate([user, conversions["user"][trap]])
    kind = np.concatenate([kind, np.full(int(trap.sum()), _PURCHASE, dtype=np.int8)])
    event_time = np.concatenate([event_time, conversions["time"][trap]])
    items = np.flatnonzero(_HAS_ITEM[kind])
    category = _categories(rng, settings, kind[items], preferred[user[items]])
    popularity = rng.random(items.size)
    rank = (100_000 * popularity * popularity * popularity).astype(np.int64)  # cubed: a few items dominate
    item_id = 1_000_000 + category * 100_000 + rank
    return pa.table(
        {
            "user_id": ids[user],
            "event_time": _timestamps(event_time),
            "event_type": _strings(kind, [t.name for t in EVENT_TYPES]),
            "item_id": _scatter(item_id, items, kind.size),
            "category": _strings(_scatter(category.astype(np.int32), items, kind.size), CATEGORIES),
            "value": _purchase_values(rng, kind),
        }
    )


def _behaviour(
    rng: np.random.Generator, settings: _Settings, latent: np.ndarray, activity: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """User index, event type index and time of every event, grouped by user then type."""
    shares = np.array([t.share for t in EVENT_TYPES])
    loadings = np.array([t.loading for t in EVENT_TYPES], dtype=np.float64)
    # exp(l.u - |l|^2/2) has mean 1, so `share` stays each type's population share of events.
    multiplier = np.exp(latent @ loadings.T - 0.5 * (loadings**2).sum(axis=1))
    counts = rng.poisson(settings.events_per_user * activity[:, None] * shares * multiplier)
    n_users = latent.shape[0]
    user = np.repeat(np.arange(n_users), counts.sum(axis=1))
    kind = np.repeat(np.tile(np.arange(len(EVENT_TYPES), dtype=np.int8), n_users), counts.ravel())
    start = settings.as_of_us - HISTORY_DAYS * _US_PER_DAY
    span = (HISTORY_DAYS + EVENTS_AFTER_AS_OF_DAYS) * _US_PER_DAY
    return user, kind, start + rng.integers(0, span, user.size)


def _scatter(values: np.ndarray, positions: np.ndarray, size: int) -> pa.Array:
    """An array of ``size`` nulls with ``values`` at ``positions``."""
    full = np.zeros(size, dtype=values.dtype)
    full[positions] = values
    mask = np.ones(size, dtype=bool)
    mask[positions] = False
    return pa.array(full, mask=mask)


def _categories(
    rng: np.random.Generator, settings: _Settings, kind: np.ndarray, preferred: np.ndarray
) -> np.ndarray:
    """Base-distribution categories, replaced by the preferred one for some shopping events."""
    base = np.searchsorted(settings.base_category_cdf, rng.random(kind.size), side="right")
    base = np.minimum(base, len(CATEGORIES) - 1)
    takes_preferred = _SHOPPING[kind] & (rng.random(kind.size) < PREFERRED_CATEGORY_PROBABILITY)
    return np.where(takes_preferred, preferred, base)


def _purchase_values(rng: np.random.Generator, kind: np.ndarray) -> pa.Array:
    """Lognormal amounts (heavy right tail) on purchase-like events, null elsewhere."""
    priced = np.flatnonzero(_HAS_VALUE[kind])
    return _scatter(np.round(rng.lognormal(3.5, 1.1, priced.size), 2), priced, kind.size)


def _profiles(
    rng: np.random.Generator, settings: _Settings, ids: np.ndarray, latent: np.ndarray
) -> pa.Table:
    n = ids.size
    age = np.clip(np.round(42 + 7 * latent[:, 0] + 11 * rng.standard_normal(n)), 18, 90)
    tenure = np.minimum(np.round(np.exp(5.8 + 0.5 * latent[:, 3] + 0.9 * rng.standard_normal(n))), 7300)
    columns: dict[str, pa.Array] = {
        "user_id": pa.array(ids),
        "age": _nullable(rng, age.astype(np.int64), 0.10),
        "region_code": _nullable(rng, _region_codes(rng, settings, latent), 0.03),
        "tenure_days": pa.array(tenure.astype(np.int64)),
        "device": _strings(_device(rng, latent[:, 4]), _DEVICES),
    }
    return pa.table(columns | _noise_profile_columns(rng, n))


def _noise_profile_columns(rng: np.random.Generator, n: int) -> dict[str, pa.Array]:
    """Columns independent of everything: skewed categoricals, booleans, wide or heavy-tailed numbers."""
    normal = rng.standard_normal
    browser = rng.choice(len(_BROWSERS), n, p=[0.45, 0.25, 0.1, 0.1, 0.06, 0.04])
    language = rng.choice(len(_LANGUAGES), n, p=_zipf(len(_LANGUAGES)))
    return {
        "browser": _strings(browser, _BROWSERS, mask=rng.random(n) < 0.12),
        "acquisition_channel": _strings(rng.integers(0, len(_CHANNELS), n), _CHANNELS),
        "language": _strings(language, _LANGUAGES, mask=rng.random(n) < 0.06),
        "plan_code": _nullable(rng, rng.integers(1, 9, n), 0.07),
        "store_code": pa.array(rng.choice(400, n, p=_zipf(400)) + 1),
        "email_opt_in": pa.array(rng.random(n) < 0.6),
        "push_enabled": _nullable(rng, rng.random(n) < 0.3, 0.08),
        "is_business": pa.array(rng.random(n) < 0.04),
        "attr_00": pa.array(normal(n)),
        "attr_01": _nullable(rng, 500 + 50 * normal(n), 0.15),
        "attr_02": pa.array(1_000 * normal(n)),
        "attr_03": pa.array(-2e4 + 5e4 * normal(n)),
        "attr_04": pa.array(rng.lognormal(0.0, 1.5, n)),
        "attr_05": _nullable(rng, rng.lognormal(2.0, 2.0, n), 0.18),
        "attr_06": pa.array(rng.lognormal(-1.0, 2.5, n)),
        "attr_07": pa.array(100 * rng.standard_t(1.5, n)),
        "attr_08": _nullable(rng, rng.negative_binomial(0.5, 0.05, n), 0.09),
        "attr_09": pa.array(rng.poisson(3.0, n)),
    }


def _zipf(k: int) -> np.ndarray:
    weights = 1.0 / np.arange(1, k + 1)
    return weights / weights.sum()


def _region_codes(rng: np.random.Generator, settings: _Settings, latent: np.ndarray) -> np.ndarray:
    """Code of the cell of (binned u1 + noise, binned u2 + noise); bins are equal-probability."""
    cells = np.zeros(latent.shape[0], dtype=np.int64)
    for dim, bins in zip((1, 2), REGION_BINS):
        noisy = latent[:, dim] + REGION_NOISE * rng.standard_normal(latent.shape[0])
        cutpoints = _normal_cutpoints(bins, math.hypot(1.0, REGION_NOISE))
        cells = cells * bins + np.searchsorted(cutpoints, noisy)
    return settings.region_codes[cells]


def _normal_cutpoints(bins: int, sigma: float) -> np.ndarray:
    return np.array([statistics.NormalDist(0.0, sigma).inv_cdf(k / bins) for k in range(1, bins)])


def _device(rng: np.random.Generator, distractor: np.ndarray) -> np.ndarray:
    """Mobile (android/ios) users lean to positive u4, desktop/tablet to negative."""
    mobile = rng.random(distractor.size) < _sigmoid(1.5 * distractor)
    second = rng.random(distractor.size) < 0.4
    return np.where(mobile, 0, 2) + second


def _nullable(rng: np.random.Generator, values: np.ndarray, null_fraction: float) -> pa.Array:
    return pa.array(values, mask=rng.random(values.size) < null_fraction)


def _strings(
    codes: np.ndarray | pa.Array, names: list[str] | tuple[str, ...], mask: np.ndarray | None = None
) -> pa.Array:
    """Strings ``names[code]`` (null where ``mask`` or the code is null), dictionary-encoded.

    Parquet stores strings dictionary-encoded anyway; handing the writer the dictionary skips
    building and hashing every string. Files are written without the Arrow schema, so readers
    (pyarrow, polars, duckdb) see plain strings.
    """
    if not isinstance(codes, pa.Array):
        codes = pa.array(codes.astype(np.int32, copy=False), mask=mask)
    return pa.DictionaryArray.from_arrays(codes, pa.array(list(names), pa.string()))


def _timestamps(epoch_us: np.ndarray) -> pa.Array:
    return pa.array(epoch_us.astype(np.int64)).cast(pa.timestamp("us", tz="UTC"))


def _truth_table(
    ids: np.ndarray, latent: np.ndarray, activity: np.ndarray, probabilities: np.ndarray
) -> pa.Table:
    columns = {"user_id": ids}
    columns |= {f"latent_{k}": latent[:, k] for k in range(LATENT_DIM)}
    columns["activity"] = activity
    columns |= {f"p_{t.name}": probabilities[:, j] for j, t in enumerate(CONVERSION_TYPES)}
    return pa.table(columns)


def _truth_document(settings: _Settings, n_users: int, as_of: datetime) -> dict[str, object]:
    as_of_utc = as_of.astimezone(UTC)
    return {
        "generator": "lookalike.data.synthetic",
        "seed": settings.seed,
        "n_users": n_users,
        "events_per_user": settings.events_per_user,
        "as_of": as_of_utc.isoformat(),
        "events_time_range": [
            (as_of_utc - timedelta(days=HISTORY_DAYS)).isoformat(),
            (as_of_utc + timedelta(days=EVENTS_AFTER_AS_OF_DAYS)).isoformat(),
        ],
        "events_after_as_of_share": EVENTS_AFTER_AS_OF_DAYS / (HISTORY_DAYS + EVENTS_AFTER_AS_OF_DAYS),
        "conversion_time_range": [
            as_of_utc.isoformat(),
            (as_of_utc + timedelta(days=CONVERSION_WINDOW_DAYS)).isoformat(),
        ],
        "leakage_trap": "every conversion before the events extraction (as_of + 30 days) also emits a "
        "purchase event at its conversion time; features must use events strictly before as_of",
        "user_ids": f"{USER_ID_OFFSET} + (i * {USER_ID_MULTIPLIER} mod 2**32), i = 0..n_users-1",
        "latent_dim": LATENT_DIM,
        "latent_distribution": "u ~ N(0, I); activity = exp(N(0, 1) - 1/2)",
        "conversion_model": "P(type t) = sigmoid(intercept_t + weights_t . u), independent per type",
        "conversion_types": [
            {**asdict(t), "intercept": float(a)} for t, a in zip(CONVERSION_TYPES, settings.intercepts)
        ],
        "held_back_type": HELD_BACK_TYPE,
        "event_types": [asdict(t) for t in EVENT_TYPES],
        "signal_event_types": {t.name: _loaded_dims(t.loading) for t in EVENT_TYPES if any(t.loading)},
        "signal_profile_columns": SIGNAL_PROFILE_COLUMNS,
        "distractor_dims": {"u4": "video_view rate and profile device; no conversion depends on it"},
        "distractor_profile_columns": DISTRACTOR_PROFILE_COLUMNS,
        "noise_profile_columns": NOISE_PROFILE_COLUMNS,
        "categorical_int_columns": list(CATEGORICAL_INT_COLUMNS),
        "category_affinity": {
            "applies_to": [t.name for t in EVENT_TYPES if t.shopping],
            "probability": PREFERRED_CATEGORY_PROBABILITY,
            "preferred_by_sector_of_u2_u3": [CATEGORIES[c] for c in settings.affinity_categories],
        },
        "region_code": {
            "bins": {"u1": REGION_BINS[0], "u2": REGION_BINS[1]},
            "noise_sd": REGION_NOISE,
            "codes_by_cell": settings.region_codes.tolist(),
        },
    }


def _loaded_dims(loading: tuple[float, ...]) -> dict[str, float]:
    return {f"u{k}": float(v) for k, v in enumerate(loading) if v}


def _write_sample_config(path: Path) -> Path:
    config = {
        "ingest": {"categorical_int_columns": list(CATEGORICAL_INT_COLUMNS)},
        "train": {"held_back_types": [HELD_BACK_TYPE]},
    }
    with atomic_write(path) as tmp:
        tmp.write_text(
            "# Sample pipeline config for data from lookalike.data.synthetic (see truth.json).\n"
            + yaml.safe_dump(config, sort_keys=False)
        )
    return path

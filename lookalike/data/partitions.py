"""The population's partitions: a user's partition (= index shard) is a stable hash of ``user_id``
(splitmix64 of integers, blake2b of text) modulo the partition count, the same in every process,
on every machine and with every library version. The feature table is written partition by
partition (:func:`lookalike.data.features.merge_feature_partitions`), and the embeddings and the
index shards follow it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import numpy as np
import polars as pl

from lookalike.core.config import IndexConfig
from lookalike.core.errors import LookalikeError

SHARD_HASH = "splitmix64(int64) | blake2b-512(utf-8)[:8] little-endian, modulo shards"


_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)


_MIX_1 = np.uint64(0xBF58476D1CE4E5B9)


_MIX_2 = np.uint64(0x94D049BB133111EB)


def shard_count(n_users: int, config: IndexConfig) -> int:
    """``config.shards``, raised so that no shard expects more than ``config.max_shard_users``."""
    return max(config.shards, math.ceil(n_users / config.max_shard_users))


def shard_of(user_ids: np.ndarray | pl.Series | Iterable, n_shards: int) -> np.ndarray:
    """The shard (int32 in ``[0, n_shards)``) of each user id, stable across processes and versions.

    Integer ids (any width, negative ones as their two's complement) are hashed with the splitmix64
    finalizer, string ids with the first 8 bytes of BLAKE2b-512 of their UTF-8 encoding, read
    little-endian; the shard is the hash modulo ``n_shards``. Python's ``hash`` is not used: it is
    salted per process.

    Example::

        >>> shard_of(np.array([1, 2, 3]), 4).tolist()
        [1, 2, 1]
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    return (_stable_hash(user_ids) % np.uint64(n_shards)).astype(np.int32)


def _stable_hash(user_ids: np.ndarray | pl.Series | Iterable) -> np.ndarray:
    if isinstance(user_ids, pl.Series):
        if user_ids.null_count():
            raise LookalikeError("user_id has nulls; every user needs an id to be sharded")
        integers = user_ids.dtype.is_integer()
        values = user_ids.to_numpy() if integers else np.array(user_ids.to_list())
    else:
        values = np.asarray(user_ids)
    if values.dtype.kind in "iu":
        return _splitmix64(values.astype(np.uint64))
    if values.dtype.kind in "OUT":
        return np.fromiter((_blake2b64(str(v)) for v in values), dtype=np.uint64, count=len(values))
    raise LookalikeError(f"user_id must be integers or strings to be sharded, not {values.dtype}")


def _splitmix64(x: np.ndarray) -> np.ndarray:
    z = x + _GOLDEN_GAMMA
    z = (z ^ (z >> np.uint64(30))) * _MIX_1
    z = (z ^ (z >> np.uint64(27))) * _MIX_2
    return z ^ (z >> np.uint64(31))


def _blake2b64(user_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(user_id.encode("utf-8")).digest()[:8], "little")

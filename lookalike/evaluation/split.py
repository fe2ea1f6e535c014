"""The evaluation's hold-out: converters of every type held out from seeds and from training.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from lookalike.encoder.heldout import heldout_count


@dataclass(frozen=True)
class TypeSplit:
    """One conversion type's seeds and held-out converters (user ids) and how they were split."""

    seeds: pl.Series
    heldout: pl.Series
    method: str  # "time" or "random"


def holdout_split(conversions: pl.DataFrame, fraction: float, seed: int) -> dict[str, TypeSplit]:
    """Hold out ``fraction`` of every type's converters (at least one, never all).

    A type whose converters all have a conversion time holds out its latest converters (by their
    first conversion of that type); otherwise a seeded random share. A user held out for any type
    is a seed of no type, so no held-out converter ever informs the audience it is measured in.
    """
    per_user = conversions.group_by("conversion_type", "user_id").agg(
        pl.col("conversion_time").min(), pl.col("conversion_time").null_count().alias("nulls")
    )
    heldout, methods, converters = {}, {}, {}
    for name in sorted(per_user.get_column("conversion_type").unique().to_list()):
        rows = per_user.filter(pl.col("conversion_type") == name).sort("user_id")
        count = heldout_count(rows.height, fraction)
        if rows.get_column("nulls").sum() == 0:
            ordered, methods[name] = rows.sort("conversion_time", "user_id"), "time"
        else:
            ordered, methods[name] = rows.sample(fraction=1.0, shuffle=True, seed=seed), "random"
        ids = ordered.get_column("user_id")
        converters[name], heldout[name] = ids, ids.tail(count)
    heldout_users = pl.concat(list(heldout.values())).unique().implode()
    return {
        name: TypeSplit(ids.filter(~ids.is_in(heldout_users)).sort(), heldout[name].sort(), methods[name])
        for name, ids in converters.items()
    }


def training_conversions(conversions: pl.DataFrame, splits: dict[str, TypeSplit]) -> pl.DataFrame:
    """The conversions of users held out for no type: what the encoder may train on."""
    heldout_users = pl.concat([s.heldout for s in splits.values()]).unique().implode()
    return conversions.filter(~pl.col("user_id").is_in(heldout_users))

"""Offline evaluation of audiences on held-out converters.

Definitions, for an audience A (the top K users by score), the eligible population N and the
held-out converters P (none of whom were seeds or training positives):

- precision@K = |A ∩ P| / |A|
- recall@K    = |A ∩ P| / |P|
- lift@K      = precision@K / (|P| / |N|): how many times more converters the audience holds than
  a random audience of the same size (1.0 = random).
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl


@dataclass(frozen=True)
class AudienceHits:
    """Held-out converters found by one audience."""

    audience_size: int
    positives: int
    population: int
    hits: int

    @property
    def precision(self) -> float:
        return self.hits / self.audience_size if self.audience_size else 0.0

    @property
    def recall(self) -> float:
        return self.hits / self.positives if self.positives else 0.0

    @property
    def lift(self) -> float:
        base_rate = self.positives / self.population if self.population else 0.0
        return self.precision / base_rate if base_rate else 0.0


def audience_hits(audience_ids: pl.Series, positive_ids: pl.Series, population: int) -> AudienceHits:
    """Count held-out converters (``positive_ids``) inside an audience of a given population."""
    audience = audience_ids.unique()
    positives = positive_ids.unique()
    hits = int(audience.is_in(positives.implode()).sum())
    return AudienceHits(audience.len(), positives.len(), population, hits)

"""Expansion strategies, all on L2-normalized embeddings with cosine similarity (hybrid also on the
input features), each returning the ``size`` best candidates (eligible, not excluded, not seeds
by default) best first:

- ``knn``: every seed's ``k`` nearest candidates from the index; a candidate scores the
  mean of its ``top_m`` largest seed similarities, each scaled by the seed's relative weight, with
  missing similarities counted as 0. ``k`` starts at ``neighbours_per_seed`` and grows until the
  lists hold at least ``size`` distinct candidates.
- ``clusters``: k-means on the seed vectors; a candidate scores its largest cosine to a normalized
  cluster centre. Scored exactly by one pass over the embeddings: for a few centres that is
  cheaper than index queries ``size / centres`` deep.
- ``centroid``: the (weighted) mean seed vector, normalized; a baseline (RALM, KDD 2019, found the
  mean seed below simple baselines), scored like a single cluster.
- ``contrast``: a logistic regression in the embedding space telling the seeds from a random
  sample of the candidates (positive-unlabeled), scoring every row by one exact pass. Where the
  centroid only asks "how close to the average seed", this asks "how much more seed-like than
  the population", which corrects for directions every user shares. The best AUC of the
  embedding-only strategies on all 12 synthetic type-draws (three draws, four types).
- ``density``: the seeds' kernel density over a candidate sample's at each candidate (a soft vote
  of every seed, divided by how crowded the space is there), one exact pass against seeds plus
  sample. The best top 1% on Bank Marketing; below contrast on AUC on the synthetic draws.
- ``hybrid``: half of contrast's log-odds plus those of a gradient-boosted classifier of the
  same seeds against part of the same sample on the encoded input features
  (:mod:`lookalike.audience.propensity`). The embedding brings what every trained conversion type taught
  the encoder, the boosted model this list's own non-linear boundary in the raw features. The only
  strategy that reads the feature table (``ExpansionProblem.features``). The default: above
  gradient boosting alone and above contrast on AUC on all 12 synthetic type-draws
  (benchmarks/RESULTS.md, issue 7).

Seed weights (a ``weight`` column: value-based lookalikes) weight the knn mean, the k-means fit,
the centroid, the contrast regression, the density's seed kernel and the hybrid's two models.

The registry is :data:`STRATEGIES`: a name and a function ``(problem, search, config) ->
Expansion`` per strategy, one module each.
"""

from __future__ import annotations

from lookalike.audience.strategies.base import Expansion, ExpansionProblem, Strategy
from lookalike.audience.strategies.centroid import score_centroid
from lookalike.audience.strategies.clusters import score_clusters
from lookalike.audience.strategies.contrast import score_contrast
from lookalike.audience.strategies.density import score_density
from lookalike.audience.strategies.hybrid import score_hybrid
from lookalike.audience.strategies.knn import score_knn
from lookalike.core.config import AudienceConfig
from lookalike.core.errors import AudienceError
from lookalike.search.neighbours import NeighbourSearch

STRATEGIES: dict[str, Strategy] = {
    "knn": score_knn,
    "clusters": score_clusters,
    "centroid": score_centroid,
    "contrast": score_contrast,
    "density": score_density,
    "hybrid": score_hybrid,
}
FEATURE_STRATEGIES = frozenset({"hybrid"})  # strategies that read ExpansionProblem.features


def expand_seeds(
    problem: ExpansionProblem, search: NeighbourSearch, strategy: str, config: AudienceConfig
) -> Expansion:
    """Run one of :data:`STRATEGIES` (knn, clusters, centroid, contrast, density, hybrid).

    Example (the 10 users most like the first 20, who are excluded as seeds)::

        >>> import numpy as np
        >>> from lookalike.audience.strategies.base import normalize_rows
        >>> from lookalike.search.neighbours import ExactSearch
        >>> vectors = normalize_rows(np.random.default_rng(0).normal(size=(200, 8)))
        >>> problem = ExpansionProblem(vectors, vectors[:20], np.ones(20), np.arange(20),
        ...                            np.arange(20), 180, 10)
        >>> result = expand_seeds(problem, ExactSearch(vectors), "knn", AudienceConfig())
        >>> len(result.rows), bool((result.rows >= 20).all()), result.effort["query_rounds"]
        (10, True, 1)
    """
    if strategy not in STRATEGIES:
        raise AudienceError(f"unknown strategy {strategy!r}; choose one of {sorted(STRATEGIES)}")
    return STRATEGIES[strategy](problem, search, config)

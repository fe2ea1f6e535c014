"""``hybrid`` (the default): contrast's log-odds in the embedding space plus a gradient-boosted
model's on the input features.
"""

from __future__ import annotations

import numpy as np

from lookalike.audience.crossfit import subsample_halves
from lookalike.audience.propensity import boosted_log_odds
from lookalike.audience.selection import top_ranked
from lookalike.audience.strategies.base import (
    Expansion,
    ExpansionProblem,
    allowed_mask,
    background_halves,
)
from lookalike.audience.strategies.contrast import contrast_log_odds
from lookalike.core.config import AudienceConfig
from lookalike.core.errors import AudienceError
from lookalike.search.neighbours import NeighbourSearch


def score_hybrid(
    problem: ExpansionProblem, search: NeighbourSearch, config: AudienceConfig
) -> Expansion:
    """contrast's log-odds in the embedding space plus a gradient-boosted model's on the features.

    Both models are cross-fitted on the two halves of ``config.contrast_background`` sampled
    candidates (the boosting, :func:`lookalike.audience.propensity.boosted_log_odds`, on a sample of each
    half), and the score is the boosting's log-odds plus ``config.hybrid_embedding_weight`` (0.5)
    times contrast's: the two models' odds multiplied, as for two pieces of evidence, the
    embedding's discounted because it is overconfident on the conversion types the encoder trained
    on (their seeds are its training converters). The embedding carries what every trained
    conversion type taught the encoder; the boosted model draws this list's own non-linear
    boundary in the raw features, which the 32-d embedding summarizes lossily. A model that finds
    nothing (early stopping on a held-out tenth) stays near-constant instead of adding noise. The
    boosting sees at most ``config.boosting_max_seeds`` seeds and ``config.boosting_background``
    of the sampled candidates (seeded samples). With fewer than ``config.hybrid_linear_max_seeds``
    (1,000) fitted seeds, half of the feature model's log-odds comes from a logistic regression
    instead (``config.hybrid_linear_share``): with 100-300 Bank seeds the boosting alone ranked the
    top below a plain logistic regression. Needs ``problem.features``.
    """
    if problem.features is None:
        raise AudienceError(
            "the hybrid strategy scores the build's feature table, and none was given; "
            "export from a build (which has features.parquet) or choose another strategy"
        )
    candidates = np.flatnonzero(allowed_mask(problem))
    halves = background_halves(problem, candidates, config)
    embedding = contrast_log_odds(problem, halves, config.contrast_c)[candidates]
    fitted = np.arange(len(problem.seed_rows))
    if len(fitted) > config.boosting_max_seeds:
        rng = np.random.default_rng(config.seed)
        fitted = np.sort(rng.choice(fitted, config.boosting_max_seeds, replace=False))
    weights = problem.seed_weights[fitted]
    boosting_halves = subsample_halves(halves, config.boosting_background, config.seed)
    share = linear_share(len(fitted), config)
    boosted = boosted_log_odds(
        problem.features, problem.seed_rows[fitted], weights / weights.mean(), boosting_halves,
        candidates, config.seed, config.boosting_learning_rate, share,
    )
    score = config.hybrid_embedding_weight * embedding + boosted
    rows, best = top_ranked(candidates, score, problem.size)
    effort = {"background": sum(map(len, halves)), "boosting_seeds": len(fitted),
              "boosting_background": sum(map(len, boosting_halves)), "linear_share": share}
    return Expansion(rows, best, effort)


def linear_share(n_seeds: int, config: AudienceConfig) -> float:
    """The logistic regression's share in the feature model for ``n_seeds`` fitted seeds."""
    return config.hybrid_linear_share if n_seeds < config.hybrid_linear_max_seeds else 0.0

"""``density``: the seeds' kernel density over the population's at each candidate.
"""

from __future__ import annotations

import numpy as np
import torch

from lookalike.audience.selection import top_ranked
from lookalike.audience.strategies.base import Expansion, ExpansionProblem, allowed_mask
from lookalike.core.config import AudienceConfig
from lookalike.search.neighbours import NeighbourSearch
from lookalike.core.blocks import float32_rows, row_blocks



def score_density(
    problem: ExpansionProblem, search: NeighbourSearch, config: AudienceConfig
) -> Expansion:
    """Log ratio of the seeds' kernel density to the population's at each candidate.

    With kernel ``exp(cosine / t)`` (``t`` = ``config.density_temperature``) a candidate ``u``
    scores ``log(sum_s w_s exp(u.s / t) / sum_s w_s) - log(mean_b exp(u.b / t))``: seeds ``s``
    (at most ``config.density_max_seeds``, a seeded sample beyond that) against a random sample
    ``b`` of ``config.density_background`` candidates, a sampled user's own term left out. Every
    seed votes for the users near it, as in knn, but softly and over all seeds, and the vote is
    divided by how crowded the space is there, so a user is not chosen only for sitting where
    everyone sits. Like ``contrast`` it reads seeds and sample from the candidate tower. Cost: one
    exact pass over the candidates against ``seeds + background`` vectors.
    """
    candidates = np.flatnonzero(allowed_mask(problem))
    rng = np.random.default_rng(config.seed)
    background = np.sort(
        rng.choice(candidates, min(config.density_background, len(candidates)), replace=False)
    )
    centres = np.arange(len(problem.seed_rows))
    if len(centres) > config.density_max_seeds:
        centres = np.sort(rng.choice(centres, config.density_max_seeds, replace=False))
    weights = problem.seed_weights[centres] / problem.seed_weights[centres].sum()
    seeds = float32_rows(problem.embeddings, problem.seed_rows[centres])
    t = config.density_temperature
    seed_density = kernel_log_sums(problem.embeddings, candidates, seeds, np.log(weights), t)
    own = np.full(len(candidates), -1)  # a sampled candidate's position in the sample
    if len(background) > 1:  # leaving out the only sampled user would leave nothing
        own[np.searchsorted(candidates, background)] = np.arange(len(background))
    background_sums = kernel_log_sums(
        problem.embeddings, candidates, float32_rows(problem.embeddings, background),
        np.zeros(len(background)), t, leave_out=own,
    )
    background_density = background_sums - np.log(len(background) - (own >= 0))
    rows, best = top_ranked(candidates, seed_density - background_density, problem.size)
    return Expansion(rows, best, {"background": len(background), "centres": len(centres)})


def kernel_log_sums(
    embeddings: np.ndarray,
    rows: np.ndarray,
    centres: np.ndarray,
    log_weights: np.ndarray,
    temperature: float,
    leave_out: np.ndarray | None = None,
) -> np.ndarray:
    """Per row of ``embeddings[rows]``: ``log sum_c exp(log_weights[c] + row.centre_c / temperature)``.

    ``leave_out[i]`` >= 0 drops centre ``leave_out[i]`` from row ``i``'s sum (the row's own
    vector among the centres: a leave-one-out sum); -1 keeps every term. Rows and centres are
    unit vectors, so ``(row.centre - 1) / temperature`` <= 0 and its exponential cannot overflow:
    one in-place exp and one product with the weights replace a logsumexp (4x faster, measured);
    a block where a row's every term underflows float32 (far from all centres at a small
    temperature) is recomputed in float64, exact down to a temperature of 0.003.
    """
    scaled = torch.from_numpy(np.ascontiguousarray(centres.T / temperature, dtype=np.float32))
    top = float(np.max(log_weights))
    weights = torch.from_numpy(np.exp(np.asarray(log_weights) - top).astype(np.float32))
    sums = np.empty(len(rows), dtype=np.float64)
    for rows_block in row_blocks(len(rows), len(centres)):
        block = torch.from_numpy(float32_rows(embeddings, rows[rows_block]))
        hit, own = _own_terms(leave_out, rows_block.start, len(block))
        total = _kernel_terms(block, scaled, temperature, hit, own) @ weights
        if bool((total == 0).any()):  # float32 underflow: redo the block in float64
            total = _kernel_terms(block.double(), scaled.double(), temperature, hit, own) @ weights.double()
        sums[rows_block] = total.double().log().numpy()
    return sums + 1.0 / temperature + top


def _own_terms(
    leave_out: np.ndarray | None, start: int, count: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows of the block, centre positions) of the terms that ``leave_out`` drops."""
    if leave_out is None:
        empty = torch.empty(0, dtype=torch.int64)
        return empty, empty
    own = torch.from_numpy(leave_out[start : start + count].astype(np.int64))
    hit = torch.nonzero(own >= 0).flatten()
    return hit, own[hit]


def _kernel_terms(
    block: torch.Tensor, scaled: torch.Tensor, temperature: float, hit: torch.Tensor,
    own: torch.Tensor,
) -> torch.Tensor:
    """``exp((row.centre - 1) / temperature)`` for a block of rows, dropped terms set to 0."""
    terms = (block @ scaled).sub_(1.0 / temperature).exp_()
    terms[hit, own] = 0.0
    return terms

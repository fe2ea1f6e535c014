"""Exact top-k by inner product: the oracle the HNSW index is measured against, and the search
used when few candidates are eligible.
"""

from __future__ import annotations

import numpy as np
import torch

from lookalike.core.blocks import float32_rows, row_blocks
from lookalike.search.vectors import checked_vectors



QUERY_BATCH = 256  # queries scored together against a chunk of rows: fewer top-k merges


def exact_search(
    embeddings: np.ndarray, queries: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product: the oracle the index is measured against.

    Same result as :meth:`AnnIndex.query` (``[q, k']`` int64 labels = row positions and float32
    similarities, most similar first, ``k' = min(k, rows - excluded)``). Scores ``QUERY_BATCH``
    queries at a time against row blocks (:func:`lookalike.core.blocks.row_blocks`, each read as
    float32: the embeddings may be stored as float16) with a torch matrix product and keeps a
    running top-k, reading the (possibly memory-mapped) embeddings once.

    Example::

        labels, sims = exact_search(embeddings, embeddings[:10], k=5)
    """
    queries_t = torch.from_numpy(checked_vectors(queries, embeddings.shape[1]).copy())
    n_rows = len(embeddings)
    excluded = _row_mask(n_rows, exclude)
    k_out = min(k, n_rows - int(excluded.sum()))
    best_sims = torch.full((len(queries_t), 0), -torch.inf)
    best_labels = torch.zeros((len(queries_t), 0), dtype=torch.int64)
    batch = min(len(queries_t), QUERY_BATCH)
    for rows in row_blocks(n_rows if k_out > 0 else 0, batch + embeddings.shape[1]):
        chunk = torch.from_numpy(float32_rows(embeddings, rows))
        mask = torch.from_numpy(excluded[rows])
        mask = mask if mask.any() else None
        chunk_top = [
            _top_of_block(queries_t[q : q + batch] @ chunk.T, mask, k_out)
            for q in range(0, len(queries_t), batch)
        ]
        sims = torch.cat([best_sims, torch.cat([s for s, _ in chunk_top])], dim=1)
        labels = torch.cat([best_labels, torch.cat([i for _, i in chunk_top]) + rows.start], dim=1)
        best_sims, position = sims.topk(min(k_out, sims.shape[1]), dim=1)
        best_labels = labels.gather(1, position)
    return best_labels.numpy(), best_sims.numpy()


def _row_mask(n_rows: int, rows: np.ndarray | None) -> np.ndarray:
    mask = np.zeros(n_rows, dtype=bool)
    if rows is not None:
        rows = np.asarray(rows, dtype=np.int64)
        mask[rows[(rows >= 0) & (rows < n_rows)]] = True
    return mask


def _top_of_block(
    scores: torch.Tensor, excluded: torch.Tensor | None, k: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if excluded is not None:
        scores.masked_fill_(excluded[None, :], -torch.inf)
    return scores.topk(min(k, scores.shape[1]), dim=1)


def nearest_other_similarity(embeddings: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Cosine similarity of each of ``rows`` to its nearest *other* user, by exact search.

    Use it to describe how crowded the embedding space is (the build report's histogram). A user
    with an identical twin gets the twin's similarity (1.0), not its own.

    Example::

        >>> vectors = np.eye(3, dtype=np.float32)[[0, 0, 1]]
        >>> nearest_other_similarity(vectors, np.array([0, 2])).tolist()
        [1.0, 0.0]
    """
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) == 0 or len(embeddings) < 2:
        return np.zeros(0, dtype=np.float32)
    labels, sims = exact_search(embeddings, np.asarray(embeddings[rows]), k=2)
    # The user itself is normally first; when a twin ties and comes first, the twin is the answer.
    return np.where(labels[:, 0] == rows, sims[:, 1], sims[:, 0])

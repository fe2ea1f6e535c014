"""Exact top-k by inner product: the oracle the HNSW index is measured against, and the search
used when few candidates are eligible; optionally a scan of int8 codes re-ranked in float.
"""

from __future__ import annotations

import numpy as np
import torch

from lookalike.core.blocks import float32_rows, row_blocks
from lookalike.search.quantized import Int8Embeddings
from lookalike.search.vectors import checked_vectors

QUERY_BATCH = 256  # queries scored together against a chunk of rows: fewer top-k merges
RERANK_FACTOR = 4  # shortlist of the int8 scan: this many times k, re-ranked in float


def exact_search(
    embeddings: np.ndarray,
    queries: np.ndarray,
    k: int,
    exclude: np.ndarray | None = None,
    quantized: Int8Embeddings | None = None,
    rerank_factor: int = RERANK_FACTOR,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product: the oracle the index is measured against.

    Same result as :meth:`AnnIndex.query` (``[q, k']`` int64 labels = row positions and float32
    similarities, most similar first, ``k' = min(k, rows - excluded)``). Scores ``QUERY_BATCH``
    queries at a time against row blocks (:func:`lookalike.core.blocks.row_blocks`, converted to
    float32 block by block: ``embeddings`` may be float16) with a torch matrix product and keeps a
    running top-k, reading the (possibly memory-mapped) embeddings once.

    With ``quantized`` (:func:`lookalike.search.quantized.quantize_int8` of ``embeddings``) the
    scan reads the int8 codes instead and keeps ``rerank_factor * k`` candidates per query, whose
    float similarities then pick the top ``k``: a true neighbour is missed only when quantization
    pushes it out of the shortlist.

    Example::

        labels, sims = exact_search(embeddings, embeddings[:10], k=5)
        labels, sims = exact_search(embeddings, embeddings[:10], k=5,
                                    quantized=quantize_int8(embeddings))
    """
    queries = checked_vectors(queries, embeddings.shape[1])
    if quantized is None:
        return _scan_top(embeddings, queries, k, exclude)
    # codes * scale approximates the rows, so queries * scale scored against the codes ranks
    # as the decoded rows would, without decoding them
    shortlist, _ = _scan_top(quantized.codes, queries * quantized.scale, rerank_factor * k, exclude)
    return _rerank(embeddings, queries, shortlist, k)


def _scan_top(
    matrix: np.ndarray, queries: np.ndarray, k: int, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` rows of ``matrix`` (any dtype, read as float32 blocks) by inner product."""
    queries_t = torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32))
    n_rows = len(matrix)
    excluded = _row_mask(n_rows, exclude)
    k_out = min(k, n_rows - int(excluded.sum()))
    best_sims = torch.full((len(queries_t), 0), -torch.inf)
    best_labels = torch.zeros((len(queries_t), 0), dtype=torch.int64)
    batch = min(len(queries_t), QUERY_BATCH)
    for rows in row_blocks(n_rows if k_out > 0 else 0, batch + matrix.shape[1]):
        chunk = torch.from_numpy(float32_rows(matrix, rows))
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


def _rerank(
    embeddings: np.ndarray, queries: np.ndarray, shortlist: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of each query's ``shortlist`` with the largest float inner product."""
    labels = np.empty((len(queries), min(k, shortlist.shape[1])), dtype=np.int64)
    sims = np.empty(labels.shape, dtype=np.float32)
    for q in range(0, len(queries), QUERY_BATCH):
        listed = shortlist[q : q + QUERY_BATCH]
        unique_rows, position = np.unique(listed, return_inverse=True)
        vectors = torch.from_numpy(float32_rows(embeddings, unique_rows))
        candidates = vectors[torch.from_numpy(position.reshape(listed.shape))]
        query_t = torch.from_numpy(queries[q : q + QUERY_BATCH])
        scores = torch.einsum("qd,qmd->qm", query_t, candidates)
        best, at = scores.topk(labels.shape[1], dim=1)
        sims[q : q + QUERY_BATCH] = best.numpy()
        labels[q : q + QUERY_BATCH] = np.take_along_axis(listed, at.numpy(), axis=1)
    return labels, sims


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

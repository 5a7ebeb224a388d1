"""Retrieval metrics on ranked neighbour labels. Pure NumPy; each checked by hand in the tests.

All take `relevant`, an (n_queries, k) boolean array: whether the neighbour at each rank has
the query's label (one query per row, ranks in order).
"""

from __future__ import annotations

import numpy as np


def relevance(neighbour_labels: np.ndarray, query_labels: np.ndarray) -> np.ndarray:
    """(n, k) neighbour labels and (n,) query labels -> (n, k) bool: same label."""
    return np.asarray(neighbour_labels) == np.asarray(query_labels)[:, None]


def precision_at_k(relevant: np.ndarray, k: int) -> float:
    """Mean over queries of the fraction of the first k neighbours that are relevant."""
    assert relevant.shape[1] >= k, f"need at least {k} neighbours per query, got {relevant.shape[1]}"
    return float(relevant[:, :k].mean())


def average_precision_at_k(relevant: np.ndarray, k: int) -> np.ndarray:
    """Per-query AP@k: the mean of precision@i over the ranks i <= k that hold a relevant item.

    Normalised by the number of relevant items retrieved in the top k (0 when there are none), the
    convention of "mAP@k" in the image-retrieval and hashing literature.
    """
    top = relevant[:, :k].astype(np.float64)
    precision_at_rank = np.cumsum(top, axis=1) / np.arange(1, top.shape[1] + 1)
    retrieved = top.sum(axis=1)
    return np.divide((precision_at_rank * top).sum(axis=1), retrieved, out=np.zeros(len(top)), where=retrieved > 0)


def mean_average_precision_at_k(relevant: np.ndarray, k: int) -> float:
    return float(average_precision_at_k(relevant, k).mean())


def average_precision_at_r(relevant: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Per-query AP@R (Musgrave, Belongie and Lim, "A Metric Learning Reality Check", 2020).

    R is the number of database items relevant to the query (its class's size); relevant holds at
    least max(R) ranks. AP@R = (1/R) * sum over the first R ranks i of precision@i where rank i is
    relevant: 1 only when the first R neighbours are all relevant, so it judges the whole ranking of
    the class, where P@10 and mAP@100 see the top of it.
    """
    r = np.asarray(r, dtype=np.int64)
    assert relevant.shape[1] >= r.max(initial=0), "need R neighbours for every query"
    ranks = np.arange(1, relevant.shape[1] + 1)
    hits = relevant & (ranks[None, :] <= r[:, None])
    precision_at_rank = np.cumsum(hits, axis=1) / ranks
    return np.divide((precision_at_rank * hits).sum(axis=1), r, out=np.zeros(len(r)), where=r > 0)


def per_class_precision(relevant: np.ndarray, query_labels: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """(n_classes,) precision@k of the queries of each class (NaN for a class with no query)."""
    per_query = relevant[:, :k].mean(axis=1)
    out = np.full(n_classes, np.nan)
    for c in range(n_classes):
        mask = query_labels == c
        if mask.any():
            out[c] = per_query[mask].mean()
    return out


def neighbour_confusion(neighbour_labels: np.ndarray, query_labels: np.ndarray, k: int, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes): row c is how the top-k neighbours of class-c queries split over classes.

    Rows sum to 1 (for classes that have queries); the diagonal is per-class precision@k.
    """
    counts = np.zeros((n_classes, n_classes))
    np.add.at(counts, (np.repeat(query_labels, k), neighbour_labels[:, :k].ravel()), 1)
    totals = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)

"""Retrieval metrics against hand-computed examples."""

import numpy as np
import pytest

from aesearch.quality.metrics import (
    average_precision_at_k,
    average_precision_at_r,
    mean_average_precision_at_k,
    neighbour_confusion,
    per_class_precision,
    precision_at_k,
    relevance,
)

# Two queries (labels 0 and 1), four ranked neighbours each.
NEIGHBOURS = np.array([[0, 2, 0, 0], [2, 1, 2, 2]])
QUERIES = np.array([0, 1])
RELEVANT = relevance(NEIGHBOURS, QUERIES)  # [[T, F, T, T], [F, T, F, F]]


def test_relevance():
    assert RELEVANT.tolist() == [[True, False, True, True], [False, True, False, False]]


def test_precision_at_k():
    assert precision_at_k(RELEVANT, 1) == pytest.approx((1 + 0) / 2)
    assert precision_at_k(RELEVANT, 4) == pytest.approx((3 / 4 + 1 / 4) / 2)


def test_average_precision_by_hand():
    # Query 0: relevant at ranks 1, 3, 4 -> (1/1 + 2/3 + 3/4) / 3.  Query 1: rank 2 -> (1/2) / 1.
    ap = average_precision_at_k(RELEVANT, 4)
    np.testing.assert_allclose(ap, [(1 + 2 / 3 + 3 / 4) / 3, 0.5])
    assert mean_average_precision_at_k(RELEVANT, 4) == pytest.approx(((1 + 2 / 3 + 3 / 4) / 3 + 0.5) / 2)
    # Cut at k=2: query 0 has rank 1 only -> 1.0; query 1 rank 2 -> 0.5.
    np.testing.assert_allclose(average_precision_at_k(RELEVANT, 2), [1.0, 0.5])
    # No relevant neighbour at all: AP 0, not NaN.
    assert average_precision_at_k(np.zeros((1, 3), bool), 3).tolist() == [0.0]


def test_average_precision_at_r_by_hand():
    # Query 0 has R = 3 relevant items in the database: ranks 1 and 3 of its first 3 are relevant
    # -> (1/1 + 2/3) / 3 (rank 4 is past R and does not count). Query 1, R = 2: rank 2 -> (1/2) / 2.
    np.testing.assert_allclose(average_precision_at_r(RELEVANT, np.array([3, 2])), [(1 + 2 / 3) / 3, 0.25])
    # All of the first R relevant: 1. No relevant item in the database (R = 0): 0, not NaN.
    assert average_precision_at_r(np.ones((1, 4), bool), np.array([4])).tolist() == [1.0]
    assert average_precision_at_r(np.zeros((1, 4), bool), np.array([0])).tolist() == [0.0]


def test_map_at_r_in_eval_equals_a_full_sort(tiny_bundle):
    """evaluate's mAP@R (FAISS, blocks of queries) against every distance sorted in NumPy."""
    from aesearch.quality import evaluate as evaluation
    from aesearch.search.engine import SearchEngine

    engine = SearchEngine.load(tiny_bundle)
    report = evaluation.evaluate(engine, baselines=True)
    ids, train, test, labels, _ = evaluation.protocol_rows(engine, "test")
    images = engine.bundle.images(ids).reshape(len(ids), -1).astype(np.float64) / 255
    distances = ((images[test][:, None, :] - images[train][None, :, :]) ** 2).sum(-1)
    order = np.argsort(distances, axis=1, kind="stable")
    r = np.array([(labels[train] == label).sum() for label in labels[test]])
    expected = average_precision_at_r(labels[train][order] == labels[test][:, None], r).mean()
    pixels = next(row for row in report.retrieval if row.name == "raw pixels")
    assert pixels.map_at_r == pytest.approx(expected, abs=1e-6)
    assert all(0 < row.map_at_r <= 1 for row in report.retrieval)


def test_per_class_precision_and_confusion():
    np.testing.assert_allclose(per_class_precision(RELEVANT, QUERIES, 4, 3), [3 / 4, 1 / 4, np.nan])
    confusion = neighbour_confusion(NEIGHBOURS, QUERIES, 4, 3)
    np.testing.assert_allclose(confusion, [[3 / 4, 0, 1 / 4], [0, 1 / 4, 3 / 4], [0, 0, 0]])

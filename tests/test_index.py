"""The index layer against numpy brute force (oracle), for every index type and metric."""

import numpy as np
import pytest

from aesearch.errors import InvalidArgumentError
from aesearch.search.index import AffineTransform, IndexSpec, VectorIndex, check_index_type, recall_at_k


def clustered(n=3000, d=24, seed=0):
    """Vectors around 30 fixed centres (the structure ANN indexes are built for, and latents have);
    seed varies the points, not the centres, so queries come from the indexed distribution."""
    centres = np.random.default_rng(123).normal(size=(30, d)) * 4
    rng = np.random.default_rng(seed)
    return (centres[rng.integers(0, 30, n)] + rng.normal(size=(n, d))).astype(np.float32)


def brute_force(base, queries, k, metric="l2"):
    if metric == "cosine":
        base = base / np.linalg.norm(base, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
        distance = 1 - queries @ base.T
    else:
        distance = np.sqrt(np.maximum(((queries[:, None, :] - base[None]) ** 2).sum(-1), 0))
    ids = np.argsort(distance, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(distance, ids, axis=1), ids


@pytest.mark.parametrize("metric", ["l2", "cosine"])
@pytest.mark.parametrize("n_queries", [1, 5, 200])  # one thread below 16 queries, all above
def test_flat_equals_brute_force(metric, n_queries):
    base, queries = clustered(), clustered(n_queries, seed=1)
    index = VectorIndex.build(base, IndexSpec("flat", metric))
    distances, ids = index.search(queries, 10)
    expected_d, expected_ids = brute_force(base.astype(np.float64), queries.astype(np.float64), 10, metric)
    np.testing.assert_allclose(distances, expected_d, rtol=1e-4, atol=1e-4)
    # Ties aside, the same neighbours in the same order.
    assert (ids == expected_ids).mean() > 0.999


def test_identical_vector_is_at_distance_zero():
    base = clustered()
    index = VectorIndex.build(base, IndexSpec("flat", "l2"))
    distances, ids = index.search(base[[7]], 3)
    assert ids[0, 0] == 7 and distances[0, 0] == 0.0


def test_transform_is_applied_to_base_and_queries():
    base, queries = clustered(), clustered(20, seed=2)
    rng = np.random.default_rng(3)
    transform = AffineTransform(base.mean(0), rng.normal(size=(24, 12)).astype(np.float32))
    index = VectorIndex.build(base, IndexSpec("flat", "cosine"), transform)
    assert index.dim == 24
    distances, ids = index.search(queries, 5)
    expected_d, expected_ids = brute_force(transform(base), transform(queries), 5, "cosine")
    np.testing.assert_allclose(distances, expected_d, rtol=1e-4, atol=1e-5)
    assert (ids == expected_ids).all()


@pytest.mark.parametrize(("index_type", "knob"), [("hnsw", "ef_search"), ("ivf", "nprobe"), ("sq8", None)])
@pytest.mark.parametrize("metric", ["l2", "cosine"])
def test_approximate_indexes_reach_high_recall_and_record_their_parameters(index_type, knob, metric):
    base, queries = clustered(), clustered(300, seed=4)
    index = VectorIndex.build(base, IndexSpec(index_type, metric))
    _, truth = brute_force(base, queries, 10, metric)
    _, ids = index.search(queries, 10)
    assert recall_at_k(ids, truth) >= 0.95
    if knob:
        assert knob in index.spec.params
    assert index.spec.params["tuned_recall_at_10"] >= 0.95


def test_factory_strings_and_bad_types():
    base = clustered()
    index = VectorIndex.build(base, IndexSpec("IVF16,Flat", "l2"))
    assert "nprobe" in index.spec.params and len(index) == len(base)
    with pytest.raises(InvalidArgumentError, match="FAISS refuses index type 'nonsense'"):
        check_index_type("nonsense", 24)
    with pytest.raises(InvalidArgumentError, match="unknown metric"):
        IndexSpec("flat", "manhattan")


def test_write_read_round_trip(tmp_path):
    base, queries = clustered(), clustered(30, seed=5)
    index = VectorIndex.build(base, IndexSpec("hnsw", "l2"))
    index.write(tmp_path / "i.faiss")
    again = VectorIndex.read(tmp_path / "i.faiss", index.spec)
    for a, b in zip(index.search(queries, 10), again.search(queries, 10), strict=True):
        np.testing.assert_array_equal(a, b)


def test_faiss_contract_for_missing_results():
    index = VectorIndex.build(clustered(5), IndexSpec("flat", "l2"))
    distances, ids = index.search(clustered(2, seed=6), 8)
    assert (ids[:, 5:] == -1).all() and np.isinf(distances[:, 5:]).all()
    with pytest.raises(InvalidArgumentError, match="k must be at least 1"):
        index.search(clustered(1), 0)


def test_recall_at_k_by_hand():
    truth = np.array([[1, 2, 3], [4, 5, 6]])
    found = np.array([[3, 2, 9], [-1, -1, -1]])
    assert recall_at_k(found, truth) == pytest.approx(2 / 6)

"""Streamed index building, exact re-ranking and tuning against a numpy brute-force oracle."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from aesearch.search.index import recall_at_k
from aesearch.search.index_choice import IndexChoice
from aesearch.search.large import RerankingIndex, build_streamed, exact_knn, read_index, tune_streamed, without_own


def clustered(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d)).astype(np.float32) * 3
    return (centres[rng.integers(0, 40, n)] + rng.standard_normal((n, d))).astype(np.float32)


def brute_force(queries: np.ndarray, vectors: np.ndarray, k: int) -> np.ndarray:
    squared = ((queries[:, None, :] - vectors[None]) ** 2).sum(-1)
    return np.argsort(squared, axis=1, kind="stable")[:, :k]


def test_exact_knn_over_chunks_equals_brute_force():
    vectors, queries = clustered(1000), clustered(20, seed=1)
    _, rows = exact_knn(queries, (vectors[i : i + 137] for i in range(0, 1000, 137)), 10)
    assert (rows == brute_force(queries, vectors, 10)).mean() > 0.99  # ties may swap equal distances


def test_reranking_returns_exact_order_of_its_candidates():
    vectors, queries = clustered(3000), clustered(30, seed=2)
    choice = IndexChoice("OPQ8_32,IVF16,PQ8x4", {"nlist": 16, "rerank_factor": 1000})
    index = build_streamed(choice, 32, 3000, vectors, np.array_split(vectors, 7))
    faiss.extract_index_ivf(index).nprobe = 16
    reranking = RerankingIndex(index, lambda rows: vectors[rows], factor=1000)  # every vector a candidate
    squared, rows = reranking.search(queries, 10)
    assert (rows == brute_force(queries, vectors, 10)).all()
    expected = ((queries[:, None, :] - vectors[rows]) ** 2).sum(-1)
    np.testing.assert_allclose(squared, expected, rtol=1e-5)


def test_reranking_answers_a_large_batch_a_few_queries_at_a_time_as_one(monkeypatch, tmp_path):
    """A batch whose candidates would exceed _CANDIDATE_ROWS is answered in parts, each query as alone;
    read from the file (a build's measures), the candidates are the rows read through the map."""
    from aesearch.search import large

    vectors, queries = clustered(3000), clustered(50, seed=3)
    np.save(tmp_path / "search_vectors.npy", vectors)
    choice = IndexChoice("IVF16,PQ8x4fs", {"nlist": 16, "rerank_factor": 20})
    index = build_streamed(choice, 32, 3000, vectors, np.array_split(vectors, 3))
    faiss.extract_index_ivf(index).nprobe = 4
    stored = large.StoredVectors(tmp_path / "search_vectors.npy")
    gathered = []

    def vectors_of(rows):
        gathered.append(len(rows))
        return stored(rows)

    reranking = RerankingIndex(index, vectors_of, factor=20)
    whole = reranking.search(queries, 10)
    assert gathered == [len(np.unique(reranking.index.search(queries, 200)[1]))]
    gathered.clear()
    monkeypatch.setattr(large, "_CANDIDATE_ROWS", 1000)  # 5 queries of 200 candidates at a time
    parts = reranking.search(queries, 10)
    assert len(gathered) == 10 and max(gathered) <= 1000
    np.testing.assert_array_equal(parts[1], whole[1])
    np.testing.assert_array_equal(parts[0], whole[0])
    singles = [reranking.search(queries[i : i + 1], 10) for i in range(len(queries))]
    np.testing.assert_array_equal(np.concatenate([s[1] for s in singles]), whole[1])

    class Part:  # a SegmentedIndex part's VectorIndex, as read_segment_index makes it
        pass

    part = Part()
    part.index = RerankingIndex(index, stored, factor=20)
    large.read_candidates_unmapped(part)
    assert part.index.vectors_of == stored.unmapped
    rows = np.unique(np.random.default_rng(0).integers(0, 3000, 2500))
    np.testing.assert_array_equal(stored.unmapped(rows), vectors[rows])
    np.testing.assert_array_equal(part.index.search(queries, 10)[1], whole[1])


def test_tuning_reaches_target_recall_with_reranking():
    vectors = clustered(4000)
    choice = IndexChoice("IVF32,PQ8x4", {"nlist": 32, "rerank_factor": 2})
    index = RerankingIndex(build_streamed(choice, 32, 4000, vectors, [vectors]), lambda rows: vectors[rows], 2)
    own = np.arange(0, 4000, 40)
    _, truth = exact_knn(vectors[own], [vectors], 11)
    params = tune_streamed(index, vectors[own], own, truth, 0.95)
    assert params["tuned_recall_at_10"] >= 0.95
    assert params["nprobe"] >= 1 and params["rerank_factor"] >= 2

    def recall(nprobe: int, factor: int) -> float:
        search = faiss.SearchParametersIVF()
        search.nprobe, index.factor = nprobe, factor
        found = index.search(vectors[own], 11, params=search)[1]
        return recall_at_k(without_own(found, own, 10), without_own(truth, own, 10))

    # The fewest of each: half the candidates miss the target even with every list probed, and half the
    # lists miss it with the candidates chosen.
    nprobe, factor = params["nprobe"], params["rerank_factor"]
    assert recall(nprobe, factor) == pytest.approx(params["tuned_recall_at_10"], abs=1e-4)
    if factor > 2:
        assert recall(32, factor // 2) < 0.95
    if nprobe > 1:
        assert recall(nprobe // 2, factor) < 0.95


def test_chosen_index_builds_streamed_and_loads_memory_mapped(tmp_path):
    n = 2000
    vectors = clustered(n)
    choice = IndexChoice("ivf", {"nlist": 32})  # the middle tier (auto picks it above EXACT_MAX_SCAN floats)
    index = build_streamed(choice, 32, n, vectors, np.array_split(vectors, 3))
    assert index.ntotal == n
    faiss.write_index(index, str(tmp_path / "index.faiss"))
    loaded = read_index(tmp_path / "index.faiss", mmap=True)
    assert (loaded.search(vectors[:5], 3)[1] == index.search(vectors[:5], 3)[1]).all()


def test_memory_mapped_ivf_lists_search_without_prefetch_threads(tmp_path):
    """FAISS's on-disk lists start prefetch threads on every search (ms per query): turned off on read."""
    vectors = clustered(2000)
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(32), 32, 16)
    index.train(vectors)
    index.add(vectors)
    faiss.write_index(index, str(tmp_path / "ivf.faiss"))
    mapped = read_index(tmp_path / "ivf.faiss", mmap=True)
    lists = faiss.downcast_InvertedLists(faiss.extract_index_ivf(mapped).invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists) and lists.prefetch_nthread == 0
    faiss.extract_index_ivf(mapped).nprobe = index.nprobe = 4
    np.testing.assert_array_equal(mapped.search(vectors[:20], 5)[1], index.search(vectors[:20], 5)[1])


def test_a_wide_search_reranks_more_candidates_and_finds_what_the_tuned_one_misses():
    """RerankedVectorIndex.search_prepared(rerank=r): r times the tuned candidates, still exact among them;
    with every candidate re-ranked the answer is the brute-force oracle's."""
    from aesearch.search.index import IndexSpec, VectorIndex
    from aesearch.search.large import RerankedVectorIndex

    vectors, queries = clustered(3000), clustered(30, seed=3) * 3  # far from the clusters: codes order loosely
    choice = IndexChoice("IVF16,PQ4x4", {"nlist": 16, "rerank_factor": 1})
    index = build_streamed(choice, 32, 3000, vectors, np.array_split(vectors, 5))
    faiss.extract_index_ivf(index).nprobe = 16
    asked = []

    def vectors_of(rows):
        asked.append(len(rows))
        return vectors[rows]

    reranked = RerankedVectorIndex(VectorIndex(index, IndexSpec("ivfpq", "l2"), None), vectors_of, 1)
    reranked.search_prepared(queries[:1], 10)
    reranked.search_prepared(queries[:1], 10, rerank=4)
    assert asked == [10, 40]  # one query: 10 candidates as tuned, 40 when wide
    assert reranked.index.factor == 1  # the tuned factor is left as it was
    truth = brute_force(queries, vectors, 10)
    tuned = recall_at_k(reranked.search_prepared(queries, 10)[1], truth)
    wide = recall_at_k(reranked.search_prepared(queries, 10, rerank=4)[1], truth)
    assert tuned < wide  # the tuned candidates miss some neighbours: the test can fail
    everything = reranked.search_prepared(queries, 10, rerank=300)[1]  # all 3,000 vectors are candidates
    assert (everything == truth).all()


def test_stored_vectors_read_the_same_rows_through_either_map(tmp_path, monkeypatch):
    """StoredVectors: a query's few rows through the MADV_RANDOM map, a dense batch's through the plain one
    (by several reader threads); both equal numpy's reading of the file (the oracle)."""
    from aesearch.search.large import StoredVectors

    vectors = clustered(500)
    np.save(tmp_path / "v.npy", vectors)
    stored = StoredVectors(tmp_path / "v.npy")
    assert stored.shape == (500, 32) and stored.dtype == np.float32
    used = []
    for name in ("plain", "scattered"):
        array = getattr(stored, name)
        spy = {"__getitem__": lambda _, rows, a=array, n=name: used.append(n) or a[rows]}
        monkeypatch.setattr(stored, name, type("Spy", (), {**spy, "shape": array.shape, "dtype": array.dtype})())
    monkeypatch.setattr("aesearch.defaults.SCATTERED_ROWS", 10)
    monkeypatch.setattr("aesearch.defaults.GATHER_READERS", 4)
    monkeypatch.setattr("aesearch.defaults.GATHER_ROWS_PER_READER", 1)
    few, many = np.array([3, 7, 499]), np.arange(0, 500, 7)
    np.testing.assert_array_equal(stored(few), vectors[few])
    np.testing.assert_array_equal(stored(many), vectors[many])  # 72 of 500 rows: dense
    assert used == ["scattered"] + ["plain"] * 4
    used.clear()
    monkeypatch.setattr("aesearch.defaults.DENSE_GATHER_SHARE", 0.5)  # 72 of 500 is sparse now
    np.testing.assert_array_equal(stored(many), vectors[many])
    assert used == ["scattered"] * 4

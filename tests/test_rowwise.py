"""Results that do not depend on the batch or the thread (aesearch/rowwise.py), checked on this machine."""

import threading

import faiss
import numpy as np
import pytest
from threadpoolctl import threadpool_info

from aesearch.rowwise import SLAB, matmul
from aesearch.search.index import AffineTransform, search_threads

# The product shapes of the model's layers (k, n) and of the whitening transform.
SHAPES = [(4, 32), (128, 64), (3136, 314), (314, 3136), (64, 128), (32, 4), (314, 192)]


@pytest.mark.parametrize(("k", "n"), SHAPES)
def test_a_row_is_the_same_in_any_batch_at_any_position(k, n):
    rng = np.random.default_rng(k * n)
    w = rng.standard_normal((k, n)).astype(np.float32)
    rows = rng.standard_normal((40, k)).astype(np.float32)
    alone = matmul(rows[:1], w)[0]
    for size in (2, 3, SLAB - 1, SLAB, SLAB + 1, 17, 40):
        batch = rows[:size].copy()
        for position in sorted({0, size // 2, size - 1}):
            batch[[0, position]] = batch[[position, 0]]
            np.testing.assert_array_equal(matmul(batch, w)[position], alone)
            batch[[0, position]] = batch[[position, 0]]
    np.testing.assert_allclose(matmul(rows, w), rows @ w, rtol=1e-4, atol=1e-3)  # oracle: plain matmul


def test_transform_gives_a_row_the_same_alone_or_in_a_batch():
    rng = np.random.default_rng(1)
    transform = AffineTransform.whitening(rng.standard_normal((500, 40)).astype(np.float32), dims=24)
    x = rng.standard_normal((37, 40)).astype(np.float32)
    everything = transform(x)
    for i in (0, 11, 36):
        np.testing.assert_array_equal(transform(x[i : i + 1])[0], everything[i])


def test_numpy_blas_runs_on_one_thread_after_any_product():
    from threadpoolctl import threadpool_limits

    from aesearch import rowwise

    ours = {lib.filepath for lib in rowwise._controllers}  # NumPy's (SciPy may bring another)
    assert ours
    with threadpool_limits(limits=2, user_api="blas"):  # someone else changes it...
        matmul(np.ones((3, 4), np.float32), np.ones((4, 2), np.float32))  # ...and our next product sets it back
        assert {lib["num_threads"] for lib in threadpool_info() if lib["filepath"] in ours} == {1}


def test_concurrent_queries_in_threads_match_one_batch(tiny_bundle):
    from aesearch.search.engine import SearchEngine

    engine = SearchEngine.load(tiny_bundle)
    images = np.stack([engine.image(i) for i in range(24)])
    expected = engine.encode(images)
    got: dict[int, np.ndarray] = {}

    def worker(i: int) -> None:
        for _ in range(3):
            got[i] = engine.encode(images[i : i + 1])[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(images))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(len(images)):
        np.testing.assert_array_equal(got[i], expected[i])


def test_faiss_threads_are_chosen_per_call_and_per_thread():
    before = faiss.omp_get_max_threads()
    seen = {}

    def other() -> None:
        seen["other"] = faiss.omp_get_max_threads()

    with search_threads(1):
        assert faiss.omp_get_max_threads() == 1
        thread = threading.Thread(target=other)
        thread.start()
        thread.join()
    assert faiss.omp_get_max_threads() == before and seen["other"] == before

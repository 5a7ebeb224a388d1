"""search/gather.py: rows copied by many threads are the rows numpy reads."""

import numpy as np
import pytest

from aesearch.search import gather
from aesearch.search.gather import gather_rows


@pytest.fixture
def mapped(tmp_path):
    vectors = np.random.default_rng(0).standard_normal((1000, 24)).astype(np.float32)
    np.save(tmp_path / "v.npy", vectors)
    return vectors, np.load(tmp_path / "v.npy", mmap_mode="r")


@pytest.mark.parametrize("readers", [1, 3, 32])
@pytest.mark.parametrize("rows", [[], [0], [5, 6, 7], list(range(0, 1000, 3)), [0, 998, 999]])
def test_gather_rows_equals_numpy_indexing(mapped, readers, rows, monkeypatch):
    monkeypatch.setattr("aesearch.defaults.GATHER_ROWS_PER_READER", 1)  # threads even for a few rows
    vectors, array = mapped
    rows = np.array(rows, dtype=np.int64)
    got = gather_rows(array, rows, readers)
    assert got.shape == (len(rows), 24) and got.dtype == np.float32
    np.testing.assert_array_equal(got, vectors[rows])  # the oracle: the rows as numpy reads them


def test_each_reader_gets_its_minimum_share_of_rows(mapped, monkeypatch):
    parts = []
    real_pool = gather.reader_pool
    monkeypatch.setattr(gather, "reader_pool", lambda threads: parts.append(threads) or real_pool(threads))
    monkeypatch.setattr("aesearch.defaults.GATHER_ROWS_PER_READER", 100)
    vectors, array = mapped
    for count in (99, 199, 250, 1000):
        np.testing.assert_array_equal(gather_rows(array, np.arange(count), 8), vectors[:count])
    assert parts == [2, 8]  # 99 and 199 rows: one thread (the caller); 250: two; 1,000: all eight


def test_reader_pool_is_made_again_in_a_forked_child(monkeypatch):
    pool = gather.reader_pool(2)
    assert gather.reader_pool(2) is pool  # shared within a process
    monkeypatch.setattr(gather.os, "getpid", lambda: -1)  # as a forked child sees it
    child = gather.reader_pool(2)
    assert child is not pool and list(child.map(abs, [-1, -2])) == [1, 2]

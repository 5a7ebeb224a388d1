"""search/disk_reads.py: rows copied by many threads are the rows numpy reads; the warm-up reads every
block once, and its extra readers wait while a search runs."""

import os
import threading
import time

import numpy as np
import pytest

from aesearch.search import disk_reads
from aesearch.search.disk_reads import QueryTraffic, gather_rows, read_through


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
    real_pool = disk_reads.reader_pool
    monkeypatch.setattr(disk_reads, "reader_pool", lambda threads: parts.append(threads) or real_pool(threads))
    monkeypatch.setattr("aesearch.defaults.GATHER_ROWS_PER_READER", 100)
    vectors, array = mapped
    for count in (99, 199, 250, 1000):
        np.testing.assert_array_equal(gather_rows(array, np.arange(count), 8), vectors[:count])
    assert parts == [2, 8]  # 99 and 199 rows: one thread (the caller); 250: two; 1,000: all eight


def test_reader_pool_is_made_again_in_a_forked_child(monkeypatch):
    pool = disk_reads.reader_pool(2)
    assert disk_reads.reader_pool(2) is pool  # shared within a process
    monkeypatch.setattr(disk_reads.os, "getpid", lambda: -1)  # as a forked child sees it
    child = disk_reads.reader_pool(2)
    assert child is not pool and list(child.map(abs, [-1, -2])) == [1, 2]


@pytest.fixture
def recorded_reads(monkeypatch):
    """Every block read_through reads: (file name, offset, reading thread)."""
    reads = []
    real_preadv = os.preadv

    def recording(fd, buffers, offset):
        reads.append((os.readlink(f"/proc/self/fd/{fd}").rsplit("/", 1)[1], offset, threading.get_ident()))
        time.sleep(0.001)  # a disk's latency: gives the other readers their turn
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(disk_reads.os, "preadv", recording)
    return reads


def test_read_through_reads_every_block_of_every_file_once(tmp_path, recorded_reads):
    sizes = {"a": 10, "b": 4096 * 30 + 1, "empty": 0}
    for name, size in sizes.items():
        (tmp_path / name).write_bytes(os.urandom(size))
    read_through([tmp_path / name for name in (*sizes, "missing")], QueryTraffic(), readers=3, block=4096)
    assert sorted((name, offset) for name, offset, _ in recorded_reads) == [("a", 0)] + [
        ("b", offset) for offset in range(0, 4096 * 31, 4096)
    ]
    assert len({thread for *_, thread in recorded_reads}) == 3  # no search ran: every reader read


def test_only_one_reader_reads_while_a_search_runs(tmp_path, recorded_reads):
    (tmp_path / "b").write_bytes(os.urandom(4096 * 40))
    traffic = QueryTraffic()
    with traffic.searching():
        warm_up = threading.Thread(target=read_through, args=([tmp_path / "b"], traffic, 4, 4096))
        warm_up.start()
        warm_up.join(timeout=10)
        assert not warm_up.is_alive()  # the one reader that never waits read it all
    assert len(recorded_reads) == 40 and len({thread for *_, thread in recorded_reads}) == 1


def test_searches_are_counted_while_they_run(tiny_bundle, monkeypatch):
    from aesearch import SearchEngine
    from aesearch.search.segments import SegmentedIndex

    engine = SearchEngine.load(tiny_bundle)
    seen = []
    real = SegmentedIndex._search_counted

    def noting(self, *args, **kwargs):
        seen.append(self.traffic._idle.is_set())
        return real(self, *args, **kwargs)

    monkeypatch.setattr(SegmentedIndex, "_search_counted", noting)
    engine.search(np.ones((2, engine.autoencoder.z_size), dtype=np.float32), k=3)
    assert seen == [False] and engine.index.traffic._idle.is_set()  # busy during, idle after

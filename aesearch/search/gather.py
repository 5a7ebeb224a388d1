"""Copying scattered rows out of a memory-mapped file with many reads in flight.

A batch of queries re-ranks its candidates against the stored search vectors (search/large.py):
at 10 M images a batch of 1,000 reads about 280,000 rows scattered over 7.7 GB. One thread
copying them faults one page at a time, one request in flight, and the disks these machines have
answer many at once: cold on the reference machine, one thread copied 10,930 random rows a second
out of those 7.7 GB, 64 threads 81,179 (scripts/bench_disk.py; docs/scale.md). NumPy releases the
GIL while it copies, so the page faults of many threads overlap; threads read, they compute nothing.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from aesearch import defaults

_pool_lock = threading.Lock()
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, threads, pool)


def reader_pool(threads: int) -> ThreadPoolExecutor:
    """The process's shared pool of reader threads (made again in a forked child, whose copy has none)."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] != threads:
            if _pool is not None and _pool[0] == os.getpid():
                _pool[2].shutdown(wait=False)  # another size asked for: its idle threads end
            _pool = (os.getpid(), threads, ThreadPoolExecutor(threads, thread_name_prefix="aesearch-read"))
        return _pool[2]


def gather_rows(array: np.ndarray, rows: np.ndarray, readers: int | None = None) -> np.ndarray:
    """array[rows] for a memory-mapped array, copied by up to `readers` threads at once
    (defaults.GATHER_READERS), each given at least defaults.GATHER_ROWS_PER_READER rows.

    rows sorted (np.unique's), so each thread copies a run of nearby rows. Rows already in the page
    cache cost each thread a memory copy; rows that are not, one read per page fault, `readers` in
    flight. Handing rows to a thread costs about 0.1 ms on two cores, hence the minimum share: a
    small batch whose rows are cached would otherwise pay more for the threads than for the copy."""
    readers = min(readers or defaults.GATHER_READERS, len(rows) // defaults.GATHER_ROWS_PER_READER)
    if readers <= 1:
        return np.asarray(array[rows])
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    bounds = np.linspace(0, len(rows), readers + 1).astype(np.int64)

    def copy(part: int) -> None:
        start, stop = bounds[part], bounds[part + 1]
        out[start:stop] = array[rows[start:stop]]

    for _ in reader_pool(readers).map(copy, range(readers)):
        pass
    return out

"""Reading from disk with many requests in flight, and without holding up the searches.

A batch of queries re-ranks its candidates against the stored search vectors (search/large.py):
at 10 M images a batch of 1,000 reads about 280,000 rows scattered over 7.7 GB. One thread
copying them faults one page at a time, one request in flight, and the disks these machines have
answer many at once: cold on the reference machine, one thread copied 10,930 random rows a second
out of those 7.7 GB, 64 threads 81,179 (scripts/bench_disk.py; docs/scale.md). NumPy releases the
GIL while it copies, so the page faults of many threads overlap; threads read, they compute nothing.

The warm-up (SearchEngine.warm_up) reads a bundle's files into the page cache after a reboot. One
reader keeps going all along; more read only while no search is running (QueryTraffic), because a
search's page faults wait behind every read queued before them: with 4 or 8 readers that never
paused, the first query at 10 M took 0.8-1.3 s and single queries meanwhile up to 3.3 s.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

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


class QueryTraffic:
    """How many searches are running now, for readers that should stay out of their way."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._idle = threading.Event()
        self._idle.set()

    @contextlib.contextmanager
    def searching(self) -> Iterator[None]:
        with self._lock:
            self._running += 1
            self._idle.clear()
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if not self._running:
                    self._idle.set()

    def wait_until_idle(self, timeout: float | None = None) -> bool:
        """True once no search runs; False if `timeout` seconds passed first."""
        return self._idle.wait(timeout)


def read_through(
    paths: Sequence[Path], traffic: QueryTraffic | None = None, readers: int | None = None, block: int | None = None
) -> None:
    """Read files once into the page cache, block by block in order (missing or unreadable files
    are skipped: a bundle without search vectors has none to read).

    One reader reads all along; the other readers - 1 (defaults.WARM_UP_READERS) read a block only
    while `traffic` has no search running."""
    readers = readers or defaults.WARM_UP_READERS
    block = block or defaults.WARM_UP_BLOCK
    descriptors, jobs = [], []
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        descriptors.append(fd)
        jobs += [(fd, offset) for offset in range(0, os.fstat(fd).st_size, block)]
    pending = iter(jobs)
    taking, finished = threading.Lock(), threading.Event()

    def read(yields: bool) -> None:
        buffer = bytearray(block)
        while True:
            while yields and traffic is not None and not traffic.wait_until_idle(timeout=0.05):
                if finished.is_set():  # the first reader took the last block while searches ran
                    return
            with taking:
                job = next(pending, None)
            if job is None:
                finished.set()
                return
            with contextlib.suppress(OSError):  # a file truncated or gone meanwhile: searches will say so
                os.preadv(job[0], [buffer], job[1])

    try:
        threads = [threading.Thread(target=read, args=(number > 0,), daemon=True) for number in range(readers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        for fd in descriptors:
            os.close(fd)

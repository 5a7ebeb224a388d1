"""Products whose result for a row does not depend on the batch, on threads chosen per call.

Why: BLAS picks its kernel by the shapes of a product and treats rows differently by where they
sit in the matrix, so ``(x @ w)[i]`` differs in the last bits depending on which batch row i came
in and how many threads BLAS split it across (on the reference machine, ~1e-8 in a latent vector).
An indexed image queried alone must give exactly its stored vector (distance 0), and a server
thread must give the same answer as any other. So, in aesearch:

* every product runs as a stack of fixed-shape slabs of ``SLAB`` rows (the rows padded to a
  multiple), one single-threaded BLAS call per slab: the same shapes, the same kernel and the same
  rounding for every row wherever it sits (tests/test_rowwise.py checks this on the machine it
  runs on; 8 rows were position-independent with OpenBLAS where 12 and 16 were not);
* NumPy's BLAS runs on one thread in any process that imports aesearch's numeric code (a
  process-wide setting, made at import, normally in the main thread, and re-asserted before each
  product). Holding it only during our calls and restoring it afterwards cannot be made safe
  across threads: OpenBLAS 0.3.31 ignored a change made from a worker thread once the main thread
  had changed it, and with two threads its (8, 314) x (314, 3136) product rounds differently from
  one thread's, so a bundle built on one setting and queried on another would miss distance 0.
  Parallelism comes from our own threads over blocks of rows, chosen per call
  (``threads_for``): one thread for a handful of rows (no hand-off cost, and no waiting for a
  second core that a busy machine does not have), every core for large batches.

The OpenMP-threaded BLAS inside FAISS is left alone: it follows the calling thread's OpenMP
setting, which is per thread (see aesearch.search.index).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

SLAB = 8  # rows per BLAS call: every row goes through the same kernel
# Rows per thread's work item. Small enough that its temporaries (~0.8 MB at 32 rows) are reused
# from malloc's heap: at 256 rows (6 MB each) glibc sometimes maps and unmaps them on every call,
# and the page faults cost as much as the arithmetic (scripts/bench_encode.py). Rows are independent
# of blocks (slabs), so the vectors are the same for any BLOCK.
BLOCK = 32
SMALL_BATCH = 16  # below this many rows, one thread is faster than several
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def threads_for(rows: int) -> int:
    """How many threads a call over this many rows should use: 1 for a handful, else every core."""
    return 1 if rows < SMALL_BATCH else CORES


def matmul(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(m, k) @ (k, n) -> (m, n) float32, each row computed the same whatever the other rows are."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    m, k = a.shape
    pad = -m % SLAB
    if pad:
        a = np.concatenate([a, np.zeros((pad, k), np.float32)])
    one_blas_thread()
    out = np.matmul(a.reshape(-1, SLAB, k), w)  # numpy calls BLAS once per (SLAB, k) slab
    return out.reshape(-1, w.shape[1])[:m]


def map_blocks(
    compute: Callable[[np.ndarray], np.ndarray], inputs: np.ndarray, row_shape: tuple[int, ...], threads: int | None
) -> np.ndarray:
    """compute() over blocks of BLOCK rows of inputs, on `threads` threads (None: threads_for)."""
    out = np.empty((len(inputs), *row_shape), dtype=np.float32)
    starts = range(0, len(inputs), BLOCK)
    workers = min(len(starts), threads or threads_for(len(inputs)))

    def run(start: int) -> None:
        out[start : start + BLOCK] = compute(inputs[start : start + BLOCK])

    one_blas_thread()
    if workers <= 1:
        for start in starts:
            run(start)
    else:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(run, starts))
    return out


_controllers: list = []


def one_blas_thread() -> None:
    """Make sure NumPy's BLAS runs on one thread (see the module docstring); costs ~1 us."""
    for lib in _controllers:
        if lib.get_num_threads() != 1:
            lib.set_num_threads(1)


def _find_blas() -> list:
    from threadpoolctl import ThreadpoolController

    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    # An OpenMP-threaded BLAS (FAISS's) follows each calling thread's own OpenMP setting: leave it.
    return [lib for lib in libs if getattr(lib, "threading_layer", "") != "openmp"]


_controllers.extend(_find_blas())
one_blas_thread()


def per_image_mean(values: np.ndarray) -> np.ndarray:
    """(n, H, W[, C]) -> (n,) float: each image's mean over its pixels (and channels), whatever its shape."""
    return values.reshape(len(values), -1).mean(axis=1)

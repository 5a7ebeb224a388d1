"""Memory a long build keeps small: the allocator's settings, and memory maps read or written a block at a time.

A streaming build touches every row of files far larger than RAM (images, embeddings, search vectors):
these helpers keep its resident set bounded by the chunk, not the collection. NumPy only; glibc through
ctypes where there is one, a no-op elsewhere.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np

READ_BLOCK = 2048  # scattered rows read from a memory map between releases (<= 128 MB mapped)


def keep_freed_memory() -> None:
    """Let freed working arrays of up to 32 MB be reused from the heap, in this process (glibc only).

    Arrays above glibc's mmap threshold are mapped afresh on every allocation, and NumPy asks for
    transparent huge pages on them, so the kernel zeroes 2 MB pages for every working array:
    clearing pages was 35% of a folder build's encoding process (perf), and a Dask worker, whose
    nanny sets MALLOC_TRIM_THRESHOLD_=65536, encoded a chunk 1.6x slower than a plain process. With
    the mmap threshold at 32 MB and 64 MB of freed heap kept, the encoder's per-slice arrays (at
    most 13 MB each) are allocated once and reused. A no-op elsewhere.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    mallopt(m_mmap_threshold, 32 << 20)
    mallopt(m_trim_threshold, 64 << 20)


def release(array: np.ndarray) -> None:
    """Drop a memory map's pages from this process (they stay in the file and the page cache).

    Without it every page written or read stays mapped, and the build's resident set grows with the
    collection (20 GB of images and embeddings at ten million) although the kernel could drop them.
    """
    mapped = getattr(array, "_mmap", None) or getattr(getattr(array, "base", None), "_mmap", None)
    if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
        mapped.madvise(mmap.MADV_DONTNEED)


def read_rows(array: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
    """array[rows] of a memory map, a block at a time, each block's pages released after.

    Scattered rows (the training sample, re-ranking candidates while tuning) map the pages around
    each one that the page cache holds (64 KB): read at once, 160,000 sample rows mapped the whole
    file into the resident set (1.2 GB at a million, 12 GB at ten million).
    """
    if isinstance(rows, slice):
        found = np.array(array[rows])
        release(array)
        return found
    rows = np.asarray(rows)
    blocks = []
    for start in range(0, len(rows), READ_BLOCK):
        blocks.append(np.asarray(array[rows[start : start + READ_BLOCK]]))
        release(array)
    return np.concatenate(blocks) if blocks else np.asarray(array[rows])


def new_float_rows(path: Path, n: int, dim: int) -> np.ndarray:
    """A new .npy file of n x dim float32 rows, mapped for writing a chunk at a time."""
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))

"""Memory a long build keeps small: the allocator's settings, and memory maps read or written a block at a time.

A streaming build touches every row of files far larger than RAM (images, embeddings, search vectors):
these helpers keep its resident set bounded by the chunk, not the collection. NumPy only; glibc through
ctypes where there is one, a no-op elsewhere.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np


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
    """array[rows] of a memory map, without leaving its pages in this process's resident set.

    A slice is read through the map and its pages released. Scattered rows (the training sample,
    re-ranking candidates while tuning, the trust sample's images) are read from the file with
    pread (read_unmapped): through a map, each row's fault maps the page-cache folio around it
    (up to 2 MB on Linux 6), and 1,000 random rows of a 4 GB file put 1.5 GiB in the resident set.
    Arrays that are not a file's map are indexed as they are.
    """
    if isinstance(rows, slice):
        found = np.array(array[rows])
        release(array)
        return found
    rows = np.asarray(rows)
    found = read_unmapped(array, rows)
    if found is None:  # not rows of a file's map: indexed as it is
        found = np.asarray(array[rows])
        release(array)
    return found


def read_unmapped(array: np.ndarray, rows: np.ndarray) -> np.ndarray | None:
    """array[rows] read with pread from the file behind a memory-mapped array (runs of consecutive
    rows in one call), mapping nothing; None when array is not a C-ordered map of a file."""
    where = _file_position(array)
    if where is None or np.asarray(rows).dtype.kind not in "iu":  # not a file's map, or not row numbers
        return None
    path, first = where
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows.min() < 0 or rows.max() >= len(array)):
        raise IndexError(f"rows out of range for {len(array)} rows")
    out = np.empty((len(rows), *array.shape[1:]), dtype=array.dtype)
    if not len(rows) or not out.size:
        return out
    width = out[0].nbytes
    buffer = memoryview(out.reshape(len(out), -1).view(np.uint8))
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1  # runs of consecutive rows: one read each
    starts, stops = np.r_[0, breaks].tolist(), np.r_[breaks, len(rows)].tolist()
    fd = os.open(path, os.O_RDONLY)
    try:
        for start, stop in zip(starts, stops, strict=True):
            wanted = buffer[start:stop].nbytes
            if os.preadv(fd, [buffer[start:stop]], first + int(rows[start]) * width) != wanted:
                raise OSError(f"{path} is shorter than its header says: rebuild the index")
    finally:
        os.close(fd)
    return out


def _file_position(array: np.ndarray) -> tuple[str, int] | None:
    """(file, byte offset of row 0) of a C-ordered np.memmap (or a view of one's rows), else None."""
    mapped = getattr(array, "_mmap", None)
    filename = getattr(array, "filename", None)
    if mapped is None or filename is None or not array.flags.c_contiguous or array.ndim < 1:
        return None
    try:
        base = np.frombuffer(mapped, np.uint8).ctypes.data  # where the map starts in memory
    except (ValueError, TypeError):  # a closed map
        return None
    start = array.offset - array.offset % mmap.ALLOCATIONGRANULARITY  # the file offset the map starts at
    return filename, array.ctypes.data - base + start


def new_float_rows(path: Path, n: int, dim: int) -> np.ndarray:
    """A new .npy file of n x dim float32 rows, mapped for writing a chunk at a time."""
    return np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))

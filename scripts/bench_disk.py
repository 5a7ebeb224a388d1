"""What the disk under a bundle gives from a cold page cache: reads in order and scattered rows, by
one reader and by many at once (the figures behind search/gather.py and docs/scale.md).

    python scripts/bench_disk.py /work/bench/10m/segments/base/search_vectors.npy

The file (a .npy of rows, e.g. a segment's search vectors) is dropped from the page cache
(posix_fadvise, no root needed) before each line. In order: the whole file read by 1, 4 and 16
readers, each its own part. Scattered: --rows random rows copied out of a memory map advised
MADV_RANDOM (one page fault per cold page) by 1 to 128 threads, as StoredVectors' batch does.
Side by side in one run; a shared machine's disk is noisy: run it twice.
"""

from __future__ import annotations

import argparse
import mmap
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def drop(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def in_order(path: Path, readers: int, block: int = 4 << 20) -> float:
    """MB/s reading the whole file, each reader its own contiguous part."""
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)

    def read(part: int) -> None:
        buffer, offset, stop = bytearray(block), part * size // readers, (part + 1) * size // readers
        while offset < stop:
            got = os.preadv(fd, [memoryview(buffer)[: min(block, stop - offset)]], offset)
            if not got:
                break
            offset += got

    start = time.perf_counter()
    with ThreadPoolExecutor(readers) as pool:
        list(pool.map(read, range(readers)))
    seconds = time.perf_counter() - start
    os.close(fd)
    return size / seconds / 1e6


def scattered(path: Path, rows: int, threads: int, seed: int) -> float:
    """Rows a second copied out of a MADV_RANDOM map, `threads` at once."""
    array = np.load(path, mmap_mode="r", allow_pickle=False)
    array._mmap.madvise(mmap.MADV_RANDOM)
    wanted = np.sort(np.random.default_rng(seed).choice(len(array), min(rows, len(array)), replace=False))
    out = np.empty((len(wanted), *array.shape[1:]), array.dtype)
    parts = np.array_split(np.arange(len(wanted)), threads)

    def copy(part: np.ndarray) -> None:
        out[part] = array[wanted[part]]

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(copy, parts))
    return len(wanted) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--rows", type=int, default=30_000)
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    size = args.file.stat().st_size
    print(f"{model}; {os.cpu_count()} cores; {args.file} ({size / 1e9:.2f} GB)")
    for readers in (1, 4, 16):
        drop(args.file)
        print(f"in order, {readers:>3} readers: {in_order(args.file, readers):7,.0f} MB/s", flush=True)
    for seed, threads in enumerate((1, 8, 16, 32, 64, 128)):
        drop(args.file)
        rate = scattered(args.file, args.rows, threads, seed)
        print(f"{args.rows:,} scattered rows, {threads:>3} threads: {rate:9,.0f} rows/s", flush=True)


if __name__ == "__main__":
    main()

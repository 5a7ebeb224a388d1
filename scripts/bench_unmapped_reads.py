"""Re-ranking candidates read through StoredVectors' maps (a query's way) against read from the file
with pread (`StoredVectors.unmapped`: a build's recall measure, large.read_candidates_unmapped; and
memory.read_rows, a build's tuning): time warm, and what each leaves in the resident set.

    python scripts/bench_unmapped_reads.py [--rows 1000000] [--dim 1024] [--batch 65536] [--repeats 7]

A .npy of --rows x --dim float32 rows (4 GB by default: check `df -h`) is written to a temporary
folder under the current one and read once, so that it is in the page cache (cold reads wait for
the disk either way). Then --batch sorted random rows are gathered
each way, alternating, side by side in one run, each by its own StoredVectors (a map's pages count
only in the process that mapped them). Prints the median seconds of each and the resident file
pages (RssFile) the mapped reader holds afterwards; the unmapped one maps nothing.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from aesearch.search.large import StoredVectors


def resident_file_gib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"RssFile:\s+(\d+)", status).group(1)) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=65_536)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    model = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
    print(next((line.split(":", 1)[1].strip() for line in model.splitlines() if "Model name" in line), "?"))
    with tempfile.TemporaryDirectory(dir=".") as folder:
        path = Path(folder) / "search_vectors.npy"
        stored = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(args.rows, args.dim))
        for start in range(0, args.rows, 65_536):
            stored[start : start + 65_536] = np.float32(start)
        stored.flush()
        del stored
        warm = StoredVectors(path)
        for start in range(0, args.rows, 65_536):  # every page in the cache
            warm.unmapped(np.arange(start, min(args.rows, start + 65_536)))
        through_map, from_file = StoredVectors(path), StoredVectors(path)
        rng = np.random.default_rng(0)
        times: dict[str, list[float]] = {"through the map": [], "from the file (pread)": []}
        before = resident_file_gib()
        for _ in range(args.repeats):
            rows = np.unique(rng.choice(args.rows, args.batch, replace=False))
            for how, read in (("through the map", through_map), ("from the file (pread)", from_file.unmapped)):
                started = time.perf_counter()
                read(rows)
                times[how].append(time.perf_counter() - started)
        resident = resident_file_gib() - before
        for how, seconds in times.items():
            print(f"{how}: median {np.median(seconds) * 1e3:.0f} ms for {args.batch:,} rows of {args.dim} (warm)")
        size = path.stat().st_size / 2**30
        print(f"file pages the reads left resident: {resident:.2f} GiB (the file: {size:.2f} GiB)")


if __name__ == "__main__":
    main()

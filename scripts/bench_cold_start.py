"""Cold starts: the first queries of a process that opens a bundle whose files are not in the page cache.

For each way of reading, the bundle's files are dropped from the page cache (posix_fadvise, no root
needed), it is loaded, and this prints the load time, the first query, the p50 and p95 of the next
199 single queries (`engine.query(image, k=10)`, Fashion-MNIST test images), then, dropped and
loaded again, a batch of 1,000 queries in one call:

  * plain map: re-ranking reads the search vectors through an ordinary memory map (as before
    StoredVectors: defaults.SCATTERED_ROWS = 0);
  * scattered map: a query's few candidates through a map advised MADV_RANDOM (the default);
  * scattered map + warm-up: as `aesearch serve` runs, SearchEngine.warm_up() reading the files in
    the background from the moment the bundle is loaded.

    python scripts/bench_cold_start.py /work/bench/1m/bundle

Side by side in one run; a shared machine's disk is noisy: run it twice.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from bench_scale import evict_page_cache

from aesearch import SearchEngine, defaults
from aesearch.sources.fashion_mnist import load_fashion_mnist

WAYS = {"plain map": (0, False), "scattered map": (defaults.SCATTERED_ROWS, False)}
WAYS["scattered map + warm-up"] = (defaults.SCATTERED_ROWS, True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"{platform.node()}: {model}; {os.cpu_count()} cores; avx512f: {'avx512f' in cpu}")
    queries = np.asarray(load_fashion_mnist().test.images[:1000])
    print("| reading | load | first query | next 199: p50 | p95 | batch of 1,000 |")
    print("|---|---|---|---|---|---|")
    for name, (scattered, warm) in WAYS.items():
        defaults.SCATTERED_ROWS = scattered
        evict_page_cache(args.bundle)
        start = time.perf_counter()
        engine = SearchEngine.load(args.bundle)
        load_s = time.perf_counter() - start
        if warm:
            engine.warm_up()
        times = []
        for image in queries[:200]:
            t = time.perf_counter()
            engine.query(image, k=10)
            times.append((time.perf_counter() - t) * 1e3)
        engine = None
        gc.collect()  # unmapped: pages this process maps cannot be dropped
        evict_page_cache(args.bundle)
        engine = SearchEngine.load(args.bundle)
        if warm:
            engine.warm_up()
        t = time.perf_counter()
        engine.query_batch(queries, k=10)
        batch = len(queries) / (time.perf_counter() - t)
        engine = None
        gc.collect()
        rest = times[1:]
        print(
            f"| {name} | {load_s:.2f} s | {times[0]:.1f} ms | {statistics.median(rest):.1f} ms "
            f"| {np.percentile(rest, 95):.1f} ms | {batch:,.0f} q/s |",
            flush=True,
        )


if __name__ == "__main__":
    main()

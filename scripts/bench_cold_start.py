"""Cold starts: the first queries of a process that opens a bundle whose files are not in the page cache.

For each way of reading, the bundle's files are dropped from the page cache (posix_fadvise, no root
needed), it is loaded, and this prints the load time, the first query, the p50 and p95 of the next
199 single queries (`engine.query(image, k=10)`, Fashion-MNIST test images), then, dropped and
loaded again, a batch of 1,000 queries in one call and the same batch again (what it read now
cached: its warm speed, side by side), and where the way warms up, how long after
loading the warm-up had read every file:

  * plain map, one reader: re-ranking reads the search vectors through an ordinary memory map, one
    page fault at a time (as before StoredVectors: defaults.SCATTERED_ROWS = 0, GATHER_READERS = 1);
  * scattered map, one reader: a query's few candidates through a map advised MADV_RANDOM, a
    batch's through the plain map by one thread (session 22's default);
  * the same + warm-up: as `aesearch serve` runs, SearchEngine.warm_up() reading the files in a
    background thread from the moment the bundle is loaded;
  * parallel reads: a batch's rows copied by defaults.GATHER_READERS threads, through the plain
    map when they are DENSE_GATHER_SHARE of the file, else the scattered one (the default);
  * parallel reads + warm-up: the same, as `aesearch serve` runs now.

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

ONE_READER = {"GATHER_READERS": 1}
WAYS = {
    "plain map, one reader": ({"SCATTERED_ROWS": 0, "DENSE_GATHER_SHARE": 0.0, **ONE_READER}, False),
    "scattered map, one reader": ({"DENSE_GATHER_SHARE": 0.0, **ONE_READER}, False),
    "scattered map + warm-up, one reader": ({"DENSE_GATHER_SHARE": 0.0, **ONE_READER}, True),
    "parallel reads": ({}, False),
    "parallel reads + warm-up": ({}, True),
}
SHIPPED = {name: getattr(defaults, name) for name in ("SCATTERED_ROWS", "DENSE_GATHER_SHARE", "GATHER_READERS")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"{platform.node()}: {model}; {os.cpu_count()} cores; avx512f: {'avx512f' in cpu}")
    queries = np.asarray(load_fashion_mnist().test.images[:1000])
    columns = ["reading", "load", "first query", "next 199: p50", "p95", "max", "batch of 1,000", "same batch again"]
    print("| " + " | ".join([*columns, "warm-up read all"]) + " |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (changes, warm) in WAYS.items():
        for setting, value in {**SHIPPED, **changes}.items():
            setattr(defaults, setting, value)
        evict_page_cache(args.bundle)
        start = time.perf_counter()
        engine = SearchEngine.load(args.bundle)
        load_s = time.perf_counter() - start
        warming = engine.warm_up() if warm else None
        times = []
        for image in queries[:200]:
            t = time.perf_counter()
            engine.query(image, k=10)
            times.append((time.perf_counter() - t) * 1e3)
        if warming is not None:
            warming.join()
        warm_s = f"{time.perf_counter() - start:.1f} s" if warming is not None else "-"
        engine = None
        gc.collect()  # unmapped: pages this process maps cannot be dropped
        evict_page_cache(args.bundle)
        engine = SearchEngine.load(args.bundle)
        warming = engine.warm_up() if warm else None
        t = time.perf_counter()
        engine.query_batch(queries, k=10)
        batch = len(queries) / (time.perf_counter() - t)
        t = time.perf_counter()
        engine.query_batch(queries, k=10)  # what it read is cached now: the batch's speed warm
        again = len(queries) / (time.perf_counter() - t)
        if warming is not None:
            warming.join()  # before the next way drops the files from the cache
        engine = None
        gc.collect()
        rest = times[1:]
        print(
            f"| {name} | {load_s:.2f} s | {times[0]:.1f} ms | {statistics.median(rest):.1f} ms "
            f"| {np.percentile(rest, 95):.1f} ms | {max(rest):.1f} ms "
            f"| {batch:,.0f} q/s | {again:,.0f} q/s | {warm_s} |",
            flush=True,
        )


if __name__ == "__main__":
    main()

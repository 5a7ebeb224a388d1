"""The floor of a cold batch: what a batch of 1,000 costs from a cold page cache when re-ranking
reads nothing, beside the batch as it runs.

Issue 22 asks a 10 M bundle for 1,000 q/s on a batch of 1,000 from a cold page cache. This
measures, side by side in one run, each from a dropped page cache (posix_fadvise, as
bench_scale.py and bench_cold_start.py do):

  * reading the segment's index file in order, alone (what any cold batch that probes most lists
    must read, whichever way the re-ranking vectors were stored);
  * the batch as shipped (engine.query_batch, k = 10);
  * the same batch with re-ranking reading no row: every RerankingIndex's rows are zeros (the
    answers are wrong; this is not a way to search, it is the lower bound of this design: preparing,
    encoding, the trust score, the far queries' wider probes, the IVF scan from a cold index);
  * both again warm (the batch's compute alone).

    python scripts/bench_cold_floor.py /work/bench/10m
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from bench_scale import evict_page_cache

from aesearch import SearchEngine
from aesearch.sources.fashion_mnist import load_fashion_mnist


def read_in_order(path: Path, block: int = 1 << 24) -> float:
    """Seconds to read path from start to end in blocks of 16 MiB."""
    start = time.perf_counter()
    with open(path, "rb", buffering=0) as file:
        while file.read(block):
            pass
    return time.perf_counter() - start


def without_row_reads(engine: SearchEngine) -> None:
    """Every re-ranking index of engine gets zero rows instead of reading its search vectors."""
    for part in engine.index.parts:
        reranking = getattr(part.index, "index", None)
        if hasattr(reranking, "vectors_of"):
            dims = reranking.d
            reranking.vectors_of = lambda rows, dims=dims: np.zeros((len(rows), dims), dtype=np.float32)


def batch_speed(bundle: Path, queries: np.ndarray, prepare: Callable[[SearchEngine], None] = lambda engine: None):
    """(cold q/s, warm q/s) of one batch: the bundle dropped from the page cache (this process's
    maps of it released first), loaded, prepare(engine) called, the batch run twice."""
    gc.collect()
    evict_page_cache(bundle)
    engine = SearchEngine.load(bundle)
    prepare(engine)
    speeds = []
    for _ in range(2):
        start = time.perf_counter()
        engine.query_batch(queries, k=10)
        speeds.append(len(queries) / (time.perf_counter() - start))
    engine = None
    gc.collect()
    return speeds[0], speeds[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--repeat", type=int, default=2, help="runs of the whole table (default 2)")
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"{platform.node()}: {model}; {os.cpu_count()} cores; avx512f: {'avx512f' in cpu}")
    queries = np.asarray(load_fashion_mnist().test.images[:1000])
    index_files = sorted(args.bundle.glob("segments/*/index.faiss"))
    index_bytes = sum(path.stat().st_size for path in index_files)
    print("| run | index files read in order | batch as shipped: cold | warm | re-ranking reads nothing: cold | warm |")
    print("|---|---|---|---|---|---|")
    for run in range(1, args.repeat + 1):
        evict_page_cache(args.bundle)
        seconds = sum(read_in_order(path) for path in index_files)
        shipped = batch_speed(args.bundle, queries)
        floor = batch_speed(args.bundle, queries, without_row_reads)
        print(
            f"| {run} | {index_bytes / 1e6:,.0f} MB in {seconds:.2f} s ({index_bytes / 1e6 / seconds:,.0f} MB/s) "
            f"| {shipped[0]:,.0f} q/s | {shipped[1]:,.0f} q/s | {floor[0]:,.0f} q/s | {floor[1]:,.0f} q/s |",
            flush=True,
        )


if __name__ == "__main__":
    main()

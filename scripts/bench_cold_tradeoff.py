"""Recall against cold-batch speed at a large bundle: what a bundle tuned to a lower recall buys.

A compressed bundle re-ranks rerank_factor x k candidates a query, from the nprobe IVF lists it
probes, and a far query again from lists x nprobe lists with candidates x as many candidates
(`far_search`). From a cold page cache a batch's time is the re-ranking's scattered reads
(scripts/bench_cold_floor.py), so fewer candidates are faster cold, and find fewer true neighbours.
For each setting this measures, on the same probes the build records (quality/recall.py: 200 near,
transformed and foreign queries, exact neighbours by a scan of every stored vector), recall@10 of
each kind warm, and for the settings whose every kind reaches --target, the rows one batch of
1,000 Fashion-MNIST test images re-ranks and its speed from a dropped page cache, side by side with
the bundle as built.

    python scripts/bench_cold_tradeoff.py /work/bench/10m --target 0.90
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from bench_cold_floor import batch_speed

from aesearch import SearchEngine
from aesearch.quality.recall import KINDS, probes
from aesearch.sources.fashion_mnist import load_fashion_mnist

FAR_SEARCHES = ((1, 1), (2, 1), (4, 1), (4, 2), (8, 1), (8, 2), (8, 4))


def configure(engine: SearchEngine, factor: int, nprobe: int, far: tuple[int, int]) -> None:
    """Search engine's compressed parts with these settings instead of the tuned ones."""
    for part in engine.index.parts:
        part.index.index.factor = factor
        faiss.extract_index_ivf(part.index.index.index).nprobe = nprobe  # what search_parameters() carries
    engine.index.wide_search = far


def rows_read(engine: SearchEngine, queries: np.ndarray) -> int:
    """Distinct rows a batch re-ranks (each part's vectors_of counted; the search then runs as usual)."""
    seen: list[np.ndarray] = []
    originals = [part.index.index.vectors_of for part in engine.index.parts]
    for part, original in zip(engine.index.parts, originals, strict=True):

        def counted(rows, original=original):
            seen.append(np.asarray(rows).copy())
            return original(rows)

        part.index.index.vectors_of = counted
    engine.query_batch(queries, k=10)
    for part, original in zip(engine.index.parts, originals, strict=True):
        part.index.index.vectors_of = original
    return sum(len(rows) for rows in seen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--target", type=float, default=0.90, help="recall@10 every kind must reach")
    parser.add_argument("--cold", type=int, default=4, help="settings timed cold: the fewest rows first")
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"{platform.node()}: {model}; {os.cpu_count()} cores; avx512f: {'avx512f' in cpu}")
    engine = SearchEngine.load(args.bundle)
    params = engine.manifest["index_params"]
    if "rerank_factor" not in params:
        raise SystemExit(f"{args.bundle} is not a compressed bundle (no re-ranking): build one of 1 M images or more")
    built = (int(params["rerank_factor"]), int(params["nprobe"]), tuple(engine.index.wide_search or (4, 12)))
    start = time.perf_counter()
    found = probes(engine)
    print(f"probes and their exact neighbours: {time.perf_counter() - start:.0f} s; as built: {built}")
    queries = np.asarray(load_fashion_mnist().test.images[:1000])
    settings = sorted(
        {built}
        | set(
            itertools.product((2, 3, 4, 6, 10), (8, 12, 16), ((1, 1), (2, 1), (4, 1), (4, 2), (8, 1), (8, 2), (8, 4)))
        )
    )
    measured = []
    for factor, nprobe, far in settings:
        configure(engine, factor, nprobe, far)
        recall = found.recall(engine)
        if all(recall[kind] >= args.target for kind in KINDS) or (factor, nprobe, far) == built:
            measured.append(((factor, nprobe, far), recall, rows_read(engine, queries)))
    measured.sort(key=lambda m: (m[0] != built, m[2]))
    print(
        "| rerank factor | nprobe | far: lists x candidates | recall@10 near, transformed, foreign "
        "| rows a batch re-ranks | cold batch of 1,000 | warm |"
    )
    print("|---|---|---|---|---|---|---|")
    engine = None
    for (factor, nprobe, far), recall, rows in measured[: args.cold + 1]:
        speeds = batch_speed(args.bundle, queries, partial(configure, factor=factor, nprobe=nprobe, far=far))
        label = " (as built)" if (factor, nprobe, far) == built else ""
        print(
            f"| {factor}{label} | {nprobe} | {far[0]}x{far[1]} | {', '.join(f'{recall[k]:.3f}' for k in KINDS)} "
            f"| {rows:,} | {speeds[0]:,.0f} q/s | {speeds[1]:,.0f} q/s |",
            flush=True,
        )
    for (factor, nprobe, far), recall, rows in measured[args.cold + 1 :]:
        recalls = ", ".join(f"{recall[k]:.3f}" for k in KINDS)
        print(f"| {factor} | {nprobe} | {far[0]}x{far[1]} | {recalls} | {rows:,} | | |")


if __name__ == "__main__":
    main()

"""Query speed: in-process latency, batch throughput, HNSW against exact, cold CLI, build time.

Needs a built bundle (`aesearch build-index`); builds two more from its model in a temporary
folder (flat and hnsw) to time build-index itself. Every figure comes from this one run.
--load runs one CPU-bound process per core beside the single queries (a busy machine);
--single-only stops after the single-query figures.

    python scripts/bench_query.py [--index-dir indexes/fashion-mnist] [--repeats 300] [--load] [--single-only]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from aesearch import SearchEngine, build_index


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1e3 for s in samples)
    p = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return f"p50 {p(0.5):7.3f} ms   p95 {p(0.95):7.3f} ms"


def timed(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def _spin() -> None:
    while True:
        pass


def busy_machine(on: bool) -> list[multiprocessing.Process]:
    """One CPU-bound process per core (none if not on): the load that single queries must bear."""
    procs = [
        multiprocessing.Process(target=_spin, daemon=True) for _ in range(len(os.sched_getaffinity(0)) if on else 0)
    ]
    for proc in procs:
        proc.start()
    time.sleep(0.5 if on else 0)
    return procs


def recall_excluding_self(found: np.ndarray, truth: np.ndarray, own: np.ndarray, k: int) -> float:
    hits = 0
    for f, t, me in zip(found, truth, own, strict=True):
        hits += len(set(f[f != me][:k]) & set(t[t != me][:k]))
    return hits / (len(own) * k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index-dir", default="indexes/fashion-mnist")
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--load", action="store_true", help="one CPU-bound process per core beside the single queries")
    parser.add_argument("--single-only", action="store_true", help="stop after the single-query figures")
    args = parser.parse_args()

    engine = SearchEngine.load(args.index_dir)
    n = len(engine)
    print(f"bundle {args.index_dir}: {n:,} images, {engine.manifest['index_type']}, {engine.manifest['metric']}")
    test_ids = np.arange(n - 10_000, n)  # the test split
    image = engine.image(int(test_ids[0]))
    with tempfile.TemporaryDirectory() as tmp:
        png = Path(tmp) / "query.png"
        Image.fromarray(image).save(png)

        load = busy_machine(args.load)
        print(
            "\n-- single query, in process (preprocess + encode + search + decode), k=8"
            + (f", {len(load)} CPU-bound processes beside it" if load else "")
        )
        print(f"28x28 PNG file         {percentiles(timed(lambda: engine.query(png, k=8), args.repeats))}")
        print(f"28x28 array            {percentiles(timed(lambda: engine.query(image, k=8), args.repeats))}")
        photo = Path("examples/ankle-boot.jpg")
        if photo.exists():
            print(f"480x400 JPEG photo     {percentiles(timed(lambda: engine.query(photo, k=8), args.repeats))}")

        from aesearch.sources.preprocess import preprocess  # the parts, to see where the time goes

        x = preprocess(png)[None]
        z = engine.encode(x)
        print(f"  preprocess (PNG)     {percentiles(timed(lambda: preprocess(png), args.repeats))}")
        print(f"  encode               {percentiles(timed(lambda: engine.encode(x), args.repeats))}")
        kind = f"search ({engine.manifest['index_type']})"
        print(f"  {kind:20s} {percentiles(timed(lambda: engine.search(z, 8), args.repeats))}")
        print(f"  decode               {percentiles(timed(lambda: engine.decode(z), args.repeats))}")

        from dataclasses import replace

        from aesearch.search.feedback import DEFAULT_SETTINGS, refine

        first = engine.query(image, k=10)
        more, less = [h.id for h in first.hits[:5]], [h.id for h in first.hits[5:]]
        for name, settings in [
            ("one fit", replace(DEFAULT_SETTINGS, pseudo_positives=0)),
            (f"default ({DEFAULT_SETTINGS.pseudo_positives} pseudo-positives)", DEFAULT_SETTINGS),
        ]:
            samples = timed(lambda s=settings: refine(engine, first, more, less, settings=s), args.repeats)
            print(f"refine, 5 more + 5 less, {name:28s} {percentiles(samples)}")

        import faiss

        try:
            index, prepared = engine.index.parts[0].index.index, engine.index.search_space(z)
        except AttributeError:  # aesearch 0.1 (one index per bundle): for side-by-side comparisons
            index, prepared = engine.bundle.index.index, engine.bundle.index.search_space(z)
        found = faiss.omp_get_max_threads()
        for threads in (1, len(os.sched_getaffinity(0))):
            faiss.omp_set_num_threads(threads)
            samples = timed(lambda: index.search(prepared, 8), args.repeats)
            print(
                f"  raw FAISS search, {index.ntotal:,} x {index.d}, {threads} OpenMP thread(s): {percentiles(samples)}"
            )
        faiss.omp_set_num_threads(found)
        for proc in load:
            proc.terminate()
        if args.single_only:
            return

        print("\n-- batch of 10,000 queries (the test split), exact search, k=10")
        batch = engine.bundle.images(test_ids)
        start = time.perf_counter()
        engine.query_batch(batch, k=10)
        seconds = time.perf_counter() - start
        print(f"{len(batch) / seconds:,.0f} queries/s ({seconds:.2f} s, including preprocess, encode, decode)")

        print("\n-- build-index with the bundle's trained model (encode 70k + index + write)")
        model = Path(args.index_dir) / "model.safetensors"
        built = {}
        for index_type in ("flat", "hnsw"):
            start = time.perf_counter()
            build_index(Path(tmp) / index_type, model=model, index_type=index_type, progress=False, log=None)
            built[index_type] = time.perf_counter() - start
            print(f"{index_type:5s} {built[index_type]:6.1f} s (in process, data loading included)")

        print("\n-- hnsw against exact, single queries")
        hnsw = SearchEngine.load(Path(tmp) / "hnsw")
        flat = SearchEngine.load(Path(tmp) / "flat")
        params = hnsw.manifest["index_params"]
        queries = flat.encode(batch[:1000])
        _, truth = flat.search(queries, 11)
        _, found = hnsw.search(queries, 11)
        recall = recall_excluding_self(found, truth, test_ids[:1000], 10)
        one = queries[:1]
        flat_t = timed(lambda: flat.search(one, 10), args.repeats)
        hnsw_t = timed(lambda: hnsw.search(one, 10), args.repeats)
        print(f"hnsw {params}")
        print(f"recall@10 against exact (1,000 test images, self excluded): {recall:.4f}")
        print(f"search only: flat {percentiles(flat_t)}")
        print(
            f"             hnsw {percentiles(hnsw_t)}   ({statistics.median(flat_t) / statistics.median(hnsw_t):.1f}x)"
        )
        print(f"full query with hnsw: {percentiles(timed(lambda: hnsw.query(image, k=8), args.repeats))}")

        print("\n-- cold `aesearch query IMAGE -k 8` (new process each time, picture written)")
        cli = [
            sys.executable,
            "-m",
            "aesearch",
            "query",
            str(png),
            "-k",
            "8",
            "--index-dir",
            args.index_dir,
            "--out",
            str(Path(tmp) / "r.png"),
        ]
        walls = []
        for _ in range(7):
            start = time.perf_counter()
            subprocess.run(cli, check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
        print(f"median {statistics.median(walls):.2f} s, min {min(walls):.2f} s, max {max(walls):.2f} s over 7 runs")


if __name__ == "__main__":
    main()

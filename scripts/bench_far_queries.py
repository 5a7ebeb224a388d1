"""Recall@10 and single-query time for each kind of query, with far queries searched as before and now.

A query whose nearest hit lies past the trust calibration's FAR_QUERY_PERCENTILE is searched again
wider: the build chooses how much (the manifest's far_search, quality/recall.py; a bundle built
before has defaults.WIDE_SEARCH..., by kind of index).
This prints, side by side in one run on one bundle, for near queries (Fashion-MNIST test images),
upside-down and mirrored ones, and scikit-learn's digits (queries made by
bench_scale.unusual_queries): the share searched again, recall@10 against an exact scan of the
search vectors, and the p50 of `engine.query(image, k=10)` one at a time, for

  * tuned: no second search;
  * each "lists x candidates" widening given by --settings (default: 4x1, the default before the
    build chose, and the bundle's own choice, or the defaults where it has none).

    python scripts/bench_far_queries.py /work/bench/1m/bundle --start 2000

--start picks the queries: 0 are the ones the defaults were chosen on; any other start is held out
from that choice (2000: near, test images 2,000-2,999; upside down and mirrored, 3,000-3,499; digits
500-999, as scikit-learn has 1,797).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from bench_scale import unusual_queries

from aesearch import SearchEngine, defaults
from aesearch.quality.recall import exact_neighbours
from aesearch.sources.fashion_mnist import load_fashion_mnist

TIMED = 200  # single queries timed per kind and setting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--start", type=int, default=0, help="0: the queries the defaults were chosen on")
    parser.add_argument("--settings", help="lists x candidates, comma-separated (default: 4x1 and the defaults)")
    args = parser.parse_args()
    cpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((line.split(":", 1)[1].strip() for line in cpu.splitlines() if line.startswith("Model name")), "?")
    print(f"{platform.node()}: {model}; {os.cpu_count()} cores; avx512f: {'avx512f' in cpu}")

    engine = SearchEngine.load(args.bundle)
    near_start = args.start  # near: test images start..start+999; the unusual kinds start after 1,000
    kinds = {
        "near": np.asarray(load_fashion_mnist().test.images[near_start : near_start + 1000]),
        **unusual_queries(args.start, digits_start=0 if args.start == 0 else 500),
    }
    vectors = {kind: engine.encode(images) for kind, images in kinds.items()}
    everything = np.concatenate(list(vectors.values()))
    truth = exact_neighbours(engine, engine.index.search_space(everything), 10)
    start, truths = 0, {}
    for kind, v in vectors.items():
        truths[kind] = truth[start : start + len(v)]
        start += len(v)

    far_squared = engine.index.far_squared
    (part,) = engine.index.parts
    if args.settings is None:
        chosen = engine.index.wide_search
        if chosen is None:  # built before the build chose: the defaults for its kind of index
            chosen = (defaults.WIDE_SEARCH, 1)
            if part.index.wide_rerank() > 1:  # a re-ranked, compressed index
                chosen = (defaults.WIDE_SEARCH_COMPRESSED, defaults.WIDE_RERANK)
        args.settings = ",".join(dict.fromkeys(["4x1", f"{chosen[0]}x{chosen[1]}"]))
    nearest = {
        kind: engine.index._merged(engine.index.search_space(v), 1, exhaustive=False)[0][:, 0]
        for kind, v in vectors.items()
    }
    settings = [("tuned (no second search)", None, 1, 1)] + [
        (f"{lists}x lists, {candidates}x candidates", far_squared, int(lists), int(candidates))
        for lists, candidates in (s.split("x") for s in args.settings.split(","))
    ]
    print(f"{len(engine):,} images, {engine.manifest['index_type']}, {engine.manifest['index_params']}")
    print("| setting | kind | searched again | recall@10 | query p50 | query p95 |")
    print("|---|---|---|---|---|---|")
    for name, far, lists, candidates in settings:
        engine.index.far_squared = far
        engine.index.wide_search = (lists, candidates)
        for kind, v in vectors.items():
            found = engine.search(v, 10)[1]
            recall = np.mean([len(np.intersect1d(f, t)) for f, t in zip(found, truths[kind], strict=True)]) / 10
            again = float(np.mean(nearest[kind] > far)) if far is not None else 0.0
            images = kinds[kind]
            times = []
            for i in range(TIMED + 1):
                t = time.perf_counter()
                engine.query(images[i % len(images)], k=10)
                times.append(time.perf_counter() - t)
            times = np.array(times[1:]) * 1e3
            print(
                f"| {name} | {kind} | {again:.0%} | {recall:.3f} | {statistics.median(times):.2f} ms "
                f"| {np.percentile(times, 95):.2f} ms |",
                flush=True,
            )


if __name__ == "__main__":
    main()

"""Scale: build cost, memory, recall and query speed of streamed builds from 100 k to 10 M images.

    python scripts/make_collection.py --size 1000000 --out data/fm-1m       # and 100k, 10M
    python scripts/bench_scale.py --model model.safetensors --work /tmp/scale \\
        data/fm-100k data/fm-1m [data/fm-10m] [--cluster local] [--out results.jsonl] [--plot cost.png]

For each shard collection (and, with --cluster, again on that Dask cluster) it runs
`aesearch build-index --images DIR --model CKPT` in a child process (wall time, peak RSS of the
child and its workers), then, in this process, loads the bundle (start time), and measures:
  * index RAM per vector: the loaded FAISS index's bytes (codes, ids, centroids) / vectors; the
    full vectors kept on disk for re-ranking are reported apart (embedding bytes per vector);
  * recall@10 of 1,000 held-out queries (Fashion-MNIST *test* images: the collections are made
    from the training split) against an exact scan of the same vectors, and of 500 each of three
    unusual kinds (issue 22): test images upside down, mirrored, and scikit-learn's digits;
  * query p50: one 28x28 image end to end (preprocess, encode, search, decode), 200 times;
  * batch q/s: 1,000 queries in one query_batch call;
both twice: cold, the bundle's files dropped from the page cache first (as on a machine that just
started; the first query is reported apart), and warm, the files the query path reads (index,
search vectors, records) read through once, as a server that has run a while has them.
--load times the single queries beside one CPU-bound process per core (bench_query.py's load).
Each row is appended to --out as one JSON line as soon as it is measured, so a run cut short still
reports; the table is printed from that file. Timings on a shared machine are noisy: say so.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from aesearch.errors import AesearchError


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("collections", nargs="+", type=Path, help="shard folders (scripts/make_collection.py)")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="where the bundles are built")
    parser.add_argument("--cluster", help="also build on this Dask cluster (`local`: two local workers)")
    parser.add_argument("--cluster-only", action="store_true", help="with --cluster: only the cluster rows")
    parser.add_argument("--out", type=Path, default=Path("bench_scale.jsonl"))
    parser.add_argument("--plot", type=Path, help="write the cost-versus-size plot here")
    parser.add_argument("--max-index-memory", help="build-index's budget (default: its own); rows record it")
    parser.add_argument(
        "--load",
        action="store_true",
        help="single queries timed beside one CPU-bound process per core (a busy machine; rows say so)",
    )
    parser.add_argument(
        "--search-only",
        action="store_true",
        help="measure the search figures of bundles already built in --work (rows say so)",
    )
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    failed = 0
    for folder in args.collections:
        modes = ([] if args.cluster_only else [None]) + ([args.cluster] if args.cluster else [])
        for cluster in modes:
            if args.search_only:
                name = folder.name + ("-cluster" if cluster else "")
                mode = "search-only" + (", cluster" if cluster else "")
                try:
                    row = {"collection": name, "mode": mode, **search_figures(args.work / name, args.load)}
                except AesearchError as exc:  # no bundle there, or a damaged one: its one line, as a build's
                    row = {"collection": name, "error": str(exc)}
            else:
                budget = ["--max-index-memory", args.max_index_memory] if args.max_index_memory else []
                row = measure(folder, args.model, args.work, cluster, budget, args.load)
                row["max_index_memory"] = args.max_index_memory or "default (256M, or 64 B a vector)"
            failed += "error" in row
            with open(args.out, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    rows = [json.loads(line) for line in args.out.read_text().splitlines() if line.strip()]
    print(table(rows))
    if args.plot:
        plot(rows, args.plot)
    if failed:
        sys.exit(f"error: {failed} of this run's measurements failed (see their rows)")


def measure(folder: Path, model: Path, work: Path, cluster: str | None, extra: list[str], load: bool) -> dict:
    name = folder.name + ("-cluster" if cluster else "")
    bundle = work / name
    command = [
        sys.executable,
        "-m",
        "aesearch",
        "build-index",
        "--images",
        str(folder),
        "--model",
        str(model),
        "--index-dir",
        str(bundle),
        *extra,
    ] + (["--cluster", cluster] if cluster else [])
    start = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    log = child.stdout.read()
    if status != 0:
        return {"collection": name, "error": log.strip().splitlines()[-1] if log.strip() else f"status {status}"}
    row = {
        "collection": name,
        "mode": "cluster" if cluster else "local",
        "build_s": round(wall, 1),
        # ru_maxrss of the largest child process (KiB on Linux): the build, or a cluster worker
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
    }
    row.update(search_figures(bundle, load))
    return row


def search_figures(bundle: Path, load: bool = False) -> dict:
    """Recall, load time and query speed, first with the bundle's files out of the page cache (a
    fresh machine, or a server just started), then with them in it (a server that has run a while).

    Warm means the files the query path reads (index, search vectors, records) were just read
    through once; the recall pass reads the vectors anyway, so it does that for free."""
    import gc

    from bench_query import busy_machine  # scripts/ is on the path when this script runs

    from aesearch import SearchEngine
    from aesearch.quality.recall import exact_neighbours
    from aesearch.search.engine import read_through
    from aesearch.sources.fashion_mnist import load_fashion_mnist

    queries = load_fashion_mnist().test.images[:1000]  # held out: the collections come from train
    row = {}
    for cache in ("cold", "warm"):
        evicted = evict_page_cache(bundle) if cache == "cold" else None
        start = time.perf_counter()
        engine = SearchEngine.load(bundle)
        load_s = time.perf_counter() - start
        (segment,) = engine.bundle.segments
        if cache == "warm":
            # Recall first: its pass over the stored vectors also brings them into the page cache.
            kinds = {"near": queries, **unusual_queries()}
            vectors = {kind: engine.encode(images) for kind, images in kinds.items()}
            found = {kind: engine.search(v, 10)[1] for kind, v in vectors.items()}
            everything = np.concatenate(list(vectors.values()))
            n = segment.count
            # one pass over the stored vectors (the search vectors where the bundle has them) for every kind
            truth = exact_neighbours(engine, engine.index.search_space(everything), 10)
            by_kind, start = {}, 0
            for kind, hits in found.items():
                true = truth[start : start + len(hits)]
                start += len(hits)
                shared = [len(np.intersect1d(f, t)) for f, t in zip(hits, true, strict=True)]
                by_kind[kind] = float(np.mean(shared)) / 10
            recall = by_kind["near"]
            read_through([segment.folder / name for name in ("records.npy", "index.faiss")])
        single, busy = [], busy_machine(load)
        for i in range(201):
            t = time.perf_counter()
            engine.query(queries[i % len(queries)], k=10)
            single.append(time.perf_counter() - t)
        for process in busy:
            process.terminate()
        first_ms, single = single[0] * 1e3, single[1:]  # the first also warms the code paths
        if cache == "cold":  # the single queries warmed some pages: start the batch cold again
            engine = segment = None
            gc.collect()
            evict_page_cache(bundle)
            engine = SearchEngine.load(bundle)
        t = time.perf_counter()
        engine.query_batch(queries, k=10)
        batch_qps = len(queries) / (time.perf_counter() - t)
        prefix = "cold_" if cache == "cold" else ""
        row.update(
            {
                f"{prefix}load_s": round(load_s, 2),
                f"{prefix}first_query_ms": round(first_ms, 2),
                f"{prefix}query_p50_ms": round(statistics.median(single) * 1e3, 2),
                f"{prefix}query_p95_ms": round(float(np.percentile(single, 95)) * 1e3, 2),
                f"{prefix}batch_qps": round(batch_qps),
            }
        )
        if evicted is not None:
            row["cold_evicted_gib"] = round(evicted / 2**30, 2)
        if cache == "warm":
            manifest = engine.manifest
            params = manifest.get("index_params") or {}
            row = {
                "n": n,
                "index_type": manifest["index_type"],
                "index_bytes_per_vector": params.get("bytes_per_vector"),
                "nprobe": params.get("nprobe"),
                "rerank_factor": params.get("rerank_factor"),
                "embedding_bytes_per_vector_on_disk": int(segment.embeddings.shape[1] * 4),
                "tuned_recall_at_10": params.get("tuned_recall_at_10"),
                "recall_at_10": round(recall, 4),
                **{f"recall_at_10_{kind}": round(value, 4) for kind, value in by_kind.items() if kind != "near"},
                **row,
                "busy_processes": len(os.sched_getaffinity(0)) if load else 0,  # beside the single queries
                "load_average": round(os.getloadavg()[0], 1),
            }
        engine = segment = None
        gc.collect()  # unmapped: pages still mapped by this process cannot be evicted
    return row


UNUSUAL = 500  # queries of each unusual kind


def unusual_queries(start: int = 0, digits_start: int = 0) -> dict[str, np.ndarray | list[np.ndarray]]:
    """Queries unlike the collection (issue 22's kinds), UNUSUAL of each, all held out from it:
    * transformed: Fashion-MNIST test images turned upside down (rows 1,000 + start on: not the near
      queries);
    * mirrored: the same images mirrored left-right (the collections mirror some classes: close to it);
    * foreign: scikit-learn's digits (8x8, grey on black) enlarged to 32x32, so the preprocessing frames
      them as it frames any file: a kind of image the collection has none of.
    start, digits_start: where in those sets to begin (bench_far_queries.py confirms on queries no
    choice saw: start 2000, digits_start 500)."""
    from PIL import Image
    from sklearn.datasets import load_digits

    from aesearch.sources.fashion_mnist import load_fashion_mnist

    test = np.asarray(load_fashion_mnist().test.images[1000 + start : 1000 + start + UNUSUAL])
    digits = load_digits().images[digits_start : digits_start + UNUSUAL] / 16 * 255
    enlarged = [Image.fromarray(d.astype(np.uint8)).resize((32, 32), Image.BILINEAR) for d in digits]
    foreign = np.stack([np.asarray(image) for image in enlarged])
    return {"transformed": test[:, ::-1, :].copy(), "mirrored": test[:, :, ::-1].copy(), "foreign": list(foreign)}


def evict_page_cache(folder: Path) -> int:
    """Drop the files under folder from the page cache (no root needed: posix_fadvise DONTNEED,
    which skips pages some process still maps); the bytes of those files."""
    total = 0
    for path in folder.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)  # dirty pages are not dropped
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)
            total += path.stat().st_size
    return total


def recalls(r: dict) -> str:
    kinds = ("recall_at_10", "recall_at_10_transformed", "recall_at_10_mirrored", "recall_at_10_foreign")
    return ", ".join(f"{r[kind]:.3f}" for kind in kinds if kind in r)  # rows of older runs have the first only


def table(rows: list[dict]) -> str:
    lines = [
        "| collection | mode | build (wall) | peak RSS | index | index RAM / vector | recall@10: near, upside "
        "down, mirrored, digits | load | "
        "query p50 | batch q/s | cold: load, first query, p50, q/s | load avg |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['collection']} | failed: {r['error']} |" + " |" * 10)
            continue
        build = f"{r['build_s'] / 60:.1f} min | {r['peak_rss_gib']:.2f} GiB" if "build_s" in r else " | "
        budget = r.get("max_index_memory", "default")
        mode = r["mode"] if budget.startswith("default") else f"{r['mode']}, --max-index-memory {budget}"
        mode += f", single queries beside {r['busy_processes']} busy processes" if r.get("busy_processes") else ""
        cold = (
            f"{r['cold_load_s']:.2f} s, {r['cold_first_query_ms']:.0f} ms, {r['cold_query_p50_ms']:.2f} ms, "
            f"{r['cold_batch_qps']:,}"
            if "cold_load_s" in r
            else ""
        )
        lines.append(
            f"| {r['n']:,} | {mode} | {build} | "
            f"{r['index_type']} | {r['index_bytes_per_vector']} B | {recalls(r)} | {r['load_s']:.2f} s | "
            f"{r['query_p50_ms']:.2f} ms | {r['batch_qps']:,} | {cold} | {r['load_average']} |"
        )
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    default = [r for r in rows if r.get("mode") == "local" and r.get("max_index_memory", "default")[:7] == "default"]
    local = sorted({r["n"]: r for r in default}.values(), key=lambda r: r["n"])  # the last row of each size
    if not local:
        return
    n = [r["n"] for r in local]
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    keys = ("build_s", "peak_rss_gib", "index_bytes_per_vector")
    labels = ("build wall time (s)", "peak RSS (GiB)", "index RAM per vector (B)")
    for ax, key, label in zip(axes, keys, labels, strict=True):
        ax.plot(n, [r[key] for r in local], "o-")
        ax.set_xscale("log")
        ax.set_xlabel("images")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    fig.suptitle("Streamed build-index, default budget, 2-core machine (scripts/bench_scale.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()

"""Serving from shards on a local Dask cluster against one process, side by side (docs/cluster.md).

    OMP_NUM_THREADS=1 nice python scripts/bench_cluster.py --bundle indexes/fashion-mnist \
        --work /tmp/bench-cluster [--add 30000] [--queries 300]

Copies the bundle to --work and adds --add of its own images, mirrored left-right, in three `add`s:
a base segment and three delta segments (a shard is whole segments: search/cluster.py). Then, for
one process, `--cluster local`'s two workers, three workers, and two workers each holding every
segment (replicas=2): single-query p50 and p90 of engine.search (k = 10, the search alone: the
vectors are encoded once, here), each shard's own time per query, the merge's time (the client's
ranking of the shards' answers), what is left (Dask's round trip: the query's time less the
slowest shard's and the merge's), an empty call to every shard (the round trip's floor), a batch
of 1,000 and single queries from 4 threads at once in queries a second; the answers are checked
equal to the one process's. Prints the CPU and whether it has AVX-512.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

import aesearch
from aesearch.search.cluster import ranked


def cpu() -> str:
    text = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Model name")), "?")
    return f"{name}; avx512: {'yes' if 'avx512' in text else 'no'}"


def prepare(bundle: Path, work: Path, add: int) -> Path:
    import aesearch.pipelines.drift as drift
    import aesearch.pipelines.update as update

    target = work / "bundle"
    if target.exists():
        return target
    shutil.copytree(bundle, target)
    # Keep the deltas as deltas: an update this large would otherwise be compacted into one segment.
    update.COMPACT_FRACTION, drift.MIN_OVERLAP, drift.RELEARN_EVERY_SYNC_MAX = float("inf"), 0.0, 0
    engine = aesearch.SearchEngine.load(target)
    ids = engine.bundle.live_ids()[:add]
    collection = aesearch.Collection.open(target)
    for part in np.array_split(ids, 3):
        started = time.perf_counter()
        collection.add(engine.bundle.images(part)[:, :, ::-1].copy())
        print(f"added {len(part):,} images in {time.perf_counter() - started:.1f} s")
    return target


def measure(engine, vectors: np.ndarray, batch: np.ndarray, k: int, truth=None) -> dict:
    """Single-query times (ms), per-shard and merge times when on a cluster, batch q/s."""
    cluster, times, shard_ms, merge_ms, empty_ms, answers = engine.cluster, [], [], [], [], []
    for i in range(len(vectors)):
        started = time.perf_counter()
        answers.append(engine.search(vectors[i : i + 1], k))
        times.append((time.perf_counter() - started) * 1000)
        if cluster is not None:
            shard_ms.append([s * 1000 for s in cluster.last_seconds.values()])
            prepared = engine.index.search_space(vectors[i : i + 1])
            parts, _ = cluster.search(engine.index, prepared, k, None, {"exhaustive": False})
            gathered = [parts[at] for at in sorted(parts)]
            started = time.perf_counter()
            for _ in range(20):
                ranked(gathered, 1, k)
            merge_ms.append((time.perf_counter() - started) / 20 * 1000)
            started = time.perf_counter()  # the floor: the query sent to every shard, nothing searched
            for future in [shard.actor.search([], prepared, k, {}) for shard in cluster.shards]:
                future.result()
            empty_ms.append((time.perf_counter() - started) * 1000)
    started = time.perf_counter()
    batch_answer = engine.search(batch, k)
    qps = len(batch) / (time.perf_counter() - started)
    started = time.perf_counter()  # single queries from 4 threads at once, as a server gets them
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: engine.search(vectors[i : i + 1], k), range(len(vectors))))
    concurrent = len(vectors) / (time.perf_counter() - started)
    if truth is not None:
        for a, b in zip(answers, truth[0], strict=True):
            assert np.array_equal(a[1], b[1]) and np.array_equal(a[0], b[0]), "a cluster answered differently"
        assert np.array_equal(batch_answer[1], truth[1][1]) and np.array_equal(batch_answer[0], truth[1][0])
    out = {
        "p50": np.percentile(times, 50),
        "p90": np.percentile(times, 90),
        "qps": qps,
        "concurrent": concurrent,
        "answers": (answers, batch_answer),
    }
    if shard_ms:
        per_shard = np.array([row for row in shard_ms if len(row) == len(shard_ms[0])])
        out["shards"] = np.percentile(per_shard, 50, axis=0)
        out["merge"] = float(np.percentile(merge_ms, 50))
        # What neither the shards nor the merge spent: Dask's round trip (and the client's own steps).
        slowest = np.array([max(row) for row in shard_ms])
        out["rest"] = float(np.percentile(np.array(times) - slowest - np.array(merge_ms), 50))
        out["empty"] = float(np.percentile(empty_ms, 50))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("indexes/fashion-mnist"))
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--add", type=int, default=30_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    print(f"CPU: {cpu()}")
    path = prepare(args.bundle, args.work, args.add)
    plain = aesearch.SearchEngine.load(path)
    segments = [s.count for s in plain.bundle.segments]
    print(f"bundle: {len(plain):,} images in {len(segments)} segments {segments}, {plain.manifest['index_type']}")
    rng = np.random.default_rng(0)
    ids = rng.choice(plain.bundle.live_ids(), args.queries + 1000, replace=False)
    vectors = plain.encode(plain.bundle.images(ids[: args.queries])[:, :, ::-1].copy())  # near, not in it
    batch = plain.encode(plain.bundle.images(ids[args.queries :]))
    one = measure(plain, vectors, batch, args.k)
    rows = [("one process", one)]
    from dask.distributed import Client, LocalCluster

    for n, replicas in ((2, 1), (3, 1), (2, 2)):
        with (
            LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0") as lc,
            Client(lc) as client,
            aesearch.Cluster(client, replicas=replicas) as cluster,
        ):
            started = time.perf_counter()
            engine = aesearch.SearchEngine.load(path, cluster=cluster)
            placed = [sum(s.segments.values()) for s in cluster.shards]
            name = f"{n} workers" + (f", {replicas} copies" if replicas > 1 else "")
            print(f"{name}: shipped in {time.perf_counter() - started:.1f} s; images per shard {placed}")
            rows.append((name, measure(engine, vectors, batch, args.k, truth=one["answers"])))
    print_table(rows, args.k, args.queries, len(batch), width=20)
    print("answers on the clusters: identical to one process's (ids and distances, every query and the batch)")


def print_table(rows: list[tuple[str, dict]], k: int, queries: int, batch: int, *, width: int) -> None:
    """measure()'s figures, a row each (name, figures): latencies, throughputs, per-shard work, the merge."""
    print(f"\nk = {k}, {queries} single queries (engine.search: the search alone), batch of {batch}")
    header = f"{'p50 ms':>7} {'p90 ms':>7} {'batch q/s':>9} {'4 threads q/s':>13}  {'per-shard p50 ms':18} "
    print(f"{'':{width}} {header}merge p50 ms rest p50 ms empty call p50 ms")
    for name, r in rows:
        shards = " ".join(f"{t:.3f}" for t in r.get("shards", [])) or "-"
        merge = f"{r['merge']:.4f}" if "merge" in r else "-"
        rest = f"{r['rest']:.2f}" if "rest" in r else "-"
        empty = f"{r['empty']:.2f}" if "empty" in r else "-"
        line = f"{name:{width}} {r['p50']:7.2f} {r['p90']:7.2f} {r['qps']:9.0f} {r['concurrent']:13.0f}"
        print(f"{line}  {shards:18} {merge:12} {rest:11} {empty}")


if __name__ == "__main__":
    main()

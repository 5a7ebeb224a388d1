"""A fresh bundle built with `--segments 2`, served by one and by two Dask workers (docs/cluster.md).

    OMP_NUM_THREADS=1 nice python scripts/bench_split_base.py --bundle indexes/fashion-mnist \
        --work /tmp/bench-split [--add 30000] [--queries 300] [--segments 2] [--max-index-memory 16M]

Builds twice, with the bundle's model and search space options (index auto, its metric and
whitening), from the bundle's images plus --add of them mirrored left-right: once as one base
segment (today's build), once as --segments segments. Then, side by side: one process over each,
and the split bundle on a local cluster of one worker (holding every segment) and of --segments
workers (one segment each): single-query p50 and p90 of engine.search (k = 10), each shard's own
time per query, the merge's time, Dask's round trip (what is left), a batch of 1,000 and 4 threads;
the cluster's answers are checked equal to one process's over the same bundle. Recall@10 of both
bundles against an exact scan of the same search-space vectors, on the single queries (near: the
collection's images mirrored up-down, not in it). Prints the CPU and whether it has AVX-512.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from bench_cluster import cpu, measure, print_table

import aesearch


def build(bundle: Path, work: Path, add: int, segments: int, budget: int | None) -> Path:
    from aesearch.model.checkpoint import load_checkpoint
    from aesearch.pipelines.stream import StreamOptions, stream_build
    from aesearch.sources.arrays import ArraySource

    target = work / f"segments-{segments}"
    if target.exists():
        return target
    source = aesearch.SearchEngine.load(bundle).bundle
    ids = source.live_ids()
    records = source.records(ids)
    images = source.images(ids)
    extra = ids[:add]
    images = np.concatenate([images, source.images(extra)[:, :, ::-1]])
    records = np.concatenate([records, source.records(extra)])
    m = source.manifest
    options = StreamOptions(
        metric=m["metric"],
        transform=m["transform"],
        whiten_shrinkage=m["index_params"].get("whiten_shrinkage", 0.0),
        whiten_dims=m["index_params"].get("whiten_dims"),
        shifts=tuple(tuple(s) for s in m["embedding_shifts"]),
        segments=segments,
        max_index_memory=budget,
    )
    arrays = ArraySource(
        np.ascontiguousarray(images),
        records=records,
        split_names=m["split_names"],
        class_names=m["class_names"],
        fit_split=0,
        name="fashion-mnist+mirrored",
    )
    started = time.perf_counter()
    stream_build(target, arrays, load_checkpoint(bundle / "model.safetensors"), options, log=print)
    print(f"built {target.name} in {time.perf_counter() - started:.0f} s")
    return target


def recall(engine, vectors: np.ndarray, answers, k: int) -> float:
    """Recall@k of the answers against an exact scan of every live image's search-space vector."""
    everything = engine.index.search_space(engine.bundle.embeddings(engine.bundle.live_ids()))
    prepared = engine.index.search_space(vectors)
    found = np.concatenate([a[1] for a in answers])
    hits = 0
    for start in range(0, len(prepared), 50):  # 50 queries at a time: 50 x 100,000 distances
        block = prepared[start : start + 50]
        squared = (block**2).sum(1)[:, None] - 2 * block @ everything.T + (everything**2).sum(1)[None]
        exact = np.argpartition(squared, k, axis=1)[:, :k]
        ids = engine.bundle.live_ids()[exact]
        hits += sum(len(set(t) & set(f)) for t, f in zip(ids, found[start : start + 50], strict=True))
    return hits / (len(prepared) * k)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("indexes/fashion-mnist"))
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--add", type=int, default=30_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--segments", type=int, default=2)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--max-index-memory", help="auto's budget for the whole bundle (e.g. 16M: IVF+PQ)")
    args = parser.parse_args()
    from aesearch.search.index_choice import parse_memory

    budget = parse_memory(args.max_index_memory) if args.max_index_memory else None
    print(f"CPU: {cpu()}")
    whole = build(args.bundle, args.work, args.add, 1, budget)
    split = build(args.bundle, args.work, args.add, args.segments, budget)
    rows = []
    one = aesearch.SearchEngine.load(whole)
    plain = aesearch.SearchEngine.load(split)
    for name, engine in (("one segment", one), (f"{args.segments} segments", plain)):
        segments = [
            (
                s.count,
                s.meta["index_type"],
                s.meta["index_params"].get("nprobe"),
                s.meta["index_params"].get("rerank_factor"),
            )
            for s in engine.bundle.segments
        ]
        print(f"{name}: {len(engine):,} images, segments (images, index, nprobe, rerank factor) {segments}")
    rng = np.random.default_rng(0)
    ids = rng.choice(plain.bundle.live_ids(), args.queries + 1000, replace=False)
    vectors = plain.encode(plain.bundle.images(ids[: args.queries])[:, ::-1, :].copy())  # near, not in it
    batch = plain.encode(plain.bundle.images(ids[args.queries :]))
    whole_figures = measure(one, vectors, batch, args.k)
    split_figures = measure(plain, vectors, batch, args.k)
    rows += [("one process, 1 segment", whole_figures), (f"one process, {args.segments} segments", split_figures)]
    for name, engine, figures in (
        ("1 segment", one, whole_figures),
        (f"{args.segments} segments", plain, split_figures),
    ):
        print(f"recall@{args.k} of {name} against exact: {recall(engine, vectors, figures['answers'][0], args.k):.4f}")
    from dask.distributed import Client, LocalCluster

    for n in (1, args.segments):
        with (
            LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0") as lc,
            Client(lc) as client,
            aesearch.Cluster(client) as cluster,
        ):
            started = time.perf_counter()
            engine = aesearch.SearchEngine.load(split, cluster=cluster)
            placed = [sum(s.segments.values()) for s in cluster.shards]
            name = f"{n} worker{'s' if n > 1 else ''}, {args.segments} segments"
            print(f"{name}: shipped in {time.perf_counter() - started:.1f} s; images per shard {placed}")
            rows.append((name, measure(engine, vectors, batch, args.k, truth=split_figures["answers"])))
    print_table(rows, args.k, args.queries, len(batch), width=28)
    print("answers on the clusters: identical to one process's over the split bundle (every query and the batch)")


if __name__ == "__main__":
    main()

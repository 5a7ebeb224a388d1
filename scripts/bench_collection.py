"""Collections on this machine: build from a folder of PNGs, sync, duplicates, query latency after updates.

    python scripts/bench_collection.py --model runs/model.safetensors [--folder DIR] [--work DIR]
    python scripts/bench_collection.py --train-sizes 1000,3000,10000   # when to train on the collection

The folder is the 70,000 Fashion-MNIST images written as PNG files, one subfolder per class
(written once, if missing). Targets (issue "Your own images"): build <= 30 s; sync with nothing
changed <= 2 s, after adding 1,000 files <= 3 s, after removing them <= 1 s; duplicates <= 30 s and
2 GiB; single-query latency after 10 updates within 10% of the freshly built bundle.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from aesearch import Collection, SearchEngine, defaults
from aesearch.pipelines.collection import build_from_folders
from aesearch.search.index import IndexSpec
from aesearch.sources.fashion_mnist import load_fashion_mnist

SPEC = IndexSpec("flat", "cosine", {"whiten_shrinkage": 0.03, "whiten_dims": 192}, "whiten")


def write_folder(out: Path) -> None:
    data = load_fashion_mnist(download=False)
    names = [n.replace("/", "-").replace(" ", "-") for n in data.class_names]
    images = np.concatenate([data.train.images, data.test.images])
    labels = np.concatenate([data.train.labels, data.test.labels])
    for n, (image, label) in enumerate(zip(images, labels, strict=True)):
        path = out / names[label] / f"{'train' if n < 60_000 else 'test'}-{n:05d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, compress_level=1)


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (the decoding workers): on this shared
    machine wall time depends on the others' load, CPU time much less."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(label: str, function, *args, **kwargs):
    start, cpu = time.perf_counter(), cpu_seconds()
    result = function(*args, **kwargs)
    seconds = time.perf_counter() - start
    print(f"{label:<44} {seconds:8.2f} s wall, {cpu_seconds() - cpu:7.2f} s CPU", flush=True)
    return result, seconds


def query_p50(index: Path, queries: np.ndarray) -> tuple[float, float]:
    """Single-query p50 in ms, wall and CPU time, BLAS on one thread as `serve` runs it. On a loaded
    machine the wall time mostly measures the wait for a core; the CPU time, the work."""
    from threadpoolctl import threadpool_limits

    engine = SearchEngine.load(index)
    with threadpool_limits(limits=1, user_api="blas"):
        engine.query(queries[0], k=8)
        wall, cpu = [], []
        for query in queries:
            start, start_cpu = time.perf_counter(), time.process_time()
            engine.query(query, k=8)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return float(np.median(wall) * 1e3), float(np.median(cpu) * 1e3)


def latency(fresh: Path, updated: Path, queries: np.ndarray) -> float:
    """Single-query p50 of the fresh bundle and of the updated one, interleaved; the CPU-time ratio."""
    fresh_ms, updated_ms = [], []
    for _ in range(3):  # interleaved, so both see the same load on this shared machine
        fresh_ms.append(query_p50(fresh, queries))
        updated_ms.append(query_p50(updated, queries))
    segments = len(SearchEngine.load(updated).bundle.segments)
    f_wall, f_cpu = np.median(fresh_ms, axis=0)
    u_wall, u_cpu = np.median(updated_ms, axis=0)
    print(f"{'query p50, fresh bundle':<44} {f_wall:8.2f} ms wall, {f_cpu:6.2f} ms CPU")
    print(
        f"{f'query p50, after 10 updates ({segments} segments)':<44} {u_wall:8.2f} ms wall, {u_cpu:6.2f} ms CPU "
        f"({u_cpu / f_cpu:.2f}x CPU, {u_wall / f_wall:.2f}x wall)"
    )
    return float(u_cpu / f_cpu)


def collection_benchmark(args) -> None:
    folder, work = Path(args.folder), Path(args.work)
    if not folder.is_dir():
        timed("writing the 70,000 PNG files (once)", write_folder, folder)
    index = work / "collection"
    _, build = timed(
        "build-index --images (70,000 PNGs, --model)",
        build_from_folders,
        index,
        images=[folder],
        labels="folders",
        model=args.model,
        spec=SPEC,
        shifts=defaults.EMBEDDING_SHIFTS,
        log=None,
    )
    fresh = work / "fresh-copy"
    shutil.rmtree(fresh, ignore_errors=True)
    shutil.copytree(index, fresh)
    report, unchanged = timed("sync, nothing changed", Collection.open(index).sync)
    assert report.changes == 0, report.summary()
    # 1,000 new files: test images mirrored left-right (new content, same kind of picture)
    data = load_fashion_mnist(download=False)
    extra = folder / "added"
    extra.mkdir(exist_ok=True)
    for n, image in enumerate(data.test.images[:1000]):
        Image.fromarray(image[:, ::-1]).save(extra / f"mirrored-{n:04d}.png", compress_level=1)
    report, added = timed("sync after adding 1,000 files", Collection.open(index).sync)
    assert len(report.added) == 1000, report.summary()
    shutil.rmtree(extra)
    report, removed = timed("sync after removing them", Collection.open(index).sync)
    assert len(report.removed) == 1000, report.summary()

    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start, cpu = time.perf_counter(), cpu_seconds()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "aesearch",
            "duplicates",
            "--index-dir",
            str(index),
            "--out",
            str(work / "duplicates.png"),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    duplicates = time.perf_counter() - start
    peak = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024 / 1024
    label = "duplicates over 70,000 images (process)"
    print(f"{label:<44} {duplicates:8.2f} s wall, {cpu_seconds() - cpu:7.2f} s CPU, peak RSS {peak:.2f} GiB")

    for n in range(10):  # ten updates of ten files each
        part = folder / f"update-{n}"
        part.mkdir(exist_ok=True)
        for m, image in enumerate(data.test.images[1000 + 10 * n : 1010 + 10 * n]):
            Image.fromarray(image[::-1]).save(part / f"flipped-{m}.png")
        Collection.open(index).sync()
    ratio = latency(fresh, index, data.test.images[5000:5300])
    for n in range(10):
        shutil.rmtree(folder / f"update-{n}")
    print(
        f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (a shared machine); build {build:.1f} s; "
        f"sync unchanged {unchanged:.2f} s, +1,000 {added:.2f} s, -1,000 {removed:.2f} s; duplicates "
        f"{duplicates:.1f} s / {peak:.2f} GiB; latency after updates {ratio:.2f}x (CPU)"
    )


def train_sizes(args) -> None:
    """P@10 of a model trained on N images (default recipe) against the Fashion-MNIST model, both
    indexing the same N training images and queried with 2,000 test images (relevance: class)."""
    import torch

    from aesearch.model.checkpoint import load_checkpoint
    from aesearch.model.runtime import NumpyAutoEncoder
    from aesearch.quality.metrics import precision_at_k, relevance
    from aesearch.search.index import VectorIndex
    from aesearch.sources.fashion_mnist import FashionMNIST, Split
    from aesearch.training.train import TrainConfig, fit, to_checkpoint

    data = load_fashion_mnist(download=False)
    queries, query_labels = data.test.images[:2000], data.test.labels[:2000]

    def p_at_10(checkpoint, images, labels) -> float:
        model = NumpyAutoEncoder.from_checkpoint(checkpoint)
        embed = lambda x: model.embed(x.astype(np.float32) / 255, defaults.EMBEDDING_SHIFTS)[1]  # noqa: E731
        index = VectorIndex.build(embed(images), SPEC)
        _, found = index.search(embed(queries), 10)
        return precision_at_k(relevance(labels[found], query_labels), 10)

    reused = load_checkpoint(args.model)
    for size in [int(s) for s in args.train_sizes.split(",")]:
        x, y = data.train.images[:size], data.train.labels[:size]
        held = max(1, size // 10)
        split = FashionMNIST(Split("train", x[held:], y[held:]), Split("test", x[:held], y[:held]), Path("."))
        start = time.perf_counter()
        torch.manual_seed(0)
        trained = to_checkpoint(fit(TrainConfig.for_recipe("default"), split, progress=False, log=None))
        seconds = time.perf_counter() - start
        own = p_at_10(trained, x, y)
        other = p_at_10(reused, x, y)
        print(
            f"{size:>7,} images: trained on them P@10 {own:.4f} ({seconds:.0f} s), Fashion-MNIST model {other:.4f}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/model.safetensors", help="a trained checkpoint (--model)")
    parser.add_argument("--folder", default="runs/fashion-mnist-png", help="the PNG folder (written if missing)")
    parser.add_argument("--work", default="runs/bench-collection", help="where the bundles are written")
    parser.add_argument("--latency-only", action="store_true", help="only the latency part, on the bundles there")
    parser.add_argument("--train-sizes", help="instead: comma-separated collection sizes to train on, e.g. 1000,5000")
    args = parser.parse_args()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    if args.latency_only:
        queries = load_fashion_mnist(download=False).test.images[5000:5300]
        latency(Path(args.work) / "fresh-copy", Path(args.work) / "collection", queries)
    else:
        train_sizes(args) if args.train_sizes else collection_benchmark(args)


if __name__ == "__main__":
    main()

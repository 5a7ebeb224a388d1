"""Make a synthetic collection of N images from Fashion-MNIST by label-preserving augmentation.

    python scripts/make_collection.py --size 10000000 --out /data/fm-10m [--seed 0] [--workers 2]
    python scripts/make_collection.py --size 200000 --out /data/fm-200k-png --png

Each image is a random Fashion-MNIST *training* image with its own random shift, small rotation and
scaling, a horizontal flip where the class allows one, a contrast change and noise
(aesearch.sources.augment); its label is kept. The test split stays unseen, so the benchmarks draw
held-out queries from it. The output is a shard folder (aesearch.sources.shards): `.npy` shards of
(n, 28, 28) uint8 images with labels beside them, which `aesearch build-index --images DIR` streams.

With --png the same images are written as PNG files instead, DIR/CLASS/SSSSS-NNNNNN.png: a folder
of a user's own images, for benchmarking `build-index --images` on files (about 300 bytes a file).

Shard s is generated from the seed and s alone, so the same command gives the same pixels, shards
are made in parallel, and a rerun after an interruption keeps the shards already written.
10,000,000 images take 7.8 GB: check free space first.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

SHARD_SIZE = 100_000
BATCH = 256  # images augmented at once: ~1 MB working arrays (bigger ones cost more in page faults than in compute)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, required=True, help="number of images")
    parser.add_argument("--out", type=Path, required=True, help="folder to write (created)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shard-size", type=int, default=SHARD_SIZE)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--data-dir", type=Path, default=None, help="Fashion-MNIST folder (default: found)")
    parser.add_argument("--png", action="store_true", help="write PNG files in class folders, not .npy shards")
    args = parser.parse_args()
    if args.size < 1 or args.shard_size < 1:
        sys.exit("error: --size and --shard-size must be positive")
    args.out.mkdir(parents=True, exist_ok=True)
    need = args.size * 785 * 1.01
    free = shutil.disk_usage(args.out).free
    if free < need:
        sys.exit(f"error: {args.out} has {free / 1e9:.1f} GB free, the collection needs {need / 1e9:.1f} GB")

    from aesearch.sources.fashion_mnist import load_fashion_mnist
    from aesearch.sources.shards import write_manifest

    data = load_fashion_mnist(args.data_dir)
    source = args.out / ".source.npz"  # the workers read the training split from here, not via torch
    np.savez(source, images=data.train.images, labels=data.train.labels.astype(np.uint8))
    counts = [min(args.shard_size, args.size - start) for start in range(0, args.size, args.shard_size)]
    started = time.perf_counter()
    classes = [n.replace("/", "-").replace(" ", "-") for n in data.class_names] if args.png else None
    jobs = [(args.out, number, count, args.seed, source, classes) for number, count in enumerate(counts)]
    with ProcessPoolExecutor(args.workers) as pool:
        shards = []
        for done, entry in enumerate(pool.map(_make_shard, jobs), 1):
            shards.append(entry)
            elapsed = time.perf_counter() - started
            print(
                f"shard {done}/{len(counts)}: {sum(s['count'] for s in shards):,} images, {elapsed:.0f} s", flush=True
            )
    if not args.png:  # a folder of PNG files needs no manifest: build-index scans it
        write_manifest(
            args.out,
            shards,
            name=f"fashion-mnist-augmented-{args.size}",
            seed=args.seed,
            source="Fashion-MNIST train split, augmented (aesearch.sources.augment)",
            class_names=list(data.class_names),
        )
    source.unlink()
    rate = args.size / (time.perf_counter() - started)
    print(f"{args.size:,} images written to {args.out} ({rate:,.0f} images/s, {args.workers} workers)")


def _make_shard(job: tuple) -> dict:
    folder, number, count, seed, source, classes = job
    from aesearch.sources.augment import augment
    from aesearch.sources.shards import write_shard

    images_path, labels_path = folder / f"images-{number:05d}.npy", folder / f"labels-{number:05d}.npy"
    done_png = folder / f".shard-{number:05d}.done"
    if classes is not None and done_png.exists():
        return {"count": count}
    if classes is None and images_path.exists() and labels_path.exists():  # written whole by an earlier run
        existing = np.load(images_path, mmap_mode="r")
        if existing.shape == (count, 28, 28):
            return {"images": images_path.name, "labels": labels_path.name, "count": count}
    os.nice(5)  # a background job on a shared machine
    train = np.load(source)
    rng = np.random.default_rng([seed, number])
    chosen = rng.integers(0, len(train["labels"]), count)
    labels = train["labels"][chosen]
    images = np.empty((count, 28, 28), dtype=np.uint8)
    for start in range(0, count, BATCH):
        rows = slice(start, start + BATCH)
        images[rows] = augment(train["images"][chosen[rows]], labels[rows], rng)
    if classes is None:
        return write_shard(folder, number, images, labels)
    from PIL import Image

    for name in classes:
        (folder / name).mkdir(exist_ok=True)
    for row, (image, label) in enumerate(zip(images, labels, strict=True)):
        Image.fromarray(image).save(folder / classes[label] / f"{number:05d}-{row:06d}.png", compress_level=1)
    done_png.touch()  # the shard's files are all there: a rerun skips it
    return {"count": count}


if __name__ == "__main__":
    main()

"""Build a synthetic collection's bundle straight from memory, for a disk too small for shards and bundle.

    python scripts/build_in_memory.py --size 10000000 --out /work/bench/10m

The images are make_collection.py's (the same seed gives the same pixels, shard by shard: image i
of shard s comes from the generator seeded [seed, s]); they are made in this process's memory
(7.8 GB at 10 M) and streamed into `stream_build` with the shipped Fashion-MNIST model and every
default `aesearch build-index` uses, so the bundle is what `build-index --images SHARDS --model
shipped` makes of the shard folder, without the 7.8 GB of shards beside its 29 GB on disk. Then
measure it with bench_far_queries.py, bench_cold_start.py or bench_scale.py --search-only.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from make_collection import BATCH, SHARD_SIZE

from aesearch.sources.arrays import ArraySource


class InMemoryCollection(ArraySource):
    """An ArraySource whose fingerprint is hashed a block at a time (tobytes() would copy 7.8 GB)."""

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for start in range(0, len(self.images), SHARD_SIZE):
            digest.update(memoryview(np.ascontiguousarray(self.images[start : start + SHARD_SIZE])))
        digest.update(memoryview(np.ascontiguousarray(self.labels)))
        return digest.hexdigest()


def _shard(job: tuple) -> tuple[np.ndarray, np.ndarray]:
    number, count, seed, train_images, train_labels = job
    from aesearch.sources.augment import augment

    rng = np.random.default_rng([seed, number])
    chosen = rng.integers(0, len(train_labels), count)
    labels = train_labels[chosen]
    images = np.empty((count, 28, 28), dtype=np.uint8)
    for start in range(0, count, BATCH):
        rows = slice(start, start + BATCH)
        images[rows] = augment(train_images[chosen[rows]], labels[rows], rng)
    return images, labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from aesearch.model.checkpoint import load_checkpoint
    from aesearch.model.shipped import SHIPPED_DIR
    from aesearch.pipelines.stream import stream_build
    from aesearch.sources.fashion_mnist import load_fashion_mnist

    data = load_fashion_mnist()
    train_images, train_labels = data.train.images, data.train.labels.astype(np.uint8)
    images = np.empty((args.size, 28, 28), dtype=np.uint8)
    labels = np.empty(args.size, dtype=np.uint8)
    counts = [min(SHARD_SIZE, args.size - start) for start in range(0, args.size, SHARD_SIZE)]
    started = time.perf_counter()
    jobs = [(n, c, args.seed, train_images, train_labels) for n, c in enumerate(counts)]
    with ProcessPoolExecutor(args.workers) as pool:
        for number, (shard_images, shard_labels) in enumerate(pool.map(_shard, jobs)):
            images[number * SHARD_SIZE : number * SHARD_SIZE + len(shard_images)] = shard_images
            labels[number * SHARD_SIZE : number * SHARD_SIZE + len(shard_labels)] = shard_labels
    made = time.perf_counter() - started
    print(f"{args.size:,} images made in memory in {made:.0f} s", flush=True)
    source = InMemoryCollection(
        images,
        labels.astype(np.int16),
        class_names=list(data.class_names),
        info={"dataset": f"fashion-mnist-augmented-{args.size}", "split_sizes": {"collection": args.size}},
        name="synthetic images in memory",
    )
    checkpoint = load_checkpoint(SHIPPED_DIR / "fashion-mnist.safetensors")
    started = time.perf_counter()
    stream_build(args.out, source, checkpoint)
    print(
        f"built in {time.perf_counter() - started:.0f} s; peak RSS of this process (images in memory included) "
        f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB",
        flush=True,
    )


if __name__ == "__main__":
    main()

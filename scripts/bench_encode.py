"""Bulk encoding speed: images/s of what build-index runs per image (the phase-pooled embedding,
two encoder passes, then a decode) by rows per thread's work item (rowwise.BLOCK).

    python scripts/bench_encode.py [--model indexes/fashion-mnist/model.safetensors] [--images 20000]
                                   [--blocks 32,64,128,256] [--rounds 2]

Each block size is timed `--rounds` times, interleaved (32, 64, ..., 32, 64, ...), each time in a
fresh process (malloc's state depends on what ran before), on the same Fashion-MNIST images with
every core, and reported with the minor page faults per image: big work items make glibc map and
unmap their temporaries on every call. The vectors must not depend on the block size: the script
checks that they are bit-identical across sizes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aesearch import defaults, rowwise
from aesearch.model.checkpoint import load_checkpoint
from aesearch.model.runtime import NumpyAutoEncoder
from aesearch.sources.fashion_mnist import load_fashion_mnist


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="indexes/fashion-mnist/model.safetensors")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--blocks", default="32,64,128,256")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: time one block size here
    parser.add_argument("--vectors", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        return time_one(args.model, args.images, args.one, args.vectors)

    blocks = [int(b) for b in args.blocks.split(",")]
    runs: dict[int, list[dict]] = {b: [] for b in blocks}
    print(f"{args.images:,} Fashion-MNIST images, {rowwise.CORES} cores, a fresh process per run")
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.rounds):
            for block in blocks:
                command = [
                    sys.executable,
                    __file__,
                    "--model",
                    args.model,
                    "--images",
                    str(args.images),
                    "--one",
                    str(block),
                    "--vectors",
                    f"{tmp}/{block}.npy",
                ]
                runs[block].append(json.loads(subprocess.run(command, check=True, capture_output=True).stdout))
        for block in blocks:
            rate = max(run["images_per_s"] for run in runs[block])
            faults = min(run["faults_per_image"] for run in runs[block])
            print(f"BLOCK {block:4d}: {rate:8,.0f} images/s (best of {args.rounds}), {faults:6.1f} faults per image")
        first = np.load(f"{tmp}/{blocks[0]}.npy")
        same = all(np.array_equal(first, np.load(f"{tmp}/{block}.npy")) for block in blocks)
    print(f"vectors bit-identical across block sizes: {same}")
    if not same:
        raise SystemExit("error: the block size changed the vectors")


def time_one(model: str, count: int, block: int, out: Path) -> None:
    autoencoder = NumpyAutoEncoder.from_checkpoint(load_checkpoint(model))
    images = load_fashion_mnist().train.images[:count].astype(np.float32) / 255
    rowwise.BLOCK = block
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    z, vectors = autoencoder.embed(images, defaults.EMBEDDING_SHIFTS)
    autoencoder.decode(z)
    seconds = time.perf_counter() - start
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    np.save(out, vectors)
    print(json.dumps({"images_per_s": count / seconds, "faults_per_image": faults / count}))


if __name__ == "__main__":
    main()

"""The prepared GPU run (issue 19): train the shipped recipe and encode 1 M images on a lent GPU.

    python scripts/gpu_check.py                      # on the GPU machine: the whole check
    python scripts/gpu_check.py --quick              # a smoke test anywhere (CPU, 1 epoch, 20,000 images)
    python scripts/gpu_check.py --sweep 80,200,400 --skip-training --images 0   # longer schedules, validation

1. Trains `TrainConfig.for_recipe("shipped")` on all 60,000 Fashion-MNIST training images on the
   device (`--device`, default auto: CUDA when present; bfloat16 where it is fast), builds the
   default bundle with the model and scores it on the test protocol, as
   `scripts/train_shipped_model.py --measure-only --skip-validation` does; prints the training time.
2. Encodes `--images` (default 1,000,000) 28x28 images (Fashion-MNIST's 70,000, each moved by a
   random shift of up to 2 pixels, repeated) with the PyTorch model on the device in batches of
   16,384 (both grid phases, as the bundle's pooling does), and prints images/s; beside it the NumPy
   runtime (what `build-index` uses) on 20,000 of them on this machine's CPU, in the same run.
3. With --sweep E1,E2,...: the shipped recipe with E joint epochs each, trained on the first 50,000
   training images and scored on the validation protocol (the choice of a longer schedule is made
   on these; docs/retrieval-objective.md): P@10, mAP@100, mAP@R, Shirt P@10, test MSE, seconds.
Prints the device (name, memory), torch's version and the CPU model first. Needs PyTorch. Meant to
fit well inside 10 minutes on one H200 (the training is ~20,000 small steps).
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aesearch import TrainConfig, train_model
from aesearch.model.network import AutoEncoder, to_patch_layout
from aesearch.model.runtime import NumpyAutoEncoder
from aesearch.sources.fashion_mnist import load_fashion_mnist
from aesearch.training.train import resolve_device

BATCH = 16_384
CPU_SAMPLE = 20_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=1_000_000, help="images to encode (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="1 epoch and 20,000 images: a smoke test")
    parser.add_argument("--skip-training", action="store_true")
    parser.add_argument("--sweep", default="", help="joint-epoch counts to score on validation, e.g. 80,200,400")
    args = parser.parse_args()
    device = resolve_device(args.device)
    describe(device)
    count = 20_000 if args.quick else args.images

    with tempfile.TemporaryDirectory() as tmp:
        overrides = {"epochs": 1, "decoder_epochs": 1} if args.quick else {}
        config = TrainConfig.for_recipe("shipped", device=args.device, **overrides)
        if args.skip_training:
            model = AutoEncoder()
        else:
            checkpoint = Path(tmp) / "model.safetensors"
            result = train_model(config, out=checkpoint, progress=False, log=print)
            print(
                f"trained recipe {config.recipe} ({len(result.history)} epochs) in {result.seconds:.1f} s on "
                f"{result.device} ({result.precision}); test MSE {result.test_mse:.5f}"
            )
            from train_shipped_model import measure  # the same figures the shipped model records

            print("test protocol:", measure(checkpoint, Path(tmp) / "bundle", None, "test"))
            model = result.model
    if count:
        encode_speed(model.to(device).eval(), device, count)
    for epochs in [int(e) for e in args.sweep.split(",") if e.strip()]:
        sweep_point(epochs, args.device)


def sweep_point(epochs: int, device: str) -> None:
    """The shipped recipe at this many joint epochs, on the validation protocol (its own 50,000 images)."""
    from train_shipped_model import VALIDATION_TRAIN, measure

    config = TrainConfig.for_recipe("shipped", epochs=epochs, device=device)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = Path(tmp) / "model.safetensors"
        result = train_model(config, out=checkpoint, limit=VALIDATION_TRAIN, progress=False, log=None)
        figures = measure(checkpoint, Path(tmp) / "bundle", None, "validation")
    print(
        f"sweep: {epochs} joint epochs, validation {figures}, test MSE {result.test_mse:.5f}, "
        f"{result.seconds:.0f} s on {result.device} ({result.precision})",
        flush=True,
    )


def describe(device: torch.device) -> None:
    print(f"torch {torch.__version__}, device {device}")
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        print(f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB")
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        print(next(line for line in lscpu.splitlines() if line.startswith("Model name")).strip())
    except (OSError, subprocess.CalledProcessError, StopIteration):
        pass


def encode_speed(model: AutoEncoder, device: torch.device, count: int) -> None:
    data = load_fashion_mnist()
    base = np.concatenate([np.asarray(data.train.images), np.asarray(data.test.images)])
    rng = np.random.default_rng(0)
    picks = rng.integers(0, len(base), count)
    shifts = rng.integers(-2, 3, (count, 2))
    images = np.empty((count, 28, 28), np.uint8)
    for (dy, dx), rows in _groups(shifts):  # one roll per distinct shift, not per image
        images[rows] = np.roll(base[picks[rows]], (dy, dx), axis=(1, 2))
    fast_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()

    @torch.no_grad()
    def encode(batch: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(batch).to(device, non_blocking=True).float().div_(255).unsqueeze(1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast_bf16):
            z = model.encode_patches(to_patch_layout(x)) + model.encode_patches(
                to_patch_layout(torch.roll(x, (1, 1), (2, 3)))
            )
        return (z.float() / 2).cpu()

    encode(images[:BATCH])  # warm-up: kernels, allocator
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(0, count, BATCH):
        encode(images[i : i + BATCH])
    seconds = time.perf_counter() - start
    print(f"PyTorch on {device}: {count:,} images in {seconds:.1f} s, {count / seconds:,.0f} images/s (z to the host)")

    runtime = NumpyAutoEncoder(model.cpu().weights(), model.config)
    sample = images[:CPU_SAMPLE].astype(np.float32) / 255
    start = time.perf_counter()
    runtime.embed(sample, ((0, 0), (1, 1)))
    seconds = time.perf_counter() - start
    print(f"NumPy runtime on this CPU: {CPU_SAMPLE:,} images in {seconds:.1f} s, {CPU_SAMPLE / seconds:,.0f} images/s")


def _groups(shifts: np.ndarray):
    keys = (shifts[:, 0] + 2) * 5 + (shifts[:, 1] + 2)
    for key in np.unique(keys):
        yield (int(key // 5 - 2), int(key % 5 - 2)), np.flatnonzero(keys == key)


if __name__ == "__main__":
    main()

"""Training speed: the article's straightforward loop against aesearch's, side by side in one run.

Both train the same architecture with the same recipe (seed: Adam 1e-3, plateau schedule, batch
1024, shuffled, drop_last) on the same in-memory data, one after the other in this process:
  * seed loop: a Dataset that turns each uint8 image into a PIL image and applies ToTensor (what
    torchvision's FashionMNIST does per sample), a DataLoader, and the nn.Conv2d model;
  * plain in-memory: the same nn.Conv2d model fed from one float tensor in memory (no DataLoader),
    so the patch form's own gain over the layers as written is visible;
  * ours: aesearch's training loop (uint8 data on the device in patch layout, matmul-only form,
    bfloat16 autocast where the hardware has it).
Prints seconds per epoch for each, their ratio, our GFLOP/s against a matrix-multiply peak
measured here. Then the retrieval recipes' epochs (reconstruction plus the view-consistency term,
then decoder-only epochs) in bfloat16 where the CPU has it and in float32 (what a CPU without
AVX-512 runs), with the full `retrieval` and `shipped` recipes' times they imply; --full also
runs the whole `retrieval` recipe in float32 and reports its wall time.

    python scripts/bench_train.py [--epochs 2] [--full] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import ToTensor

from aesearch import AutoEncoder, TrainConfig, fit, load_fashion_mnist

# Forward multiply-adds per image: conv1 196*4*32, conv2 49*128*64, two Linear 3136*314,
# convT1 49*64*128, convT2 196*32*4. A training step costs about 3x the forward pass.
FORWARD_MACS = 196 * 4 * 32 + 49 * 128 * 64 + 2 * 3136 * 314 + 49 * 64 * 128 + 196 * 32 * 4
TRAIN_FLOP_PER_IMAGE = 3 * 2 * FORWARD_MACS  # about 16.9 MFLOP


class PerSampleToTensor(Dataset):
    """What torchvision's FashionMNIST + ToTensor do for every sample."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels, self.to_tensor = images, labels, ToTensor()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.to_tensor(Image.fromarray(np.asarray(self.images[i]), mode="L")), int(self.labels[i])


def seed_loop_seconds_per_epoch(images, labels, epochs: int) -> list[float]:
    """The article's training code, unchanged but for timing."""
    torch.manual_seed(0)
    loader = DataLoader(PerSampleToTensor(images, labels), batch_size=1024, shuffle=True, drop_last=True)
    model = AutoEncoder()
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, threshold=0.1, patience=1, mode="min")
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for image, _ in loader:
            optimizer.zero_grad()
            loss = F.mse_loss(model(image), image)
            loss.backward()
            optimizer.step()
        scheduler.step(loss.detach())  # the article passes the loss tensor itself; same value
        times.append(time.perf_counter() - start)
    return times


def plain_in_memory_seconds_per_epoch(images, epochs: int) -> list[float]:
    """The nn.Conv2d model with the data already in memory as floats: no per-sample work."""
    torch.manual_seed(0)
    x = torch.as_tensor(np.asarray(images)).float().div_(255.0)[:, None]  # (N, 1, 28, 28)
    model = AutoEncoder()
    optimizer = torch.optim.Adam(model.parameters())
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(x))
        for i in range(0, len(x) - 1023, 1024):
            image = x[order[i : i + 1024]]
            optimizer.zero_grad()
            loss = F.mse_loss(model(image), image)
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - start)
    return times


def matmul_peak_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 10) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    a @ b  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2, help="epochs timed for each loop (default 2)")
    parser.add_argument("--full", action="store_true", help="also run the whole retrieval recipe in float32")
    parser.add_argument("--data-dir", help="folder holding Fashion-MNIST (else searched)")
    args = parser.parse_args()

    data = load_fashion_mnist(args.data_dir)
    n = len(data.train) // 1024 * 1024
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.epochs} epochs each, batch 1024")

    seed_times = seed_loop_seconds_per_epoch(data.train.images, data.train.labels, args.epochs)
    plain_times = plain_in_memory_seconds_per_epoch(data.train.images, args.epochs)
    ours = fit(TrainConfig.for_recipe("seed", epochs=args.epochs), data, progress=False, log=None)
    our_times = [h.seconds for h in ours.history]
    ours32 = fit(TrainConfig.for_recipe("seed", epochs=args.epochs, precision="fp32"), data, progress=False, log=None)
    our32_times = [h.seconds for h in ours32.history]
    seed_s, our_s = min(seed_times), min(our_times)  # best epoch: least disturbed by other load

    peak32, peak16 = matmul_peak_gflops(torch.float32), matmul_peak_gflops(torch.bfloat16)
    achieved = n * TRAIN_FLOP_PER_IMAGE / our_s / 1e9
    peak = peak16 if ours.precision == "bf16" else peak32
    print(
        f"seed loop (DataLoader + ToTensor, nn.Conv2d, fp32): {seed_s:6.2f} s/epoch  (each: "
        f"{', '.join(f'{t:.2f}' for t in seed_times)})"
    )
    print(
        f"plain     (in-memory tensor, nn.Conv2d, fp32):   {min(plain_times):6.2f} s/epoch  (each: "
        f"{', '.join(f'{t:.2f}' for t in plain_times)})"
    )
    print(
        f"aesearch  (in-memory, matmul form, {ours.precision}):      {our_s:6.2f} s/epoch  (each: "
        f"{', '.join(f'{t:.2f}' for t in our_times)})"
    )
    print(
        f"aesearch  (in-memory, matmul form, fp32):        {min(our32_times):6.2f} s/epoch  (each: "
        f"{', '.join(f'{t:.2f}' for t in our32_times)})"
    )
    print(
        f"speed-up: {seed_s / our_s:.2f}x ({ours.precision}), {seed_s / min(our32_times):.2f}x (fp32); "
        f"the matmul form alone, fp32 against the plain in-memory loop: {min(plain_times) / min(our32_times):.2f}x"
    )
    print(
        f"aesearch: {achieved:.0f} GFLOP/s at {TRAIN_FLOP_PER_IMAGE / 1e6:.1f} MFLOP per training image; "
        f"matmul peak here {peak32:.0f} GFLOP/s fp32, {peak16:.0f} GFLOP/s bf16 "
        f"({achieved / peak:.0%} of the {ours.precision} peak)"
    )
    retrieval_epochs(data, args.epochs)
    if args.full:
        result = fit(TrainConfig.for_recipe("retrieval", precision="fp32"), data, progress=False, log=None)
        print(
            f"full retrieval recipe, fp32: {result.seconds:.1f} s for {len(result.history)} epochs, "
            f"test MSE {result.test_mse:.5f}"
        )


def retrieval_epochs(data, epochs: int) -> None:
    """Seconds per joint and per decoder-only epoch of the retrieval recipes, and what the recipes take."""
    for precision in ("auto", "fp32"):
        config = TrainConfig.for_recipe("retrieval", epochs=epochs, decoder_epochs=1, precision=precision)
        run = fit(config, data, progress=False, log=None)
        joint = min(h.seconds for h in run.history if h.phase == "joint")
        decoder = min(h.seconds for h in run.history if h.phase == "decoder")
        implied = {
            name: (recipe.epochs * joint + recipe.decoder_epochs * decoder) / 60
            for name, recipe in ((name, TrainConfig.for_recipe(name)) for name in ("retrieval", "shipped"))
        }
        print(
            f"retrieval recipes ({run.precision}): {joint:6.2f} s a joint epoch, {decoder:5.2f} s a decoder epoch; "
            + ", ".join(f"{name} recipe ~{minutes:.1f} min" for name, minutes in implied.items())
        )


if __name__ == "__main__":
    main()

"""Experiment (issue 19): the seed AutoEncoder trained with reconstruction plus a view-consistency
term on the first `--search-dims` components of z, the rest of z left to reconstruction.

    python scripts/experiment_consistency.py --epochs 30 --weight 0.3 --search-dims 128 --finetune 5

Needs PyTorch. Trains on the first 50,000 training images only, so that the validation protocol's
queries (the last 10,000 training images, searched against the other 50,000) are never seen; prints
one JSON line: validation P@10 and Shirt P@10 in four search spaces (all of z whitened to 192 and
cosine, as the default bundle, with its mAP@R too; the consistency part alone, plain or whitened;
all of z, plain cosine), the test MSE (all 10,000 test images) and the training time. Choices are made on these
validation figures only (docs/retrieval-objective.md holds the runs).

Each step: the reconstruction loss of the clean batch, plus `--weight` times NT-Xent (temperature
`--temp`; VICReg with `--loss vicreg`) between a two-layer head's outputs for two augmented views
(affine: rotation, zoom, shift, horizontal flip; ink scaled by up to `--ink`; an erased
rectangle), all in bfloat16 autocast on the CPU. `--finetune N` then trains the decoder alone for
N epochs on the frozen encoder.
"""

import argparse
import json
import math
import time

import faiss
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from aesearch.model.architecture import ModelConfig
from aesearch.model.network import AutoEncoder, to_patch_layout
from aesearch.quality.metrics import average_precision_at_r
from aesearch.search.index import AffineTransform
from aesearch.sources.fashion_mnist import load_fashion_mnist


def deep_encoder(config: ModelConfig) -> nn.Module:
    """A deeper 28x28 encoder: a 3x3 convolution before each of the seed's strided 2x2 ones and one
    after, then the seed's linear layer (about 3.5x the seed encoder's multiply-adds)."""
    slope = config.negative_slope
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),  # 28x28
        nn.LeakyReLU(slope),
        nn.Conv2d(32, 32, 2, stride=2),  # -> 14x14
        nn.LeakyReLU(slope),
        nn.Conv2d(32, 32, 3, padding=1),
        nn.LeakyReLU(slope),
        nn.Conv2d(32, 64, 2, stride=2),  # -> 7x7
        nn.LeakyReLU(slope),
        nn.Conv2d(64, 64, 3, padding=1),
        nn.LeakyReLU(slope),
        nn.Flatten(),
        nn.Linear(config.flat, config.z_size),
        nn.LeakyReLU(slope),
    ).to(memory_format=torch.channels_last)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--weight", type=float, default=1.0)
    p.add_argument("--search-dims", type=int, default=128)
    p.add_argument("--temp", type=float, default=0.2)
    p.add_argument("--loss", default="ntxent")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--finetune", type=int, default=0, help="decoder-only epochs after, encoder frozen")
    p.add_argument("--head", type=int, default=128)
    p.add_argument("--ink", type=float, default=0.5, help="brightness scale range +-")
    p.add_argument("--crop", type=float, default=0.25, help="zoom range +-")
    p.add_argument("--rot", type=float, default=10.0)
    p.add_argument("--shift", type=float, default=3.0)
    p.add_argument("--erase", type=float, default=0.3)
    p.add_argument("--flip", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None)
    p.add_argument(
        "--encoder",
        choices=["seed", "deep"],
        default="seed",
        help="deep: 3x3 convolutions between the seed's strided ones (the seed's decoder kept)",
    )
    args = p.parse_args()
    torch.manual_seed(args.seed)
    data = load_fashion_mnist()
    train_images = torch.as_tensor(np.asarray(data.train.images))
    test_images = torch.as_tensor(np.asarray(data.test.images))
    labels = np.asarray(data.train.labels)
    fit_images = train_images[:50000]  # the validation protocol's queries (last 10,000) are never trained on
    n = len(fit_images)
    model = AutoEncoder(ModelConfig())
    if args.encoder == "deep":
        model.encoder = deep_encoder(ModelConfig())
    S = args.search_dims
    head = nn.Sequential(nn.Linear(S, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, args.head))
    params = list(model.parameters()) + list(head.parameters())

    def encode_batch(x):  # (B, 1, 28, 28) -> (B, z)
        if args.encoder == "deep":
            return model.encoder(x.contiguous(memory_format=torch.channels_last))
        return model.encode_patches(to_patch_layout(x))

    opt = torch.optim.Adam(params, lr=args.lr)
    steps = n // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps)
    g = torch.Generator().manual_seed(args.seed)

    def augment(x):  # x (B,1,28,28) in [0,1]
        b = x.shape[0]
        angle = (torch.rand(b, generator=g) * 2 - 1) * math.radians(args.rot)
        scale = 1 + (torch.rand(b, generator=g) * 2 - 1) * args.crop
        flip = torch.where(torch.rand(b, generator=g) < args.flip, -1.0, 1.0)
        tx, ty = [(torch.rand(b, generator=g) * 2 - 1) * args.shift * 2 / 28 for _ in range(2)]
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        theta = torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)
        grid = F.affine_grid(theta, x.shape, align_corners=False)
        y = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
        ink = 1 + (torch.rand(b, 1, 1, 1, generator=g) * 2 - 1) * args.ink
        y = (y * ink).clamp(0, 1)
        if args.erase:
            keep = torch.ones_like(y)
            erase = torch.rand(b, generator=g) < args.erase
            for i in torch.nonzero(erase).flatten().tolist():
                h, w = torch.randint(4, 12, (2,), generator=g).tolist()
                r, c = (
                    torch.randint(0, 28 - h, (1,), generator=g).item(),
                    torch.randint(0, 28 - w, (1,), generator=g).item(),
                )
                keep[i, :, r : r + h, c : c + w] = 0
            y = y * keep
        return y

    def ntxent(a, b, t):
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        x = torch.cat([a, b])
        sim = x @ x.T / t
        sim.fill_diagonal_(-1e9)
        bsz = a.shape[0]
        target = torch.cat([torch.arange(bsz, 2 * bsz), torch.arange(0, bsz)])
        return F.cross_entropy(sim, target)

    def vicreg(a, b):
        inv = F.mse_loss(a, b)

        def var_cov(x):
            x = x - x.mean(0)
            std = torch.sqrt(x.var(0) + 1e-4)
            v = F.relu(1 - std).mean()
            c = (x.T @ x) / (x.shape[0] - 1)
            off = c - torch.diag(torch.diag(c))
            return v, (off**2).sum() / x.shape[1]

        va, ca = var_cov(a)
        vb, cb = var_cov(b)
        return 25 * inv + 25 * (va + vb) + (ca + cb)

    start = time.time()
    for epoch in range(args.epochs):
        model.train()
        head.train()
        order = torch.randperm(n, generator=g)
        tot_r = tot_c = 0.0
        for s in range(steps):
            x = fit_images[order[s * args.batch : (s + 1) * args.batch]].float().div(255).unsqueeze(1)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                xp = to_patch_layout(x)
                zc = encode_batch(x)
                rec = model.decode_patches(zc)
                loss_r = F.mse_loss(rec.float(), xp)
                if args.weight:
                    v = torch.cat([augment(x), augment(x)])
                    zv = encode_batch(v)[:, :S]
                    h = head(zv).float()
                    half = len(h) // 2
                    loss_c = (
                        ntxent(h[:half], h[half:], args.temp) if args.loss == "ntxent" else vicreg(h[:half], h[half:])
                    )
                else:
                    loss_c = torch.zeros(())
            loss = loss_r + args.weight * loss_c
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_r += loss_r.item()
            tot_c += float(loss_c)
        print(
            f"epoch {epoch + 1} recon {tot_r / steps:.5f} contrast {tot_c / steps:.4f} {time.time() - start:.0f}s",
            flush=True,
        )

    if args.finetune:
        dec_params = [p_ for name, p_ in model.named_parameters() if name.startswith("decoder")]
        opt2 = torch.optim.Adam(dec_params, lr=1e-3)
        sched2 = torch.optim.lr_scheduler.OneCycleLR(opt2, max_lr=1e-3, total_steps=args.finetune * steps)
        for epoch in range(args.finetune):
            order = torch.randperm(n, generator=g)
            tot = 0.0
            for s in range(steps):
                x = fit_images[order[s * args.batch : (s + 1) * args.batch]].float().div(255).unsqueeze(1)
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    xp = to_patch_layout(x)
                    with torch.no_grad():
                        zc = encode_batch(x)
                    loss = F.mse_loss(model.decode_patches(zc).float(), xp)
                opt2.zero_grad(set_to_none=True)
                loss.backward()
                opt2.step()
                sched2.step()
                tot += loss.item()
            print(f"finetune {epoch + 1} recon {tot / steps:.5f}", flush=True)
    train_s = time.time() - start

    @torch.no_grad()
    def encode(images, shift=False):
        model.eval()
        out = []
        for i in range(0, len(images), 4096):
            x = images[i : i + 4096].float().div(255).unsqueeze(1)
            if shift:
                x = torch.roll(x, (1, 1), (2, 3))  # the default phase pooling's second copy (approx.)
            out.append(encode_batch(x).float())
        return torch.cat(out).numpy()

    @torch.no_grad()
    def mse(images):
        model.eval()
        tot = 0.0
        for i in range(0, len(images), 4096):
            x = images[i : i + 4096].float().div(255).unsqueeze(1)
            xp = to_patch_layout(x)
            tot += F.mse_loss(model.decode_patches(encode_batch(x)), xp, reduction="sum").item()
        return tot / (len(images) * 784)

    zs = (encode(train_images) + encode(train_images, True)) / 2
    lab = labels

    def score(vectors, whiten_dims=None, shrink=0.03):
        if whiten_dims:
            t = AffineTransform.whitening(vectors[:50000], dims=whiten_dims, shrinkage=shrink)
            x = (vectors - t.mean) @ t.matrix
        else:
            x = vectors - vectors[:50000].mean(0)
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        x = np.ascontiguousarray(x, dtype=np.float32)
        index = faiss.IndexFlatIP(x.shape[1])
        index.add(x[:50000])
        _, nn_ = index.search(x[50000:], 10)
        hits = lab[:50000][nn_] == lab[50000:, None]
        out = [round(float(hits.mean()), 4), round(float(hits[lab[50000:] == 6].mean()), 4)]
        if whiten_dims == 192 and x.shape[1] == 192:  # the default space: also mAP@R (R: the class's size)
            r = np.bincount(lab[:50000])[lab[50000:]]
            total = 0.0
            for start in range(0, 10000, 1000):
                queries = slice(50000 + start, 50000 + start + 1000)
                _, found = index.search(x[queries], int(r.max()))
                relevant = lab[:50000][found] == lab[queries, None]
                total += average_precision_at_r(relevant, r[start : start + 1000]).sum()
            out.append(round(total / 10000, 4))
        return out

    res = {
        "args": vars(args),
        "train_s": round(train_s),
        "test_mse": round(mse(test_images), 5),
        "full z whiten192": score(zs, 192),
        "search part cosine": score(zs[:, :S]),
        "search part whiten": score(zs[:, :S], min(S, 192)),
        "full z cosine": score(zs),
    }
    print(json.dumps(res), flush=True)
    if args.out:
        torch.save(model.state_dict(), args.out)


if __name__ == "__main__":
    main()

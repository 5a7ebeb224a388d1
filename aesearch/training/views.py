"""The view-consistency term of the retrieval recipes: augmented views, a projection head, NT-Xent.

A reconstruction AutoEncoder ranks images by ink more than by shape (docs/retrieval-objective.md).
The retrieval recipes add, beside the reconstruction loss, a term that asks the encoder to give two
augmented views of one image (moved, turned, zoomed, mirrored, brighter or darker, partly erased)
nearby codes and other images distant codes: SimCLR's NT-Xent on a small projection head. It acts
on the first `consistency_dims` components of z only; the rest of z is left to reconstruction, which
is what keeps the decoder sharp (acting on all of z made its MSE five times worse). The head is
dropped after training: search uses z.

Everything here works on batches of (B, C, H, W) float images in [0, 1] on the training device, and
draws its randomness from the generator it is given, so a seeded run repeats.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ViewAugmentation:
    """How far a view may stray from its image; measured choices in docs/retrieval-objective.md."""

    rotation_degrees: float = 10.0  # turned by up to this much either way
    zoom: float = 0.25  # scaled by 1 +- up to this
    shift: float = 3 / 28  # moved by up to this fraction of the side, each axis
    flip: float = 0.5  # mirrored left-right with this probability
    ink: float = 0.5  # pixel values scaled by 1 +- up to this (brightness is what reconstruction ranks by)
    erase: float = 0.3  # probability that a rectangle of 1/7 to 3/7 of each side is blanked


def augment(images: torch.Tensor, aug: ViewAugmentation, generator: torch.Generator) -> torch.Tensor:
    """One random view of each image: an affine map, an ink scale and, sometimes, an erased rectangle."""
    b, _, height, width = images.shape
    device = images.device

    def uniform(*shape: int) -> torch.Tensor:  # in [-1, 1)
        return torch.rand(shape, generator=generator, device=device) * 2 - 1

    angle = uniform(b) * math.radians(aug.rotation_degrees)
    scale = 1 + uniform(b) * aug.zoom
    mirror = torch.where(torch.rand(b, generator=generator, device=device) < aug.flip, -1.0, 1.0)
    tx, ty = uniform(b) * aug.shift * 2, uniform(b) * aug.shift * 2  # affine_grid's units: the side is 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * mirror, -sin, tx], 1), torch.stack([sin * mirror, cos, ty], 1)], 1)
    grid = (_base_grid(height, width, device) @ theta.transpose(1, 2)).view(b, height, width, 2)
    views = F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")
    views = (views * (1 + uniform(b, 1, 1, 1) * aug.ink)).clamp_(0, 1)
    if aug.erase:
        views = views * ~_erased(b, height, width, aug.erase, generator, device)
    return views


@functools.lru_cache(maxsize=8)
def _base_grid(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(H*W, 3) pixel centres as (x, y, 1) in [-1, 1]: F.affine_grid's, which costs 4x more per call."""
    ys = torch.linspace(-1 + 1 / height, 1 - 1 / height, height, device=device)
    xs = torch.linspace(-1 + 1 / width, 1 - 1 / width, width, device=device)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x, y, torch.ones_like(x)], -1).view(height * width, 3)


def _erased(
    b: int, height: int, width: int, probability: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """(B, 1, H, W) masks: True inside one random rectangle for a `probability` share of the images."""

    def span(side: int) -> tuple[torch.Tensor, torch.Tensor]:
        low, high = max(1, side // 7), max(2, 3 * side // 7)
        length = torch.randint(low, high, (b,), generator=generator, device=device)
        start = (torch.rand(b, generator=generator, device=device) * (side - length + 1)).long()
        return start, length

    (top, rows), (left, cols) = span(height), span(width)
    chosen = torch.rand(b, generator=generator, device=device) < probability
    y = torch.arange(height, device=device).view(1, height, 1)
    x = torch.arange(width, device=device).view(1, 1, width)
    inside = ((y >= top.view(b, 1, 1)) & (y < (top + rows).view(b, 1, 1))) & (
        (x >= left.view(b, 1, 1)) & (x < (left + cols).view(b, 1, 1))
    )
    return (inside & chosen.view(b, 1, 1)).unsqueeze(1)


def projection_head(dims: int, hidden: int = 512, out: int = 128) -> nn.Module:
    """SimCLR's two-layer head over the consistency part of z; used in training only."""
    return nn.Sequential(nn.Linear(dims, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, out))


def nt_xent(a: torch.Tensor, b: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: row i of `a` and row i of `b` are one image's two views; every other row is a negative."""
    x = F.normalize(torch.cat([a, b]).float(), dim=1)
    similarity = x @ x.T / temperature
    similarity.fill_diagonal_(float("-inf"))  # a view is not its own positive
    n = a.shape[0]
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(x.device)
    return F.cross_entropy(similarity, targets)

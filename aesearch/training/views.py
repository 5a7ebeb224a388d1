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
    # Photos (colour, on their own background) rather than silhouettes on black:
    background: float = 0.0  # what a view is padded with where it leaves the image: 0 black, 1 white
    brightness: float = 0.0  # added to every pixel, +- up to this
    contrast: float = 0.0  # the image scaled about its mean by 1 +- up to this
    saturation: float = 0.0  # colour images: chroma scaled by 1 +- up to this
    hue: float = 0.0  # colour images: chroma turned by up to this x 180 degrees (1: any hue)
    erase_colour: bool = False  # an erased rectangle takes a random colour rather than black


# The views of a photo-framed model (a colour or grey image on its own, usually light, background):
# chosen on labelled colour collections (docs/colour-models.md); `hue` is the user's choice.
PHOTO_VIEWS = ViewAugmentation(
    shift=1 / 8, ink=0.0, background=1.0, brightness=0.15, contrast=0.4, saturation=0.4, erase_colour=True
)
_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])  # luma, chroma I, Q


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
    if aug.background:  # padded with the background level, not black: a photo's frame is not an edge
        views = F.grid_sample(images - aug.background, grid, align_corners=False, padding_mode="zeros")
        views = views + aug.background
    else:
        views = F.grid_sample(images, grid, align_corners=False, padding_mode="zeros")
    if aug.ink:
        views = views * (1 + uniform(b, 1, 1, 1) * aug.ink)
    if aug.brightness:
        views = views + uniform(b, 1, 1, 1) * aug.brightness
    if aug.contrast:
        mean = views.mean(dim=(1, 2, 3), keepdim=True)
        views = (views - mean) * (1 + uniform(b, 1, 1, 1) * aug.contrast) + mean
    if views.shape[1] == 3 and (aug.saturation or aug.hue):
        views = _recolour(views, 1 + uniform(b) * aug.saturation, uniform(b) * math.pi * aug.hue)
    views = views.clamp_(0, 1)
    if aug.erase:
        mask = _erased(b, height, width, aug.erase, generator, device)
        if aug.erase_colour:
            views = torch.where(mask, torch.rand((b, views.shape[1], 1, 1), generator=generator, device=device), views)
        else:
            views = views * ~mask
    return views


def _recolour(images: torch.Tensor, chroma: torch.Tensor, turn: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB with each image's chroma (YIQ's I and Q) scaled by chroma and turned by `turn` radians."""
    yiq = _YIQ.to(images.device)
    t = torch.einsum("ij,bjhw->bihw", yiq, images)
    c, s = (torch.cos(turn) * chroma)[:, None, None], (torch.sin(turn) * chroma)[:, None, None]
    t = torch.stack([t[:, 0], t[:, 1] * c - t[:, 2] * s, t[:, 1] * s + t[:, 2] * c], 1)
    return torch.einsum("ij,bjhw->bihw", torch.linalg.inv(yiq), t)


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

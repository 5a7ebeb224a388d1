"""Label-preserving augmentation of 28x28 images, vectorised: big synthetic collections from a small set.

`scripts/make_collection.py` uses it to grow Fashion-MNIST to millions of images for the scale
benchmarks. Every image gets its own random similarity transform (shift, small rotation and
scaling, a horizontal flip where the class allows one), then a contrast change and sensor-like
noise. Everything is computed for a whole batch at once (one gather per bilinear corner), so ten
million images take minutes, not hours. Same seed and batch, same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Fashion-MNIST classes whose mirror image is still that class and still looks like the data set:
# clothes and bags are left-right symmetric; sandals, sneakers and ankle boots all point left.
FASHION_MNIST_FLIPPABLE = (0, 1, 2, 3, 4, 6, 8)


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random transforms (uniform in each range)."""

    max_shift: float = 2.0  # pixels, each axis
    max_rotation: float = 10.0  # degrees
    scale: tuple[float, float] = (0.9, 1.1)
    contrast: tuple[float, float] = (0.75, 1.15)
    max_noise: float = 8.0  # standard deviation of Gaussian noise, in grey levels
    flippable: tuple[int, ...] = FASHION_MNIST_FLIPPABLE


def augment(
    images: np.ndarray, labels: np.ndarray, rng: np.random.Generator, config: AugmentConfig | None = None
) -> np.ndarray:
    """(n, 28, 28) uint8 images of the given labels -> (n, 28, 28) uint8 augmented copies."""
    config = config or AugmentConfig()
    n, h, w = images.shape
    angle = np.deg2rad(rng.uniform(-config.max_rotation, config.max_rotation, n)).astype(np.float32)
    scale = rng.uniform(*config.scale, n).astype(np.float32)
    shift = rng.uniform(-config.max_shift, config.max_shift, (n, 2)).astype(np.float32)
    may_flip = np.isin(labels, config.flippable)
    flip = np.where(may_flip & (rng.random(n) < 0.5), -1, 1).astype(np.float32)
    contrast = rng.uniform(*config.contrast, n).astype(np.float32)
    noise = rng.uniform(0, config.max_noise, n).astype(np.float32)

    # Inverse mapping: for each output pixel, where it comes from in the source image.
    centre_y, centre_x = (h - 1) / 2, (w - 1) / 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    dy = (yy - centre_y)[None] - shift[:, 0, None, None]  # (n, h, w)
    dx = (xx - centre_x)[None] - shift[:, 1, None, None]
    cos, sin = (np.cos(angle) / scale)[:, None, None], (np.sin(angle) / scale)[:, None, None]
    src_y = cos * dy - sin * dx + centre_y
    src_x = (sin * dy + cos * dx) * flip[:, None, None] + centre_x
    warped = _bilinear(images, src_y, src_x)

    # Contrast about the image's own mean keeps the black background black (it scales towards 0).
    warped *= contrast[:, None, None]
    warped += rng.standard_normal((n, h, w), dtype=np.float32) * noise[:, None, None]
    np.clip(warped, 0, 255, out=warped)
    return np.rint(warped).astype(np.uint8)


def _bilinear(images: np.ndarray, src_y: np.ndarray, src_x: np.ndarray) -> np.ndarray:
    """Sample each image at (src_y, src_x) with bilinear interpolation; outside the image is 0."""
    n, h, w = images.shape
    padded = np.zeros((n, h + 2, w + 2), dtype=np.float32)  # a zero border: out-of-range reads are 0
    padded[:, 1:-1, 1:-1] = images
    flat = padded.reshape(n, -1)
    y = np.clip(src_y + 1, 0, h + 1).astype(np.float32)  # +1: the border's offset
    x = np.clip(src_x + 1, 0, w + 1).astype(np.float32)
    # At the far border the weight falls wholly on the zero row/column beyond the last real one.
    y0, x0 = np.minimum(np.floor(y), h).astype(np.int32), np.minimum(np.floor(x), w).astype(np.int32)
    fy, fx = y - y0, x - x0
    base = (y0 * (w + 2) + x0).reshape(n, -1)
    stride = w + 2

    def take(offset: int) -> np.ndarray:
        return np.take_along_axis(flat, base + offset, axis=1).reshape(n, h, w)

    top = take(0) * (1 - fx) + take(1) * fx
    bottom = take(stride) * (1 - fx) + take(stride + 1) * fx
    return top * (1 - fy) + bottom * fy

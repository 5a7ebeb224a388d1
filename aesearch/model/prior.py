"""The prior of a colour member: the two parts of its vector that need no training. Torch-free.

A member with `ModelConfig.prior == "grey-histogram"` takes images as premultiplied RGBA (its photo
framing keeps transparency) and encodes each to [grey z, histogram, z]:
  * grey z: the shipped grey Fashion-MNIST model's pooled z of the image framed as a silhouette
    (28 x 28, light on black), from the RGBA input: a transparent light object goes onto black as
    the silhouette contract puts it (on white, a white page icon is an outline only: icons' grey
    P@10 fell from 0.72 to 0.66, validation);
  * the image itself, composited onto white (pictures()), is what its histogram and its own encoder
    see and what its decoder gives back;
  * histogram: the square root of the image's joint RGB histogram, 8 levels per channel (512 bins
    summing to 1 before the root: Hellinger's embedding, unit length);
  * z: the member's own encoder output.
The decoder takes z beside the grey z whitened on the training images (condition()), so its
reconstruction need not spend z on the shape the grey model already describes.

Why: on three labelled colour collections, a colour model trained from scratch on a few hundred
images drew level with the grey model and a colour histogram; beside them, trained with positives
taken from their neighbours, it ranks above raw pixels, colour histograms and the grey model
(docs/colour-models.md, "Shipped in the package").
"""

from __future__ import annotations

import numpy as np

from aesearch import defaults
from aesearch.model.framing import silhouette_of_rgba


def histograms(images: np.ndarray) -> np.ndarray:
    """(n, H, W, 3) float images in [0, 1] -> (n, levels**3) float32: sqrt of each joint RGB histogram.

    A channel's level is its 8-bit value's top bits (0-31 -> 0, ..., 224-255 -> 7 for 8 levels),
    as a histogram of the uint8 image the bundle stores.
    """
    levels = defaults.PRIOR_HISTOGRAM_LEVELS
    images = np.asarray(images, dtype=np.float32)
    n, bins = len(images), levels**3
    pixels = images[0].size // 3 if n else 1
    out = np.empty((n, bins), np.float32)
    for start in range(0, n, _HISTOGRAM_BLOCK):  # small blocks: the index arrays stay in cache
        block = images[start : start + _HISTOGRAM_BLOCK].reshape(-1, pixels, 3)
        q = (np.rint(block * np.float32(255)).astype(np.int32) * levels) >> 8  # 0-255 -> 0-(levels - 1)
        index = (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]
        index += (np.arange(len(block), dtype=np.int32) * bins)[:, None]
        counts = np.bincount(index.ravel(), minlength=len(block) * bins).reshape(len(block), bins)
        out[start : start + len(block)] = np.sqrt(counts / np.float32(pixels))
    return out


_HISTOGRAM_BLOCK = 64


def pictures(images: np.ndarray) -> np.ndarray:
    """(n, H, W, 4) premultiplied RGBA -> (n, H, W, 3): composited onto white, as a page shows them
    (and as the colour contract frames an image for members without a prior). uint8 stays uint8."""
    if images.dtype == np.uint8:
        rgb, alpha = images[..., :3].astype(np.int16), images[..., 3:].astype(np.int16)
        return (rgb + 255 - alpha).clip(0, 255).astype(np.uint8)
    images = np.asarray(images, dtype=np.float32)
    return np.clip(images[..., :3] + (np.float32(1) - images[..., 3:]), 0, 1)


def silhouettes(images: np.ndarray) -> np.ndarray:
    """(n, H, W, 4) premultiplied RGBA in [0, 1] -> (n, 28, 28): each framed as the grey model's
    silhouette contract frames the file it came from (a transparent light object onto black)."""
    return np.stack([silhouette_of_rgba(image) for image in np.asarray(images, dtype=np.float32)])


def condition(grey_z: np.ndarray, mean: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(n, 314) grey z -> (n, axes) float32: whitened, unit length x sqrt(axes), entries of about 1.

    The formula of network.Prior.condition (the PyTorch side, used in training)."""
    white = (np.asarray(grey_z, dtype=np.float32) - mean) @ matrix
    norms = np.linalg.norm(white, axis=1, keepdims=True)
    return (white / (norms + np.float32(1e-12)) * np.float32(np.sqrt(matrix.shape[1]))).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), np.float32(1e-12))


def prior_space(grey: np.ndarray, histogram: np.ndarray) -> np.ndarray:
    """The two untrained parts as the search weighs them: unit(grey z) beside 0.5 x unit(histogram)."""
    return np.concatenate([unit(grey), defaults.PRIOR_HISTOGRAM_WEIGHT * unit(histogram)], 1).astype(np.float32)

"""The silhouette contract's framing of decoded pixels (steps 3-5 of sources/preprocess.py's contract).

Here, below the preprocessing, because two layers frame pixels this way: sources/preprocess.py frames
every file for a silhouette (grey) model, and a colour member with a prior (model/prior.py) frames
its own RGBA input for the grey model it searches beside, on the query path.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from aesearch import defaults

SIZE = defaults.IMAGE_SIZE  # the grey (seed) model's side
TRIM_THRESHOLD = 0.05  # Fashion-MNIST's own trimming threshold: 5% away from the background


def frame(grey: np.ndarray, alpha: np.ndarray | None, size: int = SIZE) -> np.ndarray:
    """Steps 3-5 of the silhouette contract on a float greyscale image (and its alpha, if any)."""
    if alpha is not None and alpha.min() < 1:
        weight = alpha.sum()
        object_level = float((grey * alpha).sum() / weight) if weight > 0 else 0.0
        backdrop = np.float32(0.0 if object_level > 0.5 else 1.0)  # contrast with the object
        grey = grey * alpha + backdrop * (1 - alpha)
    background = background_level(grey)
    if grey.shape == (size, size) and background <= 0.5:
        return np.ascontiguousarray(grey, dtype=np.float32)  # already a dataset-style image
    if background > 0.5:
        grey, background = 1 - grey, 1 - background
    if background > 0:
        grey = np.clip((grey - background) / (1 - background), 0, 1)
    peak = float(grey.max())
    if peak > TRIM_THRESHOLD:
        grey = grey / peak  # every Fashion-MNIST image's brightest pixel is white (>= 250 of 255)
    grey = grey.astype(np.float32)
    if grey.shape == (size, size):
        return np.ascontiguousarray(grey)
    return fit_and_centre(grey, size)


def silhouette_of_rgba(rgba: np.ndarray, size: int = SIZE) -> np.ndarray:
    """(H, W, 4) premultiplied RGBA in [0, 1] (a prior member's input) -> (size, size): the
    silhouette contract's framing of it (steps 2-5), as the grey model sees the file it came from."""
    rgba = np.asarray(rgba, dtype=np.float32)
    alpha = rgba[..., 3]
    luma = rgba[..., 0] * np.float32(0.299) + rgba[..., 1] * np.float32(0.587) + rgba[..., 2] * np.float32(0.114)
    grey = np.divide(luma, alpha, out=np.zeros_like(luma), where=alpha > 0)  # straight, as step 3 takes it
    return frame(np.clip(grey, 0, 1), alpha if alpha.min() < 1 else None, size)


def fit_and_centre(grey: np.ndarray, size: int = SIZE) -> np.ndarray:
    rows, cols = np.nonzero(grey > TRIM_THRESHOLD)
    canvas = np.zeros((size, size), dtype=np.float32)
    if len(rows) == 0:
        return canvas  # blank: nothing to frame
    grey = grey[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    h, w = grey.shape
    scale = size / max(h, w)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    # Shrinking averages areas (BOX: exact inverse of an integer enlargement); growing interpolates.
    resample = Image.Resampling.BOX if scale <= 1 else Image.Resampling.LANCZOS
    resized = Image.fromarray(grey, mode="F").resize((new_w, new_h), resample)
    # Centred with any odd pixel of margin on the top/left, as Fashion-MNIST itself was framed.
    top, left = (size - new_h + 1) // 2, (size - new_w + 1) // 2
    canvas[top : top + new_h, left : left + new_w] = np.clip(np.asarray(resized), 0, 1)
    return canvas


def background_level(grey: np.ndarray) -> float:
    """Median of the four corner patches: Fashion-MNIST trimmed by "the colour of the corner pixels"."""
    c = max(1, min(grey.shape) // 14)  # 2x2 patches at 28x28
    corners = [grey[:c, :c], grey[:c, -c:], grey[-c:, :c], grey[-c:, -c:]]
    # np.median's own overhead is 40x the sort of 16 values: the median, as np.median computes it.
    values = np.sort(np.concatenate([p.ravel() for p in corners]))
    middle = len(values) // 2
    return float((values[middle - 1] + values[middle]) / 2 if len(values) % 2 == 0 else values[middle])

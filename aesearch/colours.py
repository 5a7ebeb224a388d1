"""The colours of pictures of images, shared by the figures (PNG files) and the notebook and web
views (HTML): images as uint8, and signed differences drawn on one fixed scale (-1 to +1 of full
ink): red where the hit has more ink than the query, blue where the query has more, white where
they agree, so maps of different hits can be compared by eye. For colour images a pixel's
difference is drawn by how far its colour moved (the length of the RGB difference, divided by
sqrt 3 so that black to white is 1), red where the hit is lighter there (by luma) and blue where it
is darker: a change of hue at the same lightness shows too.
"""

from __future__ import annotations

import numpy as np

RED, BLUE = np.array([200, 30, 30], np.float32), np.array([30, 80, 210], np.float32)


def signed_colours(difference: np.ndarray) -> np.ndarray:
    """(H, W) values in [-1, 1] -> (H, W, 3) uint8: white at 0, red towards +1, blue towards -1.

    (H, W, 3) colour differences become one signed value a pixel first (module docstring).
    """
    difference = np.asarray(difference, dtype=np.float32)
    if difference.ndim == 3:
        luma = difference @ np.array([0.299, 0.587, 0.114], np.float32)
        difference = np.where(luma >= 0, 1, -1) * np.linalg.norm(difference, axis=-1) / np.sqrt(3, dtype=np.float32)
    v = np.clip(difference, -1, 1)[..., None]
    white = np.float32(255)
    out = np.where(v >= 0, white + v * (RED - white), white - v * (BLUE - white))
    return out.round().astype(np.uint8)


def grey(image: np.ndarray) -> np.ndarray:
    """(H, W[, 3]) floats in [0, 1] (or uint8) -> the same shape in uint8."""
    array = np.asarray(image)
    return array if array.dtype == np.uint8 else (np.clip(array, 0, 1) * 255).round().astype(np.uint8)

"""Arrays over HTTP without loss: the form in which the server sends a result's arrays and takes a latent back.

JSON carries the hits' floats exactly (Python writes the shortest repr that reads back the same
double), but not a (28, 28) float32 array cheaply; base64 of its little-endian float32 bytes is
exact and a third the size of JSON numbers. `arrays=true` on /api/search asks for them, so the
page's answers stay small and aesearch.Client gets the engine's arrays bit for bit.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

from aesearch.errors import InvalidArgumentError

ARRAYS = ("query", "reconstruction", "latent")  # the QueryResult fields sent under "arrays"
_FLOAT32 = np.dtype("<f4")


def encode(array: np.ndarray) -> dict:
    """{"shape": [...], "float32": base64 of the little-endian bytes}."""
    values = np.ascontiguousarray(array, dtype=_FLOAT32)
    return {"shape": list(values.shape), "float32": base64.b64encode(values.tobytes()).decode("ascii")}


def decode(data: dict) -> np.ndarray:
    """encode()'s dict -> a native float32 array of its shape (writable, like the engine's)."""
    values = np.frombuffer(base64.b64decode(data["float32"]), dtype=_FLOAT32)
    return values.reshape(data["shape"]).astype(np.float32)


def arrays_of(result) -> dict:
    """A QueryResult's arrays, each encode()d."""
    return {name: encode(getattr(result, name)) for name in ARRAYS}


def floats_from(text: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    """A client's form field (base64 of little-endian float32) -> a finite float32 array of this shape.

    One line naming the field if it is anything else; `latent` for /api/refine, `pixels` (a
    preprocessed image) for /api/search.
    """
    size = int(np.prod(shape))
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError(f"{name} must be base64 of little-endian float32 values") from None
    if len(raw) != 4 * size:
        raise InvalidArgumentError(f"{name} must hold {size} float32 values ({4 * size} bytes), got {len(raw)} bytes")
    values = np.frombuffer(raw, dtype=_FLOAT32).astype(np.float32).reshape(shape)
    if not np.isfinite(values).all():
        raise InvalidArgumentError(f"{name} holds NaN or infinite values: send finite values")
    return values

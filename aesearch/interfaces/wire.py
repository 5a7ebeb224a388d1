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


def vector_from(text: str, size: int) -> np.ndarray:
    """A client's latent (base64 float32) -> (size,) float32; one line if it is not that."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError("latent must be base64 (the `latent` of a result's arrays)") from None
    if len(raw) != 4 * size:
        raise InvalidArgumentError(f"latent must hold {size} float32 values ({4 * size} bytes), got {len(raw)} bytes")
    vector = np.frombuffer(raw, dtype=_FLOAT32).astype(np.float32)
    if not np.isfinite(vector).all():
        raise InvalidArgumentError("latent holds NaN or infinite values: send the latent a search returned")
    return vector

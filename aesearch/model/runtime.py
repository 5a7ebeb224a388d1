"""NumPy inference for a trained AutoEncoder: the query path never imports torch.

Importing torch costs about 2 s on the reference machine, more than the rest of a query
together, so encoding and decoding at query time run here, on the checkpoint's weights, in the
matmul-only form described in network.py. tests/test_runtime.py checks this against the PyTorch
model (the oracle) to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aesearch.model import architecture as layout  # the patch layouts the torch network shares
from aesearch.model.architecture import C1, C2, ModelConfig
from aesearch.model.checkpoint import Checkpoint
from aesearch.rowwise import map_blocks, matmul


class NumpyAutoEncoder:
    """encode/decode of the seed AutoEncoder with weights pre-arranged for patch layout."""

    def __init__(self, weights: dict[str, np.ndarray], config: ModelConfig) -> None:
        self.config = config
        z, grid, flat = config.z_size, config.grid, config.flat
        f32 = np.float32

        def arranged(array: np.ndarray) -> np.ndarray:
            return np.ascontiguousarray(array, dtype=f32)

        self._w1 = arranged(weights["encoder.0.weight"].reshape(C1, 4).T)  # (p*q, 32)
        self._w2 = arranged(
            weights["encoder.2.weight"].transpose(layout.W2_TO_PATCHES).reshape(C2, 4 * C1).T
        )  # (r*s*c, 64)
        self._w3 = arranged(
            weights["encoder.5.weight"].reshape(z, C2, grid, grid).transpose(layout.W3_TO_PATCHES).reshape(z, flat).T
        )
        self._b3 = arranged(weights["encoder.5.bias"])
        self._w4 = arranged(
            weights["decoder.0.weight"].reshape(C2, grid, grid, z).transpose(layout.W4_TO_PATCHES).reshape(flat, z).T
        )
        self._b4 = arranged(
            weights["decoder.0.bias"].reshape(C2, grid, grid).transpose(layout.B4_TO_PATCHES).reshape(flat)
        )
        self._w5 = arranged(
            weights["decoder.3.weight"].transpose(layout.W2_TO_PATCHES).reshape(C2, 4 * C1)
        )  # (in, r*s*out)
        self._w6 = arranged(weights["decoder.5.weight"].reshape(C1, 4))  # (in, p*q)

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> NumpyAutoEncoder:
        return cls(checkpoint.weights, checkpoint.model_config)

    @property
    def z_size(self) -> int:
        return self.config.z_size

    def encode(self, images: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        """(n, *config.image_shape) float32 images in [0, 1] -> (n, z_size) float32 latent vectors.

        A row's vector is the same whatever batch it comes in and however many threads run
        (aesearch/rowwise.py); threads: None picks one for a few images, every core for many.
        """
        images = np.asarray(images, dtype=np.float32).reshape(-1, *self.config.image_shape)
        return map_blocks(self._encode_chunk, images, (self.z_size,), threads)

    def embed(
        self, images: np.ndarray, shifts: Sequence[Sequence[int]] = ((0, 0),), *, threads: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(z, vectors): encode(images), and its mean over copies translated by each (dy, dx) in shifts.

        The encoder's stride-2 convolutions see an image differently depending on how it sits on
        their 2-pixel grid; averaging z over grid phases removes that accident of alignment. All
        copies go through the encoder in one batch (one call costs less than several).
        """
        images = np.asarray(images, dtype=np.float32).reshape(-1, *self.config.image_shape)
        n = len(images)
        copies = [(0, 0)] + [tuple(s) for s in shifts if tuple(s) != (0, 0)]
        everything = self.encode(np.concatenate([translate(images, dy, dx) for dy, dx in copies]), threads=threads)
        z = everything[:n]
        used = [i for i, shift in enumerate(copies) if shift in {tuple(s) for s in shifts}]
        vectors = everything.reshape(len(copies), n, self.z_size)[used].mean(axis=0, dtype=np.float32)
        return z, vectors

    def decode(self, z: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        """(n, z_size) latent vectors -> (n, *config.image_shape) float32 images in [0, 1]."""
        z = np.asarray(z, dtype=np.float32).reshape(-1, self.z_size)
        return map_blocks(self._decode_chunk, z, self.config.image_shape, threads)

    def _encode_chunk(self, images: np.ndarray) -> np.ndarray:
        n, cells = len(images), self.config.grid**2  # 7 x 7 cells of 4 x 4 pixels for 28 x 28 images
        patches = images.reshape(n, *self.config.pixel_axes).transpose(layout.TO_PATCHES).reshape(n * cells * 4, 4)
        h = self._leaky(matmul(patches, self._w1))  # (n*7*7*2*2, 2*2) -> (n*7*7*2*2, 32)
        h = self._leaky(matmul(h.reshape(n * cells, 4 * C1), self._w2))  # (n*7*7, 64)
        return self._leaky(matmul(h.reshape(n, self.config.flat), self._w3) + self._b3)  # (n, z)

    def _decode_chunk(self, z: np.ndarray) -> np.ndarray:
        n, grid = len(z), self.config.grid
        h = self._leaky(matmul(z, self._w4) + self._b4)  # (n, 7*7*64)
        h = self._leaky(matmul(h.reshape(n * grid * grid, C2), self._w5))  # (n*7*7, 2*2*32)
        logits = matmul(h.reshape(n * grid * grid * 4, C1), self._w6)  # (n*7*7*2*2, 2*2)
        out = (
            logits.reshape(n, grid, grid, 2, 2, 2, 2)
            .transpose(layout.FROM_PATCHES)
            .reshape(n, *self.config.image_shape)
        )
        return _sigmoid(out)

    def _leaky(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, x * np.float32(self.config.negative_slope), out=x)


def translate(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """(n, H, W) images moved down by dy and right by dx pixels, the vacated border filled with 0."""
    if dy == 0 and dx == 0:
        return images
    out = np.zeros_like(images)
    h, w = images.shape[1:]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # The tanh form never overflows, unlike 1 / (1 + exp(-x)) for large negative x.
    return (np.tanh(x * np.float32(0.5)) + np.float32(1.0)) * np.float32(0.5)

"""NumPy inference for a trained AutoEncoder: the query path never imports torch.

Importing torch costs about 2 s on the reference machine, more than the rest of a query
together, so encoding and decoding at query time run here, on the checkpoint's weights, in the
matmul-only form described in network.py. tests/test_runtime.py checks this against the PyTorch
model (the oracle) to float32 rounding.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from aesearch import defaults
from aesearch.model import architecture as layout  # the patch layouts the torch network shares
from aesearch.model import prior
from aesearch.model.architecture import ModelConfig
from aesearch.model.checkpoint import Checkpoint
from aesearch.rowwise import map_blocks, matmul


class NumpyAutoEncoder:
    """encode/decode of any family member, with weights arranged once for matrix multiplies.

    Seed-shaped members (ModelConfig.patchable) run in patch layout, as the PyTorch model trains;
    the others run channels-last: each stride-2 convolution is one matrix multiply over its
    receptive fields (gathered by strided slices: 4 per kernel-2 stage, 16 per kernel-4 one), each
    transposed one a matrix multiply whose outputs are added into place.
    """

    def __init__(self, weights: dict[str, np.ndarray], config: ModelConfig) -> None:
        self.config = config
        if config.patchable:
            self._arrange_patches(weights)
        else:
            self._arrange_channels_last(weights)
        self._grey = None
        if config.prior:  # model/prior.py: the grey model searched beside this one, and its condition
            grey = {name[len("prior.grey.") :]: w for name, w in weights.items() if name.startswith("prior.grey.")}
            self._grey = NumpyAutoEncoder(grey, ModelConfig())
            self._condition_mean = _arranged(weights["prior.condition_mean"])
            self._condition_matrix = _arranged(weights["prior.condition_matrix"])

    def _arrange_patches(self, weights: dict[str, np.ndarray]) -> None:
        config = self.config
        z, grid, flat = config.z_size, config.grid, config.flat
        C1, C2 = config.widths
        self._w1 = _arranged(weights["encoder.0.weight"].reshape(C1, 4).T)  # (p*q, 32)
        self._w2 = _arranged(
            weights["encoder.2.weight"].transpose(layout.W2_TO_PATCHES).reshape(C2, 4 * C1).T
        )  # (r*s*c, 64)
        self._w3 = _arranged(
            weights["encoder.5.weight"].reshape(z, C2, grid, grid).transpose(layout.W3_TO_PATCHES).reshape(z, flat).T
        )
        self._b3 = _arranged(weights["encoder.5.bias"])
        self._w4 = _arranged(
            weights["decoder.0.weight"].reshape(C2, grid, grid, z).transpose(layout.W4_TO_PATCHES).reshape(flat, z).T
        )
        self._b4 = _arranged(
            weights["decoder.0.bias"].reshape(C2, grid, grid).transpose(layout.B4_TO_PATCHES).reshape(flat)
        )
        self._w5 = _arranged(
            weights["decoder.3.weight"].transpose(layout.W2_TO_PATCHES).reshape(C2, 4 * C1)
        )  # (in, r*s*out)
        self._w6 = _arranged(weights["decoder.5.weight"].reshape(C1, 4))  # (in, p*q)

    def _arrange_channels_last(self, weights: dict[str, np.ndarray]) -> None:
        config = self.config
        z, grid, last, stages = config.z_size, config.grid, config.widths[-1], config.stages
        z_in = config.condition_size + z  # what the decoder's first layer takes: the condition, then z
        # conv (out, in, kh, kw) -> (kh*kw*in, out): rows in the order the receptive field is gathered
        self._down = [
            _arranged(w.transpose(2, 3, 1, 0).reshape(-1, w.shape[0]))
            for w in (weights[f"encoder.{2 * i}.weight"] for i in range(stages))
        ]
        no_bias = [None] * stages
        self._down_bias = (
            [_arranged(weights[f"encoder.{2 * i}.bias"]) for i in range(stages)] if config.bias else no_bias
        )
        self._up_bias = (
            [_arranged(weights[f"decoder.{3 + 2 * i}.bias"]) for i in range(stages)] if config.bias else no_bias
        )
        linear = 2 * stages + 1
        # PyTorch flattens (c, h, w); channels-last activations flatten (h, w, c)
        self._w_z = _arranged(
            weights[f"encoder.{linear}.weight"].reshape(z, last, grid, grid).transpose(0, 2, 3, 1).reshape(z, -1).T
        )
        self._b_z = _arranged(weights[f"encoder.{linear}.bias"])
        self._w_up0 = _arranged(
            weights["decoder.0.weight"].reshape(last, grid, grid, z_in).transpose(1, 2, 0, 3).reshape(-1, z_in).T
        )
        self._b_up0 = _arranged(weights["decoder.0.bias"].reshape(last, grid, grid).transpose(1, 2, 0).reshape(-1))
        # transposed conv (in, out, kh, kw) -> (in, kh*kw*out)
        self._up = [
            _arranged(w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1))
            for w in (weights[f"decoder.{3 + 2 * i}.weight"] for i in range(stages))
        ]

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint) -> NumpyAutoEncoder:
        return cls(checkpoint.weights, checkpoint.model_config)

    @property
    def z_size(self) -> int:
        """The width of the vectors encode() gives and decode() takes: z, after a prior's parts."""
        return self.config.vector_size

    def encode(self, images: np.ndarray, *, threads: int | None = None) -> np.ndarray:
        """(n, *config.image_shape) float32 images in [0, 1] -> (n, z_size) float32 latent vectors
        (for a member with a prior: [grey z, histogram, z], model/prior.py).

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
        """(n, z_size) latent vectors -> (n, *config.picture_shape) float32 images in [0, 1]."""
        z = np.asarray(z, dtype=np.float32).reshape(-1, self.z_size)
        return map_blocks(self._decode_chunk, z, self.config.picture_shape, threads)

    def pictures(self, images: np.ndarray) -> np.ndarray:
        """Inputs (n, *config.image_shape) -> as pictures show them and decode() gives them back
        ((n, *config.picture_shape)): a prior member's RGBA onto white; anything else as it is."""
        return prior.pictures(images) if self.config.prior else images

    def _encode_chunk(self, images: np.ndarray) -> np.ndarray:
        if self.config.patchable:
            return self._encode_patches(images)
        if self._grey is None:
            return self._encode_channels_last(images)
        shown = prior.pictures(images)
        z = self._encode_channels_last(shown)
        # This block's rows on this thread: the grey model's own blocks would hand rows to threads again.
        grey = self._grey.embed(prior.silhouettes(images), defaults.EMBEDDING_SHIFTS, threads=1)[1]
        return np.concatenate([grey, prior.histograms(shown), z], axis=1)

    def _decode_chunk(self, z: np.ndarray) -> np.ndarray:
        if self.config.patchable:
            return self._decode_patches(z)
        if self._grey is not None:  # the branch's decoder takes [condition, z]
            grey, z = z[:, : self._grey.z_size], z[:, self.config.prior_size :]
            z = np.concatenate([prior.condition(grey, self._condition_mean, self._condition_matrix), z], axis=1)
        return self._decode_channels_last(z)

    def condition(self, vectors: np.ndarray) -> np.ndarray:
        """(n, vector_size) vectors of a member with a prior -> the decoder's condition of each."""
        grey = np.asarray(vectors, dtype=np.float32)[:, : self._grey.z_size]
        return prior.condition(grey, self._condition_mean, self._condition_matrix)

    def _encode_patches(self, images: np.ndarray) -> np.ndarray:
        C1 = self.config.widths[0]
        n, cells = len(images), self.config.grid**2  # 7 x 7 cells of 4 x 4 pixels for 28 x 28 images
        patches = images.reshape(n, *self.config.pixel_axes).transpose(layout.TO_PATCHES).reshape(n * cells * 4, 4)
        h = self._leaky(matmul(patches, self._w1))  # (n*7*7*2*2, 2*2) -> (n*7*7*2*2, 32)
        h = self._leaky(matmul(h.reshape(n * cells, 4 * C1), self._w2))  # (n*7*7, 64)
        return self._leaky(matmul(h.reshape(n, self.config.flat), self._w3) + self._b3)  # (n, z)

    def _decode_patches(self, z: np.ndarray) -> np.ndarray:
        n, grid = len(z), self.config.grid
        C1, C2 = self.config.widths
        h = self._leaky(matmul(z, self._w4) + self._b4)  # (n, 7*7*64)
        h = self._leaky(matmul(h.reshape(n * grid * grid, C2), self._w5))  # (n*7*7, 2*2*32)
        logits = matmul(h.reshape(n * grid * grid * 4, C1), self._w6)  # (n*7*7*2*2, 2*2)
        out = (
            logits.reshape(n, grid, grid, 2, 2, 2, 2)
            .transpose(layout.FROM_PATCHES)
            .reshape(n, *self.config.image_shape)
        )
        return _sigmoid(out)

    def _encode_channels_last(self, images: np.ndarray) -> np.ndarray:
        n, k = len(images), self.config.kernel
        h = images.reshape(n, self.config.image_size, self.config.image_size, self.config.channels)
        for weight, bias in zip(self._down, self._down_bias, strict=True):
            side = h.shape[1] // 2
            fields = _receptive_fields(h, k)  # (n, side, side, k*k*in)
            h = matmul(fields.reshape(n * side * side, -1), weight)
            if bias is not None:
                h += bias
            h = self._leaky(h).reshape(n, side, side, -1)
        return self._leaky(matmul(h.reshape(n, -1), self._w_z) + self._b_z)

    def _decode_channels_last(self, z: np.ndarray) -> np.ndarray:
        n, k, grid = len(z), self.config.kernel, self.config.grid
        h = self._leaky(matmul(z, self._w_up0) + self._b_up0).reshape(n, grid, grid, -1)
        for i, (weight, bias) in enumerate(zip(self._up, self._up_bias, strict=True)):
            side = h.shape[1]
            spread = matmul(h.reshape(n * side * side, -1), weight).reshape(n, side, side, k, k, -1)
            h = _overlap_add(spread)
            if bias is not None:  # once per output pixel, after the overlapping contributions
                h += bias
            if i < len(self._up) - 1:
                self._leaky(h)
        return _sigmoid(h).reshape(n, *self.config.picture_shape)

    def _leaky(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x, x * np.float32(self.config.negative_slope), out=x)


def _arranged(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def _receptive_fields(x: np.ndarray, k: int) -> np.ndarray:
    """(n, H, W, C) -> (n, H/2, W/2, k*k*C): each stride-2 output's k x k input field, (kh, kw, c) order.

    Kernel 4 is padded by 1 on every side, as the PyTorch layers are (padding (k - 2) / 2).
    """
    n, height, width, c = x.shape
    pad = (k - 2) // 2
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    rows, cols = height // 2, width // 2
    return np.stack(
        [x[:, dy : dy + 2 * rows : 2, dx : dx + 2 * cols : 2] for dy in range(k) for dx in range(k)], axis=3
    ).reshape(n, rows, cols, k * k * c)


def _overlap_add(spread: np.ndarray) -> np.ndarray:
    """(n, h, w, k, k, C) per-input contributions of a stride-2 transposed conv -> (n, 2h, 2w, C).

    Input (i, j) writes its k x k block at (2i - pad, 2j - pad); kernel 2 blocks tile the output
    exactly, kernel 4 blocks overlap their neighbours by 2 and are cropped by the padding of 1.
    """
    n, h, w, k, _, c = spread.shape
    if k == 2:
        return spread.transpose(0, 1, 3, 2, 4, 5).reshape(n, 2 * h, 2 * w, c)
    pad = (k - 2) // 2
    full = np.zeros((n, 2 * h + k - 2, 2 * w + k - 2, c), dtype=np.float32)
    for dy in range(k):
        for dx in range(k):
            full[:, dy : dy + 2 * h : 2, dx : dx + 2 * w : 2] += spread[:, :, :, dy, dx]
    return np.ascontiguousarray(full[:, pad : pad + 2 * h, pad : pad + 2 * w])


def translate(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """(n, H, W[, C]) images moved down by dy and right by dx pixels, the vacated border filled with 0."""
    if dy == 0 and dx == 0:
        return images
    out = np.zeros_like(images)
    h, w = images.shape[1:3]
    out[:, max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = images[
        :, max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # The tanh form never overflows, unlike 1 / (1 + exp(-x)) for large negative x.
    return (np.tanh(x * np.float32(0.5)) + np.float32(1.0)) * np.float32(0.5)

"""The convolutional AutoEncoder family, and a matmul-only form of its seed-shaped members for fast training.

Every convolution in the seed design has kernel 2 and stride 2, so no two output pixels
share an input pixel: each layer is a matrix multiply over non-overlapping 2x2 patches.
If the image is stored once in *patch layout*, pixel (h, w) with h = 4k + 2r + p and
w = 4l + 2s + q at position (k, l, r, s, p, q), every layer of the network becomes a
plain matrix multiply on a view of the previous activation, with no im2col and no
transposes of activations. Only the (small) weights are permuted, on each call, so the
parameters keep the seed's exact shapes and names and autograd sees one graph.
`tests/test_model.py` proves that this form computes the same outputs and gradients as
the nn.Conv2d/nn.ConvTranspose2d layers. Members with other stages, kernels or colour train
on the plain layers (AutoEncoder.to_layout says which layout a member trains on).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from aesearch.model.architecture import (
    B4_TO_PATCHES,
    FROM_PATCHES,
    GREY_Z,
    TO_PATCHES,
    W2_TO_PATCHES,
    W3_TO_PATCHES,
    W4_TO_PATCHES,
    ModelConfig,
    parameter_shapes,
)

__all__ = ["AutoEncoder", "ModelConfig", "from_patch_layout", "parameter_shapes", "to_patch_layout"]


class AutoEncoder(nn.Module):
    """A member of the family (architecture.ModelConfig): encoder and decoder are separate, z = encode(x).

    For the seed (28 x 28 grey, widths 32-64):
      encoder: Conv2d(1, 32, 2, 2) -> (B, 32, 14, 14), Conv2d(32, 64, 2, 2) -> (B, 64, 7, 7),
               Flatten -> 3136, Linear -> z, each followed by LeakyReLU;
      decoder: Linear(z, 3136), Unflatten, ConvTranspose2d(64, 32, 2, 2), ConvTranspose2d(32, 1, 2, 2),
               LeakyReLU between, Sigmoid last.
    Larger members add stages; kernel 4 convolutions (padding 1) overlap their neighbours.
    """

    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or ModelConfig()
        slope, k = config.negative_slope, config.kernel
        padding = (k - 2) // 2  # kernel 2: none; kernel 4: 1, so each stage halves the side exactly
        down = (config.channels, *config.widths)
        encoder: list[nn.Module] = []
        for i in range(config.stages):
            encoder += [
                nn.Conv2d(down[i], down[i + 1], k, stride=2, padding=padding, bias=config.bias),
                nn.LeakyReLU(slope),
            ]
        encoder += [nn.Flatten(), nn.Linear(config.flat, config.z_size), nn.LeakyReLU(slope)]
        self.encoder = nn.Sequential(*encoder)
        up = down[::-1]
        decoder: list[nn.Module] = [
            nn.Linear(config.condition_size + config.z_size, config.flat),
            nn.LeakyReLU(slope),
            nn.Unflatten(1, (up[0], config.grid, config.grid)),
        ]
        for i in range(config.stages):
            last = i == config.stages - 1
            decoder += [
                nn.ConvTranspose2d(up[i], up[i + 1], k, stride=2, padding=padding, bias=config.bias),
                nn.Sigmoid() if last else nn.LeakyReLU(slope),
            ]
        self.decoder = nn.Sequential(*decoder)
        if config.prior:
            self.prior = Prior(config)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, channels, size, size) images in [0, 1] -> (B, z_size) latent vectors."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """(B, z_size) latent vectors -> (B, channels, size, size) images in [0, 1]. A member with a
        prior decodes z beside each image's condition (B, condition_size): Prior.condition()."""
        if self.config.prior:
            if condition is None:
                raise ValueError("this member's decoder takes each image's condition beside z")
            z = torch.cat([condition.to(z.dtype), z], 1)
        return self.decoder(z)

    def forward(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode(self.encode(x), condition)

    def trainable_parameters(self) -> list[nn.Parameter]:
        """What training updates: everything but the prior's fixed grey model."""
        return [p for name, p in self.named_parameters() if not name.startswith("prior.")]

    def weights(self) -> dict[str, np.ndarray]:
        """The state_dict as float32 NumPy arrays (what checkpoints store)."""
        return {name: t.detach().cpu().float().numpy() for name, t in self.state_dict().items()}

    @classmethod
    def from_weights(cls, weights: dict[str, np.ndarray], config: ModelConfig) -> AutoEncoder:
        model = cls(config)
        model.load_state_dict({name: torch.from_numpy(np.array(w, dtype=np.float32)) for name, w in weights.items()})
        return model

    # --- the training layout: patch layout where it applies, plain (B, C, H, W) elsewhere ---

    def to_layout(self, images: torch.Tensor) -> torch.Tensor:
        """(B, *config.image_shape) channels-last images (any dtype; kept) -> the layout the model trains on."""
        first = images.unsqueeze(1) if self.config.channels == 1 else images.permute(0, 3, 1, 2).contiguous()
        return self.layout_of(first)

    def layout_of(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) images -> the training layout: patch layout where it applies, else as they are."""
        return to_patch_layout(images) if self.config.patchable else images

    def from_layout(self, x: torch.Tensor) -> torch.Tensor:
        """The training layout -> (B, C, H, W) images, the inverse of layout_of."""
        return from_patch_layout(x) if self.config.patchable else x

    def encode_layout(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_patches(x) if self.config.patchable else self.encode(x)

    def decode_layout(self, z: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode_patches(z) if self.config.patchable else self.decode(z, condition)

    def forward_layout(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        return self.decode_layout(self.encode_layout(x), condition)

    # --- the same network in patch layout (see the module docstring) ---

    def encode_patches(self, xp: torch.Tensor) -> torch.Tensor:
        """(B, 7, 7, 2, 2, 2, 2) patch-layout images -> (B, z_size); equal to encode()."""
        b, slope, grid = xp.shape[0], self.config.negative_slope, self.config.grid
        C1, C2 = self.config.widths
        conv1, conv2, linear = self.encoder[0], self.encoder[2], self.encoder[5]
        w1 = conv1.weight.reshape(C1, 4)  # (out, p*q)
        w2 = conv2.weight.permute(W2_TO_PATCHES).reshape(C2, 4 * C1)  # (out, r*s*in)
        w3 = linear.weight.unflatten(1, (C2, grid, grid)).permute(W3_TO_PATCHES).flatten(1)  # (z, k*l*c)
        h = F.leaky_relu(xp.reshape(b * grid * grid * 4, 4) @ w1.t(), slope)  # (B*7*7*2*2, 32)
        h = F.leaky_relu(h.view(b * grid * grid, 4 * C1) @ w2.t(), slope)  # (B*7*7, 64)
        return F.leaky_relu(F.linear(h.view(b, self.config.flat), w3, linear.bias), slope)  # (B, z)

    def decode_patches(self, z: torch.Tensor) -> torch.Tensor:
        """(B, z_size) -> (B, 7, 7, 2, 2, 2, 2) patch-layout images; equal to decode()."""
        b, slope, grid = z.shape[0], self.config.negative_slope, self.config.grid
        C1, C2 = self.config.widths
        linear, convt1, convt2 = self.decoder[0], self.decoder[3], self.decoder[5]
        w4 = linear.weight.unflatten(0, (C2, grid, grid)).permute(W4_TO_PATCHES).flatten(0, 2)  # (k*l*c, z)
        b4 = linear.bias.view(C2, grid, grid).permute(B4_TO_PATCHES).flatten()
        w5 = convt1.weight.permute(W2_TO_PATCHES).reshape(C2, 4 * C1)  # (in, r*s*out)
        w6 = convt2.weight.reshape(C1, 4)  # (in, p*q)
        h = F.leaky_relu(F.linear(z, w4, b4), slope)  # (B, 7*7*64)
        h = F.leaky_relu(h.view(b * grid * grid, C2) @ w5, slope)  # (B*7*7, 2*2*32)
        out = torch.sigmoid(h.view(b * grid * grid * 4, C1) @ w6)  # (B*7*7*2*2, 2*2)
        return out.view(b, grid, grid, 2, 2, 2, 2)

    def forward_patches(self, xp: torch.Tensor) -> torch.Tensor:
        return self.decode_patches(self.encode_patches(xp))


class Prior(nn.Module):
    """A prior member's fixed parts (architecture.ModelConfig.prior): the grey model it searches
    beside (its weights, frozen) and the whitening that makes its z the decoder's condition. Neither
    is trained; both are set before training (training/prior.py) and saved with the weights."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.grey = AutoEncoder(ModelConfig()).requires_grad_(False)
        self.register_buffer("condition_mean", torch.zeros(GREY_Z))
        self.register_buffer("condition_matrix", torch.zeros(GREY_Z, config.condition_size))

    def condition(self, grey_z: torch.Tensor) -> torch.Tensor:
        """(B, 314) grey z -> (B, condition_size): whitened, unit length x sqrt(axes) (entries of about 1)."""
        white = (grey_z - self.condition_mean) @ self.condition_matrix  # the formula of model/prior.py's condition()
        return white / (white.norm(dim=-1, keepdim=True) + 1e-12) * self.condition_matrix.shape[1] ** 0.5


def to_patch_layout(images: torch.Tensor) -> torch.Tensor:
    """(B, [1,] H, H) -> (B, H/4, H/4, 2, 2, 2, 2): pixel (4k+2r+p, 4l+2s+q) goes to (k, l, r, s, p, q)."""
    b, grid = images.shape[0], images.shape[-1] // 4
    return images.reshape(b, grid, 2, 2, grid, 2, 2).permute(TO_PATCHES).contiguous()


def from_patch_layout(patches: torch.Tensor) -> torch.Tensor:
    """(B, H/4, H/4, 2, 2, 2, 2) -> (B, 1, H, H), the inverse of to_patch_layout."""
    b, size = patches.shape[0], patches.shape[1] * 4
    return patches.permute(FROM_PATCHES).reshape(b, 1, size, size)

"""The seed architecture's description: its configuration and parameter shapes.

Torch-free on purpose: the PyTorch model (network.py), the NumPy runtime used on the query path
(runtime.py) and checkpoint validation (checkpoint.py) all read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from aesearch import defaults

C1, C2 = 32, 64  # channels after the first and the second convolution

# Patch layout (see network.py): pixel (h, w) with h = 4k + 2r + p and w = 4l + 2s + q sits at
# (k, l, r, s, p, q). An image viewed as (B, k, r, p, l, s, q) (ModelConfig.pixel_axes) goes to patch
# layout by TO_PATCHES, and back by FROM_PATCHES; the PyTorch model and the NumPy runtime both use these.
TO_PATCHES = (0, 1, 4, 2, 5, 3, 6)  # (B, k, r, p, l, s, q) -> (B, k, l, r, s, p, q)
FROM_PATCHES = (0, 1, 3, 5, 2, 4, 6)  # (B, k, l, r, s, p, q) -> (B, k, r, p, l, s, q)
# The weights in patch layout, from the state_dict's shapes (identical in both implementations):
W2_TO_PATCHES = (0, 2, 3, 1)  # conv (out, in, r, s) -> (out, r, s, in)
W3_TO_PATCHES = (0, 2, 3, 1)  # linear (z, c, k, l) -> (z, k, l, c)
W4_TO_PATCHES = (1, 2, 0, 3)  # linear (c, k, l, z) -> (k, l, c, z)
B4_TO_PATCHES = (1, 2, 0)  # its bias (c, k, l) -> (k, l, c)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild an AutoEncoder; stored in every checkpoint.

    The input's shape lives here, and everything that handles images (segments, the runtime, the
    figures) reads it from the model: checkpoints written before it was recorded are the seed's,
    28 x 28 greyscale (the defaults).
    """

    z_size: int = defaults.Z_SIZE
    negative_slope: float = 0.01  # LeakyReLU slope: PyTorch's default, as in the seed
    image_size: int = defaults.IMAGE_SIZE  # input images are image_size x image_size pixels
    channels: int = defaults.IMAGE_CHANNELS  # 1: greyscale, the only kind this architecture reads

    def __post_init__(self) -> None:
        if isinstance(self.z_size, bool) or not isinstance(self.z_size, int) or not 1 <= self.z_size <= 100_000:
            raise ValueError(f"z_size must be an integer from 1 to 100000, got {self.z_size!r}")
        if not 0.0 <= self.negative_slope < 1.0:
            raise ValueError(f"negative_slope must be in [0, 1), got {self.negative_slope!r}")
        size = self.image_size
        # Two stride-2 convolutions: the side must halve twice into whole pixels.
        if isinstance(size, bool) or not isinstance(size, int) or not 4 <= size <= 4096 or size % 4:
            raise ValueError(f"image_size must be a multiple of 4 from 4 to 4096, got {size!r}")
        if self.channels != 1:
            raise ValueError(f"the seed architecture reads greyscale images: channels must be 1, got {self.channels!r}")

    @property
    def grid(self) -> int:
        """The spatial size after two stride-2 convolutions (7 for 28 x 28 images)."""
        return self.image_size // 4

    @property
    def flat(self) -> int:
        """The flattened encoder output before the linear layer (3136 for 28 x 28 images)."""
        return C2 * self.grid * self.grid

    @property
    def image_shape(self) -> tuple[int, ...]:
        """One input image as the store and the runtime hold it: (size, size), greyscale."""
        return (self.image_size, self.image_size)

    @property
    def pixel_axes(self) -> tuple[int, ...]:
        """An image's (k, r, p, l, s, q) axes: see the patch layout above."""
        return (self.grid, 2, 2, self.grid, 2, 2)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(
            z_size=int(data["z_size"]),
            negative_slope=float(data["negative_slope"]),
            image_size=int(data.get("image_size", defaults.IMAGE_SIZE)),
            channels=int(data.get("channels", defaults.IMAGE_CHANNELS)),
        )


def parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The state_dict names and shapes of the seed architecture (the article's names too)."""
    z, flat, channels = config.z_size, config.flat, config.channels
    return {
        "encoder.0.weight": (C1, channels, 2, 2),
        "encoder.2.weight": (C2, C1, 2, 2),
        "encoder.5.weight": (z, flat),
        "encoder.5.bias": (z,),
        "decoder.0.weight": (flat, z),
        "decoder.0.bias": (flat,),
        "decoder.3.weight": (C2, C1, 2, 2),
        "decoder.5.weight": (C1, channels, 2, 2),
    }

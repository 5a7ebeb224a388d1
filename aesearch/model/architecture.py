"""The seed architecture's description: its configuration and parameter shapes.

Torch-free on purpose: the PyTorch model (network.py), the NumPy runtime used on the query path
(runtime.py) and checkpoint validation (checkpoint.py) all read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from aesearch import defaults

IMAGE_SIZE = defaults.IMAGE_SIZE
C1, C2 = 32, 64  # channels after the first and the second convolution
GRID = IMAGE_SIZE // 4  # 7: the spatial size after two stride-2 convolutions
FLAT = C2 * GRID * GRID  # 3136

# Patch layout (see network.py): pixel (h, w) with h = 4k + 2r + p and w = 4l + 2s + q sits at
# (k, l, r, s, p, q). An image viewed as (B, k, r, p, l, s, q) goes to patch layout by TO_PATCHES,
# and back by FROM_PATCHES; the PyTorch model and the NumPy runtime both use these.
PIXEL_AXES = (GRID, 2, 2, GRID, 2, 2)  # (k, r, p, l, s, q)
TO_PATCHES = (0, 1, 4, 2, 5, 3, 6)  # (B, k, r, p, l, s, q) -> (B, k, l, r, s, p, q)
FROM_PATCHES = (0, 1, 3, 5, 2, 4, 6)  # (B, k, l, r, s, p, q) -> (B, k, r, p, l, s, q)
# The weights in patch layout, from the state_dict's shapes (identical in both implementations):
W2_TO_PATCHES = (0, 2, 3, 1)  # conv (out, in, r, s) -> (out, r, s, in)
W3_TO_PATCHES = (0, 2, 3, 1)  # linear (z, c, k, l) -> (z, k, l, c)
W4_TO_PATCHES = (1, 2, 0, 3)  # linear (c, k, l, z) -> (k, l, c, z)
B4_TO_PATCHES = (1, 2, 0)  # its bias (c, k, l) -> (k, l, c)


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild an AutoEncoder; stored in every checkpoint."""

    z_size: int = defaults.Z_SIZE
    negative_slope: float = 0.01  # LeakyReLU slope: PyTorch's default, as in the seed

    def __post_init__(self) -> None:
        if isinstance(self.z_size, bool) or not isinstance(self.z_size, int) or not 1 <= self.z_size <= 100_000:
            raise ValueError(f"z_size must be an integer from 1 to 100000, got {self.z_size!r}")
        if not 0.0 <= self.negative_slope < 1.0:
            raise ValueError(f"negative_slope must be in [0, 1), got {self.negative_slope!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(z_size=int(data["z_size"]), negative_slope=float(data["negative_slope"]))


def parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The state_dict names and shapes of the seed architecture (the article's names too)."""
    z = config.z_size
    return {
        "encoder.0.weight": (C1, 1, 2, 2),
        "encoder.2.weight": (C2, C1, 2, 2),
        "encoder.5.weight": (z, FLAT),
        "encoder.5.bias": (z,),
        "decoder.0.weight": (FLAT, z),
        "decoder.0.bias": (FLAT,),
        "decoder.3.weight": (C2, C1, 2, 2),
        "decoder.5.weight": (C1, 1, 2, 2),
    }

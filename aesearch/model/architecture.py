"""The seed architecture's description: its configuration and parameter shapes.

Torch-free on purpose: the PyTorch model (network.py), the NumPy runtime used on the query path
(runtime.py) and checkpoint validation (checkpoint.py) all read it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

IMAGE_SIZE = 28
C1, C2 = 32, 64  # channels after the first and the second convolution
GRID = IMAGE_SIZE // 4  # 7: the spatial size after two stride-2 convolutions
FLAT = C2 * GRID * GRID  # 3136


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild an AutoEncoder; stored in every checkpoint."""

    z_size: int = 314
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

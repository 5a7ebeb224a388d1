"""The AutoEncoder family's description: its configuration and parameter shapes.

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


FRAMINGS = ("silhouette", "photo")  # how an image is framed for the model: see sources/preprocess.py
# What a member's vector holds before its own z ("": nothing). "grey-histogram": the shipped grey
# model's pooled z of the image and the square root of its RGB histogram, the two parts that need no
# training; the decoder also takes the grey z (whitened, the condition). See ModelConfig.prior.
PRIORS = ("", "grey-histogram")
GREY_Z = defaults.Z_SIZE  # the shipped grey (seed) model's z, the prior's first part
KERNELS = (2, 4)  # 2: the seed's non-overlapping stride-2 convolutions; 4: overlapping, padding 1
MAX_STAGES = 6


@dataclass(frozen=True)
class ModelConfig:
    """One member of the AutoEncoder family; everything needed to rebuild and feed it.

    The family is the seed's design at any size: `len(widths)` stages of stride-2 convolutions
    (kernel 2, or 4 with padding 1) each followed by LeakyReLU, a linear layer to z, and the mirror
    image up with transposed convolutions and a sigmoid. The seed is the member (28 x 28, one
    channel, widths 32 and 64, kernel 2, z = 314, silhouette framing): the defaults, which is also
    what checkpoints written before these fields existed hold.

    The input's shape and framing live here, and everything that handles images (preprocessing,
    segments, the runtime, the figures) reads them from the model.
    """

    z_size: int = defaults.Z_SIZE
    negative_slope: float = 0.01  # LeakyReLU slope: PyTorch's default, as in the seed
    image_size: int = defaults.IMAGE_SIZE  # input images are image_size x image_size pixels
    channels: int = defaults.IMAGE_CHANNELS  # 1: greyscale, 3: RGB
    widths: tuple[int, ...] = (C1, C2)  # channels after each stride-2 convolution
    kernel: int = 2
    framing: str = "silhouette"  # "silhouette": Fashion-MNIST's framing; "photo": the whole image, aspect kept
    # "grey-histogram" (colour members trained since session 27): the vector a member encodes an image
    # to is [grey z, sqrt(RGB histogram), z], searched as unit(grey z) beside 0.5 x the histogram beside
    # 0.5 x unit(whitened z) (search_layout); the decoder decodes z with the grey z whitened on the
    # training images beside it (condition_size axes). The grey model's weights and that whitening
    # travel in the checkpoint ("prior." names), so a bundle answers the same whatever ships later.
    prior: str = ""
    bias: bool = False  # the convolutions add a bias per channel (the seed's have none)

    def __post_init__(self) -> None:
        if isinstance(self.z_size, bool) or not isinstance(self.z_size, int) or not 1 <= self.z_size <= 100_000:
            raise ValueError(f"z_size must be an integer from 1 to 100000, got {self.z_size!r}")
        if not 0.0 <= self.negative_slope < 1.0:
            raise ValueError(f"negative_slope must be in [0, 1), got {self.negative_slope!r}")
        object.__setattr__(self, "widths", tuple(self.widths))
        widths = self.widths
        if not 1 <= len(widths) <= MAX_STAGES or not all(
            isinstance(w, int) and not isinstance(w, bool) and 1 <= w <= 4096 for w in widths
        ):
            raise ValueError(f"widths must be 1 to {MAX_STAGES} integers from 1 to 4096, got {widths!r}")
        size, step = self.image_size, 2 ** len(widths)
        if isinstance(size, bool) or not isinstance(size, int) or not step <= size <= 4096 or size % step:
            raise ValueError(
                f"image_size must be a multiple of {step} from {step} to 4096 for {len(widths)} stages, got {size!r}"
            )
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 (greyscale) or 3 (RGB), got {self.channels!r}")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {KERNELS}, got {self.kernel!r}")
        if self.framing not in FRAMINGS:
            raise ValueError(f"framing must be one of {FRAMINGS}, got {self.framing!r}")
        if self.framing == "silhouette" and self.channels != 1:
            raise ValueError("silhouette framing makes greyscale images: use channels 1, or framing 'photo'")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {PRIORS}, got {self.prior!r}")
        if self.prior and (self.channels != 3 or self.framing != "photo"):
            raise ValueError(
                "a grey-histogram prior is for colour photo-framed members: use channels 3, framing 'photo'"
            )

    @property
    def stages(self) -> int:
        return len(self.widths)

    @property
    def grid(self) -> int:
        """The spatial size after the stride-2 convolutions (7 for the seed's 28 x 28 images)."""
        return self.image_size >> self.stages

    @property
    def flat(self) -> int:
        """The flattened encoder output before the linear layer (3136 for the seed)."""
        return self.widths[-1] * self.grid * self.grid

    @property
    def histogram_size(self) -> int:
        """The prior's histogram bins: levels per channel, cubed (512)."""
        return defaults.PRIOR_HISTOGRAM_LEVELS**3 if self.prior else 0

    @property
    def prior_size(self) -> int:
        """The numbers the vector holds before z: the grey z and the histogram (0 without a prior)."""
        return GREY_Z + self.histogram_size if self.prior else 0

    @property
    def vector_size(self) -> int:
        """What encode() gives per image and decode() takes, and the bundle stores: z, after the prior's parts."""
        return self.prior_size + self.z_size

    @property
    def condition_size(self) -> int:
        """The whitened grey z's axes the decoder takes beside z (0: none)."""
        return defaults.PRIOR_CONDITION_DIMS if self.prior else 0

    @property
    def default_shifts(self) -> tuple[tuple[int, int], ...]:
        """The shifts a build pools z over unless told (--phase-pooling): a silhouette's grid phases;
        none for a photo-framed member, whose images fill the frame and are not centred by their mass."""
        return defaults.PHOTO_EMBEDDING_SHIFTS if self.framing == "photo" else defaults.EMBEDDING_SHIFTS

    @property
    def search_layout(self) -> tuple[tuple[int, float, bool], ...]:
        """How a vector becomes a search vector, part by part: (width, weight, whitened). Each part
        is made unit length and weighted, the whitened one after the bundle's whitening (when it has
        one); () for a member without a prior (the whole vector is one part, as it always was)."""
        if not self.prior:
            return ()
        return (
            (GREY_Z, 1.0, False),
            (self.histogram_size, defaults.PRIOR_HISTOGRAM_WEIGHT, False),
            (self.z_size, defaults.PRIOR_BRANCH_WEIGHT, True),
        )

    @property
    def image_shape(self) -> tuple[int, ...]:
        """One input image as the store and the runtime hold it: (size, size), or (size, size, 3) in colour;
        (size, size, 4) with a prior: premultiplied RGBA, transparency kept for the grey part (model/prior.py)."""
        side = (self.image_size, self.image_size)
        return side if self.channels == 1 else (*side, self.channels + 1 if self.prior else self.channels)

    @property
    def picture_shape(self) -> tuple[int, ...]:
        """One image as pictures show it and the decoder gives it back: image_shape without transparency
        (composited onto white, model/prior.py's pictures())."""
        side = (self.image_size, self.image_size)
        return side if self.channels == 1 else (*side, self.channels)

    @property
    def patchable(self) -> bool:
        """Whether the seed's patch layout (below and network.py) computes this member: two kernel-2 stages on grey."""
        return self.stages == 2 and self.kernel == 2 and self.channels == 1

    @property
    def pixel_axes(self) -> tuple[int, ...]:
        """An image's (k, r, p, l, s, q) axes: see the patch layout above (patchable members only)."""
        return (self.grid, 2, 2, self.grid, 2, 2)

    def describe(self) -> str:
        """One line a person reads: "28x28 grey, z 314, widths 32-64" ."""
        colour = "grey" if self.channels == 1 else "colour"
        kernel = "" if self.kernel == 2 else f", kernel {self.kernel}"
        widths = "-".join(map(str, self.widths))
        prior = ", beside the grey model and a colour histogram" if self.prior else ""
        prior = (", biased convolutions" if self.bias else "") + prior
        return (
            f"{self.image_size}x{self.image_size} {colour}, z {self.z_size}, widths {widths}{kernel}, {self.framing}"
            + prior
        )

    def to_dict(self) -> dict:
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return cls(
            z_size=int(data["z_size"]),
            negative_slope=float(data["negative_slope"]),
            image_size=int(data.get("image_size", defaults.IMAGE_SIZE)),
            channels=int(data.get("channels", defaults.IMAGE_CHANNELS)),
            widths=tuple(int(w) for w in data.get("widths", (C1, C2))),
            kernel=int(data.get("kernel", 2)),
            framing=str(data.get("framing", "silhouette")),
            prior=str(data.get("prior", "")),
            bias=bool(data.get("bias", False)),
        )


def member_for(image_size: int, channels: int, z_size: int, *, framing: str = "photo", prior: str = "") -> ModelConfig:
    """The family member for images of this size: the seed's shape at 28 x 28 grey, else stages down to <= 7.

    Each stage halves the side until it is at most 7 pixels (4 stages at 64, 3 at 32 and 48), each
    twice as wide as the one before from 32 channels, capped at 128: the seed's own progression
    (wider, 64-128-256, ranked no better on colour collections at 2.3x the time: docs/colour-models.md).
    """
    if image_size == defaults.IMAGE_SIZE and channels == 1:
        return ModelConfig(z_size=z_size, framing=framing)
    stages = 1
    while image_size >> stages > 7 and image_size % (2 ** (stages + 1)) == 0:
        stages += 1
    if image_size >> stages > 8:
        raise ValueError(
            f"{image_size} px does not halve down to 8 px or less: use 28 or a multiple of 8 (32, 48, 64, 96...)"
        )
    widths = tuple(min(128, 32 * 2**i) for i in range(stages))
    return ModelConfig(
        z_size=z_size,
        image_size=image_size,
        channels=channels,
        widths=widths,
        framing=framing,
        prior=prior,
        bias=bool(prior),  # measured with biased convolutions (docs/colour-models.md)
    )


def parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The state_dict names and shapes of a family member (for the seed, the article's names too).

    Modules sit in nn.Sequential order: encoder = (conv, act) per stage, flatten, linear, act;
    decoder = linear, act, unflatten, (transposed conv, act) per stage. The convolutions have no bias.
    """
    k, z, flat, widths = config.kernel, config.z_size, config.flat, config.widths
    down = (config.channels, *widths)  # channels into and out of each stage
    shapes = {f"encoder.{2 * i}.weight": (down[i + 1], down[i], k, k) for i in range(config.stages)}
    if config.bias:
        shapes |= {f"encoder.{2 * i}.bias": (down[i + 1],) for i in range(config.stages)}
    linear = 2 * config.stages + 1
    shapes |= {f"encoder.{linear}.weight": (z, flat), f"encoder.{linear}.bias": (z,)}
    shapes |= {"decoder.0.weight": (flat, config.condition_size + z), "decoder.0.bias": (flat,)}
    up = down[::-1]
    shapes |= {f"decoder.{3 + 2 * i}.weight": (up[i], up[i + 1], k, k) for i in range(config.stages)}
    if config.bias:
        shapes |= {f"decoder.{3 + 2 * i}.bias": (up[i + 1],) for i in range(config.stages)}
    if config.prior:  # fixed, not trained: the grey model and the condition's whitening
        shapes |= {f"prior.grey.{name}": shape for name, shape in parameter_shapes(ModelConfig()).items()}
        shapes |= {
            "prior.condition_mean": (GREY_Z,),
            "prior.condition_matrix": (GREY_Z, config.condition_size),
        }
    return shapes

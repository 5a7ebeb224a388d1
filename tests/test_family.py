"""The model family: every member's NumPy runtime against PyTorch (the oracle), its checkpoint, its shape."""

import numpy as np
import pytest
import torch

from aesearch.model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from aesearch.model.network import AutoEncoder, ModelConfig, parameter_shapes
from aesearch.model.runtime import NumpyAutoEncoder

MEMBERS = [
    ModelConfig(z_size=24),  # the seed's shape: patch layout
    ModelConfig(image_size=32, channels=3, widths=(8, 16, 16), z_size=20, framing="photo"),
    ModelConfig(image_size=32, channels=3, widths=(8, 16, 16), kernel=4, z_size=20, framing="photo"),
    ModelConfig(image_size=64, channels=3, widths=(8, 8, 16, 16), z_size=32, framing="photo"),
    ModelConfig(image_size=48, channels=1, widths=(8, 16, 16), kernel=4, z_size=12, framing="photo"),
    ModelConfig(image_size=32, widths=(8, 16), kernel=4, z_size=10),  # two stages, but overlapping: not patchable
    ModelConfig(image_size=32, channels=3, widths=(8, 16, 16), kernel=4, z_size=20, framing="photo", bias=True),
]


def _images_first(x: np.ndarray, config: ModelConfig) -> torch.Tensor:
    """(n, *image_shape) channels-last -> PyTorch's (n, C, H, W)."""
    t = torch.from_numpy(x)
    return t.unsqueeze(1) if config.channels == 1 else t.permute(0, 3, 1, 2)


def _channels_last(t: torch.Tensor, config: ModelConfig) -> np.ndarray:
    return (t[:, 0] if config.channels == 1 else t.permute(0, 2, 3, 1)).numpy()


@pytest.mark.parametrize("config", MEMBERS, ids=ModelConfig.describe)
def test_every_member_runs_torch_free_as_pytorch_computes_it(config):
    torch.manual_seed(0)
    model = AutoEncoder(config).eval()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == parameter_shapes(config)
    runtime = NumpyAutoEncoder(model.weights(), config)
    x = np.random.default_rng(1).random((300, *config.image_shape), dtype=np.float32)  # more than one block
    z_big = np.random.default_rng(2).normal(size=(7, config.z_size)).astype(np.float32) * 4
    with torch.no_grad():
        expected_z = model.encode(_images_first(x, config)).numpy()
        expected_images = _channels_last(model.decode(torch.from_numpy(z_big)), config)
    z = runtime.encode(x)
    assert z.shape == (300, config.z_size) and z.dtype == np.float32
    np.testing.assert_allclose(z, expected_z, rtol=1e-4, atol=1e-5)
    images = runtime.decode(z_big)
    assert images.shape == (7, *config.image_shape)
    np.testing.assert_allclose(images, expected_images, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(runtime.encode(x[5:6]), z[5:6])  # a row alone encodes as in a batch


@pytest.mark.parametrize("config", MEMBERS, ids=ModelConfig.describe)
def test_the_training_layout_is_the_plain_layers_in_another_arrangement(config):
    torch.manual_seed(0)
    model = AutoEncoder(config)
    images = torch.rand(3, *config.image_shape)
    laid_out = model.to_layout(images)
    plain = _images_first(images.numpy(), config)
    torch.testing.assert_close(model.from_layout(laid_out), plain)
    torch.testing.assert_close(model.encode_layout(laid_out), model.encode(plain), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model.from_layout(model.forward_layout(laid_out)), model(plain), rtol=1e-5, atol=1e-6)


def test_a_colour_member_round_trips_through_its_checkpoint(tmp_path):
    config = MEMBERS[2]
    model = AutoEncoder(config)
    path = save_checkpoint(tmp_path / "colour.safetensors", Checkpoint(model.weights(), config, {"recipe": "x"}))
    loaded = load_checkpoint(path)
    assert loaded.model_config == config and loaded.model_config.image_shape == (32, 32, 3)
    assert loaded.encoder_sha256 == Checkpoint(model.weights(), config).encoder_sha256


def test_a_checkpoint_written_before_the_family_is_the_seed():
    """Checkpoints from before widths, kernel and framing were recorded hold the seed's."""
    config = ModelConfig.from_dict({"z_size": 314, "negative_slope": 0.01, "image_size": 28, "channels": 1})
    assert config == ModelConfig() and config.patchable and config.describe().startswith("28x28 grey, z 314")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"image_size": 28, "widths": (8, 16, 32)}, "multiple of 8"),
        ({"channels": 3}, "silhouette framing makes greyscale"),
        ({"widths": (8,) * 7}, "widths must be 1 to 6"),
        ({"widths": (8, 0)}, "widths must be"),
    ],
)
def test_a_member_the_family_cannot_build_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**fields)


# --- a member with a prior (model/prior.py): [grey z, histogram, z], the decoder conditioned on the grey z ---

PRIOR_MEMBER = ModelConfig(
    image_size=32, channels=3, widths=(8, 16, 16), z_size=20, framing="photo", prior="grey-histogram", bias=True
)


def _prior_model() -> AutoEncoder:
    torch.manual_seed(0)
    model = AutoEncoder(PRIOR_MEMBER).eval()
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():  # fixed parts that are not zero, as training leaves them
        for parameter in model.prior.grey.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
        model.prior.condition_mean.copy_(torch.randn(314, generator=generator))
        model.prior.condition_matrix.copy_(torch.randn(314, PRIOR_MEMBER.condition_size, generator=generator) * 0.1)
    return model


def _rgba_images(n: int, side: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(straight RGBA, premultiplied RGBA) float images: shapes, some on a transparent background."""
    straight = np.ones((n, side, side, 4), np.float32)
    straight[..., :3] = rng.random((n, side, side, 3), dtype=np.float32)
    for i in range(n):
        if i % 2:  # a shape on a transparent background, with a soft (half transparent) edge
            straight[i, ..., 3] = 0
            top, size = rng.integers(2, 10), rng.integers(10, 18)
            straight[i, top - 1 : top + size + 1, top - 1 : top + size + 1, 3] = 0.5
            straight[i, top : top + size, top : top + size, 3] = 1
            straight[i, top : top + size, top : top + size, :3] = rng.random(3, dtype=np.float32)
    premultiplied = straight.copy()
    premultiplied[..., :3] *= straight[..., 3:]
    return straight, premultiplied


def _silhouettes_by_hand(straight: np.ndarray) -> np.ndarray:
    """The grey (silhouette) contract on each straight RGBA image, as preprocess() frames a file."""
    from aesearch.sources.preprocess import preprocess

    return np.stack([preprocess(image) for image in straight])


def test_a_prior_member_runs_torch_free_as_pytorch_and_a_counted_histogram_compute_it():
    model = _prior_model()
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == parameter_shapes(PRIOR_MEMBER)
    runtime = NumpyAutoEncoder(model.weights(), PRIOR_MEMBER)
    rng = np.random.default_rng(1)
    straight, x = _rgba_images(40, 32, rng)
    assert PRIOR_MEMBER.image_shape == (32, 32, 4) and PRIOR_MEMBER.picture_shape == (32, 32, 3)
    vectors = runtime.encode(x)
    assert vectors.shape == (40, 314 + 512 + 20) == (40, PRIOR_MEMBER.vector_size)
    grey, histogram, z = vectors[:, :314], vectors[:, 314:826], vectors[:, 826:]
    on_white = straight[..., :3] * straight[..., 3:] + (1 - straight[..., 3:])  # what the colour parts see
    np.testing.assert_allclose(runtime.pictures(x), on_white, atol=1e-6)
    with torch.no_grad():
        expected_z = model.encode(torch.from_numpy(on_white).permute(0, 3, 1, 2)).numpy()
        framed = torch.from_numpy(_silhouettes_by_hand(straight)).unsqueeze(1)
        shifted = torch.nn.functional.pad(framed, (1, 0, 1, 0))[:, :, :28, :28]  # the (1, 1) grid phase
        expected_grey = ((model.prior.grey.encode(framed) + model.prior.grey.encode(shifted)) / 2).numpy()
    np.testing.assert_allclose(z, expected_z, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grey, expected_grey, rtol=1e-4, atol=1e-4)
    levels = np.rint(on_white * 255).astype(int) // 32  # 8 levels a channel
    for row in (0, 25):
        counts = np.zeros(512)
        for r, g, b in levels[row].reshape(-1, 3):
            counts[(r * 8 + g) * 8 + b] += 1
        np.testing.assert_allclose(histogram[row], np.sqrt(counts / 1024), rtol=1e-6)
    codes = np.concatenate([grey, histogram, rng.normal(size=(40, 20)).astype(np.float32) * 4], 1)
    with torch.no_grad():
        condition = model.prior.condition(torch.from_numpy(grey))
        expected_images = _channels_last(model.decode(torch.from_numpy(codes[:, 826:]), condition), PRIOR_MEMBER)
    decoded = runtime.decode(codes)
    assert decoded.shape == (40, 32, 32, 3)
    np.testing.assert_allclose(decoded, expected_images, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(runtime.condition(codes), condition.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(runtime.encode(x[5:6]), vectors[5:6])  # a row alone encodes as in a batch


def test_a_prior_member_round_trips_and_its_fixed_parts_belong_to_its_identity(tmp_path):
    model = _prior_model()
    checkpoint = Checkpoint(model.weights(), PRIOR_MEMBER, {"recipe": "x"})
    loaded = load_checkpoint(save_checkpoint(tmp_path / "prior.safetensors", checkpoint))
    assert loaded.model_config == PRIOR_MEMBER and loaded.model_config.vector_size == 846
    other_grey = dict(model.weights())
    other_grey["prior.grey.encoder.0.weight"] = other_grey["prior.grey.encoder.0.weight"] + 1
    assert Checkpoint(other_grey, PRIOR_MEMBER).encoder_sha256 != checkpoint.encoder_sha256
    other_condition = dict(model.weights())
    other_condition["prior.condition_mean"] = other_condition["prior.condition_mean"] + 1
    assert Checkpoint(other_condition, PRIOR_MEMBER).decoder_sha256 != checkpoint.decoder_sha256
    assert Checkpoint(other_condition, PRIOR_MEMBER).encoder_sha256 == checkpoint.encoder_sha256


def test_only_a_colour_photo_member_takes_a_prior():
    with pytest.raises(ValueError, match="colour photo-framed"):
        ModelConfig(image_size=32, widths=(8, 16), z_size=10, framing="photo", prior="grey-histogram")
    with pytest.raises(ValueError, match="prior must be one of"):
        ModelConfig(image_size=32, channels=3, widths=(8, 16), z_size=10, framing="photo", prior="clip")
    assert ModelConfig.from_dict(PRIOR_MEMBER.to_dict()) == PRIOR_MEMBER

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

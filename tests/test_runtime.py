"""The NumPy runtime used on the query path against the PyTorch model (oracle)."""

import numpy as np
import pytest
import torch

from aesearch.model.checkpoint import Checkpoint
from aesearch.model.network import AutoEncoder, ModelConfig
from aesearch.model.runtime import NumpyAutoEncoder


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(3)
    model = AutoEncoder(ModelConfig(z_size=40)).eval()
    return model, NumpyAutoEncoder.from_checkpoint(Checkpoint(model.weights(), model.config))


def test_encode_matches_torch(pair):
    model, runtime = pair
    x = np.random.default_rng(0).random((2500, 28, 28), dtype=np.float32)  # more than one chunk
    with torch.no_grad():
        expected = model.encode(torch.from_numpy(x)[:, None]).numpy()
    got = runtime.encode(x)
    assert got.dtype == np.float32 and got.shape == (2500, 40)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def test_decode_matches_torch(pair):
    model, runtime = pair
    z = np.random.default_rng(1).normal(size=(33, 40)).astype(np.float32) * 5  # large logits too
    with torch.no_grad():
        expected = model.decode(torch.from_numpy(z))[:, 0].numpy()
    got = runtime.decode(z)
    assert got.shape == (33, 28, 28)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert got.min() >= 0 and got.max() <= 1


def test_empty_batch(pair):
    _, runtime = pair
    assert runtime.encode(np.zeros((0, 28, 28), np.float32)).shape == (0, 40)


@pytest.mark.parametrize("z_size", [314, 40])
def test_a_row_encodes_the_same_alone_or_in_any_batch_on_any_threads(z_size):
    """Bit-identical, so an indexed image queried alone is found at distance exactly 0, whichever
    thread serves it and however many threads the batch was built on."""
    torch.manual_seed(4)
    model = AutoEncoder(ModelConfig(z_size=z_size))
    runtime = NumpyAutoEncoder.from_checkpoint(Checkpoint(model.weights(), model.config))
    x = np.random.default_rng(2).random((600, 28, 28), dtype=np.float32)
    everything = runtime.encode(x, threads=2)  # blocks of 256, 256 and 88 on two threads
    np.testing.assert_array_equal(runtime.encode(x, threads=1), everything)
    for size in (1, 2, 3, 7, 64):
        for start in (0, 5, 509):
            np.testing.assert_array_equal(runtime.encode(x[start : start + size]), everything[start : start + size])
    z = everything[:9]
    np.testing.assert_array_equal(runtime.decode(z[:1]), runtime.decode(z)[:1])
    np.testing.assert_array_equal(runtime.decode(z[3:4]), runtime.decode(z, threads=2)[3:4])


def test_the_input_size_comes_from_the_config():
    """A model of 32 x 32 images: the runtime and the patch-layout training path agree with the torch
    convolutions (the oracle) at the size the config says, with no 28 anywhere in between."""
    from aesearch.model.network import from_patch_layout, to_patch_layout

    torch.manual_seed(5)
    config = ModelConfig(z_size=12, image_size=32)
    model = AutoEncoder(config).eval()
    runtime = NumpyAutoEncoder.from_checkpoint(Checkpoint(model.weights(), config))
    x = np.random.default_rng(2).random((5, 32, 32), dtype=np.float32)
    with torch.no_grad():
        z = model.encode(torch.from_numpy(x)[:, None])
        images = model.decode(z)
        patches = model.encode_patches(to_patch_layout(torch.from_numpy(x)))
        decoded = from_patch_layout(model.decode_patches(z))
    np.testing.assert_allclose(runtime.encode(x), z.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(patches.numpy(), z.numpy(), rtol=1e-4, atol=1e-5)
    assert runtime.decode(z.numpy()).shape == (5, 32, 32)
    np.testing.assert_allclose(runtime.decode(z.numpy()), images[:, 0].numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(decoded.numpy(), images.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("image_size", 30),
        ("image_size", 0),
        ("channels", 2),
        ("kernel", 3),
        ("framing", "poster"),
        ("widths", ()),
    ],
)
def test_an_input_the_architecture_cannot_read_is_refused(field, value):
    with pytest.raises(ValueError, match=field):
        ModelConfig(**{field: value})


def test_a_config_without_an_input_shape_is_the_seed_s():
    """Checkpoints written before the shape was recorded hold z_size and negative_slope only."""
    config = ModelConfig.from_dict({"z_size": 40, "negative_slope": 0.01})
    assert (config.image_size, config.channels, config.image_shape) == (28, 1, (28, 28))

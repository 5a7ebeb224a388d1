"""The NumPy runtime used on the query path against the PyTorch model (oracle)."""

import numpy as np
import pytest
import torch

from aesearch.checkpoint import Checkpoint
from aesearch.model import AutoEncoder, ModelConfig
from aesearch.runtime import NumpyAutoEncoder


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

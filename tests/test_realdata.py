"""The real Fashion-MNIST path, on a slice with one short epoch. Runs in CI, where the data is installed."""

import pytest

from aesearch.data import CLASS_NAMES
from aesearch.model import AutoEncoder
from aesearch.train import TrainConfig, fit, reconstruction_mse

pytestmark = pytest.mark.realdata


def test_real_data_loads_whole(real_data):
    assert real_data.train.images.shape == (60_000, 28, 28) and real_data.test.images.shape == (10_000, 28, 28)
    assert str(real_data.train.images.dtype) == "torch.uint8"
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    assert real_data.train.labels.bincount().tolist() == [6000] * 10
    assert real_data.test.labels.bincount().tolist() == [1000] * 10
    assert len(CLASS_NAMES) == 10


def test_one_short_epoch_on_a_slice_learns(real_data):
    from dataclasses import replace

    sliced = replace(real_data, train=real_data.train.head(4096), test=real_data.test.head(1000))
    untrained = reconstruction_mse(AutoEncoder(), sliced.test)
    result = fit(TrainConfig.for_recipe("default", epochs=1, batch_size=64), sliced, progress=False, log=None)
    assert result.test_mse < untrained / 3, (result.test_mse, untrained)
    assert len(result.data_fingerprint) == 64

"""The real Fashion-MNIST path, on a slice with one short epoch. Runs in CI, where the data is installed."""

import numpy as np
import pytest

from aesearch.model.network import AutoEncoder
from aesearch.sources.fashion_mnist import CLASS_NAMES
from aesearch.training.train import TrainConfig, fit, reconstruction_mse

pytestmark = pytest.mark.realdata


def test_real_data_loads_whole(real_data):
    assert real_data.train.images.shape == (60_000, 28, 28) and real_data.test.images.shape == (10_000, 28, 28)
    assert real_data.train.images.dtype == np.uint8
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class.
    assert np.bincount(real_data.train.labels).tolist() == [6000] * 10
    assert np.bincount(real_data.test.labels).tolist() == [1000] * 10
    assert len(CLASS_NAMES) == 10


def test_one_short_epoch_on_a_slice_learns(real_data):
    from dataclasses import replace

    sliced = replace(real_data, train=real_data.train.head(4096), test=real_data.test.head(1000))
    untrained = reconstruction_mse(AutoEncoder(), sliced.test)
    result = fit(TrainConfig.for_recipe("default", epochs=1, batch_size=64), sliced, progress=False, log=None)
    assert result.test_mse < untrained / 3, (result.test_mse, untrained)
    assert len(result.data_fingerprint) == 64


@pytest.fixture(scope="module")
def real_bundle(real_data, tmp_path_factory):
    """A small model trained on a slice for one epoch, then the real 70,000-image bundle."""
    from dataclasses import replace

    from aesearch.model.checkpoint import save_checkpoint
    from aesearch.pipelines.build import build_index
    from aesearch.training.train import to_checkpoint

    folder = tmp_path_factory.mktemp("real")
    sliced = replace(real_data, train=real_data.train.head(4096), test=real_data.test.head(1000))
    result = fit(TrainConfig.for_recipe("default", epochs=1, batch_size=64), sliced, progress=False, log=None)
    model = save_checkpoint(folder / "model.safetensors", to_checkpoint(result))
    build_index(folder / "index", model=model, progress=False, log=None)
    return folder / "index"


def test_real_bundle_finds_a_test_image_first_at_distance_zero(real_bundle, real_data):
    from aesearch.search.engine import SearchEngine

    engine = SearchEngine.load(real_bundle)
    assert len(engine) == 70_000
    for position in (0, 1, 4321):
        result = engine.query(real_data.test.images[position], k=10)
        first = result.hits[0]
        assert (first.split, first.position, first.distance) == ("test", position, 0.0)
        assert first.label == int(real_data.test.labels[position])


def test_real_images_in_other_forms_find_the_original_first(real_bundle, real_data):
    """Inverted, enlarged, RGBA, 16-bit, palette and off-centre versions of real test images."""
    from aesearch.search.engine import SearchEngine
    from tests.test_preprocess import variants

    engine = SearchEngine.load(real_bundle)
    found = total = 0
    for position in range(0, 10_000, 500):
        image = real_data.test.images[position]
        forms = variants(image)
        sources = [forms[name] for name in forms if name != "JPEG"]
        for result in engine.query_batch(sources, k=1):
            found += result.hits[0].id == 60_000 + position
            total += 1
    # Objects whose longest edge is under 28 px (about 6% of the dataset) come back rescaled.
    assert found / total >= 0.9, (found, total)

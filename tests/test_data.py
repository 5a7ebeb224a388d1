"""Finding Fashion-MNIST in each place it may be, and the errors when it is nowhere or damaged."""

import os

import numpy as np
import pytest

from aesearch.errors import DataError, DataNotFoundError
from aesearch.sources import fashion_mnist as data
from tests.conftest import synthetic_images, write_fake_fashion_mnist, write_idx

NAMES = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]


def place_files(folder, gz=True, torchvision_layout=False):
    """Discovery looks for file names only; empty placeholders are enough."""
    target = folder / "FashionMNIST" / "raw" if torchvision_layout else folder
    target.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        (target / (f"{name}.gz" if gz else name)).write_bytes(b"")
    return folder


def test_nothing_found_names_every_place_and_both_remedies(no_real_data, monkeypatch):
    monkeypatch.setenv(data.DATA_DIR_ENV, str(no_real_data / "from-env"))
    with pytest.raises(DataNotFoundError) as info:
        data.load_fashion_mnist()
    message = str(info.value)
    assert "\n" not in message
    for place in ("from-env", "data", "no-debian"):
        assert place in message
    assert "apt-get install dataset-fashion-mnist" in message and "internet" in message


def test_an_explicit_folder_is_the_only_place_looked_in(no_real_data):
    place_files(no_real_data / "no-debian")  # data elsewhere must not be used instead
    assert data.find_data_dir(no_real_data / "mine") is None
    with pytest.raises(DataNotFoundError, match=r"no Fashion-MNIST in .*mine .*`data_dir` names") as info:
        data.load_fashion_mnist(no_real_data / "mine")
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("where", ["explicit", "env", "local", "debian"])
def test_found_in_each_place(no_real_data, monkeypatch, where):
    tmp = no_real_data
    folders = {"explicit": tmp / "mine", "env": tmp / "from-env", "local": tmp / "data", "debian": tmp / "no-debian"}
    place_files(folders[where])
    monkeypatch.setenv(data.DATA_DIR_ENV, str(folders["env"]))
    explicit = folders["explicit"] if where == "explicit" else None
    assert data.find_data_dir(explicit) == folders[where]


def test_search_order_prefers_explicit_then_env_then_local_then_debian(no_real_data, monkeypatch):
    tmp = no_real_data
    for name in ("mine", "from-env", "data", "no-debian"):
        place_files(tmp / name)
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp / "from-env"))
    assert data.find_data_dir(tmp / "mine") == tmp / "mine"
    assert data.find_data_dir() == tmp / "from-env"
    assert data.candidate_dirs(tmp / "mine") == [tmp / "mine"]
    monkeypatch.delenv(data.DATA_DIR_ENV)
    assert data.find_data_dir() == tmp / "data"
    (tmp / "data" / NAMES[0]).with_suffix(".gz").unlink()  # an incomplete folder is skipped
    assert data.find_data_dir() == tmp / "no-debian"


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("torchvision_layout", [True, False])
def test_layouts(no_real_data, gz, torchvision_layout):
    place_files(no_real_data / "d", gz=gz, torchvision_layout=torchvision_layout)
    assert data.find_data_dir(no_real_data / "d") == no_real_data / "d"


def test_download_is_the_last_resort_and_lands_in_local_folder(no_real_data, monkeypatch):
    calls = []

    def fake_download(target):
        calls.append(target)
        write_fake_fashion_mnist(target, gz=False, torchvision_layout=True)
        return True

    monkeypatch.setattr(data, "_download", fake_download)
    loaded = data.load_fashion_mnist()
    assert calls == [no_real_data / "data"]
    assert loaded.source == no_real_data / "data" and len(loaded.train) == 60_000


def test_loads_what_was_written(fake_data):
    """Oracle: the arrays written to the IDX files come back, as uint8 arrays (tensors after to())."""
    expected = np.resize(synthetic_images(64, seed=1), (60_000, 28, 28))
    assert fake_data.train.images.dtype == np.uint8 and fake_data.train.labels.dtype == np.int64
    assert fake_data.train.images.shape == (60_000, 28, 28) and fake_data.test.images.shape == (10_000, 28, 28)
    np.testing.assert_array_equal(fake_data.train.images, expected)
    on_cpu = fake_data.test.to("cpu")
    assert str(on_cpu.images.dtype) == "torch.uint8" and on_cpu.fingerprint() == fake_data.test.fingerprint()
    assert fake_data.train.labels.max() <= 9
    assert fake_data.train.fingerprint() != fake_data.test.fingerprint()
    assert fake_data.train.fingerprint() == fake_data.train.head(60_000).fingerprint()


def test_wrong_sizes_are_damaged_data(tmp_path):
    write_fake_fashion_mnist(tmp_path, gz=True, n_train=100, n_test=10)
    with pytest.raises(DataError, match="expected \\(60000, 28, 28\\)"):
        data.load_fashion_mnist(tmp_path, download=False)


def test_corrupt_files_are_damaged_data(tmp_path):
    write_fake_fashion_mnist(tmp_path, gz=False, n_train=100, n_test=10)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(b"garbage, not an idx file at all")
    with pytest.raises(DataError, match="damaged"):
        data.load_fashion_mnist(tmp_path, download=False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((10, 28, 28), np.uint8), gz=True)
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b truncated gzip")
    os.remove(tmp_path / "train-images-idx3-ubyte")
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((100, 28, 28), np.uint8), gz=False)
    with pytest.raises(DataError):
        data.load_fashion_mnist(tmp_path, download=False)

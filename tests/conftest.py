"""Shared fixtures: tiny, deterministic, offline. Real-data tests are marked `realdata`."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest


def synthetic_images(n: int, seed: int = 0) -> np.ndarray:
    """n distinct 28x28 uint8 images: light blobs and bars on black, like Fashion-MNIST."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:28, 0:28]
    images = np.zeros((n, 28, 28), dtype=np.float32)
    for i in range(n):
        kind = i % 3
        cy, cx = rng.uniform(9, 19, size=2)
        h, w = rng.uniform(4, 10, size=2)
        if kind == 0:  # filled ellipse
            mask = ((yy - cy) / h) ** 2 + ((xx - cx) / w) ** 2 <= 1
        elif kind == 1:  # rectangle
            mask = (abs(yy - cy) <= h) & (abs(xx - cx) <= w / 2)
        else:  # ring
            r = np.hypot((yy - cy) / h, (xx - cx) / w)
            mask = (r <= 1) & (r >= 0.55)
        images[i][mask] = rng.uniform(0.5, 1.0)
        images[i] += rng.uniform(0, 0.08, size=(28, 28)) * mask
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def synthetic_labels(n: int) -> np.ndarray:
    return (np.arange(n) % 3).astype(np.uint8)


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    """Write an IDX (MNIST-format) file: the layout torchvision's parser reads."""
    header = struct.pack(">I", 0x0800 | array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        with gzip.open(f"{path}.gz", "wb", compresslevel=1) as f:
            f.write(data)
    else:
        path.write_bytes(data)


def write_fake_fashion_mnist(
    folder: Path, *, gz: bool = True, torchvision_layout: bool = False, n_train: int = 60_000, n_test: int = 10_000
) -> Path:
    """A folder holding the four Fashion-MNIST files with synthetic content of the real shapes."""
    target = folder / "FashionMNIST" / "raw" if torchvision_layout else folder
    for prefix, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        write_idx(target / f"{prefix}-images-idx3-ubyte", np.resize(synthetic_images(64, seed), (n, 28, 28)), gz)
        write_idx(target / f"{prefix}-labels-idx1-ubyte", np.resize(synthetic_labels(64), (n,)), gz)
    return folder


@pytest.fixture
def no_real_data(monkeypatch, tmp_path):
    """Hide every real place Fashion-MNIST could be found, and forbid downloads."""
    from aesearch.sources import fashion_mnist as data

    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(data, "DEBIAN_DATA_DIR", tmp_path / "no-debian")
    monkeypatch.setattr(data, "_download", lambda target: False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def fake_data_dir(tmp_path_factory) -> Path:
    """Fashion-MNIST-shaped synthetic files (real split sizes, gzipped), written once per session."""
    return write_fake_fashion_mnist(tmp_path_factory.mktemp("fake-fashion"), gz=True)


@pytest.fixture(scope="session")
def fake_data(fake_data_dir):
    from aesearch.sources.fashion_mnist import load_fashion_mnist

    return load_fashion_mnist(fake_data_dir, download=False)


@pytest.fixture(scope="session")
def real_data():
    """The real Fashion-MNIST. CI sets AESEARCH_REQUIRE_DATA=1 so a missing dataset fails there."""
    from aesearch.sources.fashion_mnist import find_data_dir, load_fashion_mnist

    if find_data_dir() is None and os.environ.get("AESEARCH_REQUIRE_DATA") != "1":
        pytest.skip("Fashion-MNIST not installed (apt-get install dataset-fashion-mnist)")
    return load_fashion_mnist(download=False)


# --- tiny index bundles, built in well under a second ---


def tiny_checkpoint(z_size: int = 314, seed: int = 0):
    """A seeded random-init model: good enough to test every path, trained for none."""
    import torch

    from aesearch.model.checkpoint import Checkpoint
    from aesearch.model.network import AutoEncoder, ModelConfig

    torch.manual_seed(seed)
    model = AutoEncoder(ModelConfig(z_size=z_size))
    return Checkpoint(model.weights(), model.config, {"recipe": "untrained", "test_mse": 0.1})


def make_bundle(
    path: Path,
    *,
    n: int = 120,
    checkpoint=None,
    index_type: str = "flat",
    metric: str = "l2",
    transform: str = "none",
    images=None,
    labels=None,
    params=None,
) -> Path:
    """Write a real bundle of n synthetic images (ids 0..n-1: 3/4 "train", 1/4 "test")."""
    from aesearch.pipelines.build import assemble_bundle
    from aesearch.search.index import IndexSpec
    from aesearch.store.records import new_records

    checkpoint = checkpoint or tiny_checkpoint()
    images = synthetic_images(n) if images is None else images
    n = len(images)
    metadata = new_records(n)
    n_train = n * 3 // 4
    metadata["split"][n_train:] = 1
    metadata["position"] = np.concatenate([np.arange(n_train), np.arange(n - n_train)])
    metadata["label"] = synthetic_labels(n) if labels is None else labels
    info = {
        "dataset": "synthetic",
        "class_names": ["ellipse", "rectangle", "ring"],
        "split_names": ["train", "test"],
        "split_sizes": {"train": n_train, "test": n - n_train},
    }
    assemble_bundle(
        path,
        checkpoint=checkpoint,
        images=images,
        records=metadata,
        info=info,
        spec=IndexSpec(index_type, metric, dict(params or {}), transform=transform),
    )
    return path


@pytest.fixture(scope="session")
def model(tmp_path_factory) -> Path:
    """A tiny checkpoint saved to a file: what `--model` takes."""
    from aesearch.model.checkpoint import save_checkpoint

    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_checkpoint(path, tiny_checkpoint())
    return path


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory) -> Path:
    """A read-only tiny bundle shared by the session: tests that change files use bundle_copy."""
    return make_bundle(tmp_path_factory.mktemp("bundles") / "tiny")


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path) -> Path:
    import shutil

    return Path(shutil.copytree(tiny_bundle, tmp_path / "bundle"))


def folder_digest(path: Path) -> dict[str, bytes]:
    """Every file under path with its bytes: to prove nothing changed."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="session")
def trained_bundle(tmp_path_factory) -> Path:
    """A bundle whose model has actually learned the synthetic shapes (a few seconds of training)."""
    import torch

    from aesearch.sources.fashion_mnist import FashionMNIST, Split
    from aesearch.training.train import TrainConfig, fit, to_checkpoint

    images = synthetic_images(720, seed=5)
    labels = torch.from_numpy(synthetic_labels(720)).long()
    x = torch.from_numpy(images)
    data = FashionMNIST(Split("train", x[:600], labels[:600]), Split("test", x[600:], labels[600:]), Path("."))
    config = TrainConfig.for_recipe("default", epochs=8, batch_size=32, lr=3e-3)
    checkpoint = to_checkpoint(fit(config, data, progress=False, log=None))
    return make_bundle(
        tmp_path_factory.mktemp("trained") / "bundle",
        checkpoint=checkpoint,
        images=images,
        labels=synthetic_labels(720),
    )


@pytest.fixture(scope="module")
def far_ivf_bundle(tmp_path_factory):
    """2,000 images, IVF, whitened, cosine: an approximate index whose far queries can search wider."""
    return make_bundle(
        tmp_path_factory.mktemp("far") / "ivf",
        n=2000,
        index_type="ivf",
        metric="cosine",
        transform="whiten",
        params={"whiten_dims": 32, "whiten_shrinkage": 0.03},
    )

"""Find Fashion-MNIST wherever it is and hold each split in memory as one uint8 array.

Places searched, in order (the first holding all four files wins):
  1. the folder given explicitly (``--data-dir``): then it is the only place looked in, and the
     download goes there; otherwise ``$AESEARCH_DATA_DIR``;
  2. ``./data``, the local data folder (torchvision's downloads land there too);
  3. ``/usr/share/datasets/fashion-mnist``, where Debian's ``dataset-fashion-mnist`` installs it;
  4. torchvision's download into the local data folder (needs internet access).
In each folder the files may sit directly or in torchvision's ``FashionMNIST/raw/`` layout,
gzipped or not. The IDX files are parsed here with NumPy, so building an index over the dataset
needs no PyTorch (only the download and training do); Split.to(device) gives torch tensors.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from aesearch.errors import DataError, DataNotFoundError

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
IMAGE_SHAPE = (28, 28)  # the dataset's format (the seed model's input is its size by design)
DATA_DIR_ENV = "AESEARCH_DATA_DIR"
LOCAL_DATA_DIR = Path("data")
DEBIAN_DATA_DIR = Path("/usr/share/datasets/fashion-mnist")

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}


@dataclass(frozen=True)
class Split:
    """One split: images (n, 28, 28) uint8 and labels (n,) int64: NumPy arrays as loaded, torch
    tensors on a device after to(device) (for training)."""

    name: str
    images: Any  # np.ndarray, or torch.Tensor after to()
    labels: Any

    def __len__(self) -> int:
        return len(self.labels)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(images uint8 (n, 28, 28), labels int64 (n,)) as NumPy arrays, wherever they are held."""
        return _numpy(self.images).astype(np.uint8, copy=False), _numpy(self.labels).astype(np.int64, copy=False)

    def fingerprint(self) -> str:
        """SHA-256 of the pixels and labels: identifies the data, not the files it came from."""
        images, labels = self.arrays()
        digest = hashlib.sha256()
        digest.update(np.ascontiguousarray(images).tobytes())
        digest.update(labels.astype(np.uint8).tobytes())
        return digest.hexdigest()

    def to(self, device: Any) -> Split:
        """The split as torch tensors on device (imports torch: training only)."""
        import torch

        images, labels = (torch.as_tensor(a).to(device) for a in self.arrays())
        return Split(self.name, images, labels)

    def head(self, n: int) -> Split:
        """The first n examples (a slice for quick runs and tests)."""
        return Split(self.name, self.images[:n], self.labels[:n])


@dataclass(frozen=True)
class FashionMNIST:
    train: Split
    test: Split
    source: Path  # the folder the files were read from
    class_names: tuple[str, ...] = CLASS_NAMES


def candidate_dirs(data_dir: str | Path | None = None) -> list[Path]:
    """The folders searched for the dataset, in order: only data_dir when one is given."""
    if data_dir:
        return [Path(data_dir).absolute()]
    env = os.environ.get(DATA_DIR_ENV)
    return [d.absolute() for d in (*([Path(env)] if env else []), LOCAL_DATA_DIR, DEBIAN_DATA_DIR)]


def _find_file(folder: Path, name: str) -> Path | None:
    for sub in (folder, folder / "FashionMNIST" / "raw"):
        for candidate in (sub / name, sub / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _files_in(folder: Path) -> dict[str, Path] | None:
    names = [name for images, labels, _ in _FILES.values() for name in (images, labels)]
    found = {name: _find_file(folder, name) for name in names}
    return None if None in found.values() else found  # type: ignore[return-value]


def find_data_dir(data_dir: str | Path | None = None) -> Path | None:
    """The first searched folder holding all four files (no download, no parsing), or None."""
    return next((folder for folder in candidate_dirs(data_dir) if _files_in(folder) is not None), None)


def load_fashion_mnist(
    data_dir: str | Path | None = None,
    *,
    device: Any = None,
    download: bool = True,
) -> FashionMNIST:
    """Load both splits from the first place that has them (see the module docstring).

    Raises DataNotFoundError naming every place searched when none has the data. An explicit
    data_dir is the only place searched: asking for a folder and silently getting data from
    another would be a surprise. device: None keeps NumPy arrays; a torch device gives tensors.
    """
    folder = find_data_dir(data_dir)
    if folder is not None:
        return _read(_files_in(folder), folder, device)  # type: ignore[arg-type]
    searched = candidate_dirs(data_dir)
    if download:
        target = searched[0] if data_dir or os.environ.get(DATA_DIR_ENV) else LOCAL_DATA_DIR.absolute()
        if _download(target):
            files = _files_in(target)
            if files is not None:
                return _read(files, target, device)
    if data_dir:
        raise DataNotFoundError(
            f"no Fashion-MNIST in {searched[0]} (the folder `data_dir` names"
            f"{'; the download into it failed' if download else ''}): put the four files there "
            "(train/t10k images/labels, gzipped or not), or leave out `data_dir` to search the usual places",
            parameter="data_dir",
        )
    places = ", ".join(str(p) for p in searched)
    raise DataNotFoundError(
        f"Fashion-MNIST not found (looked in {places}"
        f"{' and tried torchvision download' if download else ''}): "
        "run `sudo apt-get install dataset-fashion-mnist`, or run once on a machine with internet "
        "access so torchvision downloads it into ./data, or pass `data_dir` to a folder holding the four files",
        parameter="data_dir",
    )


def _download(target: Path) -> bool:
    try:
        from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST
    except ImportError:
        return False  # the lean install: reported by the caller with the alternatives
    try:
        TorchvisionFashionMNIST(root=str(target), train=True, download=True)
    except (RuntimeError, OSError):
        return False  # offline or mirror unreachable: reported by the caller with the alternatives
    return True


def _read(files: dict[str, Path], folder: Path, device: Any) -> FashionMNIST:
    splits = {}
    for split, (images_name, labels_name, expected) in _FILES.items():
        try:
            images = read_idx(files[images_name], ndim=3)
            labels = read_idx(files[labels_name], ndim=1).astype(np.int64)
        except (OSError, EOFError, ValueError, gzip.BadGzipFile) as exc:
            raise DataError(
                f"Fashion-MNIST files in {folder} are damaged ({type(exc).__name__}: {exc}): "
                "reinstall them (`sudo apt-get install --reinstall dataset-fashion-mnist`) or delete them "
                "so they are downloaded again"
            ) from None
        if images.shape != (expected, *IMAGE_SHAPE) or labels.shape != (expected,) or int(labels.max()) > 9:
            raise DataError(
                f"Fashion-MNIST {split} files in {folder} hold {tuple(images.shape)} images and "
                f"{tuple(labels.shape)} labels, expected {(expected, *IMAGE_SHAPE)} and ({expected},): "
                "replace them with the original files"
            )
        splits[split] = Split(split, images, labels)
        if device is not None:
            splits[split] = splits[split].to(device)
    return FashionMNIST(train=splits["train"], test=splits["test"], source=folder)


def read_idx(path: Path, *, ndim: int) -> np.ndarray:
    """An IDX (MNIST-format) file of unsigned bytes, gzipped or not, as a NumPy array.

    Layout: two zero bytes, type code 0x08 (uint8), the number of dimensions, each dimension as a
    big-endian uint32, then the data. Anything else raises ValueError saying what is wrong.
    """
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or data[3] != ndim:
        raise ValueError(f"{path.name} is not a {ndim}-dimensional IDX file of unsigned bytes")
    header = 4 + 4 * ndim
    shape = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">u4")) if len(data) >= header else ()
    if len(shape) != ndim or len(data) != header + int(np.prod(shape)):
        raise ValueError(
            f"{path.name} holds {len(data) - min(header, len(data))} bytes of data, its header says shape {shape}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape).copy()


def _numpy(array: Any) -> np.ndarray:
    return array.detach().cpu().numpy() if hasattr(array, "detach") else np.asarray(array)

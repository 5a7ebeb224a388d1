"""aesearch: latent-space image search with a convolutional AutoEncoder and FAISS.

The public API is re-exported here. Names are imported on first use, so `import aesearch`
stays light and the query path never pays for torch (about 2 s to import).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__
from .errors import (
    AesearchError,
    BundleError,
    BundleLockedError,
    CheckpointError,
    DataError,
    DataNotFoundError,
    EmptyIndexError,
    ImageError,
    InvalidArgumentError,
    MissingRootError,
    ServerError,
    ShardsMissingError,
    ShortSourceError,
)

# No name here may equal a submodule's name: importing the submodule would rebind it.
_LAZY = {
    # training side (imports torch)
    "AutoEncoder": "model.network",
    "TrainConfig": "training.train",
    "TrainResult": "training.train",
    "fit": "training.train",
    "train_model": "training.train",
    "load_fashion_mnist": "sources.fashion_mnist",
    # torch-free: the query path
    "SearchEngine": "search.engine",
    "QueryResult": "search.engine",
    "Hit": "search.engine",
    "Filter": "search.filters",
    "Selection": "search.selection",
    "build_index": "pipelines.build",
    "find_duplicates": "quality.duplicates",
    "Collection": "pipelines.writer",
    "Cluster": "search.cluster",  # serving from Dask workers (imports Dask when made)
    "ModelConfig": "model.architecture",
    "Checkpoint": "model.checkpoint",
    "load_checkpoint": "model.checkpoint",
    "save_checkpoint": "model.checkpoint",
    "NumpyAutoEncoder": "model.runtime",
    # a server's engine over HTTP (imports httpx)
    "Client": "interfaces.client",
}

__all__ = [
    "AesearchError",
    "AutoEncoder",
    "BundleError",
    "BundleLockedError",
    "Checkpoint",
    "CheckpointError",
    "Client",
    "Cluster",
    "Collection",
    "DataError",
    "DataNotFoundError",
    "EmptyIndexError",
    "Filter",
    "Hit",
    "ImageError",
    "InvalidArgumentError",
    "MissingRootError",
    "ModelConfig",
    "NumpyAutoEncoder",
    "QueryResult",
    "SearchEngine",
    "Selection",
    "ServerError",
    "ShardsMissingError",
    "ShortSourceError",
    "TrainConfig",
    "TrainResult",
    "__version__",
    "build_index",
    "find_duplicates",
    "fit",
    "load_checkpoint",
    "load_fashion_mnist",
    "save_checkpoint",
    "train_model",
]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aesearch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:
    from .interfaces.client import Client
    from .model.architecture import ModelConfig
    from .model.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from .model.network import AutoEncoder
    from .model.runtime import NumpyAutoEncoder
    from .pipelines.build import build_index
    from .pipelines.writer import Collection
    from .quality.duplicates import find_duplicates
    from .search.engine import Hit, QueryResult, SearchEngine
    from .search.filters import Filter
    from .search.selection import Selection
    from .sources.fashion_mnist import load_fashion_mnist
    from .training.train import TrainConfig, TrainResult, fit, train_model

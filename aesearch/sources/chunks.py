"""What every image source gives the streaming build: chunks of preprocessed images and their records.

Fashion-MNIST, a folder of `.npy` shards (shards.py) and a folder of image files all look the same
to `aesearch.pipelines.stream`: a `ChunkSource` that yields `Chunk`s of at most chunk_size images,
in a fixed order, and can start again from a cursor it handed out earlier. That cursor is what
makes a build resumable after kill -9: the pipeline records the cursor of the last chunk it wrote,
and the same command asks the source for the chunks after it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

NO_LABEL = -1


@dataclass
class Chunk:
    """Up to chunk_size images in source order, with the columns of their records.

    The pipeline allocates the ids; a source only says what each image is and where it came from.
    """

    images: np.ndarray  # (n, *image_shape) uint8, already preprocessed to the model's input
    cursor: int  # where this chunk ends in the source: chunks(start=cursor) yields what follows
    labels: np.ndarray | None = None  # (n,) int, NO_LABEL where unknown; None: no labels at all
    split: np.ndarray | None = None  # (n,) uint8 index into the source's split_names; None: all 0
    positions: np.ndarray | None = None  # (n,) int64 row in the source (a split or shard row)
    paths: list[str] | None = None  # relative to the collection root; None for datasets
    sizes: np.ndarray | None = None  # (n,) int64 file sizes in bytes (files only)
    mtimes_ns: np.ndarray | None = None  # (n,) int64 (files only)
    hashes: np.ndarray | None = None  # (n,) S16 content hashes (files only)
    skipped: list | None = None  # items read since the previous chunk that gave no image (folders.Skipped)

    def __len__(self) -> int:
        return len(self.images)

    def __post_init__(self) -> None:
        assert self.images.ndim in (3, 4), f"bad chunk {self.images.shape}"  # (n, H, W[, C]): checked by the build
        assert self.images.dtype == np.uint8, f"chunk images must be uint8, got {self.images.dtype}"


class ChunkSource(Protocol):
    """A collection the streaming build can read in chunks, and restart at any chunk boundary."""

    @property
    def count(self) -> int:
        """How many items it holds: each yields an image or is listed in a chunk's `skipped`."""

    @property
    def split_names(self) -> list[str]: ...

    @property
    def class_names(self) -> list[str] | None: ...

    @property
    def fit_split(self) -> int | None:
        """The split learned transforms are fitted on (Fashion-MNIST: train); None: all images."""

    @property
    def fingerprint(self) -> str:
        """Identifies what the source yields: a resumed build refuses a source that changed."""

    def describe(self) -> str:
        """A few words for the log, e.g. "10,000,000 images in 100 shards under /data/big"."""

    def info(self) -> dict:
        """Manifest fields describing the collection (dataset name, split sizes, roots, ...)."""

    def chunks(self, chunk_size: int, start: int = 0) -> Iterator[Chunk]:
        """Chunks in a fixed order, beginning after cursor `start` (0: the beginning)."""

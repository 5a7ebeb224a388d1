"""In-memory arrays as a ChunkSource: Fashion-MNIST (70,000 images, 55 MB) and tests.

Fashion-MNIST is small enough to read whole; what the streaming build must not hold is the
collection's vectors and a second copy of its images, and those it streams from here too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np

from aesearch.sources.chunks import Chunk


class ArraySource:
    """images (n, *image_shape) uint8 with optional labels and splits, yielded in row order."""

    prune_classes = False  # True: the build drops class names no image has (see FolderSource)

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray | None = None,
        split: np.ndarray | None = None,
        positions: np.ndarray | None = None,
        *,
        split_names: list[str] | None = None,
        class_names: list[str] | None = None,
        fit_split: int | None = None,
        info: dict | None = None,
        name: str = "images",
        records: np.ndarray | None = None,
        paths: list[str] | None = None,
    ) -> None:
        """records (RECORD_DTYPE, ids ignored), when given, supply labels, splits, positions and file facts."""
        assert images.dtype == np.uint8 and images.ndim in (3, 4), f"bad images {images.dtype} {images.shape}"
        if records is not None:
            labels, split, positions = records["label"], records["split"], records["position"]
        self.images, self.labels, self.split, self.positions = images, labels, split, positions
        self.records, self.paths = records, paths
        self._split_names, self._class_names, self._fit_split = split_names or ["collection"], class_names, fit_split
        self._info, self.name = info or {}, name

    @property
    def count(self) -> int:
        return len(self.images)

    @property
    def split_names(self) -> list[str]:
        return self._split_names

    @property
    def class_names(self) -> list[str] | None:
        return self._class_names

    @property
    def fit_split(self) -> int | None:
        return self._fit_split

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(np.ascontiguousarray(self.images).tobytes())
        for array in (self.labels, self.split, self.records):
            digest.update(b"-" if array is None else np.ascontiguousarray(array).tobytes())
        digest.update("\n".join(self.paths or []).encode())
        return digest.hexdigest()

    def describe(self) -> str:
        return f"{self.count:,} {self.name}"

    def info(self) -> dict:
        return {"class_names": self._class_names or [], "split_names": self._split_names, **self._info}

    def chunks(self, chunk_size: int, start: int = 0) -> Iterator[Chunk]:
        for begin in range(start, self.count, chunk_size):
            rows = slice(begin, min(self.count, begin + chunk_size))
            records = None if self.records is None else self.records[rows]
            hashes = None if records is None or not records["content_hash"].any() else records["content_hash"]
            yield Chunk(
                images=np.ascontiguousarray(self.images[rows]),
                cursor=rows.stop,
                labels=None if self.labels is None else self.labels[rows],
                split=None if self.split is None else self.split[rows],
                positions=np.arange(rows.start, rows.stop) if self.positions is None else self.positions[rows],
                paths=None if self.paths is None else self.paths[rows],
                sizes=None if records is None else records["bytes"],
                mtimes_ns=None if records is None else records["mtime_ns"],
                hashes=hashes,
            )

"""A collection stored as `.npy` shards: millions of small images without millions of files.

    DIR/
      collection.json          {"format": "aesearch-shards", "count": N, "class_names": [...],
                                "shards": [{"images": "images-00000.npy", "labels": ..., "count": n}]}
      images-00000.npy         (n, 28, 28) uint8
      labels-00000.npy         (n,) integer labels (optional)

`scripts/make_collection.py` writes such folders; `aesearch build-index --images DIR` streams from
them (ShardSource) as from a folder of image files. collection.json is written last, so a folder
whose writing was interrupted is refused instead of read half. Shards are memory-mapped: reading
one chunk touches only that chunk's pages.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from aesearch.errors import DataError
from aesearch.sources.chunks import Chunk

FORMAT = "aesearch-shards"
MANIFEST = "collection.json"


def is_shard_folder(path: str | Path) -> bool:
    """True when path is a folder written as shards (it has collection.json of our format)."""
    manifest = Path(path) / MANIFEST
    if not manifest.is_file():
        return False
    try:
        return json.loads(manifest.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


class ShardSource:
    """The ChunkSource of a shard folder: one split ("collection"), positions are global rows."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._image_shape: tuple[int, ...] | None = None  # the first shard's, once read
        try:
            manifest = json.loads((self.folder / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {self.folder / MANIFEST} ({exc}): regenerate the collection") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise DataError(f"{self.folder / MANIFEST} is not an aesearch shard collection")
        self.manifest = manifest
        self.shards = manifest["shards"]
        self._starts = np.cumsum([0] + [int(s["count"]) for s in self.shards])
        if int(self._starts[-1]) != int(manifest["count"]):
            raise DataError(
                f"{self.folder / MANIFEST} lists shards of {self._starts[-1]} images, not {manifest['count']}"
            )

    @property
    def count(self) -> int:
        return int(self._starts[-1])

    @property
    def split_names(self) -> list[str]:
        return ["collection"]

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest.get("class_names") or [])

    @property
    def fit_split(self) -> int | None:
        return None

    @property
    def fingerprint(self) -> str:
        """The manifest's hash: names, counts and seed of every shard (not a pass over 8 GB)."""
        return hashlib.sha256(json.dumps(self.manifest, sort_keys=True).encode()).hexdigest()

    def describe(self) -> str:
        return f"{self.count:,} images in {len(self.shards)} shards under {self.folder}"

    def info(self) -> dict:
        labelled = all(s.get("labels") for s in self.shards)
        return {
            "dataset": self.manifest.get("name", self.folder.name),
            "collection_root": str(self.folder.resolve()),
            "class_names": self.class_names if labelled else [],  # unlabelled: no classes (a list all the same)
            "split_names": self.split_names,
            "split_sizes": {"collection": self.count},
        }

    def chunks(self, chunk_size: int, start: int = 0) -> Iterator[Chunk]:
        """Chunks of at most chunk_size images, never crossing a shard (cursor = global row)."""
        position = start
        while position < self.count:
            shard = int(np.searchsorted(self._starts, position, side="right")) - 1
            images, labels = self._open(shard)
            row = position - int(self._starts[shard])
            end = min(len(images), row + chunk_size)
            rows = slice(row, end)
            yield Chunk(
                images=np.ascontiguousarray(images[rows]),
                cursor=position + end - row,
                labels=None if labels is None else np.asarray(labels[rows], dtype=np.int16),
                positions=np.arange(position, position + end - row, dtype=np.int64),
            )
            position += end - row

    def _open(self, shard: int) -> tuple[np.ndarray, np.ndarray | None]:
        entry = self.shards[shard]
        path = self.folder / entry["images"]
        try:
            images = np.load(path, mmap_mode="r")
            labels = np.load(self.folder / entry["labels"], mmap_mode="r") if entry.get("labels") else None
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read shard {path} ({exc}): regenerate the collection") from None
        # Every shard's images have the first one's shape (the build checks it is the model's).
        shape = (int(entry["count"]), *(self._image_shape or images.shape[1:]))
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or images.shape != shape:
            raise DataError(f"shard {path} holds {images.dtype} {images.shape}, not {shape} uint8")
        self._image_shape = shape[1:]
        if labels is not None and labels.shape != (len(images),):
            raise DataError(f"labels beside {path} hold {labels.shape[0]} rows, not {len(images)}")
        return images, labels


def write_shard(folder: Path, number: int, images: np.ndarray, labels: np.ndarray | None) -> dict:
    """Write one shard (each file under a temporary name, then renamed) and return its manifest entry."""
    entry = {"images": f"images-{number:05d}.npy", "labels": f"labels-{number:05d}.npy" if labels is not None else None}
    for name, array in ((entry["labels"], labels), (entry["images"], images)):
        if name is None:
            continue
        partial = folder / f".{name}.partial"
        with open(partial, "wb") as f:
            np.save(f, array)
        os.replace(partial, folder / name)
    return {**entry, "count": len(images)}


def write_manifest(folder: Path, shards: list[dict], **fields) -> None:
    """collection.json, written last and atomically: the folder is complete once it exists."""
    manifest = {"format": FORMAT, "count": sum(s["count"] for s in shards), **fields, "shards": shards}
    partial = folder / f".{MANIFEST}.partial"
    partial.write_text(json.dumps(manifest, indent=1))
    os.replace(partial, folder / MANIFEST)

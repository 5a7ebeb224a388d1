"""Segments: immutable folders of images with stable ids, their records, embeddings and paths.

A SegmentBuilder fills a segment through writable memory maps (a streaming build never holds
more than a chunk in memory); once the writer lists it in a manifest it is never changed again.
A Segment is the read side: every array memory-mapped, paths decoded on demand.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aesearch.errors import BundleError
from aesearch.store.paths import decode_path, encode_path
from aesearch.store.records import RECORD_DTYPE

_FEW_PATHS = 4096  # up to this many paths are sliced from the map one by one, more read with the blob


class SegmentBuilder:
    """A segment being written: records, images and embeddings as writable memmaps of fixed size.

    Reopening an existing builder folder (a resumed build) maps the arrays already there, so chunks
    written before a crash are kept.
    """

    def __init__(self, folder: Path, count: int, z_size: int, image_shape: tuple[int, ...]) -> None:
        """image_shape: one image's, the model's (ModelConfig.image_shape)."""
        self.folder, self.count, self.z_size = folder, count, z_size
        folder.mkdir(parents=True, exist_ok=True)
        self.records = self._array("records.npy", (count,), RECORD_DTYPE)
        self.images = self._array("images.npy", (count, *image_shape), np.dtype(np.uint8))
        self.embeddings = self._array("embeddings.npy", (count, z_size), np.dtype(np.float32))
        self._paths: list[str] | None = None

    def _array(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        path = self.folder / name
        if path.exists():
            try:
                existing = np.load(path, mmap_mode="r+", allow_pickle=False)
            except (OSError, ValueError):
                existing = None  # unreadable: written again below
            if existing is not None and existing.shape == shape and existing.dtype == dtype:
                return existing
            same_rows = existing is not None and existing.dtype == dtype and existing.shape[1:] == shape[1:]
            if same_rows and len(existing) > shape[0] > 0:
                del existing  # unmapped before the file is cut short
                shrink_npy(path, shape[0])  # fewer images than items (unreadable files): keep the first rows
                return np.load(path, mmap_mode="r+", allow_pickle=False)
            del existing
            path.unlink()
        if 0 in shape:  # numpy cannot map an empty file
            np.save(path, np.zeros(shape, dtype))
            return np.load(path, allow_pickle=False)
        return np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)

    def close(self) -> None:
        """Flush and unmap the arrays (reopen the folder with a SegmentBuilder to go on)."""
        for array in (self.records, self.images, self.embeddings):
            if isinstance(array, np.memmap):
                array.flush()
        self.records = self.images = self.embeddings = None

    def set_paths(self, paths: list[str]) -> None:
        """Paths relative to the collection root, one per row (default: all empty); stored as the
        file system's bytes (store/paths.py)."""
        assert len(paths) == self.count, f"{len(paths)} paths for {self.count} images"
        self._paths = list(paths)

    def file(self, name: str) -> Path:
        """Where to write an extra file of the segment (the search layer's index.faiss, ...)."""
        assert "/" not in name and name not in ("", ".", ".."), f"not a file name: {name!r}"
        return self.folder / name

    def seal(self) -> None:
        """Flush the arrays and write the paths: the segment is complete on disk."""
        ids = np.asarray(self.records["id"])
        assert self.count == 0 or bool(np.all(np.diff(ids) > 0)), "segment ids must be strictly increasing"
        for array in (self.records, self.images, self.embeddings):
            if isinstance(array, np.memmap):
                array.flush()
        encoded = [encode_path(p) for p in (self._paths or [""] * self.count)]
        offsets = np.zeros(self.count + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(b) for b in encoded])
        (self.folder / "paths.bin").write_bytes(b"".join(encoded))
        np.save(self.folder / "path_offsets.npy", offsets)
        self.records = self.images = self.embeddings = None  # release the maps


def shrink_npy(path: Path, rows: int) -> None:
    """Keep the first `rows` rows of a .npy file, in place: its header's shape rewritten, the file cut short.

    NumPy pads every header so that the first dimension can change without moving the data
    (np.lib.format's GROWTH_AXIS_MAX_DIGITS); should a header ever come out a different length,
    the rows are copied to a new file instead.
    """
    fmt = np.lib.format
    with open(path, "r+b") as f:
        version = fmt.read_magic(f)
        read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran_order, dtype = read_header(f)
        offset = f.tell()
        assert not fortran_order and rows <= shape[0], f"cannot shrink {path} {shape} to {rows} rows"
        header = io.BytesIO()
        write_header = fmt.write_array_header_1_0 if version == (1, 0) else fmt.write_array_header_2_0
        write_header(header, {"descr": fmt.dtype_to_descr(dtype), "fortran_order": False, "shape": (rows, *shape[1:])})
        if len(header.getvalue()) == offset:
            f.seek(0)
            f.write(header.getvalue())
            f.truncate(offset + rows * dtype.itemsize * int(np.prod(shape[1:], dtype=np.int64)))
            return
    old = np.load(path, mmap_mode="r", allow_pickle=False)
    partial = path.with_name(path.name + ".partial")
    new = np.lib.format.open_memmap(partial, mode="w+", dtype=dtype, shape=(rows, *shape[1:]))
    for start in range(0, rows, 65536):
        new[start : start + 65536] = old[start : start + 65536]
    new.flush()
    del old, new
    os.replace(partial, path)


@dataclass
class Segment:
    """A sealed segment, memory-mapped."""

    name: str
    folder: Path
    meta: dict
    records: np.ndarray  # (n,) RECORD_DTYPE, sorted by id
    images: np.ndarray  # (n, *image_shape) uint8: the model's input shape
    embeddings: np.ndarray  # (n, z) float32
    _offsets: np.ndarray = field(repr=False)
    _paths: np.ndarray = field(repr=False)  # the UTF-8 blob, memory-mapped bytes

    @classmethod
    def open(
        cls, folder: Path, name: str, meta: dict, count: int, z_size: int, image_shape: tuple[int, ...]
    ) -> Segment:
        def load(file: str) -> np.ndarray:
            path = folder / file
            return np.load(path, mmap_mode="r" if path.stat().st_size > 4096 else None, allow_pickle=False)

        records, images, embeddings = load("records.npy"), load("images.npy"), load("embeddings.npy")
        offsets = load("path_offsets.npy")  # mapped too: 80 MB at 10 M images, read a pair at a time
        blob_path = folder / "paths.bin"
        blob = np.memmap(blob_path, dtype=np.uint8, mode="r") if blob_path.stat().st_size else np.zeros(0, np.uint8)
        problems = [
            (records.dtype == RECORD_DTYPE and records.shape == (count,), f"records are {records.shape}"),
            (images.dtype == np.uint8 and images.shape == (count, *image_shape), f"images are {images.shape}"),
            (
                embeddings.dtype == np.float32 and embeddings.shape == (count, z_size),
                f"embeddings are {embeddings.shape}",
            ),
            (offsets.dtype == np.int64 and offsets.shape == (count + 1,), f"path offsets are {offsets.shape}"),
            (count == 0 or (offsets[0] == 0 and offsets[-1] == len(blob)), "path offsets do not match paths.bin"),
        ]
        for ok, problem in problems:
            if not ok:
                raise BundleError(f"segment {name} is inconsistent ({problem})")
        return cls(name, folder, meta, records, images, embeddings, offsets, blob)

    @property
    def count(self) -> int:
        return len(self.records)

    @property
    def ids(self) -> np.ndarray:
        """Sorted ids, read once into a contiguous array: searchsorted on the strided record field of
        the memory map copied all of it on every lookup (250 ms per query at a million images)."""
        cached = self.__dict__.get("_ids")
        if cached is None:
            cached = self.__dict__["_ids"] = np.ascontiguousarray(self.records["id"])
        return cached

    @property
    def has_paths(self) -> bool:
        """False for images that came without files (a dataset, shards): every path is ""."""
        return len(self._paths) > 0

    def path(self, row: int) -> str:
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        return decode_path(bytes(self._paths[start:end]))

    def paths(self, rows: np.ndarray | None = None) -> list[str]:
        """The paths of these rows (default: all)."""
        rows = np.arange(self.count) if rows is None else np.asarray(rows, dtype=np.int64)
        starts, ends = self._offsets[rows].tolist(), self._offsets[rows + 1].tolist()
        if len(rows) <= _FEW_PATHS:  # a query's hits: only their bytes are read
            return [decode_path(bytes(self._paths[start:end])) for start, end in zip(starts, ends, strict=True)]
        # Many (a sync, a compaction): one read of the blob, 70,000 paths in ~0.05 s, not a memmap slice each.
        blob = bytes(self._paths)
        return [decode_path(blob[start:end]) for start, end in zip(starts, ends, strict=True)]

    def file(self, name: str) -> Path:
        return self.folder / name

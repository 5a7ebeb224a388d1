"""Per-image records: what the store keeps about every indexed image besides its pixels and vector."""

from __future__ import annotations

import hashlib

import numpy as np

# One row per image, sorted by id within a segment. split indexes the manifest's split_names;
# position is the image's row in its source (its split of a dataset, or its shard), except in a
# bundle of folders, where it is the number of the collection root the file is under (ROOT, below);
# bytes, mtime_ns and content_hash describe the file it came from (0 and the pixels' hash for array
# sources), so a sync can tell unchanged, changed and moved files apart without decoding them.
RECORD_DTYPE = np.dtype(
    [
        ("id", "<i8"),
        ("split", "u1"),
        ("position", "<i8"),
        ("label", "<i2"),
        ("bytes", "<i8"),
        ("mtime_ns", "<i8"),
        ("content_hash", "S16"),
    ]
)
NO_LABEL = -1
# The column that holds a folder bundle's root number: bundle format 2 named it "position", for
# the datasets that came first; code that means the root says ROOT.
ROOT = "position"
# position of an image added through the Python API to a bundle of folders: no root holds its file,
# so no sync removes it (pipelines/sync.py)
PINNED = -1
HASH_BYTES = 16


def content_hash(data: bytes | memoryview | np.ndarray) -> bytes:
    """16-byte BLAKE2b of a file's bytes (or of an array's): identifies content, wherever it moved."""
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data).tobytes()
    return hashlib.blake2b(data, digest_size=HASH_BYTES).digest()


def pixel_hashes(images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) uint8 -> (n,) S16: each image's content hash (exact duplicates share one)."""
    return np.array([content_hash(image) for image in images], dtype=f"S{HASH_BYTES}")


def new_records(n: int) -> np.ndarray:
    """n zeroed records with no label."""
    records = np.zeros(n, dtype=RECORD_DTYPE)
    records["label"] = NO_LABEL
    return records

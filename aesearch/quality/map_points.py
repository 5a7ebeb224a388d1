"""The latent map as points for a browser: a category per image, a stratified sample past a limit,
and one compact binary for the lot.

The page (interfaces/static/map.js) draws every point it is sent with WebGL, so what it is sent is
decided here, from records alone:
  * category: the image's class when the bundle has labels; else its first-level folder (under its
    root's name when the bundle has several roots). Past MAX_CATEGORIES, the smallest are "other":
    a legend of hundreds of colours tells nothing.
  * sample: up to `limit` points, each category keeping its share (at least one point each), chosen
    at random with a fixed seed, so the same bundle always shows the same points.
  * order: shuffled with a fixed seed, so no category is always drawn on top of the others.
  * bytes (little-endian, n points): x float32[n], y float32[n], id uint32[n], category uint16[n]:
    14 bytes a point, read by the page as four typed arrays over one buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from aesearch.errors import InvalidArgumentError
from aesearch.search.engine import SearchEngine

MAX_CATEGORIES = 40  # colours a legend can still tell apart, nearly; the rest are "other"
POINT_BYTES = 14  # x, y float32; id uint32; category uint16
MAX_SENT_ID = 2**32 - 1  # ids travel as uint32
OTHER = "other"
UNLABELLED = "unlabelled"


@dataclass(frozen=True)
class Categories:
    kind: str  # "class" or "folder"
    names: list[str]  # category code -> name
    codes: np.ndarray  # (n,) uint16: each image's category

    def counts(self) -> list[int]:
        return np.bincount(self.codes, minlength=len(self.names)).tolist()


def categories(engine: SearchEngine, ids: np.ndarray) -> Categories:
    """Each image's category: its class, or its folder when the bundle has no labels."""
    labels = engine.bundle.records(ids)["label"].astype(np.int64) if len(ids) else np.zeros(0, np.int64)
    names = engine.bundle.class_names
    if names and (labels >= 0).any():
        keys = np.where(labels >= 0, labels, len(names))
        return _capped("class", [*names, UNLABELLED], keys)
    folders = _folders(engine, ids)
    unique, keys = np.unique(np.asarray(folders, dtype=object), return_inverse=True) if folders else ([], [])
    return _capped("folder", [str(u) for u in unique], np.asarray(keys, dtype=np.int64))


def _folders(engine: SearchEngine, ids: np.ndarray) -> list[str]:
    """The first-level folder of each image under its root ("." for files at the root itself)."""
    paths = engine.bundle.paths_of(ids) if len(ids) else []
    roots = (engine.manifest.get("collection") or {}).get("roots") or []
    positions = engine.bundle.records(ids)["position"].tolist() if len(roots) > 1 else None
    out = []
    for n, path in enumerate(paths):
        head, sep, _ = path.partition("/")
        folder = head if sep else "."
        if positions is not None and 0 <= positions[n] < len(roots):
            folder = f"{roots[positions[n]].rstrip('/').rsplit('/', 1)[-1]}/{folder}"
        out.append(folder)
    return out


def _capped(kind: str, names: list[str], keys: np.ndarray) -> Categories:
    """Names that occur, most frequent first; past MAX_CATEGORIES the rarest become OTHER."""
    counts = np.bincount(keys, minlength=len(names)) if len(keys) else np.zeros(len(names), np.int64)
    present = [int(c) for c in np.argsort(-counts, kind="stable") if counts[c] > 0]
    if len(present) > MAX_CATEGORIES:
        present = present[: MAX_CATEGORIES - 1]
        other = len(present)
    else:
        other = None
    present.sort()  # classes keep their own order in the legend
    code_of = np.full(len(names), other if other is not None else 0, dtype=np.int64)
    code_of[present] = np.arange(len(present))
    out_names = [names[c] for c in present] + ([OTHER] if other is not None else [])
    return Categories(kind, out_names, code_of[keys].astype(np.uint16) if len(keys) else np.zeros(0, np.uint16))


def stratified_sample(codes: np.ndarray, limit: int, *, seed: int = 0) -> np.ndarray:
    """Sorted positions of at most `limit` points, each category keeping its share (at least one).

    With room for all, all of them. Shares are rounded down, then the points left over go to the
    categories with the largest remainders, so the sample has exactly `limit` points.
    """
    n = len(codes)
    if limit < 1:
        raise InvalidArgumentError(f"a map sample needs at least one point, got limit {limit}", parameter="limit")
    if n <= limit:
        return np.arange(n)
    counts = np.bincount(codes)
    present = np.flatnonzero(counts)
    if len(present) > limit:  # fewer points than categories: the largest categories, one point each
        present = present[np.argsort(-counts[present], kind="stable")[:limit]]
        quota = np.zeros_like(counts)
        quota[present] = 1
    else:
        exact = counts * (limit / n)
        quota = np.where(counts > 0, np.maximum(np.floor(exact), 1), 0).astype(np.int64)
        quota = np.minimum(quota, counts)
        short = limit - int(quota.sum())
        order = np.argsort(-(exact - np.floor(exact)), kind="stable")
        while short > 0:  # hand out what is left, one point at a time by remainder, where there is room
            for c in order:
                if short == 0:
                    break
                if quota[c] < counts[c]:
                    quota[c] += 1
                    short -= 1
        while short < 0:  # the minimum of one point each overshot: take from the largest quotas
            c = int(np.argmax(quota))
            quota[c] -= 1
            short += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.choice(np.flatnonzero(codes == c), size=int(quota[c]), replace=False) for c in np.flatnonzero(quota)]
    return np.sort(np.concatenate(chosen))


def pack(coords: np.ndarray, ids: np.ndarray, codes: np.ndarray, *, seed: int = 0) -> bytes:
    """The points as the page reads them (see the module's docstring), in a shuffled order."""
    n = len(ids)
    assert coords.shape == (n, 2) and codes.shape == (n,), "one coordinate pair and one category per id"
    if n and int(ids.max()) > MAX_SENT_ID:
        raise InvalidArgumentError(
            f"image ids past {MAX_SENT_ID:,} cannot be sent to the page's map: draw the map with `aesearch map` instead"
        )
    order = np.random.default_rng(seed).permutation(n)
    parts = [
        np.ascontiguousarray(coords[order, 0], dtype="<f4"),
        np.ascontiguousarray(coords[order, 1], dtype="<f4"),
        np.ascontiguousarray(ids[order], dtype="<u4"),
        np.ascontiguousarray(codes[order], dtype="<u2"),
    ]
    return b"".join(part.tobytes() for part in parts)


def unpack(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """pack()'s bytes back: (coords (n, 2) float32, ids (n,) int64, codes (n,) uint16)."""
    if len(data) % POINT_BYTES:
        raise InvalidArgumentError(f"map points come in {POINT_BYTES}-byte records, got {len(data)} bytes")
    n = len(data) // POINT_BYTES
    x = np.frombuffer(data, "<f4", n, 0)
    y = np.frombuffer(data, "<f4", n, 4 * n)
    ids = np.frombuffer(data, "<u4", n, 8 * n).astype(np.int64)
    codes = np.frombuffer(data, "<u2", n, 12 * n).copy()
    return np.stack([x, y], axis=1), ids, codes

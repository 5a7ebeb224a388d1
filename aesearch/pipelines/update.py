"""Changing a bundle in place: add images, remove them, compact. Each call is one atomic publish.

    add      encode the new images, write them as one small delta segment with an exact (flat)
             index in the bundle's current search space; cost in proportion to the images added
    remove   tombstone the ids: a new tombstone file and manifest, nothing else rewritten
    compact  fold every segment into a new base: the whitening is relearned from the stored
             embeddings (no re-encoding), the bundle's index type rebuilt and retuned (auto's
             choice made again for the new size, if the bundle was built with auto), the trust
             score recalibrated; cost in proportion to the collection. Every image removed: no
             segment at all, the last search space kept, so the empty bundle loads and takes adds

    publish  write_delta(): a delta segment may hold ids already in the bundle (a sync's moved or
             changed file: same id, newer copy); the newest copy of an id wins (store/bundle.py)
    merge    more than MAX_DELTAS deltas are merged into one (cost: the deltas' size, not the base's),
             so a query never searches many small segments

Between compactions the search space (whitening) learned at the last build or compaction is kept,
so neighbours equal a fresh build's exactly when the transform is "none", and after a compaction
in any case. maintain() runs one when the deltas or tombstones pass COMPACT_FRACTION of
the collection or there are more than MAX_DELTA_SEGMENTS deltas.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aesearch.errors import InvalidArgumentError
from aesearch.model.runtime import NumpyAutoEncoder
from aesearch.pipelines.builder import (
    StreamOptions,
    calibration_sample,
    encode_chunk,
    index_exactly,
    index_segment,
    write_segment,
)
from aesearch.search.segments import load_transform
from aesearch.store.bundle import Bundle, BundleWriter, load_bundle
from aesearch.store.records import new_records, pixel_hashes

COMPACT_FRACTION = 0.25
MAX_DELTA_SEGMENTS = 16
MAX_DELTAS = 4  # more delta segments than this are merged into one (each costs every query a search)
# A compaction relearns the search space (whitening, trust) only from at least this many images, as a
# build needs; below it the last learned space is kept.
MIN_IMAGES_TO_LEARN = 2


def add_images(
    index_dir: str | Path,
    images: np.ndarray,
    *,
    records: np.ndarray | None = None,
    paths: Sequence[str] | None = None,
) -> np.ndarray:
    """Add preprocessed (n, *image_shape) uint8 images (the model's input) as a new segment; returns their new ids.

    records: RECORD_DTYPE rows for split, position, label, file size, mtime and content hash (ids
    are assigned here; default: no label, split 0, the pixels' hash).
    """
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if images.ndim != 3:
        raise InvalidArgumentError(f"images to add must be (n, height, width) uint8, got shape {images.shape}")
    if records is None:
        records = new_records(len(images))
        records["split"] = 0
        records["content_hash"] = pixel_hashes(images)
    if len(records) != len(images) or (paths is not None and len(paths) != len(images)):
        raise InvalidArgumentError("give one record and one path per image")
    with BundleWriter.update(index_dir) as writer:
        bundle = load_bundle(index_dir, verify="sizes")  # under the lock: the state we extend
        if images.shape[1:] != bundle.image_shape:
            shape = ", ".join(map(str, bundle.image_shape))
            raise InvalidArgumentError(f"images to add must be (n, {shape}) uint8, got shape {images.shape}")
        vectors = embed(bundle, images)
        records = records.copy()
        records["id"] = ids = writer.allocate_ids(len(images))
        metric, transform = bundle.manifest["metric"], load_transform(bundle)
        write_segment(writer, records, images, vectors, paths, lambda s: index_exactly(s, metric, transform))
        writer.commit()
    return ids


def remove_images(index_dir: str | Path, ids: Sequence[int] | np.ndarray) -> int:
    """Tombstone these ids; returns how many were removed. Unknown or removed ids: one line."""
    with BundleWriter.update(index_dir) as writer:
        bundle = load_bundle(index_dir, verify="sizes")
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        bundle.locate(ids)  # names the first id that is not in the bundle
        writer.remove_ids(ids)
        writer.commit()
    return len(ids)


def _delta_numbers(bundle: Bundle) -> list[int]:
    """The segments updates added since the last build or compaction (every one, when an emptied
    bundle took adds again and has no base)."""
    return [n for n, s in enumerate(bundle.segments) if n > 0 or s.meta.get("delta")]


def needs_compaction(bundle: Bundle) -> bool:
    deltas = [bundle.segments[n] for n in _delta_numbers(bundle)]
    removed = len(bundle.tombstones) + bundle.manifest.get("superseded", 0)  # dead copies either way
    added = sum(s.count for s in deltas)
    return len(deltas) > MAX_DELTA_SEGMENTS or max(added, removed) > COMPACT_FRACTION * max(len(bundle), 1)


def compact(index_dir: str | Path) -> dict:
    """Rewrite every live image into one new base segment, relearning what the build learned.

    The base goes through the build's own steps (pipelines/builder.py: whitening, index, trust) fed
    from the stored embeddings, so it holds what a fresh build of the same images holds, a
    compressed index's search vectors included; nothing is encoded again but the trust sample.
    With no live image left (every one removed) the bundle keeps no segment and its last search
    space: it loads, says it is empty, and takes adds again. With fewer than MIN_IMAGES_TO_LEARN
    the space is kept too: a whitening or a trust calibration learned from one image is noise.
    """
    with BundleWriter.update(index_dir) as writer:
        bundle = load_bundle(index_dir, verify="sizes")
        ids = bundle.live_ids()
        if len(ids) < MIN_IMAGES_TO_LEARN:
            return _compact_keeping_space(writer, bundle, ids)
        records, images, embeddings = bundle.records(ids), bundle.images(ids), bundle.embeddings(ids)
        paths = [bundle.path_of(int(i)) for i in ids] if _has_paths(bundle) else None
        options = _compaction_options(bundle, len(ids))
        fit = None
        if "train" in bundle.split_names:
            fit = records["split"] == bundle.split_names.index("train")
            if np.count_nonzero(fit) < MIN_IMAGES_TO_LEARN:
                fit = None  # (almost) no training image left: learn on all that remain
        # The trust sample's reconstruction errors, as the build's encoding pass measures them.
        sample = calibration_sample(len(ids), options.seed)
        autoencoder = NumpyAutoEncoder.from_checkpoint(bundle.checkpoint)
        errors = encode_chunk(autoencoder, images[sample], np.arange(len(sample)), ((0, 0),))[1]
        chosen = {}

        def index(segment) -> dict:
            choice, params = index_segment(writer, segment, options, fit=fit, trust_sample=sample,
                                           trust_errors=errors)  # fmt: skip
            chosen.update(choice=choice, params=params)
            return {"index_type": choice.index_type, "index_params": params}

        writer.drop_segments([s.name for s in bundle.segments])
        write_segment(writer, records, images, embeddings, paths, index)
        choice, params = chosen["choice"], chosen["params"]
        recorded = bundle.manifest.get("index_choice")
        fields = {"index_type": choice.index_type, "index_params": params}
        if isinstance(recorded, dict):  # what auto chose this time, and why; what was asked for stays
            fields["index_choice"] = {**recorded, "reason": choice.reason,
                                      "bytes_per_vector": params.get("bytes_per_vector")}  # fmt: skip
        return writer.commit(fields)


def _compact_keeping_space(writer: BundleWriter, bundle: Bundle, ids: np.ndarray) -> dict:
    """Too few images to learn from: their rows go into one exact segment in the current space."""
    records, images, embeddings = bundle.records(ids), bundle.images(ids), bundle.embeddings(ids)
    paths = [bundle.path_of(int(i)) for i in ids] if _has_paths(bundle) else [""] * len(ids)
    writer.drop_segments([s.name for s in bundle.segments])
    write_delta(writer, bundle, records, images, embeddings, paths, delta=False)
    return writer.commit()


def _compaction_options(bundle: Bundle, n: int) -> StreamOptions:
    """The build a fresh one would make for n images in the bundle's search space: index type auto again
    if the bundle was built with auto (a collection that shrank from 70,000 images to 50 gets an exact
    index, not 1,024 empty lists), within the memory budget it was built with; else the type asked for,
    sized (nlist) for n."""
    m = bundle.manifest
    params = m.get("index_params") or {}
    choice = m.get("index_choice") if isinstance(m.get("index_choice"), dict) else {}
    # Bundles from before "asked_for" was recorded say in their reason whether the type was asked for.
    asked_for = choice.get("asked_for", "auto" if choice and "asked for" not in str(choice.get("reason")) else None)
    whiten = m.get("transform", "none") == "whiten"
    return StreamOptions(
        index_type="auto" if asked_for == "auto" else m["index_type"], metric=m["metric"],
        transform=m.get("transform", "none"), whiten_shrinkage=params.get("whiten_shrinkage", 0.0) if whiten else 0.0,
        whiten_dims=params.get("whiten_dims") if whiten else None, max_index_memory=choice.get("max_index_memory"),
    )  # fmt: skip


def _has_paths(bundle: Bundle) -> bool:
    return any(s.file("paths.bin").stat().st_size for s in bundle.segments)


def embed(bundle: Bundle, images: np.ndarray) -> np.ndarray:
    """(n, *image_shape) uint8 -> (n, z) float32: the pooled encoder output, as the bundle stores it
    (builder.encode_chunk, as a build encodes)."""
    autoencoder = NumpyAutoEncoder.from_checkpoint(bundle.checkpoint)
    if not len(images):
        return np.zeros((0, autoencoder.z_size), np.float32)
    shifts = [tuple(s) for s in bundle.manifest["embedding_shifts"]]
    return encode_chunk(autoencoder, images, np.zeros(0, np.int64), shifts)[0]


def write_delta(writer: BundleWriter, bundle: Bundle, records: np.ndarray, images: np.ndarray,
                embeddings: np.ndarray, paths: Sequence[str], *, delta: bool = True) -> None:  # fmt: skip
    """Add one delta segment of these rows (ids set; new or already in the bundle), indexed exactly.

    delta=False: the segment is the bundle's base (a compaction of very few images)."""
    if not len(records):
        return
    metric, transform = bundle.manifest["metric"], load_transform(bundle)

    def index(segment) -> dict:
        return {**index_exactly(segment, metric, transform), **({"delta": True} if delta else {})}

    write_segment(writer, records, images, embeddings, paths, index)


def maintain(index_dir: str | Path, *, compact_now: bool = False) -> str | None:
    """After an update: compact (if asked, or needs_compaction) or merge the deltas (more than
    MAX_DELTAS); returns "compacted", "merged" or None. Each is its own atomic publish."""
    bundle = load_bundle(index_dir, verify="sizes")
    if compact_now or needs_compaction(bundle):
        compact(index_dir)
        return "compacted"
    if len(_delta_numbers(bundle)) <= MAX_DELTAS:
        return None
    with BundleWriter.update(index_dir) as writer:
        bundle = load_bundle(index_dir, verify="sizes")  # under the lock: the state we merge
        deltas = _delta_numbers(bundle)
        records, images, embeddings, paths = _live_rows(bundle, deltas)
        write_delta(writer, bundle, records, images, embeddings, paths)
        writer.drop_segments([bundle.segments[n].name for n in deltas])
        writer.commit()
    return "merged"


def _live_rows(bundle: Bundle, numbers: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Records, images, embeddings and paths of the live rows of these segments."""
    parts = []
    for number in numbers:
        segment = bundle.segments[number]
        keep = np.ones(segment.count, bool)
        keep[bundle.dead_rows(number)] = False
        rows = np.flatnonzero(keep)
        parts.append((segment.records[rows], segment.images[rows], segment.embeddings[rows], segment.paths(rows)))
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.concatenate([p[2] for p in parts]), [path for p in parts for path in p[3]])  # fmt: skip

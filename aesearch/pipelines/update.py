"""The pieces of an update the writer (writer.py) puts together; compaction.

    delta    write_delta(): new rows as one small segment with an exact (flat) index in the bundle's
             current search space; cost in proportion to the rows. A delta may hold ids already in
             the bundle (a sync's moved or changed file: same id, newer copy); the newest copy of an
             id wins (store/bundle.py). More than MAX_DELTAS deltas are folded into the new one, so a
             query never searches many small segments
    compact  fold every segment into a new base (as many segments as the build wrote: the
             manifest's base_segments, default 1): the whitening is relearned from the stored
             embeddings (no re-encoding), the bundle's index type rebuilt and retuned (auto's
             choice made again for the new size, if the bundle was built with auto), the trust
             score recalibrated; cost in proportion to the collection. Every image removed: no
             segment at all, the last search space kept, so the empty bundle loads and takes adds

Between compactions the search space learned at the last build or compaction is kept; when an
update compacts (needs_compaction here, and the size and drift bound of drift.py) is the writer's
decision.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from aesearch import defaults
from aesearch.model.runtime import NumpyAutoEncoder
from aesearch.pipelines.builder import (
    StreamOptions,
    calibration_sample,
    encode_chunk,
    filled_segment,
    index_base,
    index_exactly,
    split_bounds,
    write_segment,
)
from aesearch.search.segments import load_transform
from aesearch.store.bundle import Bundle, BundleWriter, load_bundle

COMPACT_FRACTION = 0.25
MAX_DELTA_SEGMENTS = 16
MAX_DELTAS = 4  # more delta segments than this are merged into one (each costs every query a search)
# A compaction relearns the search space (whitening, trust) only from at least this many images, as a
# build needs; below it the last learned space is kept.
MIN_IMAGES_TO_LEARN = 2


def delta_numbers(manifest: dict) -> list[int]:
    """The segments updates added since the last build or compaction (every one, when an emptied
    bundle took adds again and has no base). A base split in several segments marks those past
    the first "base"."""
    segments = manifest["segments"]
    return [n for n, s in enumerate(segments) if s.get("meta", {}).get("delta") or (n > 0 and not _is_base(s))]


def _is_base(entry: dict) -> bool:
    return bool(entry.get("meta", {}).get("base"))


def needs_compaction(manifest: dict) -> bool:
    """Too many deltas, or deltas or dead copies past COMPACT_FRACTION of the collection (from the
    manifest alone: a writer decides right after it commits, without loading the bundle again)."""
    deltas = [manifest["segments"][n] for n in delta_numbers(manifest)]
    removed = (manifest["tombstones"] or {}).get("count", 0) + manifest.get("superseded", 0)  # dead copies
    added = sum(s["count"] for s in deltas)
    return len(deltas) > MAX_DELTA_SEGMENTS or max(added, removed) > COMPACT_FRACTION * max(manifest["count"], 1)


def compact(index_dir: str | Path) -> dict:
    """Rewrite every live image into one new base segment, relearning what the build learned, and
    measure its recall for each kind of query again, as a build does (quality/recall.py).

    The base goes through the build's own steps (pipelines/builder.py: whitening, index, trust) fed
    from the stored embeddings, so it holds what a fresh build of the same images holds, a
    compressed index's search vectors included; nothing is encoded again but the trust sample.
    With no live image left (every one removed) the bundle keeps no segment and its last search
    space: it loads, says it is empty, and takes adds again. With fewer than MIN_IMAGES_TO_LEARN
    the space is kept too: a whitening or a trust calibration learned from one image is noise.
    """
    from aesearch.quality.recall import record_recall

    _compact(index_dir)
    return record_recall(index_dir, log=None)


def _compact(index_dir: str | Path) -> dict:
    with BundleWriter.update(index_dir) as writer:
        bundle = load_bundle(index_dir, verify="sizes")
        bundle.verify_segments()  # every stored row is copied: never under a fresh checksum if damaged
        ids = bundle.live_ids()
        if len(ids) < MIN_IMAGES_TO_LEARN:
            return _compact_keeping_space(writer, bundle, ids)
        records, images, embeddings = bundle.records(ids), bundle.images(ids), bundle.embeddings(ids)
        paths = bundle.paths_of(ids) if any(s.has_paths for s in bundle.segments) else None
        options = replace(_compaction_options(bundle, len(ids)), layout=bundle.checkpoint.model_config.search_layout)
        fit = None
        if "train" in bundle.split_names:
            fit = records["split"] == bundle.split_names.index("train")
            if np.count_nonzero(fit) < MIN_IMAGES_TO_LEARN:
                fit = None  # (almost) no training image left: learn on all that remain
        # The trust sample's reconstruction errors, as the build's encoding pass measures them.
        sample = calibration_sample(len(ids), options.seed)
        autoencoder = NumpyAutoEncoder.from_checkpoint(bundle.checkpoint)
        errors = encode_chunk(autoencoder, images[sample], np.arange(len(sample)), ((0, 0),))[1]
        writer.drop_segments([s.name for s in bundle.segments])
        bounds = split_bounds(len(ids), options.segments)
        segments = []
        for lo, hi in itertools.pairwise(bounds):
            part_paths = None if paths is None else paths[lo:hi]
            segments.append(filled_segment(writer, records[lo:hi], images[lo:hi], embeddings[lo:hi], part_paths))
        framing = bundle.checkpoint.model_config.framing
        chosen = index_base(
            writer, segments, options, framing=framing, fit=fit, trust_sample=sample, trust_errors=errors
        )
        base = {"base": True} if len(segments) > 1 else {}
        for segment, (choice, params) in zip(segments, chosen, strict=True):
            writer.add_segment(segment, meta={"index_type": choice.index_type, "index_params": params, **base})
        choice, params = chosen[0]
        recorded = bundle.manifest.get("index_choice")
        fields = {"index_type": choice.index_type, "index_params": params}
        if isinstance(recorded, dict):  # what auto chose this time, and why; what was asked for stays
            fields["index_choice"] = {
                **recorded,
                "reason": choice.reason,
                "bytes_per_vector": params.get("bytes_per_vector"),
            }
        return writer.commit(fields)


def _compact_keeping_space(writer: BundleWriter, bundle: Bundle, ids: np.ndarray) -> dict:
    """Too few images to learn from: their rows go into one exact segment in the current space."""
    records, images, embeddings = bundle.records(ids), bundle.images(ids), bundle.embeddings(ids)
    paths = bundle.paths_of(ids)
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
    # As many base segments as the build wrote, each with images enough for an index.
    segments = max(1, min(int(m.get("base_segments", 1)), n // defaults.MIN_IMAGES_PER_SEGMENT))
    return StreamOptions(
        index_type="auto" if asked_for == "auto" else m["index_type"],
        metric=m["metric"],
        transform=m.get("transform", "none"),
        whiten_shrinkage=params.get("whiten_shrinkage", 0.0) if whiten else 0.0,
        whiten_dims=params.get("whiten_dims") if whiten else None,
        max_index_memory=choice.get("max_index_memory"),
        segments=segments,
    )


def embed(bundle: Bundle, images: np.ndarray) -> np.ndarray:
    """(n, *image_shape) uint8 -> (n, z) float32: the pooled encoder output, as the bundle stores it
    (builder.encode_chunk, as a build encodes)."""
    autoencoder = NumpyAutoEncoder.from_checkpoint(bundle.checkpoint)
    if not len(images):
        return np.zeros((0, autoencoder.z_size), np.float32)
    shifts = [tuple(s) for s in bundle.manifest["embedding_shifts"]]
    return encode_chunk(autoencoder, images, np.zeros(0, np.int64), shifts)[0]


def write_delta(
    writer: BundleWriter,
    bundle: Bundle,
    records: np.ndarray,
    images: np.ndarray,
    embeddings: np.ndarray,
    paths: Sequence[str],
    *,
    delta: bool = True,
) -> None:
    """Add one delta segment of these rows (ids set; new or already in the bundle), indexed exactly.

    delta=False: the segment is the bundle's base (a compaction of very few images)."""
    if not len(records):
        return
    metric, transform = bundle.manifest["metric"], load_transform(bundle)

    def index(segment) -> dict:
        return {**index_exactly(segment, metric, transform), **({"delta": True} if delta else {})}

    write_segment(writer, records, images, embeddings, paths, index)

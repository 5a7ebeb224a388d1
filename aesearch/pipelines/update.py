"""The pieces of an update the writer (writer.py) puts together; compaction.

    delta    write_delta(): new rows as one small segment with an exact (flat) index in the bundle's
             current search space; cost in proportion to the rows. A delta may hold ids already in
             the bundle (a sync's moved or changed file: same id, newer copy); the newest copy of an
             id wins (store/bundle.py). More than MAX_DELTAS deltas are folded into the new one, so a
             query never searches many small segments
    compact  fold every segment into a new base: the whitening is relearned from the stored
             embeddings (no re-encoding), the bundle's index type rebuilt and retuned (auto's
             choice made again for the new size, if the bundle was built with auto), the trust
             score recalibrated; cost in proportion to the collection. Every image removed: no
             segment at all, the last search space kept, so the empty bundle loads and takes adds

Between compactions the search space learned at the last build or compaction is kept; when an
update compacts (needs_compaction here, and the size and drift bound of drift.py) is the writer's
decision.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aesearch.model.runtime import NumpyAutoEncoder
from aesearch.pipelines.build import calibrate_trust
from aesearch.search.index import IndexSpec, VectorIndex
from aesearch.search.index_choice import choose_index
from aesearch.search.segments import INDEX_FILE, load_transform
from aesearch.store.bundle import Bundle, BundleWriter, load_bundle

COMPACT_FRACTION = 0.25
MAX_DELTA_SEGMENTS = 16
MAX_DELTAS = 4  # more delta segments than this are merged into one (each costs every query a search)
_TUNED = ("ef_search", "nprobe", "tuned_recall_at_10")  # retuned, not kept, by a compaction
_SIZED = ("nlist", "bytes_per_vector")  # sized for the images there were: recomputed by a compaction
# A compaction relearns the search space (whitening, trust) only from at least this many images, as a
# build needs; below it the last learned space is kept.
MIN_IMAGES_TO_LEARN = 2


def delta_numbers(manifest: dict) -> list[int]:
    """The segments updates added since the last build or compaction (every one, when an emptied
    bundle took adds again and has no base)."""
    return [n for n, s in enumerate(manifest["segments"]) if n > 0 or s.get("meta", {}).get("delta")]


def needs_compaction(manifest: dict) -> bool:
    """Too many deltas, or deltas or dead copies past COMPACT_FRACTION of the collection (from the
    manifest alone: a writer decides right after it commits, without loading the bundle again)."""
    deltas = [manifest["segments"][n] for n in delta_numbers(manifest)]
    removed = (manifest["tombstones"] or {}).get("count", 0) + manifest.get("superseded", 0)  # dead copies
    added = sum(s["count"] for s in deltas)
    return len(deltas) > MAX_DELTA_SEGMENTS or max(added, removed) > COMPACT_FRACTION * max(manifest["count"], 1)


def compact(index_dir: str | Path) -> dict:
    """Rewrite every live image into one new base segment, relearning what the build learned.

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
        spec = _compaction_spec(bundle, len(ids))
        train = "train" in bundle.split_names
        fit_rows = np.nonzero(records["split"] == bundle.split_names.index("train"))[0] if train else None
        if fit_rows is not None and len(fit_rows) < MIN_IMAGES_TO_LEARN:
            fit_rows = None  # (almost) no training image left: learn on all that remain
        index = VectorIndex.build(embeddings, spec, fit_rows=fit_rows)
        autoencoder = NumpyAutoEncoder.from_checkpoint(bundle.checkpoint)
        trust = calibrate_trust(autoencoder, images, None, embeddings, index)

        segment = writer.new_segment(len(ids))
        segment.records[:] = records
        segment.images[:] = images
        segment.embeddings[:] = embeddings
        if paths is not None:
            segment.set_paths(paths)
        index.write(segment.file(INDEX_FILE))
        writer.drop_segments([s.name for s in bundle.segments])
        writer.add_segment(segment, meta={"index_type": index.spec.index_type, "index_params": index.spec.params})
        if index.transform is not None:
            np.savez(writer.space_file("transform.npz"), mean=index.transform.mean, matrix=index.transform.matrix)
        writer.space_file("trust.json").write_text(json.dumps(trust.to_dict()) + "\n")
        return writer.commit({"index_type": index.spec.index_type, "index_params": index.spec.params})


def _compact_keeping_space(writer: BundleWriter, bundle: Bundle, ids: np.ndarray) -> dict:
    """Too few images to learn from: their rows go into one exact segment in the current space."""
    records, images, embeddings = bundle.records(ids), bundle.images(ids), bundle.embeddings(ids)
    paths = [bundle.path_of(int(i)) for i in ids] if _has_paths(bundle) else [""] * len(ids)
    writer.drop_segments([s.name for s in bundle.segments])
    write_delta(writer, bundle, records, images, embeddings, paths, delta=False)
    return writer.commit()


def _compaction_spec(bundle: Bundle, n: int) -> IndexSpec:
    """The index a fresh build would make for n images: auto's choice again if the bundle was built with
    auto (a collection that shrank from 70,000 images to 50 gets an exact index, not 1,024 empty lists),
    else the type asked for, with sizes (nlist) recomputed for n."""
    m = bundle.manifest
    params = {k: v for k, v in (m.get("index_params") or {}).items() if k not in _TUNED and k not in _SIZED}
    index_type = m["index_type"]
    choice = m.get("index_choice") if isinstance(m.get("index_choice"), dict) else {}
    # Bundles from before "asked_for" was recorded say in their reason whether the type was asked for.
    asked_for = choice.get("asked_for", "auto" if choice and "asked for" not in str(choice.get("reason")) else None)
    if asked_for == "auto":
        dims = params.get("whiten_dims") if m.get("transform", "none") == "whiten" else None
        dim = min(dims or m["z_size"], m["z_size"])
        chosen = choose_index(n, dim, choice.get("max_index_memory"))
        # A compressed index needs the streaming build's re-ranking vectors, which this in-memory rebuild
        # does not write: only uncompressed choices are taken (a shrinking collection's are).
        if not chosen.compressed:
            index_type = chosen.index_type
            params.update(chosen.params)
    return IndexSpec(index_type, m["metric"], params, m.get("transform", "none"))


def _delta_index(bundle: Bundle, vectors: np.ndarray) -> VectorIndex:
    """An exact index of the new vectors in the bundle's current search space."""
    m = bundle.manifest
    spec = IndexSpec("flat", m["metric"], {}, m.get("transform", "none"))
    return VectorIndex.build(vectors, spec, load_transform(bundle))


def _has_paths(bundle: Bundle) -> bool:
    return any(s.file("paths.bin").stat().st_size for s in bundle.segments)


def embed(bundle: Bundle, images: np.ndarray) -> np.ndarray:
    """(n, 28, 28) uint8 -> (n, z) float32: the pooled encoder output, as the bundle stores it."""
    autoencoder = NumpyAutoEncoder.from_checkpoint(bundle.checkpoint)
    if not len(images):
        return np.zeros((0, autoencoder.z_size), np.float32)
    shifts = [tuple(s) for s in bundle.manifest["embedding_shifts"]]
    return autoencoder.embed(images.astype(np.float32) / np.float32(255), shifts)[1]


def write_delta(writer: BundleWriter, bundle: Bundle, records: np.ndarray, images: np.ndarray,
                embeddings: np.ndarray, paths: Sequence[str], *, delta: bool = True) -> None:  # fmt: skip
    """Add one delta segment of these rows (ids set; new or already in the bundle), indexed exactly.

    delta=False: the segment is the bundle's base (a compaction of very few images)."""
    if not len(records):
        return
    order = np.argsort(records["id"], kind="stable")  # a segment's ids are sorted
    segment = writer.new_segment(len(records))
    segment.records[:] = records[order]
    segment.images[:] = images[order]
    segment.embeddings[:] = embeddings[order]
    segment.set_paths([paths[i] for i in order])
    _delta_index(bundle, np.ascontiguousarray(embeddings[order])).write(segment.file(INDEX_FILE))
    writer.add_segment(segment, meta={"index_type": "flat", "index_params": {}, **({"delta": True} if delta else {})})

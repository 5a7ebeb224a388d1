"""Index bundles: reading a consistent snapshot, and writing new states of it (see store/__init__.py).

Reading: load_bundle() reads the manifest once, checks it whole, checks every file's size (and
SHA-256, see VERIFY_ALL_BELOW), and maps the segments. It never sees a half state: every file a
manifest names is complete before that manifest is published, and a writer publishing while a
reader loads makes the reader start again from the new manifest.

Writing: BundleWriter.create() stages a whole new bundle beside the target and swaps it in;
BundleWriter.update() adds segments and tombstones to an existing one in place. Both hold the
bundle's writer lock and publish with one rename.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import inspect
import os
import secrets
import shutil
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from aesearch._version import __version__
from aesearch.atomic import new_staging_folder, publish_folder
from aesearch.errors import BundleError, CheckpointError, InvalidArgumentError, reason
from aesearch.model.checkpoint import Checkpoint, load_checkpoint, read_model_config, save_checkpoint, with_advice
from aesearch.rowwise import CORES
from aesearch.store.lock import build_lock, writer_lock
from aesearch.store.manifest import (
    BUNDLE_ENTRIES,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    read_manifest,
    rebuild_advice,
    write_manifest,
)
from aesearch.store.records import PINNED, RECORD_DTYPE, ROOT
from aesearch.store.segment import Segment, SegmentBuilder

MODEL_FILE = "model.safetensors"
# Below this many bytes in all, loading checks every file's SHA-256 (70,000 images: ~0.2 s); above
# it, sizes only plus the files under CHECK_FILES_BELOW, so a 10 M-image bundle opens in about a
# second. `aesearch info` always checks everything.
VERIFY_ALL_BELOW = 1 << 30
CHECK_FILES_BELOW = 64 << 20


@dataclass
class Bundle:
    """A loaded, verified snapshot of a bundle: the segments one manifest names, minus its tombstones."""

    path: Path
    manifest: dict
    checkpoint: Checkpoint
    segments: list[Segment]
    tombstones: np.ndarray  # sorted int64 ids removed
    manifest_stat: tuple = field(repr=False, default=())
    _live: np.ndarray | None = field(default=None, repr=False)
    _superseded: list[np.ndarray] | None = field(default=None, repr=False)

    @property
    def generation(self) -> int:
        return self.manifest["generation"]

    @property
    def class_names(self) -> list[str]:
        return self.manifest["class_names"]

    @property
    def split_names(self) -> list[str]:
        return self.manifest["split_names"]

    def __len__(self) -> int:
        return self.manifest["count"]

    @property
    def image_shape(self) -> tuple[int, ...]:
        """One indexed image's shape: the model's input (ModelConfig.image_shape)."""
        return self.checkpoint.model_config.image_shape

    def verify_segments(self, numbers: Sequence[int] | None = None, *, small_bundles_only: bool = False) -> None:
        """Check the SHA-256 of these segments' files (all segments: None) against the manifest.

        Writers load with sizes alone (a sync must not hash gigabytes); whatever copies stored rows
        into new files (a compaction, a merge of deltas, a sync's moved files) checks the segments it
        copies from first, or a damaged byte would be published under a fresh checksum and the damage
        could no longer be told. small_bundles_only: only where a reader would hash the whole bundle
        (under VERIFY_ALL_BELOW), for a copy of a few rows out of a large segment."""
        files = self.manifest["files"]
        if small_bundles_only and sum(record["bytes"] for record in files.values()) > VERIFY_ALL_BELOW:
            return
        chosen = range(len(self.segments)) if numbers is None else sorted(set(numbers))
        entries = [self.manifest["segments"][n] for n in chosen]
        names = [f"segments/{entry['name']}/{f}" for entry in entries for f in entry["files"]]
        _check_digests(self.path, names, files, rebuild_advice(self.path, self.manifest))

    def changed(self) -> bool:
        """Has a writer published a new state since this one was loaded? (one stat call)"""
        return _stat(self.path / MANIFEST) != self.manifest_stat

    def space_file(self, name: str) -> Path | None:
        """A file the search space learned (transform.npz, trust.json), or None if it has none."""
        space = self.manifest["space"]
        return self.path / space["dir"] / name if name in space["files"] else None

    def live_ids(self) -> np.ndarray:
        """Every id that can be found, sorted."""
        if self._live is None:
            ids = np.concatenate([s.ids for s in self.segments]) if self.segments else np.zeros(0, np.int64)
            ids = np.unique(ids) if len(self.segments) > 1 else np.asarray(ids)  # an id may be in two segments
            self._live = ids[~_contains(self.tombstones, ids)] if len(self.tombstones) else ids
        return self._live

    def dead_rows(self, number: int) -> np.ndarray:
        """Sorted rows of segment `number` that no search may return: tombstoned, or superseded by
        a newer copy of the same id in a later segment (a sync's moved or changed file)."""
        if self._superseded is None:
            self._superseded = superseded_rows([s.ids for s in self.segments])
        segment = self.segments[number]
        dead = _contains(self.tombstones, np.asarray(segment.ids)) if len(self.tombstones) else None
        rows = self._superseded[number]
        if dead is None:
            return rows
        dead[rows] = True
        return np.flatnonzero(dead)

    def live_rows(self, number: int) -> np.ndarray:
        """Sorted rows of segment `number` a search may return: neither tombstoned nor superseded."""
        keep = np.ones(self.segments[number].count, bool)
        keep[self.dead_rows(number)] = False
        return np.flatnonzero(keep)

    def is_live(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        return _contains(self.live_ids(), ids)

    def locate(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """(segment numbers, rows) of live ids; one line naming the first id that is not live.

        An id held by several segments is found in the last one: the newest copy wins.
        """
        ids = np.atleast_1d(np.asarray(ids, dtype=np.int64))
        where, rows = np.full(len(ids), -1), np.zeros(len(ids), dtype=np.int64)
        for number, segment in enumerate(self.segments):
            if segment.count == 0:
                continue
            found = np.minimum(np.searchsorted(segment.ids, ids), segment.count - 1)
            hit = segment.ids[found] == ids
            where[hit], rows[hit] = number, found[hit]
        removed = _contains(self.tombstones, ids)
        missing = (where < 0) | removed
        if missing.any():
            first = int(np.argmax(missing))
            bad = int(ids[first])
            # Ids are given out in order and never again: one below next_id that is not live was removed.
            if removed[first] or 0 <= bad < int(self.manifest.get("next_id", 0)):
                raise InvalidArgumentError(f"the image with id {bad} was removed from {self.path}: {self._id_hint()}")
            raise InvalidArgumentError(f"no image with id {bad} in {self.path}: {self._id_hint()}")
        return where, rows

    def _id_hint(self) -> str:
        live = self.live_ids()
        if not len(live):
            return "the bundle is empty"
        if len(live) == live[-1] - live[0] + 1:
            return f"ids run from {live[0]} to {live[-1]}"
        return f"ids run from {live[0]} to {live[-1]}, with gaps where images were removed"

    def _gather(self, ids, attribute: str) -> np.ndarray:
        where, rows = self.locate(ids)
        shape, dtype = self._row_layout(attribute)
        out = np.empty((len(rows), *shape), dtype=dtype)
        for number in np.unique(where):
            mask = where == number
            picked = rows[mask]
            source = getattr(self.segments[number], attribute)
            if len(picked) > 1 and picked[-1] - picked[0] == len(picked) - 1 and (np.diff(picked) == 1).all():
                # a run of rows (every live image of a segment, say): a slice reads the memory-mapped
                # file straight through, where an index array gathers row by row (0.3 s -> 0.05 s for
                # 70,000 embeddings)
                picked = slice(int(picked[0]), int(picked[-1]) + 1)
            if mask.all():
                out[:] = source[picked]
            else:
                out[mask] = source[picked]
        return out

    def _row_layout(self, attribute: str) -> tuple[tuple[int, ...], np.dtype]:
        """The shape of one row and the dtype of a segment array, known even with no segment."""
        if self.segments:
            array = getattr(self.segments[0], attribute)
            return array.shape[1:], array.dtype
        return {
            "records": ((), RECORD_DTYPE),
            "images": (self.image_shape, np.dtype(np.uint8)),
            "embeddings": ((self.manifest["z_size"],), np.dtype(np.float32)),
        }[attribute]

    def images(self, ids) -> np.ndarray:
        """(n, *image_shape) uint8: the preprocessed images of these ids."""
        return self._gather(ids, "images")

    def image(self, id: int) -> np.ndarray:
        return self.images([id])[0]

    def pictures(self, ids) -> np.ndarray:
        """(n, *picture_shape) uint8: these images as pictures show them (a prior member's RGBA onto white)."""
        images = self.images(ids)
        if not self.checkpoint.model_config.prior:
            return images
        from aesearch.model.prior import pictures

        return pictures(images)

    def embeddings(self, ids) -> np.ndarray:
        """(n, z) float32: the pooled encoder outputs of these ids (before any transform)."""
        return self._gather(ids, "embeddings")

    def records(self, ids) -> np.ndarray:
        return self._gather(ids, "records")

    def path_of(self, id: int) -> str:
        """The image's path relative to its collection root ("" for dataset images)."""
        return self.paths_of([id])[0]

    def paths_of(self, ids) -> list[str]:
        """The paths of these ids, located in one lookup and read a segment at a time."""
        where, rows = self.locate(ids)
        out = [""] * len(rows)
        for number in np.unique(where).tolist():
            mine = np.flatnonzero(where == number)
            for at, path in zip(mine.tolist(), self.segments[number].paths(rows[mine]), strict=True):
                out[at] = path
        return out

    def all_records(self) -> np.ndarray:
        """Records of every live image, in id order."""
        return self.records(self.live_ids())


def load_bundle(path: str | Path, *, model: str | Path | None = None, verify: str = "auto") -> Bundle:
    """Load and verify a bundle.

    Args:
        model: use this checkpoint instead of the bundle's own; refused unless its encoder is
            the one the index was built with.
        verify: "auto" (every SHA-256 for bundles under 1 GiB, else sizes and small files),
            "full" (every SHA-256), or "sizes".
    """
    path = as_path(path, "the index folder")
    model = None if model is None else as_path(model, "model")
    if verify not in ("auto", "full", "sizes"):
        raise InvalidArgumentError(f"verify must be auto, full or sizes, got {verify!r}")
    for attempt in range(3):
        before = _stat(path / MANIFEST)
        try:
            return _load(path, model, verify, before)
        except BundleError:
            # A writer published a new state while we read the old one: read the new one.
            if attempt < 2 and before and _stat(path / MANIFEST) != before:
                continue
            raise
    raise AssertionError("unreachable")


def _check_digests(path: Path, names: list[str], files: dict, rebuild: str) -> None:
    """One line naming the first of these files (in the order given) whose SHA-256 is not the
    manifest's, or that cannot be read."""
    try:
        digests = _sha256_many([path / name for name in names])
    except OSError as exc:  # permission denied, an I/O error: the file is there but cannot be read
        raise BundleError(
            f"{exc.filename or path} cannot be read ({exc.strerror or reason(exc)}): fix its permissions or the "
            f"disk, or {rebuild}"
        ) from None
    for name, digest in zip(names, digests, strict=True):
        if digest != files[name]["sha256"]:
            raise BundleError(f"{path / name} is damaged (its SHA-256 differs from the manifest's): {rebuild}")


def _load(path: Path, model, verify: str, stat: tuple) -> Bundle:
    manifest = read_manifest(path)
    rebuild = rebuild_advice(path, manifest)
    files = manifest["files"]
    total = sum(record["bytes"] for record in files.values())
    hashed = []
    for name, record in files.items():
        _verify_file(path / name, record, rebuild)
        small = total <= VERIFY_ALL_BELOW or record["bytes"] < CHECK_FILES_BELOW
        if verify == "full" or (verify == "auto" and small):
            hashed.append(name)
    _check_digests(path, hashed, files, rebuild)

    try:
        checkpoint = load_checkpoint(model if model is not None else path / MODEL_FILE)
    except CheckpointError as exc:  # the index's own model: rebuilding the index is what helps
        raise BundleError(str(exc) if model is not None else with_advice(exc, rebuild)) from None
    if checkpoint.encoder_sha256 != manifest["encoder_sha256"]:
        which = f"checkpoint {model}" if model is not None else f"{path / MODEL_FILE}"
        raise BundleError(
            f"{which} does not match the index in {path} (encoder SHA-256 {checkpoint.encoder_sha256[:12]}..., "
            f"index built with {manifest['encoder_sha256'][:12]}...): use the model the index was built "
            f"with, or build a new index for it with `aesearch build-index --model {which.split()[-1]} "
            "--index-dir NEW_FOLDER`"
        )
    # Bundles from before the decoder was recorded have no decoder_sha256: their decoder is trusted as the file is.
    if manifest.get("decoder_sha256", checkpoint.decoder_sha256) != checkpoint.decoder_sha256:
        which = f"checkpoint {model}" if model is not None else f"{path / MODEL_FILE}"
        raise BundleError(
            f"{which} has another decoder than the index in {path} was built with (decoder SHA-256 "
            f"{checkpoint.decoder_sha256[:12]}..., index {manifest['decoder_sha256'][:12]}...): its reconstructions "
            f"and trust scores would not match; use the model the index was built with, or {rebuild}"
        )
    z_size = checkpoint.model_config.vector_size
    if manifest["z_size"] != z_size:
        raise BundleError(
            f"{path} is inconsistent (manifest z size {manifest['z_size']} != model's {z_size}): {rebuild}"
        )

    folder, image_shape = path / "segments", checkpoint.model_config.image_shape
    try:
        segments = [
            Segment.open(folder / e["name"], e["name"], e.get("meta", {}), e["count"], z_size, image_shape)
            for e in manifest["segments"]
        ]
        tombstones = np.zeros(0, np.int64)
        if manifest["tombstones"]:
            tombstones = np.load(path / manifest["tombstones"]["file"], allow_pickle=False)
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}: {rebuild}") from None
    except (OSError, ValueError) as exc:
        raise BundleError(
            f"{path} holds a file that cannot be read ({reason(exc, last_line=True)}): {rebuild}"
        ) from None
    problem = _consistency_problem(manifest, segments, tombstones)
    # Records are checked where their file was checked (every bundle under VERIFY_ALL_BELOW): one pass
    # over 70,000 records is ~1 ms, over 10 M a read of 400 MB; larger bundles' hits are checked as read.
    for segment in segments:
        if not problem and f"segments/{segment.name}/records.npy" in hashed:
            problem = records_problem(manifest, segment.records)
    if problem:
        raise BundleError(f"{path} is inconsistent ({problem}): {rebuild}")
    return Bundle(path, manifest, checkpoint, segments, tombstones, stat)


def records_problem(manifest: dict, records: np.ndarray) -> str | None:
    """Why these records do not fit the manifest (a label with no class name, a split with no split
    name, a file's root that is not one of the collection's), or None."""
    if not len(records):
        return None
    names = {"label": len(manifest["class_names"]), "split": len(manifest["split_names"])}
    labels, splits = records["label"], records["split"]
    if labels.min() < -1 or labels.max() >= names["label"]:
        bad = int(labels.max() if labels.max() >= names["label"] else labels.min())
        return f"a record has label {bad}, but there are {names['label']} class names"
    if splits.max() >= names["split"]:
        return f"a record has split {int(splits.max())}, but there are {names['split']} split names"
    collection = manifest.get("collection")
    if collection:
        roots = records[ROOT]
        if roots.min() < PINNED or roots.max() >= len(collection["roots"]):
            return f"a record names root {int(roots.max())}, but the collection has {len(collection['roots'])}"
    return None


def _consistency_problem(manifest: dict, segments: list[Segment], tombstones: np.ndarray) -> str | None:
    for entry, segment in zip(manifest["segments"], segments, strict=True):
        ids = np.asarray(segment.ids)
        if segment.count and not (ids[0] == entry["first_id"] and ids[-1] == entry["last_id"]):
            return f"segment {segment.name} holds ids {ids[0]}-{ids[-1]}, the manifest says otherwise"
        if segment.count > 1 and not bool(np.all(np.diff(ids) > 0)):
            return f"segment {segment.name} has ids out of order"
    if tombstones.dtype != np.int64 or tombstones.ndim != 1:
        return "the tombstone file is not a list of ids"
    if len(tombstones) != (manifest["tombstones"] or {}).get("count", 0):
        return "the tombstone file does not hold the count the manifest says"
    if len(tombstones) > 1 and not bool(np.all(np.diff(tombstones) > 0)):
        return "the tombstones are not sorted"
    return None


def bundle_holding(path: str | Path) -> Path | None:
    """The bundle folder path lies inside (a damaged bundle too, by its segments), or None."""
    for parent in Path(os.path.abspath(path)).parents:
        if (parent / MANIFEST).is_file() and (parent / "segments").is_dir():
            return parent
    return None


def check_outside_bundles(path: str | Path, parameter: str) -> None:
    """One line if an output file would go inside a bundle: the bundle owns every file there (a
    checkpoint over its model.safetensors broke it, with the model trained for it lost)."""
    bundle = bundle_holding(path)
    if bundle is not None:
        raise InvalidArgumentError(
            f"`{parameter}` {path} is inside the index at {bundle}, whose files aesearch alone writes: "
            "write it outside the index",
            parameter=parameter,
        )


def check_build_target(target: str | Path) -> None:
    """One line if a new bundle cannot take target's place: a file, a folder of other files, a folder
    inside a bundle, no name at all. A build calls it before it reads or trains anything (a build
    that trained for minutes was refused only when it came to write), and again as it writes."""
    target = Path(target)
    if not target.name:  # "", ".", "/": the bundle is swapped in by its name, beside it
        raise InvalidArgumentError(
            f"index_dir {str(target)!r} names no folder: give one, e.g. indexes/NAME", parameter="index_dir"
        )
    if target.exists() and not target.is_dir():
        raise InvalidArgumentError(f"index_dir {target} is a file: give a folder for the index", parameter="index_dir")
    _refuse_to_replace_what_is_not_a_bundle(target)


def _refuse_to_replace_what_is_not_a_bundle(target: Path) -> None:
    """A new bundle takes its target's place whole: refuse a folder of other files (`--index-dir
    ~/Pictures` emptied it) and a folder inside a bundle (`--index-dir idx/segments` broke idx). A
    damaged bundle, without its manifest, still counts as one: rebuilding it is the advice it gets."""
    parent = bundle_holding(target)
    if parent is not None:
        raise InvalidArgumentError(
            f"index_dir {target} is inside the index at {parent}: building there would break it; "
            "choose a folder outside it",
            parameter="index_dir",
        )
    if not target.is_dir():
        return
    entries = sorted(entry.name for entry in target.iterdir())
    if entries and not BUNDLE_ENTRIES & set(entries):
        shown = ", ".join(entries[:3]) + (f", ... ({len(entries)} entries)" if len(entries) > 3 else "")
        raise InvalidArgumentError(
            f"index_dir {target} holds other files ({shown}) and is not an aesearch index: a build would "
            "replace them; choose a new or empty folder",
            parameter="index_dir",
        )


T = TypeVar("T")


def builds_bundle(build: Callable[..., T]) -> Callable[..., T]:
    """For a function that builds a whole bundle (its first parameter: where): the target checked,
    then its writer lock held from the first step to the last. An add, remove, sync or second build
    meanwhile is refused at once, instead of being undone when the build, minutes of training or
    encoding later, swaps its bundle in (BundleWriter.create takes the lock again, held on)."""
    signature = inspect.signature(build)
    where = next(iter(signature.parameters))

    @functools.wraps(build)
    def locked(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        target = Path(bound.arguments[where])
        check_build_target(target)
        with build_lock(target):
            return build(*args, **kwargs)

    return locked


class BundleWriter:
    """Writes the next state of a bundle; see create() and update()."""

    def __init__(self, root: Path, manifest: dict, *, creating: bool) -> None:
        self.root, self.manifest, self.creating = root, manifest, creating
        self._tombstones = None  # set when changed
        self._new_files: set[str] = set()
        self._space_dir: str | None = None
        self._image_shape: tuple[int, ...] | None = None  # the model's input: set_model's, or the bundle's model's
        self.committed = False

    # --- opening ---

    @classmethod
    @contextlib.contextmanager
    def create(cls, target: str | Path, *, resume_key: str | None = None) -> Iterator[BundleWriter]:
        """Write a whole new bundle beside target; commit() swaps it in atomically.

        resume_key: names the staging folder (`.NAME.partial-KEY`) and keeps it after a failure,
        so the same build run again finds the work already done (see scratch()).
        """
        target = Path(target)
        check_build_target(target)
        with writer_lock(target, within_build=True):
            staged_name = f".{target.name}.partial-{resume_key}" if resume_key else None
            for other in target.parent.glob(f".{target.name}.partial-*"):
                if other.name != staged_name:  # one resumable build per target: the latest asked for
                    shutil.rmtree(other, ignore_errors=True)
            staging = new_staging_folder(target, name=staged_name)
            writer = cls(staging, _empty_manifest(), creating=True)
            writer._target = target
            try:
                yield writer
            except BaseException:
                if resume_key is None:
                    shutil.rmtree(staging, ignore_errors=True)
                raise
            if not writer.committed:
                shutil.rmtree(staging, ignore_errors=True)

    @classmethod
    @contextlib.contextmanager
    def update(cls, path: str | Path) -> Iterator[BundleWriter]:
        """Change the bundle at path in place: new segments, tombstones; commit() publishes."""
        path = Path(path)
        with writer_lock(path, within_build=True):  # a build's own update (its recall) holds on to its lock
            writer = cls(path, read_manifest(path), creating=False)
            writer._collect_garbage()  # what writers killed before their commit left behind
            try:
                yield writer
            finally:
                if not writer.committed:
                    writer._collect_garbage()

    # --- editing ---

    @property
    def next_generation(self) -> int:
        return self.manifest["generation"] + 1

    def allocate_ids(self, n: int) -> np.ndarray:
        """n new ids, never used before in this bundle."""
        start = self.manifest["next_id"]
        self.manifest["next_id"] = start + n
        return np.arange(start, start + n, dtype=np.int64)

    def set_model(self, checkpoint: Checkpoint) -> None:
        """Store the checkpoint whose encoder makes the embeddings (a new bundle only)."""
        assert self.creating, "the model of an existing bundle never changes"
        save_checkpoint(self.root / MODEL_FILE, checkpoint)
        self._new_files.add(MODEL_FILE)
        self.manifest["encoder_sha256"] = checkpoint.encoder_sha256
        self.manifest["decoder_sha256"] = checkpoint.decoder_sha256
        self.manifest["z_size"] = checkpoint.model_config.vector_size
        self._image_shape = checkpoint.model_config.image_shape

    def new_segment(self, count: int, *, name: str | None = None) -> SegmentBuilder:
        """A segment to fill. A fixed name (resumable builds) reopens what a crashed run wrote."""
        assert name is None or self.creating, "segments of an existing bundle get fresh names"
        name = name or f"g{self.next_generation:06d}-{secrets.token_hex(3)}"
        if self._image_shape is None:  # an update: the shape the bundle's model reads (its metadata alone)
            self._image_shape = read_model_config(self.root / MODEL_FILE).image_shape
        return SegmentBuilder(self.root / "segments" / name, count, self.manifest["z_size"], self._image_shape)

    def add_segment(self, segment: SegmentBuilder, meta: dict | None = None) -> None:
        ids = np.asarray(segment.records["id"]).copy()
        segment.seal()
        name = segment.folder.name
        files = sorted(p.name for p in segment.folder.iterdir() if p.is_file())
        self.manifest["segments"].append(
            {
                "name": name,
                "count": segment.count,
                "first_id": int(ids[0]) if len(ids) else -1,
                "last_id": int(ids[-1]) if len(ids) else -1,
                "files": files,
                "meta": meta or {},
            }
        )

    def remove_ids(self, ids) -> None:
        """Tombstone these ids (they must be in the bundle and not removed already)."""
        ids = np.unique(np.asarray(ids, dtype=np.int64))
        current = self.tombstones()
        self._tombstones = np.union1d(current, ids)

    def drop_segments(self, names: list[str]) -> None:
        """Stop listing these segments (a compaction has rewritten their live images elsewhere)."""
        dropped = [s for s in self.manifest["segments"] if s["name"] in names]
        self.manifest["segments"] = [s for s in self.manifest["segments"] if s["name"] not in names]
        kept = self.tombstones()
        remaining = [self._segment_ids(s) for s in self.manifest["segments"]]
        for segment in dropped:
            ids = self._segment_ids(segment)
            gone = _contains(np.asarray(ids), kept)
            for other in remaining:  # an id whose older copy is still listed keeps its tombstone
                gone &= ~_contains(np.asarray(other), kept)
            kept = kept[~gone]
        self._tombstones = kept

    def _segment_ids(self, entry: dict) -> np.ndarray:
        return np.load(self.root / "segments" / entry["name"] / "records.npy", mmap_mode="r")["id"]

    def tombstones(self) -> np.ndarray:
        if self._tombstones is None:
            entry = self.manifest["tombstones"]
            self._tombstones = (
                np.load(self.root / entry["file"], allow_pickle=False) if entry else np.zeros(0, np.int64)
            )
        return self._tombstones

    def space_file(self, name: str) -> Path:
        """Where to write a file of a newly learned search space (replacing the current one whole)."""
        if self._space_dir is None:
            self._space_dir = f"space/{self.next_generation}"
            (self.root / self._space_dir).mkdir(parents=True, exist_ok=True)
        return self.root / self._space_dir / name

    def scratch(self, name: str) -> Path:
        """A private file of this build (resume notes); never published."""
        folder = self.root / ".scratch"
        folder.mkdir(exist_ok=True)
        return folder / name

    # --- publishing ---

    def commit(self, fields: dict | None = None) -> dict:
        """Publish the new state with one rename; returns its manifest."""
        m = self.manifest
        m.update(fields or {})
        generation = self.next_generation
        now = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        m.update(generation=generation, updated=now, package_version=__version__, format_version=FORMAT_VERSION)
        if self.creating:
            m["created"] = now
        if self._tombstones is not None:
            if len(self._tombstones):
                name = f"tombstones/{generation}.npy"
                (self.root / "tombstones").mkdir(exist_ok=True)
                np.save(self.root / name, self._tombstones.astype(np.int64))
                self._new_files.add(name)
                m["tombstones"] = {"file": name, "count": len(self._tombstones)}
            else:
                m["tombstones"] = None
        if self._space_dir is not None:
            folder = self.root / self._space_dir
            m["space"] = {"dir": self._space_dir, "files": sorted(p.name for p in folder.iterdir() if p.is_file())}
            self._new_files.update(f"{self._space_dir}/{name}" for name in m["space"]["files"])
        # Older copies of ids a later segment holds again are dead; ids are counted once.
        superseded = superseded_rows([self._segment_ids(s) for s in m["segments"]], m["segments"])
        m["superseded"] = int(sum(len(rows) for rows in superseded))
        m["count"] = sum(s["count"] for s in m["segments"]) - (m["tombstones"] or {}).get("count", 0) - m["superseded"]
        referenced = _referenced_files(m)
        files = {name: record for name, record in m["files"].items() if name in referenced}
        new = sorted(referenced - set(files))
        for name, digest in zip(new, _sha256_many([self.root / name for name in new]), strict=True):
            files[name] = {"sha256": digest, "bytes": (self.root / name).stat().st_size}
        m["files"] = files
        scratch = self.root / ".scratch"
        if self.creating:
            shutil.rmtree(scratch, ignore_errors=True)
            write_manifest(self.root, m)
            read_manifest(self.root)  # never publish a manifest we would refuse to read
            publish_folder(self.root, self._target)
        else:
            write_manifest(self.root, m)
            self._collect_garbage()
        self.committed = True
        return m

    def _collect_garbage(self) -> None:
        """Remove segments, spaces and tombstone files no published manifest names."""
        referenced = _referenced_files(read_manifest(self.root))
        folders = {str(Path(name).parent) for name in referenced}
        for kind in ("segments", "space"):
            for folder in (self.root / kind).glob("*") if (self.root / kind).is_dir() else []:
                if f"{kind}/{folder.name}" not in folders:
                    shutil.rmtree(folder, ignore_errors=True)
        for file in (self.root / "tombstones").glob("*") if (self.root / "tombstones").is_dir() else []:
            if f"tombstones/{file.name}" not in referenced:
                file.unlink(missing_ok=True)
        for stale in self.root.glob(f".{MANIFEST}.*.tmp"):
            stale.unlink(missing_ok=True)


def _empty_manifest() -> dict:
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "created": "",
        "updated": "",
        "generation": 0,
        "count": 0,
        "next_id": 0,
        "z_size": 1,
        "embedding_shifts": [[0, 0]],
        "encoder_sha256": "",
        "class_names": [],
        "split_names": ["all"],
        "segments": [],
        "tombstones": None,
        "space": {"dir": "space/0", "files": []},
        "files": {},
    }


def _referenced_files(m: dict) -> set[str]:
    names = {MODEL_FILE} | {f"{m['space']['dir']}/{f}" for f in m["space"]["files"]}
    if m["tombstones"]:
        names.add(m["tombstones"]["file"])
    for segment in m["segments"]:
        names.update(f"segments/{segment['name']}/{f}" for f in segment["files"])
    return names


def superseded_rows(segment_ids: list[np.ndarray], entries: list[dict] | None = None) -> list[np.ndarray]:
    """For each segment, the sorted rows whose id a later segment holds again.

    Only the later ids are looked up in each (sorted) segment, so a large base with small deltas
    costs a few binary searches, not a pass over the base; segments whose id ranges (from the
    manifest entries, when given) cannot overlap are skipped.
    """
    out = [np.zeros(0, np.int64) for _ in segment_ids]
    later = np.zeros(0, np.int64)
    for number in range(len(segment_ids) - 1, -1, -1):
        ids = segment_ids[number]
        if len(later) and len(ids):
            first, last = (entries[number]["first_id"], entries[number]["last_id"]) if entries else (ids[0], ids[-1])
            candidates = later[(later >= first) & (later <= last)]
            if len(candidates):
                at = np.minimum(np.searchsorted(ids, candidates), len(ids) - 1)
                out[number] = np.unique(at[np.asarray(ids[at]) == candidates])
        if number:
            later = np.union1d(later, np.asarray(ids))
    return out


def as_path(value: object, what: str) -> Path:
    """A path given by a caller (str, bytes or os.PathLike) as a Path; one line for anything else."""
    if isinstance(value, bytes):
        value = os.fsdecode(value)
    if not isinstance(value, str | os.PathLike):
        raise InvalidArgumentError(f"{what} must be a path (a str or a pathlib.Path), got {type(value).__name__}")
    return Path(value)


def _contains(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Which of values occur in sorted_values (both int64)."""
    if not len(sorted_values):
        return np.zeros(len(values), dtype=bool)
    at = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[at] == values


def _stat(path: Path) -> tuple:
    try:
        s = path.stat()
    except OSError:
        return ()
    return (s.st_ino, s.st_mtime_ns, s.st_size)


def _verify_file(path: Path, record: dict, rebuild: str) -> None:
    """Present, with the size the manifest says (checksums: _sha256_many)."""
    if not path.is_file():
        raise BundleError(f"{path} is missing: {rebuild}")
    size = path.stat().st_size
    if size != record["bytes"]:
        raise BundleError(f"{path} is damaged ({size} bytes, manifest says {record['bytes']}): {rebuild}")


def _sha256_many(paths: Sequence[Path]) -> list[str]:
    """Each file's SHA-256, in order, one file per core at a time (hashlib releases the GIL while it
    hashes): checking the 10 files of a 10 M bundle (29 GB) from a cold page cache took 23-25 s
    instead of 32-35 s on 2 cores. Biggest first, so that the last to finish is a small one."""
    if len(paths) < 2 or CORES < 2:
        return [_sha256(p) for p in paths]
    order = sorted(range(len(paths)), key=lambda i: -paths[i].stat().st_size)
    with ThreadPoolExecutor(min(len(paths), CORES)) as pool:
        digests = dict(zip(order, pool.map(_sha256, [paths[i] for i in order]), strict=True))
    return [digests[i] for i in range(len(paths))]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def file_checksum(path: str | Path) -> str:
    return _sha256(Path(path))

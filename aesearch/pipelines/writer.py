"""The one writer of a bundle: add, remove, sync, compact. SearchEngine only reads.

    >>> collection = Collection.open("indexes/products")
    >>> report = collection.sync()                     # a bundle built from folders: in step again
    >>> ids = collection.add(images, paths=["a.png"])  # images with no file behind them (pinned)
    >>> collection.remove(ids)

Each verb takes the bundle's writer lock, loads the bundle once under it (the state it extends),
writes one delta segment and tombstones, and publishes them with one rename of the manifest: a
reader never sees half an update, and a kill -9 at any moment leaves the last published state.
Then it compacts when drift.py says the space must be relearned (small collections: on every change;
larger ones: past the drift bound) or update.needs_compaction says the deltas grew too large; a
compaction is its own publish (update.compact, which loads the bundle it rewrites).
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from aesearch import defaults
from aesearch.errors import InvalidArgumentError, os_error_message
from aesearch.integers import check_int, check_ints
from aesearch.model.architecture import ModelConfig
from aesearch.model.checkpoint import read_model_config
from aesearch.pipelines import drift
from aesearch.pipelines.sync import SyncReport, SyncRows, file_path, files_to_add, ids_by_path, sync_rows
from aesearch.pipelines.update import MAX_DELTAS, compact, delta_numbers, embed, needs_compaction, write_delta
from aesearch.search.segments import load_transform
from aesearch.sources.preprocess import ImageSource, preprocess_batch
from aesearch.store.bundle import MODEL_FILE, Bundle, BundleWriter, as_path, load_bundle
from aesearch.store.manifest import read_manifest
from aesearch.store.paths import encode_path, shown
from aesearch.store.records import PINNED, ROOT, new_records, pixel_hashes


class Collection:
    """Changes one bundle; each call is one atomic publish (plus a compaction when one is due)."""

    def __init__(self, path: Path, *, workers: int | None = None) -> None:
        self.path, self.workers = path, workers

    @classmethod
    def open(cls, index_dir: str | Path = defaults.INDEX_DIR, *, workers: int | None = None) -> Collection:
        """The writer of the bundle at index_dir (one line if there is none). workers: processes that
        read files in a sync (default: one per core)."""
        path = as_path(index_dir, "index_dir")
        read_manifest(path)  # no bundle there: said now, in one line, not at the first write
        return cls(path, workers=None if workers is None else check_int(workers, "workers", low=1))

    def __repr__(self) -> str:
        return f"Collection({str(self.path)!r})"

    # --- the verbs ---

    def add(
        self,
        images: np.ndarray | Sequence[ImageSource],
        paths: Sequence[str] | None = None,
        labels: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Index more images (anything the preprocessing contract takes); returns their new ids.

        paths: a name shown for each (it need not be a file); labels: class names, or their numbers
        (-1: none).
        The images have no file behind them: no `sync` removes them (they are pinned, with
        position -1); `remove` does.
        """
        if isinstance(images, Sequence | np.ndarray) and not isinstance(images, str | bytes) and not len(images):
            raise InvalidArgumentError("images to add must hold at least one image, got none")
        pixels = (
            (preprocess_batch(images, model_config=self._model_config()) * np.float32(255)).round().astype(np.uint8)
        )
        records = new_records(len(pixels))
        records["content_hash"] = pixel_hashes(pixels)
        records[ROOT] = PINNED
        if paths is not None:
            if isinstance(paths, str | bytes) or not isinstance(paths, Sequence) or len(paths) != len(pixels):
                raise InvalidArgumentError(f"paths must be a list of {len(pixels)} strings, one per image")
            for path in paths:
                encode_path(path)  # text the store can keep: one line for a number, a NUL, a lone surrogate
            named = [path for path in paths if path]
            if len(set(named)) != len(named):
                raise InvalidArgumentError('paths name two images alike: give each image a name of its own (or "")')
        if labels is not None:
            names = read_manifest(self.path)["class_names"]  # class names are only ever appended
            labels = _class_numbers(labels, names, self.path)
            last = len(names) - 1
            what = (
                f"labels (class names or numbers up to {last}, or -1 for none)" if names else "labels (no classes: -1)"
            )
            labels = check_ints(labels, what, low=-1, high=last)
            if len(labels) != len(pixels):
                raise InvalidArgumentError(f"give one label per image: {len(labels)} labels for {len(pixels)} images")
            records["label"] = labels
        with BundleWriter.update(self.path) as writer:
            bundle = load_bundle(self.path, verify="sizes")  # under the lock: the state we extend
            if paths is not None and any(paths) and any(s.has_paths for s in bundle.segments):
                taken = ids_by_path(bundle)  # (a bundle without a path, a dataset's, has none to collide with)
                for path in paths:
                    if path in taken:  # `remove PATH` could not tell them apart
                        raise InvalidArgumentError(
                            f"an indexed image has the path {shown(path)} already (id {taken[path][0]}): give this "
                            "image another name"
                        )
            records["id"] = ids = writer.allocate_ids(len(pixels))
            rows = SyncRows(records, pixels, embed(bundle, pixels), list(paths or [""] * len(pixels)), [], [])
            due = self._publish(writer, bundle, rows)
        self._maintain(due)
        return ids

    def _model_config(self) -> ModelConfig:
        """The bundle's model's config (its metadata alone): the contract new images are prepared by."""
        return read_model_config(self.path / MODEL_FILE)

    def remove(self, ids_or_paths: Sequence[int | str]) -> list[int]:
        """Remove images by id, or by path (as listed, or a collection file's path, absolute or from
        the current folder, as `add` takes it); returns the ids removed, sorted. Tombstones: ids are
        never used again. Files are not touched."""
        if isinstance(ids_or_paths, str | bytes) or not isinstance(ids_or_paths, Sequence | np.ndarray):
            raise InvalidArgumentError(
                f"ids_or_paths must be a list of ids (integers) or paths (text), got {type(ids_or_paths).__name__}"
            )
        targets = list(ids_or_paths.tolist() if isinstance(ids_or_paths, np.ndarray) else ids_or_paths)
        if not targets:
            raise InvalidArgumentError("give at least one id or path to remove")
        for target in targets:
            if not isinstance(target, str) and (isinstance(target, bool) or not isinstance(target, int | np.integer)):
                raise InvalidArgumentError(
                    f"give ids (integers) or paths (text) to remove, got {type(target).__name__}"
                )
            if not isinstance(target, str):
                check_int(target, "an id to remove")
            elif not target.strip():
                raise InvalidArgumentError("a path to remove is empty: give an id or an indexed image's path")
        with BundleWriter.update(self.path) as writer:
            bundle = load_bundle(self.path, verify="sizes")
            by_path = ids_by_path(bundle) if any(isinstance(t, str) for t in targets) else {}
            ids = []
            for target in targets:
                if not isinstance(target, str):
                    ids.append(int(target))
                    continue
                path = target if target in by_path else _listed_as(target)
                if path not in by_path:
                    raise InvalidArgumentError(
                        f"no indexed image has the path {shown(target)}: give an id, the path as listed or the file's"
                    )
                if len(by_path[path]) > 1:  # two roots' files, or a name given in Python: never a guess
                    listed = ", ".join(map(str, sorted(by_path[path])))
                    raise InvalidArgumentError(
                        f"{len(by_path[path])} indexed images have the path {shown(target)} (ids {listed}): give an "
                        "id, or the file's absolute path"
                    )
                ids.extend(by_path[path])
            ids = sorted(set(ids))
            bundle.locate(ids)  # under the lock: an id removed meanwhile gets one line, not a double tombstone
            due = self._publish(writer, bundle, _no_rows(bundle, ids))
        self._maintain(due)
        return ids

    def sync(self, *, dry_run: bool = False, allow_mass_removal: bool = False, compact: bool = False) -> SyncReport:
        """Bring a bundle built from folders in step with them (see pipelines/sync.py).

        A sync that would remove a whole root's images or more than half of the index is refused
        (MassRemovalError) unless allow_mass_removal: an unmounted disk looks like deleted files.
        compact: also compact, even when nothing changed (`sync --compact`).
        """
        for name, value in (("dry_run", dry_run), ("allow_mass_removal", allow_mass_removal), ("compact", compact)):
            if not isinstance(value, bool | np.bool_):  # "no" is true: a dry run asked for as a sync
                raise InvalidArgumentError(f"`{name}` must be True or False, got {value!r:.40}", parameter=name)
        return self._sync(None, dry_run=dry_run, allow_mass_removal=allow_mass_removal, compact_now=compact)

    def add_files(self, paths: Sequence[str | Path]) -> SyncReport:
        """Index these files (or every image in these folders) of the collection now, as a sync would;
        nothing is removed (`aesearch add`)."""
        if isinstance(paths, str | bytes | os.PathLike) or not isinstance(paths, Sequence) or not paths:
            raise InvalidArgumentError("paths must be a list of at least one file or folder of the collection")
        return self._sync(paths, dry_run=False, allow_mass_removal=False, compact_now=False)

    def compact(self) -> dict:
        """One segment, the search space (whitening, index, trust) learned again; returns the manifest."""
        return compact(self.path)

    # --- one update ---

    def _sync(
        self, only: Sequence[str | Path] | None, *, dry_run: bool, allow_mass_removal: bool, compact_now: bool
    ) -> SyncReport:
        start = time.perf_counter()
        report = SyncReport(dry_run=dry_run)
        # The lock first: a second writer is refused in one line. A dry run reads and plans only: no
        # lock (a read-only bundle folder can be dry-run) and nothing written, not even a clean-up.
        with contextlib.nullcontext() if dry_run else BundleWriter.update(self.path) as writer:
            bundle = load_bundle(self.path, verify="sizes")
            keys = None if only is None else files_to_add(bundle, only)
            rows = sync_rows(
                bundle, report, dry_run=dry_run, workers=self.workers, only=keys, allow_mass_removal=allow_mass_removal
            )
            # Nothing to write: the bundle stays byte for byte as it was (unless --compact).
            due = None if rows is None else self._publish(writer, bundle, rows)
            count = writer.manifest["count"] if rows is not None else len(bundle)
        if not dry_run:
            report.maintenance = self._maintain("compacted" if compact_now else due, asked=compact_now)
            count = read_manifest(self.path)["count"] if report.maintenance else count
        report.count = count
        report.seconds = round(time.perf_counter() - start, 3)
        return report

    def _publish(self, writer: BundleWriter, bundle: Bundle, rows: SyncRows) -> str | None:
        """Write rows as one delta (folding the existing deltas into it when there would be more than
        MAX_DELTAS) and tombstone rows.removed; commit. Returns "compacted" when a compaction is due
        (the caller runs it once the lock is released), "merged" when deltas were folded, else None."""
        new = rows.records["id"] < 0  # a sync's added files: ids allocated here, in file order
        rows.records["id"][new] = writer.allocate_ids(int(new.sum()))
        new_ids = np.asarray(rows.records["id"], dtype=np.int64)
        deltas = delta_numbers(bundle.manifest) if len(rows.records) else []
        merge = len(deltas) + 1 > MAX_DELTAS
        records, images, embeddings, paths = rows.records, rows.images, rows.embeddings, rows.paths
        if merge:  # the live rows of the deltas, less those this update replaces or removes
            bundle.verify_segments(deltas)  # copied into the new delta: checked first
            replaced = np.union1d(new_ids, np.asarray(rows.removed, dtype=np.int64))
            parts = [(records, images, embeddings, paths)]
            for number in deltas:
                segment = bundle.segments[number]
                live = bundle.live_rows(number)
                live = live[~np.isin(segment.ids[live], replaced)]
                parts.append(
                    (segment.records[live], segment.images[live], segment.embeddings[live], segment.paths(live))
                )
            records, images, embeddings = (np.concatenate([p[i] for p in parts]) for i in range(3))
            paths = [path for p in parts for path in p[3]]
        write_delta(writer, bundle, records, images, embeddings, paths)
        if rows.removed:
            writer.remove_ids(rows.removed)
        if merge:
            writer.drop_segments([bundle.segments[n].name for n in deltas])
        due = self._relearn_due(bundle, rows, new_ids)
        manifest = writer.commit({"class_names": rows.class_names} if rows.class_names else None)
        if due or needs_compaction(manifest):
            return "compacted"
        return "merged" if merge else None

    def _relearn_due(self, bundle: Bundle, rows: SyncRows, new_ids: np.ndarray) -> bool:
        """Whether the search space must be learned again after this update (drift.py: by size, else
        by the estimated top-10 overlap with a fresh build's space)."""
        live = len(bundle) + len(np.setdiff1d(new_ids, bundle.live_ids())) - len(rows.removed)
        if live <= drift.RELEARN_EVERY_SYNC_MAX:
            return True
        m = bundle.manifest
        transform = load_transform(bundle)
        if transform is None:
            return False
        # The live images after the update: the old ones it neither replaces nor removes, then its rows.
        gone = np.union1d(new_ids, np.asarray(rows.removed, dtype=np.int64))
        ids = bundle.live_ids()
        ids = ids[~np.isin(ids, gone)]

        def vectors(at: np.ndarray) -> np.ndarray:  # only the sampled rows are read from the segments
            old = at < len(ids)
            return np.concatenate([bundle.embeddings(ids[at[old]]), rows.embeddings[at[~old] - len(ids)]])

        fit = None
        if "train" in bundle.split_names:  # as update.compact learns: on the training images
            train = bundle.split_names.index("train")
            splits = np.concatenate([bundle.records(ids)["split"], rows.records["split"]])
            fit = np.flatnonzero(splits == train)
            fit = fit if len(fit) >= 2 else None
        params = m.get("index_params") or {}
        overlap = drift.estimated_overlap(
            vectors,
            len(ids) + len(rows.records),
            transform,
            m["metric"],
            dims=params.get("whiten_dims"),
            shrinkage=params.get("whiten_shrinkage", 0.0),
            fit_rows=fit,
            seed=m["generation"],
        )
        return overlap < drift.MIN_OVERLAP

    def _maintain(self, due: str | None, *, asked: bool = False) -> str | None:
        """Run the compaction an update made due (asked: `sync --compact`, whose failure is the command's)."""
        if due != "compacted":
            return due
        try:
            compact(self.path)
        except OSError as exc:
            if asked:
                raise
            # The update the caller asked for is published; the next update tries the relearning again.
            return f"not compacted: {os_error_message(exc)}"
        return due


def _no_rows(bundle: Bundle, removed: list[int]) -> SyncRows:
    """An update that only removes."""
    nothing = np.zeros((0, bundle.manifest["z_size"]), np.float32)
    return SyncRows(new_records(0), np.zeros((0, *bundle.image_shape), np.uint8), nothing, [], removed, [])


def _class_numbers(labels, names: list[str], path) -> object:
    """labels with each class name replaced by its number; anything else is left to check_ints."""
    if isinstance(labels, str | bytes) or not isinstance(labels, Sequence):
        return labels  # an array of numbers, or something check_ints refuses in one line
    numbers = []
    for label in labels:
        if isinstance(label, str):
            if label not in names:
                shown = ", ".join(names[:20]) + (f", ... ({len(names)} classes)" if len(names) > 20 else "")
                choice = f"choose one of {shown}" if names else "it has no classes: give -1"
                raise InvalidArgumentError(f"no class {label!r} in {path}: {choice}")
            label = names.index(label)
        numbers.append(label)
    return numbers


def _listed_as(target: str) -> str | None:
    """A path given to remove, as ids_by_path keys a collection's files (None: it cannot be resolved,
    a loop of links say, so no indexed image has it)."""
    try:
        return str(file_path(target))
    except (OSError, RuntimeError):  # RuntimeError: Python 3.10's pathlib on a loop of links
        return None

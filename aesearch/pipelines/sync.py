"""`aesearch sync`, `add`, `remove`: keep a folder's index in step with the folder.

Mark and sweep, as rclip does, on (root, path, size, mtime):
  * unchanged: same path, size and mtime as indexed: nothing is read;
  * the others are read (hashed, decoded, preprocessed, on every core) and sorted out by content hash:
      - a new path whose content an indexed file that has vanished had: moved (same id, its stored
        image and vector copied, nothing encoded);
      - a known path with new content: changed (same id, encoded again); same content, only the
        mtime moved: its record is refreshed (same id and vector), counted as changed;
      - anything else new: added (new ids);
  * indexed files no longer found: removed (tombstones);
  * unreadable files: skipped, with a reason; an indexed file that became unreadable keeps its entry,
    and so do the files of a folder that cannot be listed; a missing root stops the sync in one line;
  * images added through the Python API (SearchEngine.add) have no file: they are pinned (their
    record's root is PINNED) and no sync removes them.

A sync never empties an index by accident. An unmounted disk, a symlink to an empty folder or an
emptied list file look like a root whose every file was deleted; the sync refuses in one line, with
nothing written, when a root that holds indexed images now has none, or when more than
MASS_REMOVAL_SHARE of the indexed images would go, unless allow_mass_removal is given
(`--allow-mass-removal`). Ids are never reused: an image removed by mistake and synced back gets a
new id, so an id someone kept can never come to mean another image.
Everything goes into one update (a delta segment and tombstones) published atomically, then the
bundle is merged or compacted if it needs it (update.py). A kill -9 at any moment leaves the last
published state; running sync again redoes the unpublished part, so nothing is lost or indexed twice.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aesearch import defaults
from aesearch.errors import AesearchError, InvalidArgumentError
from aesearch.integers import check_int, parse_int
from aesearch.pipelines.update import embed, maintain, remove_images, write_delta
from aesearch.sources.folders import (
    FileEntry,
    Scan,
    Skipped,
    folder_label,
    image_file_problem,
    read_files,
    scan,
    scan_folder,
    stat_image,
)
from aesearch.store.bundle import Bundle, BundleWriter, load_bundle
from aesearch.store.manifest import read_manifest
from aesearch.store.paths import shown
from aesearch.store.records import NO_LABEL, PINNED, new_records


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)  # (from, to)
    removed: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    unchanged: int = 0
    dry_run: bool = False
    maintenance: str | None = None  # "merged", "compacted" or None
    refused: str | None = None  # a dry run that a real sync would refuse: why (see MassRemovalError)
    count: int = 0  # images indexed after the sync
    seconds: float = 0.0

    @property
    def changes(self) -> int:
        return len(self.added) + len(self.changed) + len(self.moved) + len(self.removed)

    def summary(self) -> str:
        parts = [f"{len(self.added):,} added", f"{len(self.changed):,} changed", f"{len(self.moved):,} moved",
                 f"{len(self.removed):,} removed", f"{len(self.skipped):,} skipped",
                 f"{self.unchanged:,} unchanged"]  # fmt: skip
        tail = f"; {self.maintenance}" if self.maintenance else ""
        head = "Dry run (nothing written): " if self.dry_run else ""
        refused = f". A sync would refuse: {self.refused}" if self.refused else ""
        return f"{head}{', '.join(parts)} ({self.count:,} images, {self.seconds:.1f} s{tail}){refused}"

    def to_dict(self) -> dict:
        return {
            "added": self.added, "changed": self.changed,
            "moved": [{"from": a, "to": b} for a, b in self.moved], "removed": self.removed,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped], "unchanged": self.unchanged,
            "dry_run": self.dry_run, "maintenance": self.maintenance, "count": self.count, "seconds": self.seconds,
            "refused": self.refused,
        }  # fmt: skip


class MassRemovalError(AesearchError):
    """A sync would remove a whole root's images, or more than MASS_REMOVAL_SHARE of the index."""


def collection_of(bundle: Bundle) -> tuple[list[Path], str | None]:
    """The roots and label mode a bundle was built from, or one line saying it was not built from files."""
    collection = bundle.manifest.get("collection")
    if not isinstance(collection, dict) or not collection.get("roots"):
        raise InvalidArgumentError(
            f"{bundle.path} was not built from folders of images: sync works on bundles built with "
            "`aesearch build-index --images DIR`"
        )
    return [Path(r) for r in collection["roots"]], collection.get("labels")


def indexed_files(bundle: Bundle) -> dict[tuple[int, str], tuple[int, int, int, bytes]]:
    """(root, path) -> (id, bytes, mtime_ns, content hash) of every live image, from the records."""
    out = {}
    for number, segment in enumerate(bundle.segments):
        keep = np.ones(segment.count, bool)
        keep[bundle.dead_rows(number)] = False
        rows = np.flatnonzero(keep)
        records = segment.records[rows]
        columns = [records[name].tolist() for name in ("position", "id", "bytes", "mtime_ns", "content_hash")]
        for root, path, id_, size, mtime, digest in zip(columns[0], segment.paths(rows), *columns[1:], strict=True):
            out[(root, path)] = (id_, size, mtime, digest)
    return out


_MASS_REMOVAL_ADVICE = (
    "If a disk is unmounted or a folder moved, reconnect or restore it and sync again; if the files are "
    "really gone, run `aesearch sync --allow-mass-removal`"
)


def mass_removal(roots: Sequence[Path], indexed: dict, on_disk: dict, vanished: dict) -> str | None:
    """Why removing `vanished` looks like an accident (a root emptied, or most of the index), or None."""
    for number, root in enumerate(roots):
        had = sum(1 for key in vanished if key[0] == number)
        if had and not any(key[0] == number for key in on_disk):
            return (
                f"{root} holds no image files now, but {had:,} indexed images came from it "
                "(an unmounted disk or an emptied folder looks like this)"
            )
    share = len(vanished) / max(1, sum(1 for key in indexed if key[0] != PINNED))
    if share > defaults.MASS_REMOVAL_SHARE:
        return (
            f"it would remove {len(vanished):,} of {len(indexed):,} indexed images ({share:.0%}, more than "
            f"{defaults.MASS_REMOVAL_SHARE:.0%})"
        )
    return None


def sync(index_dir: str | Path, *, dry_run: bool = False, compact: bool = False, workers: int | None = None,
         only: set[tuple[int, str]] | None = None, allow_mass_removal: bool = False,
         log: Callable[[str], None] | None = None) -> SyncReport:  # fmt: skip
    """Bring the bundle at index_dir in step with its folders (see the module docstring).

    only: sync just these (root, path) files and remove nothing (`aesearch add`).
    allow_mass_removal: publish a sync that removes a whole root's images or more than
        MASS_REMOVAL_SHARE of the index (refused otherwise: MassRemovalError).
    """
    start = time.perf_counter()
    report = SyncReport(dry_run=dry_run)
    with BundleWriter.update(index_dir) as writer:  # the lock first: a second sync is refused in one line
        bundle = load_bundle(index_dir, verify="sizes")
        roots, labels = collection_of(bundle)
        for root in roots:  # an unmounted disk must not read as "every file was deleted"
            if not root.exists():
                raise InvalidArgumentError(
                    f"{root}, a folder this index was built from, is missing: reconnect or restore it, then sync "
                    "again (nothing was changed)"
                )
        found = scan(roots) if only is None else _scan_only(roots, only)
        report.skipped += found.skipped
        indexed = indexed_files(bundle)
        on_disk = {(f.root, f.path): f for f in found.files}
        if only is not None:
            on_disk.update({key: None for key in indexed})  # nothing vanishes in an explicit add
        candidates = [f for f in found.files if _differs(f, indexed.get((f.root, f.path)))]
        report.unchanged = len(found.files) - len(candidates)
        unlisted = [s.unlisted for s in found.skipped if s.unlisted]  # folders we could not look into
        vanished = {
            key: indexed[key] for key in indexed.keys() - on_disk.keys()
            if key[0] != PINNED and not any(key[0] == root and key[1].startswith(prefix) for root, prefix in unlisted)
        }  # fmt: skip
        chunks = list(read_files(roots, candidates, workers=workers))
        report.skipped += [s for c in chunks for s in c.skipped]
        files = [f for c in chunks for f in c.files]
        images = np.concatenate([c.images for c in chunks]) if chunks else np.zeros((0, 28, 28), np.uint8)
        hashes = np.concatenate([c.hashes for c in chunks]) if chunks else np.zeros(0, "S16")

        by_hash: dict[bytes, list[tuple[int, str]]] = {}
        for key, (_, _, _, digest) in sorted(vanished.items()):
            by_hash.setdefault(digest, []).append(key)
        publish_ids: list[int] = []  # per file read: the id it is published under (-1: a new one)
        encode_rows: list[int] = []  # files whose content is new: encoded
        copy_rows: list[tuple[int, int]] = []  # (row, id): content already indexed under id: copied
        for row, (file, digest) in enumerate(zip(files, hashes.tolist(), strict=True)):
            old = indexed.get(file.key)
            if old is not None:  # same path, new size or mtime: changed (re-encoded unless only touched)
                report.changed.append(file.path)
                publish_ids.append(old[0])
                if old[3] == digest:
                    copy_rows.append((row, old[0]))
                else:
                    encode_rows.append(row)
            elif by_hash.get(digest):  # the content of a vanished file: it moved here
                source = by_hash[digest].pop(0)
                report.moved.append((source[1], file.path))
                publish_ids.append(vanished.pop(source)[0])
                copy_rows.append((row, publish_ids[-1]))
            else:
                report.added.append(file.path)
                publish_ids.append(-1)
                encode_rows.append(row)
        report.removed = sorted(key[1] for key in vanished)
        refusal = None if allow_mass_removal else mass_removal(roots, indexed, on_disk, vanished)
        if refusal and not dry_run:
            raise MassRemovalError(f"{refusal}; nothing was changed. {_MASS_REMOVAL_ADVICE}")
        report.refused = refusal
        if dry_run or not (files or vanished):  # nothing to write: the bundle stays byte for byte as it was
            report.count = len(bundle)
            if dry_run or not compact:
                report.seconds = round(time.perf_counter() - start, 3)
                return report
        else:
            class_names = list(bundle.class_names)
            new_ids = iter(writer.allocate_ids(sum(1 for i in publish_ids if i < 0)))
            ids = np.array([i if i >= 0 else next(new_ids) for i in publish_ids], dtype=np.int64)
            records = new_records(len(files))
            records["id"], records["content_hash"] = ids, hashes
            records["position"] = [f.root for f in files]
            records["bytes"], records["mtime_ns"] = [f.size for f in files], [f.mtime_ns for f in files]
            if labels == "folders":
                records["label"] = [_label(class_names, f.path) for f in files]
            embeddings = np.zeros((len(files), bundle.manifest["z_size"]), np.float32)
            pixels = images.copy()
            if copy_rows:  # moved or touched: the stored image and vector, never encoded again
                rows, sources = [r for r, _ in copy_rows], [i for _, i in copy_rows]
                embeddings[rows], pixels[rows] = bundle.embeddings(sources), bundle.images(sources)
            if encode_rows:
                embeddings[encode_rows] = embed(bundle, images[encode_rows])
            write_delta(writer, bundle, records, pixels, embeddings, [f.path for f in files])
            writer.remove_ids([entry[0] for entry in vanished.values()])
            writer.commit({"class_names": class_names})
    report.maintenance = maintain(index_dir, compact_now=compact)  # --compact: even when nothing changed
    report.count = read_manifest(index_dir)["count"]
    report.seconds = round(time.perf_counter() - start, 3)
    return report


def add_files(index_dir: str | Path, paths: Sequence[str | Path], **kwargs) -> SyncReport:
    """Index these files (or every image in these folders) of the collection now, as a sync would.

    Only what a sync would index is added (folders.image_file_problem: not hidden, not in a hidden
    folder, named as an image; a regular file): anything else would be removed again by the next
    sync. It is skipped with its reason, or refused in one line when it is the only path given.
    """
    bundle = load_bundle(index_dir, verify="sizes")
    roots, _ = collection_of(bundle)
    keys = set()
    for given in paths:
        number, relative, folder = _locate(roots, given)
        if len(paths) == 1:  # the one thing asked for: a refusal, not a report of 0 added
            problem = (
                image_file_problem(relative, folder=True) if folder else stat_image(number, roots[number], relative)
            )
            if isinstance(problem, str):
                raise InvalidArgumentError(f"cannot add {shown(str(given))}: it {problem}")
        # A folder is scanned by _scan_only as sync scans it, so what it skips is listed with its reason.
        keys.add((number, f"{relative}/" if folder and relative else relative))
    return sync(index_dir, only=keys, **kwargs)


def _locate(roots: list[Path], given: str | Path) -> tuple[int, str, bool]:
    """(root number, path relative to it, whether it is a folder) of a path given to `add`.

    A folder is resolved as the roots are (a link to the root is the root); a link to a file is
    indexed under its own name, as a scan finds it: only the folder it is in is resolved.
    """
    path = Path(given).expanduser()
    if not os.path.lexists(path):
        raise InvalidArgumentError(f"no such file: {shown(str(given))}: check the path")
    folder = path.is_dir()
    try:
        full = path.resolve() if folder else path.absolute().parent.resolve() / path.name
    except (OSError, RuntimeError) as exc:  # RuntimeError: Python 3.10's pathlib on a loop of links
        problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else "a symbolic link loop"
        raise InvalidArgumentError(
            f"cannot add {shown(str(given))}: the folder it is in cannot be found ({problem})"
        ) from None
    number = next((n for n, root in enumerate(roots) if root.is_dir() and full.is_relative_to(root)), None)
    if number is None:
        raise InvalidArgumentError(
            f"{shown(str(given))} is not inside the collection's folders ({', '.join(shown(str(r)) for r in roots)}): "
            "move it into one, or build a new index with --images"
        )
    relative = full.relative_to(roots[number]).as_posix()
    return number, "" if relative == "." else relative, folder


def _scan_only(roots: list[Path], keys: set[tuple[int, str]]) -> Scan:
    """A Scan of just these files, and of every image in these folders ((root, "prefix/"), (root, "")
    for all of it), stat only: what a full scan would not index is listed as skipped, with its reason."""
    files: dict[tuple[int, str], FileEntry] = {}
    skipped: list[Skipped] = []
    for number, path in sorted(keys):
        if path == "" or path.endswith("/"):
            found: list[FileEntry] = []
            scan_folder(number, roots[number], found, skipped, prefix=path)
            files.update((f.key, f) for f in found)
            continue
        entry = stat_image(number, roots[number], path)
        if isinstance(entry, str):
            skipped.append(Skipped(path, entry))
        else:
            files[entry.key] = entry
    # A file given twice (itself and in its folder) is scanned twice: listed once.
    return Scan(list(roots), sorted(files.values()), list(dict.fromkeys(skipped)))


def remove(index_dir: str | Path, targets: Sequence[int | str]) -> list[int]:
    """Tombstone images given by id or by path (relative to a collection root, or absolute); returns the ids."""
    bundle = load_bundle(index_dir, verify="sizes")
    by_path: dict[str, int] | None = None
    ids = []
    for target in targets:
        if isinstance(target, int | np.integer) and not isinstance(target, bool):
            ids.append(check_int(target, "an id to remove"))
            continue
        if isinstance(target, str) and target.strip().isascii() and target.strip().isdigit():
            ids.append(parse_int(target, "an id to remove"))
            continue
        if not isinstance(target, str):
            raise InvalidArgumentError(f"give ids (integers) or paths (text) to remove, got {type(target).__name__}")
        if by_path is None:
            roots = collection_of(bundle)[0] if bundle.manifest.get("collection") else []
            by_path = {}
            for (root, path), (id_, *_rest) in indexed_files(bundle).items():
                by_path[path] = id_
                if roots and root != PINNED:
                    by_path[str(roots[root] / path)] = id_
        path = str(Path(target).resolve()) if Path(target).is_absolute() else str(target)
        if path not in by_path:
            raise InvalidArgumentError(f"no indexed image has the path {shown(target)}: give an id or a path as listed")
        ids.append(by_path[path])
    # The writer checks again under its lock: an id removed meanwhile gets one line, not a double tombstone.
    remove_images(index_dir, ids)
    maintain(index_dir)
    return sorted(set(ids))


def _differs(file: FileEntry, indexed: tuple | None) -> bool:
    return indexed is None or indexed[1] != file.size or indexed[2] != file.mtime_ns


def _label(class_names: list[str], path: str) -> int:
    name = folder_label(path)
    if name is None:
        return NO_LABEL
    if name not in class_names:
        class_names.append(name)  # a new class folder: appended, so existing labels keep their numbers
    return class_names.index(name)

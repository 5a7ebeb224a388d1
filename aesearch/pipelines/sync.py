"""Syncing a folder collection: scan -> read candidates -> plan -> the rows to write.

The writer (writer.py, Collection.sync and add_files) holds the lock and the bundle, and publishes
what sync_rows() returns as one update. Mark and sweep, as rclip does, on (root, path, size, mtime):
  * scan: list the roots (sources/folders.py); a file with the path, size and mtime it was indexed
    with is unchanged and never read;
  * read: the others are hashed, decoded and preprocessed, on every core; unreadable files are
    skipped with a reason, and an indexed file that became unreadable keeps its entry, as do the files
    of a folder that cannot be listed; a missing root stops the sync in one line;
  * plan: plan.py sorts the files read into touched, changed, moved and added, and the vanished ones
    into removed, from records alone; images added through the Python API (Collection.add) are pinned
    (their record's root is PINNED) and no sync removes them;
  * rows: new content is encoded; a moved or touched file's stored image and vector are copied.

A sync never empties an index by accident: a plan that would remove a whole root's images or more
than MASS_REMOVAL_SHARE of the index is refused in one line, with nothing written, unless
allow_mass_removal (`--allow-mass-removal`). Ids are never reused: an image removed by mistake and
synced back gets a new id, so an id someone kept can never come to mean another image. A kill -9 at
any moment leaves the last published state; running sync again redoes the unpublished part, so
nothing is lost or indexed twice.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aesearch.errors import AesearchError, InvalidArgumentError, MissingRootError
from aesearch.pipelines.plan import Found, IndexedFile, Key, plan_sync
from aesearch.pipelines.update import embed
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
from aesearch.store.bundle import Bundle
from aesearch.store.paths import shown
from aesearch.store.records import NO_LABEL, PINNED, ROOT, new_records


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
        parts = [
            f"{len(self.added):,} added",
            f"{len(self.changed):,} changed",
            f"{len(self.moved):,} moved",
            f"{len(self.removed):,} removed",
            f"{len(self.skipped):,} skipped",
            f"{self.unchanged:,} unchanged",
        ]
        tail = f"; {self.maintenance}" if self.maintenance else ""
        head = "Dry run (nothing written): " if self.dry_run else ""
        refused = f". A sync would refuse: {self.refused}" if self.refused else ""
        return f"{head}{', '.join(parts)} ({self.count:,} images, {self.seconds:.1f} s{tail}){refused}"

    def to_dict(self) -> dict:
        return {
            "added": self.added,
            "changed": self.changed,
            "moved": [{"from": a, "to": b} for a, b in self.moved],
            "removed": self.removed,
            "skipped": [{"path": s.path, "reason": s.reason} for s in self.skipped],
            "unchanged": self.unchanged,
            "dry_run": self.dry_run,
            "maintenance": self.maintenance,
            "count": self.count,
            "seconds": self.seconds,
            "refused": self.refused,
        }


class MassRemovalError(AesearchError):
    """A sync would remove a whole root's images, or more than MASS_REMOVAL_SHARE of the index."""


def collection_of(bundle: Bundle, command: str = "sync") -> tuple[list[Path], str | None]:
    """The roots and label mode a bundle was built from, or one line saying it was not built from
    files (command: what was asked, named in that line)."""
    collection = bundle.manifest.get("collection")
    if not isinstance(collection, dict) or not collection.get("roots"):
        raise InvalidArgumentError(
            f"{bundle.path} was not built from folders of images: {command} works on bundles built with "
            "`aesearch build-index --images DIR`"
        )
    return [Path(r) for r in collection["roots"]], collection.get("labels")


def indexed_files(bundle: Bundle) -> dict[Key, IndexedFile]:
    """(root, path) -> (id, bytes, mtime_ns, content hash) of every live image, from the records."""
    out = {}
    for number, segment in enumerate(bundle.segments):
        rows = bundle.live_rows(number)
        records = segment.records[rows]
        columns = [records[name].tolist() for name in (ROOT, "id", "bytes", "mtime_ns", "content_hash")]
        for root, path, *entry in zip(columns[0], segment.paths(rows), *columns[1:], strict=True):
            out[(root, path)] = IndexedFile(*entry)
    return out


_MASS_REMOVAL_ADVICE = (
    "If a disk is unmounted or a folder moved, reconnect or restore it and sync again; if the files are "
    "really gone, run `aesearch sync --allow-mass-removal`"
)


@dataclass
class SyncRows:
    """What a sync publishes: one row per file read (ids set, -1 for a new one), and the ids removed."""

    records: np.ndarray
    images: np.ndarray
    embeddings: np.ndarray
    paths: list[str]
    removed: list[int]
    class_names: list[str]


def sync_rows(
    bundle: Bundle,
    report: SyncReport,
    *,
    dry_run: bool = False,
    workers: int | None = None,
    only: set[Key] | None = None,
    allow_mass_removal: bool = False,
) -> SyncRows | None:
    """Scan, read and plan a sync of this bundle; fill report; the rows to publish (None: nothing to write).

    only: sync just these (root, path) files and remove nothing (`aesearch add`).
    allow_mass_removal: publish a sync that removes a whole root's images or more than
        MASS_REMOVAL_SHARE of the index (refused otherwise: MassRemovalError).
    """
    roots, labels = collection_of(bundle)
    for root in roots:  # an unmounted disk must not read as "every file was deleted"
        if not root.exists():
            raise MissingRootError(
                f"{shown(str(root))}, a folder this index was built from, is missing: reconnect or restore it, "
                "then sync again (nothing was changed)"
            )
    found = scan(roots) if only is None else _scan_only(roots, only)
    report.skipped += found.skipped
    indexed = indexed_files(bundle)
    # A new file under the name of an image added in Python: two images of one path, which `remove
    # PATH` can no longer tell apart (Collection.add refuses a name a file has, too): left out, said.
    new = [f for f in found.files if f.key not in indexed]
    named = {path: entry.id for (root, path), entry in indexed.items() if root == PINNED} if new else {}
    clashing = {f.key for f in new if f.path in named}
    report.skipped += [
        Skipped(
            path,
            f"an image added in Python has this name (id {named[path]}): rename the file, or "
            f"`aesearch remove {named[path]}` first",
        )
        for _, path in sorted(clashing)
    ]
    candidates = [f for f in found.files if f.key not in clashing and _differs(f, indexed.get(f.key))]
    report.unchanged = len(found.files) - len(candidates) - len(clashing)
    chunks = list(read_files(roots, candidates, workers=workers, model_config=bundle.checkpoint.model_config))
    report.skipped += [s for c in chunks for s in c.skipped]
    files = [f for c in chunks for f in c.files]
    images = np.concatenate([c.images for c in chunks]) if chunks else np.zeros((0, *bundle.image_shape), np.uint8)
    hashes = np.concatenate([c.hashes for c in chunks]) if chunks else np.zeros(0, "S16")

    seen = Found(
        roots=[str(r) for r in roots],
        listed={f.key for f in found.files},
        read=dict(zip((f.key for f in files), hashes.tolist(), strict=True)),
        unlisted=[s.unlisted for s in found.skipped if s.unlisted],
        only=only is not None,
    )
    plan = plan_sync(indexed, seen, allow_mass_removal=allow_mass_removal)
    report.added = [key[1] for key in plan.added]
    report.changed = [key[1] for key, _ in sorted([*plan.changed, *plan.touched])]
    report.moved = [(a[1], b[1]) for a, b, _ in plan.moved]
    report.removed = [key[1] for key, _ in plan.removed]
    report.refused = plan.refused
    if plan.refused and not dry_run:
        raise MassRemovalError(f"{plan.refused}; nothing was changed. {_MASS_REMOVAL_ADVICE}")
    if dry_run or not (files or plan.removed):
        return None

    class_names = list(bundle.class_names)
    ids, copies = plan.ids(), plan.copies()
    records = new_records(len(files))
    records["id"], records["content_hash"] = [ids[f.key] for f in files], hashes
    records[ROOT] = [f.root for f in files]
    records["bytes"], records["mtime_ns"] = [f.size for f in files], [f.mtime_ns for f in files]
    if labels == "folders":
        records["label"] = [_label(class_names, f.path) for f in files]
    embeddings = np.zeros((len(files), bundle.manifest["z_size"]), np.float32)
    pixels = images.copy()
    copy_rows = [row for row, f in enumerate(files) if f.key in copies]
    encode_rows = [row for row, f in enumerate(files) if f.key not in copies]
    if copy_rows:  # moved or touched: the stored image and vector, never encoded again
        sources = [copies[files[row].key] for row in copy_rows]
        # A few rows of a large segment are not worth hashing it whole for; a compaction checks everything.
        bundle.verify_segments(bundle.locate(sources)[0].tolist(), small_bundles_only=True)
        embeddings[copy_rows], pixels[copy_rows] = bundle.embeddings(sources), bundle.images(sources)
    if encode_rows:
        embeddings[encode_rows] = embed(bundle, images[encode_rows])
    removed = [id_ for _, id_ in plan.removed]
    return SyncRows(records, pixels, embeddings, [f.path for f in files], removed, class_names)


def files_to_add(bundle: Bundle, paths: Sequence[str | Path]) -> set[Key]:
    """The (root, path) keys of these files (or of every image in these folders) of the collection.

    Only what a sync would index is added (folders.image_file_problem: not hidden, not in a hidden
    folder, named as an image; a regular file): anything else would be removed again by the next
    sync. It is skipped with its reason, or refused in one line when it is the only path given.
    """
    roots, _ = collection_of(bundle, "add")
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
    return keys


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
        full = path.resolve() if folder else file_path(path)
    except (OSError, RuntimeError) as exc:  # RuntimeError: Python 3.10's pathlib on a loop of links
        problem = exc.strerror if isinstance(exc, OSError) and exc.strerror else "a symbolic link loop"
        raise InvalidArgumentError(
            f"cannot add {shown(str(given))}: the folder it is in cannot be found ({problem})"
        ) from None
    number = next((n for n, root in enumerate(roots) if root.is_dir() and full.is_relative_to(root)), None)
    if number is None:
        lists = [r for r in roots if r.is_file()]
        if lists:  # a list's images are what it names: "move it into a folder" would not add it
            raise InvalidArgumentError(
                f"{shown(str(given))} is not inside the collection's folders, and its list "
                f"{shown(str(lists[0]))} is read as written: add the path to the list, then run `aesearch sync`"
            )
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


def file_path(given: str | Path) -> Path:
    """A collection file's path as the index keys it: absolute, its folders resolved (the roots are),
    its own name kept (a link to a file is indexed under the link's name, as a scan finds it)."""
    path = Path(given).expanduser().absolute()
    return path.parent.resolve() / path.name


def ids_by_path(bundle: Bundle) -> dict[str, list[int]]:
    """Every live image's path -> the ids listed with it; for a collection, also the file's absolute
    path; each also as shown (paths.shown: undecodable bytes as \\xff, a newline as \\n), as a table
    lists it. More than one id: the same relative path under two roots, a name given in Python, or a
    name spelled as another's listed form."""
    roots = collection_of(bundle)[0] if bundle.manifest.get("collection") else []
    bases = [r.parent if r.is_file() else r for r in roots]  # a list's paths are relative to its folder
    out: dict[str, list[int]] = {}
    for (root, path), entry in indexed_files(bundle).items():
        if not path:  # an image with no file (a dataset's): no path finds it (`remove ""` removed one)
            continue
        names = [path, str(bases[root] / path)] if roots and root != PINNED else [path]
        for name in names:  # and each as listed (shown): `remove 'bad\xff.png'`, copied from a table
            for key in dict.fromkeys((name, shown(name))):
                out.setdefault(key, []).append(entry.id)
    return out


def _differs(file: FileEntry, indexed: IndexedFile | None) -> bool:
    return indexed is None or indexed.size != file.size or indexed.mtime_ns != file.mtime_ns


def _label(class_names: list[str], path: str) -> int:
    name = folder_label(path)
    if name is None:
        return NO_LABEL
    if name not in class_names:
        class_names.append(name)  # a new class folder: appended, so existing labels keep their numbers
    return class_names.index(name)

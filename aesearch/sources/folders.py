"""A user's own images: folders scanned recursively, decoded and preprocessed on every core.

    scan(roots) -> Scan                      stat only: which files, their size and mtime (cheap; sync
                                             compares these with the index before reading anything)
    read_files(scan.roots, files) -> chunks  read, hash, decode and preprocess: the 28x28 uint8 image
                                             the encoder sees, in order, ReadChunk by ReadChunk

Decoding is the cost of indexing a folder (a 28x28 PNG costs more to open than to encode), so files
are read by a pool of worker processes, one per core, in batches; results come back in order, a
bounded number of batches in flight, so a build can stream. A file that cannot be used (corrupt,
not an image, permission denied, vanished mid-scan) is listed with one reason and skipped: it never
aborts a build or a sync. Torch-free, like the query path.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from aesearch.errors import AesearchError, InvalidArgumentError, reason
from aesearch.sources.chunks import NO_LABEL, Chunk

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
HASH_BYTES = 16
BATCH = 256  # files per task sent to a worker: amortises the inter-process round trip
_INLINE_BELOW = 64  # fewer files than this are read in this process: a pool costs more to start
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def content_hash(data: bytes) -> bytes:
    """16-byte BLAKE2b of a file's bytes: how a moved or renamed file is recognised."""
    return hashlib.blake2b(data, digest_size=HASH_BYTES).digest()


class FileEntry(NamedTuple):  # a tuple: a scan makes one per file, and sorts and compares them
    root: int  # which of the scan's roots
    path: str  # relative to that root, "/"-separated (absolute for a listed file outside its list's folder)
    size: int
    mtime_ns: int

    @property
    def key(self) -> tuple[int, str]:
        return (self.root, self.path)


@dataclass(frozen=True)
class Skipped:
    path: str  # as the user would type it: the root joined with the relative path
    reason: str  # one line: what is wrong with it
    unlisted: tuple[int, str] | None = None  # a folder that could not be listed: (root, relative prefix)


@dataclass
class Scan:
    roots: list[Path]  # absolute
    files: list[FileEntry]  # sorted by (root, path)
    skipped: list[Skipped] = field(default_factory=list)  # folders that could not be listed, missing list entries


@dataclass
class ReadChunk:
    """Files read successfully, row-aligned, and those that were not."""

    files: list[FileEntry]  # size and mtime as found when the file was read
    images: np.ndarray  # (n, 28, 28) uint8: the preprocessed images
    hashes: np.ndarray  # (n,) S16 content hashes
    skipped: list[Skipped]


def collection_roots(images: Sequence[str | Path] = (), images_from: str | Path | None = None) -> list[Path]:
    """The roots a collection is scanned from: the --images folders, and the folder of a --images-from list."""
    roots = []
    for folder in images:
        path = Path(folder).expanduser()
        if not path.exists():
            raise InvalidArgumentError(f"no such folder: {folder}: check the path given to --images")
        if not path.is_dir():
            raise InvalidArgumentError(f"{folder} is a file, not a folder: give --images a folder of images")
        roots.append(path.resolve())
    if images_from is not None:
        listing = Path(images_from).expanduser()
        if not listing.is_file():
            raise InvalidArgumentError(f"no such list: {images_from}: give --images-from a text file, one path a line")
        roots.append(listing.resolve())
    if not roots:
        raise InvalidArgumentError("give at least one --images FOLDER or an --images-from LIST.txt")
    if len(set(roots)) != len(roots):
        raise InvalidArgumentError("the same folder is given twice: give each --images folder once")
    return roots


def scan(roots: Sequence[Path]) -> Scan:
    """Every image file (by suffix) under each root, recursively; a root that is a file is a list of paths.

    Hidden files and folders (names starting with ".") are left out; symbolic links to files are
    followed, links to folders are not (no cycles).
    """
    files: list[FileEntry] = []
    skipped: list[Skipped] = []
    for number, root in enumerate(roots):
        if root.is_file():
            _scan_list(number, root, files, skipped)
        else:
            _scan_folder(number, root, files, skipped)
    files.sort()  # by root, then path (NamedTuple order)
    return Scan(list(roots), files, skipped)


def _scan_folder(number: int, root: Path, files: list[FileEntry], skipped: list[Skipped]) -> None:
    """os.scandir, recursively: one stat per file and no path-string parsing beyond the suffix."""
    folders = [(str(root), "")]
    while folders:
        folder, prefix = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            skipped.append(Skipped(folder, f"cannot list this folder ({exc.strerror})", unlisted=(number, prefix)))
            continue
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append((entry.path, f"{prefix}{name}/"))
                    continue
                if name[name.rfind(".") :].lower() not in IMAGE_SUFFIXES:
                    continue
                st = entry.stat()
            except OSError as exc:
                skipped.append(Skipped(entry.path, _os_reason(exc)))
                continue
            files.append(FileEntry(number, prefix + name, st.st_size, st.st_mtime_ns))


def _scan_list(number: int, listing: Path, files: list[FileEntry], skipped: list[Skipped]) -> None:
    """A text file of paths, one a line (relative ones to the list's folder); blank and # lines ignored."""
    base = listing.parent
    try:
        lines = listing.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidArgumentError(f"cannot read {listing} ({reason(exc)}): give a UTF-8 text file") from None
    seen = set()
    for line in lines:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = (base / Path(entry).expanduser()).resolve()
        try:
            rel = path.relative_to(base).as_posix()
        except ValueError:
            rel = str(path)
        if rel in seen:
            continue
        seen.add(rel)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            skipped.append(Skipped(entry, "no such file"))
            continue
        except OSError as exc:
            skipped.append(Skipped(entry, _os_reason(exc)))
            continue
        if not os.path.isfile(path):
            skipped.append(Skipped(entry, "is a folder, not an image file"))
            continue
        files.append(FileEntry(number, rel, st.st_size, st.st_mtime_ns))


def full_path(roots: Sequence[Path], entry: FileEntry) -> Path:
    root = roots[entry.root]
    base = root.parent if root.is_file() else root
    return base / entry.path


def folder_label(path: str) -> str | None:
    """The first-level subfolder a file is in (its class with `--labels folders`), or None at the top."""
    head, sep, _ = path.partition("/")
    return head if sep and not path.startswith("/") else None


def folder_classes(files: Sequence[FileEntry]) -> list[str]:
    """The class names of `--labels folders`: every first-level subfolder that holds image files, sorted."""
    return sorted({folder_label(f.path) for f in files} - {None})


class FolderSource:
    """The ChunkSource of a scanned collection: files are read (on every core) as the build asks for them.

    count is the number of files found. A file that cannot be used yields no image: it is listed in
    its chunk's `skipped`, so a build may hold fewer images than count. The cursor is a position in
    the scan's file list, so a resumed build reads none of the files before it. With
    labels="folders", labels number folder_classes(); the build drops the classes whose files all
    turned out unreadable (prune_classes).
    """

    prune_classes = True

    def __init__(self, found: Scan, labels: str | None = None, *, workers: int | None = None) -> None:
        self.found, self.labels, self.workers = found, labels, workers
        self._class_names = folder_classes(found.files) if labels else []
        self._number = {name: n for n, name in enumerate(self._class_names)}

    @property
    def count(self) -> int:
        return len(self.found.files)

    @property
    def split_names(self) -> list[str]:
        return ["collection"]

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    @property
    def fit_split(self) -> int | None:
        return None

    @property
    def fingerprint(self) -> str:
        """The scan itself: every file's path, size and mtime (a file changed since: the build starts over)."""
        digest = hashlib.sha256(json.dumps([[str(r) for r in self.found.roots], self.labels]).encode())
        for f in self.found.files:
            digest.update(f"{f.root}\0{f.path}\0{f.size}\0{f.mtime_ns}\n".encode())
        return digest.hexdigest()

    def describe(self) -> str:
        return f"{self.count:,} image files under {', '.join(str(r) for r in self.found.roots)}"

    def info(self) -> dict:
        return {
            "dataset": "folders",
            "class_names": self._class_names,
            "split_names": self.split_names,
            "collection": {"roots": [str(r) for r in self.found.roots], "labels": self.labels},
        }

    def chunks(self, chunk_size: int, start: int = 0) -> Iterator[Chunk]:
        """Chunks of at most chunk_size images; each holds the files read since the previous one."""
        batch = max(1, min(BATCH, chunk_size))
        pieces: list[ReadChunk] = []
        held = 0  # images in pieces
        cursor = start
        for piece in read_files(self.found.roots, self.found.files[start:], workers=self.workers, batch=batch):
            if held and held + len(piece.files) > chunk_size:
                yield self._chunk(pieces, cursor)
                pieces, held = [], 0
            pieces.append(piece)
            held += len(piece.files)
            cursor += len(piece.files) + len(piece.skipped)
        if pieces:
            yield self._chunk(pieces, cursor)

    def _chunk(self, pieces: list[ReadChunk], cursor: int) -> Chunk:
        files = [f for piece in pieces for f in piece.files]
        return Chunk(
            images=np.concatenate([p.images for p in pieces]),
            cursor=cursor,
            labels=np.array([self._number.get(folder_label(f.path), NO_LABEL) for f in files], dtype=np.int16)
            if self.labels
            else None,
            positions=np.array([f.root for f in files], dtype=np.int64),  # which root (as read_collection)
            paths=[f.path for f in files],
            sizes=np.array([f.size for f in files], dtype=np.int64),
            mtimes_ns=np.array([f.mtime_ns for f in files], dtype=np.int64),
            hashes=np.concatenate([p.hashes for p in pieces]),
            skipped=[s for p in pieces for s in p.skipped],
        )


def read_files(
    roots: Sequence[Path], files: Sequence[FileEntry], *, workers: int | None = None, batch: int = BATCH
) -> Iterator[ReadChunk]:
    """Read, hash, decode and preprocess files, in their order, one ReadChunk per batch.

    Args:
        workers: processes to decode with (default: one per core); 1 reads in this process.
    """
    workers = _CORES if workers is None else workers
    batches = [list(files[i : i + batch]) for i in range(0, len(files), batch)]
    base = [str(r.parent if r.is_file() else r) for r in roots]
    if workers <= 1 or len(files) < _INLINE_BELOW:
        for items in batches:
            yield _chunk(items, _read_batch(base, [(f.root, f.path) for f in items]))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # fork: workers start in milliseconds and need no importable __main__ (forkserver and spawn re-run
    # a caller's script without a main guard). They use Pillow and element-wise NumPy only, never the
    # BLAS or OpenMP pools a parent's threads may hold.
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending = []
        for items in batches:
            pending.append((items, pool.submit(_read_batch, base, [(f.root, f.path) for f in items])))
            if len(pending) >= 2 * workers:  # bounded: memory stays a few batches, whatever the collection
                items, future = pending.pop(0)
                yield _chunk(items, future.result())
        for items, future in pending:
            yield _chunk(items, future.result())


def _chunk(items: list[FileEntry], result: tuple) -> ReadChunk:
    images, hashes, sizes, mtimes, problems = result
    kept, skipped = [], []
    for n, item in enumerate(items):
        if problems[n] is None:
            kept.append(FileEntry(item.root, item.path, int(sizes[n]), int(mtimes[n])))
        else:
            skipped.append(Skipped(item.path, problems[n]))
    ok = np.array([p is None for p in problems], dtype=bool)
    return ReadChunk(kept, images[ok], hashes[ok], skipped)


def _read_batch(base: list[str], items: list[tuple[int, str]]) -> tuple:
    """In a worker: each file's preprocessed uint8 image, hash, size and mtime, or why it failed."""
    from aesearch.search.preprocess import preprocess

    n = len(items)
    images = np.zeros((n, 28, 28), dtype=np.uint8)
    hashes = np.zeros(n, dtype=f"S{HASH_BYTES}")
    sizes, mtimes = np.zeros(n, np.int64), np.zeros(n, np.int64)
    problems: list[str | None] = [None] * n
    for i, (root, path) in enumerate(items):
        full = os.path.join(base[root], path)
        try:
            with open(full, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
            sizes[i], mtimes[i], hashes[i] = st.st_size, st.st_mtime_ns, content_hash(data)
            images[i] = np.round(preprocess(data, name=path) * np.float32(255)).astype(np.uint8)
        except OSError as exc:
            problems[i] = _os_reason(exc)
        except AesearchError as exc:
            problems[i] = _short(str(exc), path)
        except Exception as exc:  # a decoder bug on one hostile file must not end a build of thousands
            problems[i] = f"cannot be decoded ({type(exc).__name__}: {reason(exc)})"
    return images, hashes, sizes, mtimes, problems


def _os_reason(exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "vanished during the scan"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"cannot be read ({exc.strerror or reason(exc)})"


def _short(message: str, path: str) -> str:
    """An ImageError's message without the file name it starts with (the listing names the file)."""
    return message[len(path) :].lstrip(" :") if message.startswith(path) else message

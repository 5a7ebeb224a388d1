"""A user's own images: folders scanned recursively, decoded and preprocessed on every core.

    scan(roots) -> Scan                      stat only: which files, their size and mtime (cheap; sync
                                             compares these with the index before reading anything)
    read_files(scan.roots, files) -> chunks  read, hash, decode and preprocess: the model's uint8 input
                                             the encoder sees, in order, ReadChunk by ReadChunk

Decoding is the cost of indexing a folder (a 28x28 PNG costs more to open than to encode), so files
are read by a pool of worker processes, one per core, in batches; results come back in order, a
bounded number of batches in flight, so a build can stream. A file that cannot be used (corrupt,
not an image, permission denied, vanished mid-scan) is listed with one reason and skipped: it never
aborts a build or a sync. Torch-free, like the query path.

Folders hold more than images, and not all of it is safe to read. Only regular files are read: a
named pipe blocks whoever opens it, a device (a link to /dev/zero named like an image) never ends.
The scan leaves them out (stat says what a file is, through any links), and the read checks again
on the open file, since a file can be replaced between the two. Every read is bounded: in bytes
(MAX_FILE_BYTES), in time (MAX_READ_SECONDS: a hung network disk must not stall a sync), and a file
that changes while it is read is skipped rather than indexed half-written. Worker processes die
with the process that started them and never hold its writer lock (store/lock.py).

File names are whatever bytes the file system allowed: paths here are str with undecodable bytes
as lone surrogates (os.fsdecode), stored as the original bytes (store/paths.py) and shown to a
person through paths.shown().
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import stat
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from aesearch import defaults
from aesearch.errors import AesearchError, ImageTooLargeError, InvalidArgumentError, reason
from aesearch.model.architecture import ModelConfig
from aesearch.sources.chunks import NO_LABEL, Chunk
from aesearch.store.paths import shown

SEED_CONFIG = ModelConfig()  # whose contract applies when none is given
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp", ".tif", ".tiff"})
HASH_BYTES = 16
BATCH = 256  # files per task sent to a worker: amortises the inter-process round trip
_INLINE_BELOW = 64  # fewer files than this are read in this process: a pool costs more to start
_CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
# Read at call time (tests lower them); workers are forked, so they see the parent's values.
MAX_FILE_BYTES = defaults.MAX_FILE_BYTES
MAX_READ_SECONDS = defaults.MAX_READ_SECONDS
_OPEN_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)


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
    images: np.ndarray  # (n, *image_shape) uint8: the images preprocessed for the model
    hashes: np.ndarray  # (n,) S16 content hashes
    skipped: list[Skipped]


def collection_roots(images: Sequence[str | Path] = (), images_from: str | Path | None = None) -> list[Path]:
    """The roots a collection is scanned from: the images folders, and the folder of an images_from list."""
    roots = []
    for folder in images:
        if not str(folder).strip():  # Path("") is the current folder: never what an empty value meant
            raise InvalidArgumentError("an `images` folder is empty text: give a folder's path", parameter="images")
        path = Path(folder).expanduser()
        if not path.exists():
            raise InvalidArgumentError(
                f"no such folder: {shown(str(folder))}: check the path given to `images`", parameter="images"
            )
        if not path.is_dir():
            raise InvalidArgumentError(
                f"{shown(str(folder))} is a file, not a folder: give `images` a folder", parameter="images"
            )
        roots.append(path.resolve())
    if images_from is not None:
        listing = Path(images_from).expanduser()
        if not listing.is_file():
            name = shown(str(images_from))
            problem = f"{name} is not a file" if listing.exists() else f"no such list: {name}"
            raise InvalidArgumentError(
                f"{problem}: give `images_from` a text file, one path a line", parameter="images_from"
            )
        roots.append(listing.resolve())
    if not roots:
        raise InvalidArgumentError(
            "give at least one `images` FOLDER or an `images_from` LIST.txt", parameter=("images", "images_from")
        )
    if len(set(roots)) != len(roots):
        raise InvalidArgumentError("the same folder is given twice: give each `images` folder once", parameter="images")
    folders = [root for root in roots if root.is_dir()]
    for inner in folders:  # its images would be indexed twice, once under each root, and synced twice
        outer = next((other for other in folders if other != inner and inner.is_relative_to(other)), None)
        if outer is not None:
            raise InvalidArgumentError(
                f"{shown(str(inner))} is inside {shown(str(outer))}, whose images it already holds: give `images` "
                f"{shown(str(outer))} alone",
                parameter="images",
            )
    return roots


def image_file_problem(path: str, *, folder: bool = False) -> str | None:
    """Why a path relative to its root ("/"-separated) is not an image file a scan indexes, or None.

    The one definition of "an image file" that build, sync and add share: not hidden, not in a
    hidden folder, and named with an image suffix. folder=True asks the same of a folder: whether
    a scan would look inside it.
    """
    parts = path.split("/") if path else []
    folders, name = (parts, None) if folder else (parts[:-1], parts[-1] if parts else "")
    for n, part in enumerate(folders):
        if _hidden(part):
            last = folder and n == len(folders) - 1
            return f"{'is a hidden folder' if last else f'is in a hidden folder ({shown(part)})'}: scans leave them out"
    return None if name is None else _name_problem(name)


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _name_problem(name: str) -> str | None:
    if _hidden(name):
        return "is a hidden file (its name starts with a dot): scans leave hidden files out"
    dot = name.rfind(".")
    if dot <= 0 or name[dot:].lower() not in IMAGE_SUFFIXES:
        return f"is not named as an image file (give it one of the suffixes {', '.join(sorted(IMAGE_SUFFIXES))})"
    if _result_picture(name):
        return "is a picture aesearch wrote (a query's result, explanation or interpolation): scans leave them out"
    return None


# Every file of a scan is asked both: one C-level endswith over a tuple each, not a Python loop
# (which cost 60 ms a sync of 70,000 files, 9% of a sync with nothing changed).
_RESULT_PICTURE_ENDINGS = tuple(f".{kind}.png" for kind in defaults.RESULT_PICTURE_KINDS)


def _result_picture(name: str) -> bool:
    """NAME.aesearch.png, NAME.explain.png, NAME.interpolation.png: aesearch's pictures, not the collection's images."""
    return name.lower().endswith(_RESULT_PICTURE_ENDINGS)


def _bundle_figure(folder: str, name: str) -> bool:
    """INDEX-eval.png and the like beside a bundle INDEX in the same folder: a figure of the index."""
    if not name.endswith(defaults.BUNDLE_FIGURE_SUFFIXES):
        return False
    suffix = next(s for s in defaults.BUNDLE_FIGURE_SUFFIXES if name.endswith(s))
    # one stat, for these names only
    return len(name) > len(suffix) and os.path.isfile(os.path.join(folder, name[: -len(suffix)], "manifest.json"))


def file_problem(st: os.stat_result, *, link: bool = False, limit: int | None = None) -> str | None:
    """Why a file, as stat (through any links) describes it, is not read: not a regular file, too big."""
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS if test(st.st_mode)), "not a regular file")
        return f"{'links to' if link else 'is'} {kind}: only regular files are read as images"
    limit = MAX_FILE_BYTES if limit is None else limit
    if st.st_size > limit:
        return f"is {_bytes(st.st_size)}, over the {_bytes(limit)} an image file may have: not read"
    return None


_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}".replace(".0 ", " ")
    return f"{n} bytes"


def stat_image(number: int, root: Path, path: str) -> FileEntry | str:
    """The FileEntry of one file under a root (stat only, through links), or why it is not indexed."""
    problem = image_file_problem(path)
    if problem:
        return problem
    full = os.path.join(root, path)
    try:
        st = os.stat(full)
    except OSError as exc:
        return _os_reason(exc, full)
    if file_problem(st) is None:
        return FileEntry(number, path, st.st_size, st.st_mtime_ns)
    return file_problem(st, link=os.path.islink(full))


def scan(roots: Sequence[Path]) -> Scan:
    """Every image file (image_file_problem) under each root, recursively; a root that is a file is a list of paths.

    Hidden files and folders (names starting with ".") are left out; symbolic links to files are
    followed, links to folders are not (no cycles). Files named as images that are not regular
    files, or are too big, are listed as skipped.
    """
    files: list[FileEntry] = []
    skipped: list[Skipped] = []
    for number, root in enumerate(roots):
        if root.is_file():
            _scan_list(number, root, files, skipped)
        else:
            scan_folder(number, root, files, skipped)
    files.sort()  # by root, then path (NamedTuple order)
    return Scan(list(roots), files, skipped)


def scan_folder(number: int, root: Path, files: list[FileEntry], skipped: list[Skipped], prefix: str = "") -> None:
    """os.scandir, recursively, from root/prefix (prefix "" or ending in "/"): one stat per image file.

    No path-string parsing beyond the suffix: a million files are scanned in seconds.
    """
    folders = [(os.path.join(root, prefix[:-1]) if prefix else str(root), prefix)]
    while folders:
        folder, prefix = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            problem = f"cannot list this folder ({exc.strerror or reason(exc)})"
            skipped.append(Skipped(folder, problem, unlisted=(number, prefix)))
            continue
        for entry in entries:
            name = entry.name
            if _hidden(name):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append((entry.path, f"{prefix}{name}/"))
                    continue
                if _name_problem(name) or _bundle_figure(folder, name):
                    continue  # not an image by its name, or aesearch's own: not worth a line
                st = entry.stat()  # through a link: what the link points to
                link = entry.is_symlink()  # from the listing: no system call
            except OSError as exc:
                skipped.append(Skipped(entry.path, _os_reason(exc, entry.path)))
                continue
            problem = file_problem(st, link=link)
            if problem:
                skipped.append(Skipped(entry.path, problem))
                continue
            files.append(FileEntry(number, prefix + name, st.st_size, st.st_mtime_ns))


def _scan_list(number: int, listing: Path, files: list[FileEntry], skipped: list[Skipped]) -> None:
    """A text file of paths, one a line (relative ones to the list's folder); blank and # lines ignored.

    Its lines are the file system's bytes: UTF-8 as a rule, and a name that is not valid UTF-8 is
    still found (surrogateescape), as `find > list.txt` writes it.
    """
    base = listing.parent
    try:
        data = _read_regular(str(listing), MAX_FILE_BYTES)[0]  # bounded, as an image is: it may be anything
    except OSError as exc:
        raise InvalidArgumentError(
            f"cannot read the list {shown(str(listing))} ({exc.strerror or reason(exc)}): give a text file, one "
            "path a line"
        ) from None
    except _Unusable as exc:
        raise InvalidArgumentError(f"cannot read the list {shown(str(listing))}: it {exc}") from None
    seen = set()
    for line in os.fsdecode(data).splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        if "\0" in entry:
            skipped.append(Skipped(entry, "holds a NUL character, which no file name has: check the list"))
            continue
        try:
            path = (base / Path(entry).expanduser()).resolve()
        except (OSError, RuntimeError) as exc:  # RuntimeError: Python 3.10's pathlib on a link loop
            skipped.append(Skipped(entry, _os_reason(exc) if isinstance(exc, OSError) else "is a symbolic link loop"))
            continue
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
        problem = file_problem(st)  # the path is resolved: no link is left to name
        if problem:
            skipped.append(Skipped(entry, problem))
            continue
        files.append(FileEntry(number, rel, st.st_size, st.st_mtime_ns))


def folder_label(path: str) -> str | None:
    """The first-level subfolder a file is in (its class with `--labels folders`), or None at the top."""
    head, sep, _ = path.partition("/")
    return head if sep and not path.startswith("/") else None


def folder_classes(files: Sequence[FileEntry]) -> list[str]:
    """The class names of `--labels folders`: every first-level subfolder that holds image files, sorted."""
    return sorted({folder_label(f.path) for f in files} - {None})


@dataclass(frozen=True)
class CollectionTraits:
    """What a sample of a collection's images says about it: colour or grey, and how large."""

    sampled: int  # images read
    colour_share: float  # share of them with colour (chroma above defaults.COLOUR_CHROMA)
    median_edge: int  # their median longest edge, in pixels

    @property
    def colour(self) -> bool:
        return self.sampled > 0 and self.colour_share >= defaults.COLOUR_SHARE


def collection_traits(found: Scan, sample: int = defaults.COLLECTION_SAMPLE) -> CollectionTraits:
    """Read up to `sample` files, evenly spaced over the scan's order (unreadable ones are passed over)."""
    from aesearch.sources.preprocess import image_traits

    files = found.files
    count = min(sample, len(files))
    picked = sorted({round(i * (len(files) - 1) / max(1, count - 1)) for i in range(count)})
    base = [str(r.parent if r.is_file() else r) for r in found.roots]
    chromas, edges = [], []
    for i in picked:
        entry = files[i]
        try:
            chroma, edge = image_traits(os.path.join(base[entry.root], entry.path))
        except (AesearchError, OSError):
            continue
        chromas.append(chroma)
        edges.append(edge)
    if not chromas:
        return CollectionTraits(0, 0.0, 0)
    share = float(np.mean(np.array(chromas) > defaults.COLOUR_CHROMA))
    return CollectionTraits(len(chromas), share, int(np.median(edges)))


class FolderSource:
    """The ChunkSource of a scanned collection: files are read (on every core) as the build asks for them.

    count is the number of files found. A file that cannot be used yields no image: it is listed in
    its chunk's `skipped`, so a build may hold fewer images than count. The cursor is a position in
    the scan's file list, so a resumed build reads none of the files before it. With
    labels="folders", labels number folder_classes(); the build drops the classes whose files all
    turned out unreadable (prune_classes).
    """

    prune_classes = True

    def __init__(
        self,
        found: Scan,
        labels: str | None = None,
        *,
        workers: int | None = None,
        model_config: ModelConfig = SEED_CONFIG,
    ) -> None:
        """model_config: the model the images are prepared for (its preprocessing contract)."""
        self.found, self.labels, self.workers, self.model_config = found, labels, workers, model_config
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
            digest.update(f"{f.root}\0{f.path}\0{f.size}\0{f.mtime_ns}\n".encode("utf-8", "surrogateescape"))
        return digest.hexdigest()

    def describe(self) -> str:
        return f"{self.count:,} image files under {', '.join(shown(str(r)) for r in self.found.roots)}"

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
        files = self.found.files[start:]
        for piece in read_files(
            self.found.roots, files, workers=self.workers, batch=batch, model_config=self.model_config
        ):
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
    roots: Sequence[Path],
    files: Sequence[FileEntry],
    *,
    workers: int | None = None,
    batch: int = BATCH,
    model_config: ModelConfig = SEED_CONFIG,
) -> Iterator[ReadChunk]:
    """Read, hash, decode and preprocess files, in their order, one ReadChunk per batch.

    Args:
        model_config: the model the images are prepared for (its preprocessing contract).
        workers: processes to decode with (default: one per core); 1 reads in this process (with
            the time limit only in the main thread: SIGALRM is delivered there).
    """
    workers = _CORES if workers is None else workers
    batches = [list(files[i : i + batch]) for i in range(0, len(files), batch)]
    base = [str(r.parent if r.is_file() else r) for r in roots]
    if workers <= 1 or len(files) < _INLINE_BELOW:
        for items in batches:
            yield _chunk(items, _read_batch(base, [(f.root, f.path) for f in items], model_config))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool

    # fork: workers start in milliseconds and need no importable __main__ (forkserver and spawn re-run
    # a caller's script without a main guard). They use Pillow and element-wise NumPy only, never the
    # BLAS or OpenMP pools a parent's threads may hold.
    context = multiprocessing.get_context("fork")
    pool = ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_worker_start, initargs=(os.getpid(),)
    )
    try:
        pending = []
        for items in batches:
            pending.append((items, pool.submit(_read_batch, base, [(f.root, f.path) for f in items], model_config)))
            if len(pending) >= 2 * workers:  # bounded: memory stays a few batches, whatever the collection
                items, future = pending.pop(0)
                yield _chunk(items, _result(future, items, BrokenProcessPool))
        for items, future in pending:
            yield _chunk(items, _result(future, items, BrokenProcessPool))
    finally:
        # Also when the caller stops early (an error, Ctrl-C, a generator closed): the batches not
        # started are dropped, not read for nobody.
        pool.shutdown(wait=True, cancel_futures=True)


def _result(future, items: list[FileEntry], broken: type[Exception]) -> tuple:
    try:
        return future.result()
    except broken:
        raise AesearchError(
            f"a process reading images died (killed, out of memory, or a decoder crashed, perhaps on a file from "
            f"{shown(items[0].path)} on): the index was not changed; run this again, and if it recurs, move those "
            "files away"
        ) from None


def _worker_start(parent: int) -> None:
    """In each worker, first: die with the parent, and leave Ctrl-C to it.

    Without PR_SET_PDEATHSIG a worker whose parent was killed (kill -9, the OOM killer) lives on,
    reading files for nobody. The writer lock it inherited by fork is closed at the fork already
    (store/lock.py), so a stray worker could never keep a bundle locked. The signal comes when the
    thread that forked the worker ends: the one iterating read_files, which closes the pool first.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the pool; a worker's traceback helps no one
    if sys.platform.startswith("linux"):
        import contextlib
        import ctypes

        # A libc without prctl: no better than before, a killed parent's workers finish on their own.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect: no signal will come
        os._exit(1)


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


def _read_batch(base: list[str], items: list[tuple[int, str]], config: ModelConfig) -> tuple:
    """In a worker: each file's preprocessed uint8 image, hash, size and mtime, or why it failed."""
    from aesearch.sources.preprocess import preprocess

    n = len(items)
    images = np.zeros((n, *config.image_shape), dtype=np.uint8)  # preprocess()'s output
    hashes = np.zeros(n, dtype=f"S{HASH_BYTES}")
    sizes, mtimes = np.zeros(n, np.int64), np.zeros(n, np.int64)
    problems: list[str | None] = [None] * n
    limit, seconds = MAX_FILE_BYTES, MAX_READ_SECONDS
    with _Timer(seconds) as timer:
        for i, (root, path) in enumerate(items):
            full = os.path.join(base[root], path)
            name = shown(path)
            try:
                with timer.running():
                    data, st = _read_regular(full, limit)
                    image = preprocess(data, name=name, model_config=config)
                sizes[i], mtimes[i], hashes[i] = st.st_size, st.st_mtime_ns, content_hash(data)
                images[i] = np.round(image * np.float32(255)).astype(np.uint8)
            except _TimedOut:
                problems[i] = f"took longer than {seconds:g} s to read (a hung or very slow disk?): not read"
            except _Unusable as exc:
                problems[i] = str(exc)
            except OSError as exc:
                problems[i] = _os_reason(exc, full)
            except ImageTooLargeError as exc:  # a collection's files are read to the default limit only
                problems[i] = f"{exc.what()}: downscale it to index it"
            except AesearchError as exc:
                problems[i] = _short(str(exc), name)
            except Exception as exc:  # a decoder bug on one hostile file must not end a build of thousands
                problems[i] = f"cannot be decoded ({type(exc).__name__}: {reason(exc)})"
    return images, hashes, sizes, mtimes, problems


class _Unusable(Exception):
    """A file that was opened but must not be used (its message is the Skipped reason)."""


class _TimedOut(BaseException):
    """Raised by SIGALRM inside a read or decode: a BaseException, so that no `except Exception` in
    a decoder swallows it and goes on reading."""


class _Timer:
    """A per-file time limit by SIGALRM: a read blocked in the kernel returns EINTR, the handler raises.

    Only in the main thread (the only one Python runs signal handlers in), and only if no one else
    has a timer running; otherwise reads are bounded in bytes only. The handler is installed for a
    batch and the previous one put back after.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.usable = (
            seconds > 0
            and hasattr(signal, "setitimer")
            and threading.current_thread() is threading.main_thread()
            and signal.getitimer(signal.ITIMER_REAL)[0] == 0
        )
        self.armed = False
        self.previous = None

    def __enter__(self) -> _Timer:
        if self.usable:
            self.previous = signal.signal(signal.SIGALRM, self._expired)
        return self

    def __exit__(self, *exc) -> None:
        if self.usable:
            signal.signal(signal.SIGALRM, signal.SIG_DFL if self.previous is None else self.previous)

    def _expired(self, signum, frame) -> None:
        if self.armed:  # a signal that arrives just as a file is done belongs to no read: ignored
            self.armed = False
            raise _TimedOut

    def running(self):
        return _Armed(self)


class _Armed:
    def __init__(self, timer: _Timer) -> None:
        self.timer = timer

    def __enter__(self) -> None:
        if self.timer.usable:
            self.timer.armed = True
            signal.setitimer(signal.ITIMER_REAL, self.timer.seconds)

    def __exit__(self, *exc) -> None:
        if self.timer.usable:
            self.timer.armed = False  # first: an alarm from here on is ignored, not raised outside the try
            signal.setitimer(signal.ITIMER_REAL, 0)


def _read_regular(full: str, limit: int) -> tuple[bytes, os.stat_result]:
    """A regular file's bytes and its stat, read through one open file description, bounded.

    O_NONBLOCK: a named pipe put in the file's place opens at once instead of waiting for a writer
    (fstat then refuses it); O_NOCTTY: a terminal device never becomes ours. At most st_size + 1
    bytes are read, so a file that grows (or a /proc file that claims 0 bytes) cannot make the read
    unbounded; any difference from what fstat said before the read, or after it, means the file was
    being written: skipped, not indexed half-written.
    """
    fd = os.open(full, _OPEN_FLAGS)
    try:
        before = os.fstat(fd)
        problem = file_problem(before, limit=limit)
        if problem:
            raise _Unusable(problem)
        data = _read_at_most(fd, before.st_size + 1)
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if len(data) != before.st_size or (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise _Unusable("changed while being read (still being written?): sync again once it is complete")
    return data, before


def _read_at_most(fd: int, n: int) -> bytes:
    pieces = []
    while n > 0:
        piece = os.read(fd, n)  # a regular file gives all of it at once, as a rule: one piece, no copy
        if not piece:
            break
        pieces.append(piece)
        n -= len(piece)
    return b"".join(pieces)


def _os_reason(exc: OSError, path: str | None = None) -> str:
    if isinstance(exc, FileNotFoundError):
        if path is not None and os.path.islink(path):
            return "is a symbolic link to a file that does not exist"
        return "vanished during the scan"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if exc.errno == errno.ELOOP:
        return "is a symbolic link loop (or a chain of too many links)"
    if exc.errno == errno.ENAMETOOLONG:
        return "has a path too long for the file system to open"
    return f"cannot be read ({exc.strerror or reason(exc)})"


def _short(message: str, path: str) -> str:
    """An ImageError's message without the file name it starts with (the listing names the file)."""
    return message[len(path) :].lstrip(" :") if message.startswith(path) else message

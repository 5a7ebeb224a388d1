"""Moving reviewed duplicates out of a collection, with a journal that undoes it exactly.

    >>> report = move_duplicates(review, "/data/duplicates")   # the others of every group move there
    >>> undo(report.journal)                                    # and back, byte for byte

Nothing is ever deleted: a file is only renamed, and only after every check has passed for every
file (a plan first, then the moves). A rename keeps the file's bytes and its mtime, and within one
file system it is atomic, so a move is never half done; across file systems it would be a copy, so
a target on another file system is refused rather than copied (copy, verify, remove would leave a
window where a crash holds two copies or a copy is trusted unverified). A rename never replaces a
file (renameat2 RENAME_NOREPLACE on Linux; elsewhere a check just before the rename).

The journal (JSON, in the target folder) lists every move (source, destination, bytes, mtime_ns,
content hash, state) and is written atomically before the first rename and again as moves are
done, so a crash midway leaves a journal that `undo` reads; undo trusts the files, not the states
(a move done after the journal's last write is found at its destination). Afterwards the bundle is
synced, so the moved images leave the index (and, after undo, come back).
"""

from __future__ import annotations

import errno
import json
import os
import stat
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from aesearch.atomic import atomic_path, rename_no_replace
from aesearch.errors import AesearchError, InvalidArgumentError, one_line
from aesearch.pipelines.sync import MassRemovalError, SyncReport
from aesearch.pipelines.writer import Collection
from aesearch.quality.duplicate_review import Review
from aesearch.sources.folders import content_hash
from aesearch.store.bundle import bundle_holding, load_bundle
from aesearch.store.paths import shown

JOURNAL_VERSION = 1
_JOURNAL_EVERY_S = 0.2  # rewrite the journal at most this often while moving (and once at the end)
_READ = 1 << 20


class MoveRefusedError(InvalidArgumentError):
    """A move or an undo that would lose or overwrite something; nothing was moved."""


@dataclass
class Move:
    id: int
    source: str  # absolute paths
    destination: str
    bytes: int
    mtime_ns: int
    content_hash: str  # hex BLAKE2b-128 of the file's bytes, as the bundle's records hold it
    state: str = "planned"  # planned -> moved -> restored


@dataclass
class MoveReport:
    journal: str
    moves: list[Move]
    dry_run: bool = False
    sync: SyncReport | None = None
    sync_problem: str | None = None  # the files moved but the sync refused (the journal still undoes it)
    seconds: float = 0.0
    groups: int = 0
    kept: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["sync"] = None if self.sync is None else {"added": self.sync.added, "removed": self.sync.removed}
        return out


def move_duplicates(
    review: Review, target_dir: str | Path, *, dry_run: bool = False, workers: int | None = None
) -> MoveReport:
    """Move every non-kept file of the review's groups under target_dir, keeping their paths.

    One root: TARGET/relative/path; several: TARGET/ROOTNAME/relative/path. Refused in one line,
    before anything moves: a dataset bundle (no files), a target inside a collection folder (or
    holding one), another file system, a file that changed since it was indexed, a destination
    that exists. dry_run: the plan only (no journal, no move, no sync). workers: the sync's (Collection.open).
    """
    start = time.perf_counter()
    bundle = load_bundle(review.bundle, verify="sizes")
    collection = bundle.manifest.get("collection")
    if not review.has_files or not isinstance(collection, dict) or not collection.get("roots"):
        raise MoveRefusedError(
            "this bundle was built from a dataset, not from files: its duplicates can be reviewed and exported "
            "(--json, --csv), not moved"
        )
    roots = [Path(r) for r in collection["roots"]]
    bases = [(r.parent if r.is_file() else r).resolve() for r in roots]
    target = Path(target_dir).expanduser().absolute()
    _check_target(target, bases)
    ids = [i for d in review.decisions for i in d.move]
    if not ids:
        raise InvalidArgumentError("no group has a copy to move: nothing to do")
    live = bundle.is_live(ids)
    if not live.all():
        gone = ids[int((~live).argmax())]
        raise MoveRefusedError(f"image {gone} is no longer indexed (the bundle changed): review the duplicates again")
    members = {m.id: m for d in review.decisions for m in d.members}
    records = {int(r["id"]): r for r in bundle.records(ids)}
    names = _root_names(bases)
    moves, seen = [], set()
    for id_ in ids:
        member = members[id_]
        if member.file is None:
            raise MoveRefusedError(
                f"image {id_} was added without a file (Python API): keep it, or leave its group out of the move"
            )
        record = records[id_]
        root = int(record["position"])
        relative = Path(member.path.lstrip("/"))  # a listed file outside its list's folder has an absolute path
        destination = target / names[root] / relative if len(bases) > 1 else target / relative
        if str(destination) in seen:
            raise MoveRefusedError(f"two files would move to {shown(str(destination))}: move them in two steps")
        seen.add(str(destination))
        moves.append(
            Move(
                id=id_,
                source=member.file,
                destination=str(destination),
                bytes=int(record["bytes"]),
                mtime_ns=int(record["mtime_ns"]),
                content_hash=bytes(record["content_hash"]).hex(),
            )
        )
    _check_same_file_system(target, moves)
    for move in moves:
        _check_unchanged(move.source, move, "changed since it was indexed", "run `aesearch sync` and review again")
        if os.path.lexists(move.destination):
            raise MoveRefusedError(
                f"{shown(move.destination)} already exists: nothing is overwritten; choose another --move-to folder"
            )
    journal = _journal_path(target, seen)
    report = MoveReport(
        str(journal), moves, dry_run=dry_run, groups=len(review.decisions), kept=[d.keep for d in review.decisions]
    )
    if dry_run:
        report.seconds = round(time.perf_counter() - start, 3)
        return report
    header = {"bundle": str(bundle.path.resolve()), "target": str(target), "threshold": review.threshold}
    writer = _JournalWriter(journal, header, moves)
    writer.write("moving")  # before the first rename: a crash at any later point can be undone
    for move in moves:
        Path(move.destination).parent.mkdir(parents=True, exist_ok=True)
        _rename(move.source, move.destination)
        move.state = "moved"
        writer.maybe_write("moving")
    writer.write("moved")
    report.sync, report.sync_problem = _sync(bundle.path, journal, workers)
    report.seconds = round(time.perf_counter() - start, 3)
    return report


def undo(journal: str | Path, *, dry_run: bool = False, workers: int | None = None) -> MoveReport:
    """Move every file of a journal back where it was, then sync the bundle.

    Refused in one line, before anything moves: a file exists at an original place, a moved file
    changed or is missing. A move the journal lists that never happened (a crash) is left as it is.
    """
    start = time.perf_counter()
    path = Path(journal).expanduser().absolute()
    header, moves = _read_journal(path)
    back = []
    for move in moves:
        at_source, at_destination = os.path.lexists(move.source), os.path.lexists(move.destination)
        if at_source and not at_destination:
            # never moved (a crash before its rename), or moved back already: the journal's file, or one line
            _check_unchanged(move.source, move, "is not the file the journal moved", "nothing was moved back")
            continue
        if at_source:
            raise MoveRefusedError(
                f"a file exists at {shown(move.source)}, where {shown(move.destination)} came from: move it away "
                "first; nothing was moved back"
            )
        if not at_destination:
            raise MoveRefusedError(
                f"{shown(move.destination)} is missing: it was moved or deleted after the move; nothing was moved back"
            )
        _check_unchanged(move.destination, move, "changed after it was moved", "nothing was moved back")
        back.append(move)
    report = MoveReport(str(path), back, dry_run=dry_run)
    if dry_run:
        return report
    writer = _JournalWriter(path, header, moves)
    writer.write("undoing")
    for move in back:
        Path(move.source).parent.mkdir(parents=True, exist_ok=True)
        _rename(move.destination, move.source)
        move.state = "restored"
        writer.maybe_write("undoing")
    writer.write("undone")
    report.sync, report.sync_problem = _sync(Path(header["bundle"]), path, workers)
    report.seconds = round(time.perf_counter() - start, 3)
    return report


# --- checks ---


def _check_target(target: Path, bases: list[Path]) -> None:
    if target.exists() and not target.is_dir():
        raise MoveRefusedError(f"{shown(str(target))} is a file: give a folder to move the duplicates into")
    resolved = _resolve_existing(target)
    bundle = bundle_holding(resolved / "moved")  # the target itself, or a folder above it
    if bundle is not None:  # a rebuild replaces the bundle's folder whole: the moved images with it
        raise MoveRefusedError(
            f"{shown(str(target))} is inside the index at {shown(str(bundle))}, whose files aesearch alone writes: "
            "choose a folder outside it"
        )
    for base in bases:
        if resolved == base or resolved.is_relative_to(base) or base.is_relative_to(resolved):
            raise MoveRefusedError(
                f"{shown(str(target))} is inside the collection's folder {shown(str(base))} (or holds it): the next "
                "sync would index the moved copies again; choose a folder outside it"
            )


def _resolve_existing(path: Path) -> Path:
    """path with its existing part resolved (links followed), the rest appended."""
    tail = []
    while not path.exists() and path.parent != path:
        tail.append(path.name)
        path = path.parent
    return path.resolve().joinpath(*reversed(tail))


def _check_same_file_system(target: Path, moves: list[Move]) -> None:
    existing = target
    while not existing.exists():
        existing = existing.parent
    device = _device(existing)
    for move in moves:
        if _device(Path(move.source).parent) != device:
            raise MoveRefusedError(
                f"{shown(str(target))} is on another file system than {shown(move.source)}: a move there would be a "
                "copy, not an atomic rename; choose a folder on the same disk"
            )


def _device(path: Path) -> int:
    return path.stat().st_dev


def _check_unchanged(file: str, move: Move, what: str, advice: str) -> None:
    """The file holds the bytes the move recorded (its content hash), or one line."""
    try:
        digest = _file_hash(file)
    except OSError as exc:
        raise MoveRefusedError(f"cannot read {shown(file)} ({exc.strerror or exc}): {advice}") from None
    if digest != move.content_hash:
        raise MoveRefusedError(f"{shown(file)} {what} (its content hash differs): {advice}")


def _file_hash(file: str) -> str:
    if not stat.S_ISREG(os.stat(file).st_mode):  # a FIFO would block the read; a folder is not the file
        raise OSError(errno.EINVAL, "not a regular file")
    with open(file, "rb") as f:
        return content_hash(f.read()).hex()


# --- doing ---


def _rename(source: str, destination: str) -> None:
    try:
        rename_no_replace(source, destination)
    except FileExistsError:
        raise MoveRefusedError(
            f"{shown(destination)} appeared during the move: it was not overwritten; `aesearch duplicates --undo` "
            "the journal to put back what moved"
        ) from None


def _sync(bundle: Path, journal: Path, workers: int | None) -> tuple[SyncReport | None, str | None]:
    try:
        return Collection.open(bundle, workers=workers).sync(), None
    except MassRemovalError as exc:
        return None, f"the files moved, but the sync was refused ({one_line(str(exc))}); journal: {journal}"
    except AesearchError as exc:
        return None, f"the files moved, but the sync failed ({one_line(str(exc))}); run `aesearch sync`"


def _root_names(bases: list[Path]) -> list[str]:
    """A folder name per root, unique (the root's own name, numbered where two share one)."""
    names = []
    for number, base in enumerate(bases):
        name = base.name or f"root{number}"
        names.append(name if [b.name for b in bases].count(base.name) == 1 else f"{number}-{name}")
    return names


def _journal_path(target: Path, destinations: set[str]) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1000):
        path = target / f"aesearch-moves-{stamp}{'' if n == 0 else f'-{n}'}.json"
        if not os.path.lexists(path) and str(path) not in destinations:
            return path
    raise MoveRefusedError(f"too many journals in {shown(str(target))} this second: try again")


class _JournalWriter:
    def __init__(self, path: Path, header: dict, moves: list[Move]) -> None:
        self.path, self.header, self.moves, self.last = path, header, moves, 0.0

    def write(self, status: str) -> None:
        journal = {
            "aesearch_journal": JOURNAL_VERSION,
            **self.header,
            "status": status,
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "moves": [asdict(m) for m in self.moves],
        }
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps(journal, indent=1))
        self.last = time.monotonic()

    def maybe_write(self, status: str) -> None:
        if time.monotonic() - self.last >= _JOURNAL_EVERY_S:
            self.write(status)


def _read_journal(path: Path) -> tuple[dict, list[Move]]:
    bad = f"{shown(str(path))} is not a journal of `aesearch duplicates --move-to`"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise InvalidArgumentError(f"no journal at {shown(str(path))}: give the path `--move-to` printed") from None
    except (OSError, ValueError, UnicodeDecodeError):
        raise InvalidArgumentError(f"{bad}: it cannot be read as JSON") from None
    if not isinstance(data, dict) or data.get("aesearch_journal") != JOURNAL_VERSION:
        raise InvalidArgumentError(f"{bad} (version {JOURNAL_VERSION})")
    try:
        header = {k: data[k] for k in ("bundle", "target", "threshold")}
        moves = [Move(**m) for m in data["moves"]]
    except (KeyError, TypeError):
        raise InvalidArgumentError(f"{bad}: a field is missing or wrong") from None
    for move in moves:
        texts = (move.source, move.destination, move.content_hash, move.state)
        if not all(isinstance(t, str) for t in texts) or not (
            os.path.isabs(move.source) and os.path.isabs(move.destination)
        ):
            raise InvalidArgumentError(f"{bad}: a move's paths are not absolute paths")
    if not isinstance(header["bundle"], str):
        raise InvalidArgumentError(f"{bad}: its bundle is not a path")
    return header, moves

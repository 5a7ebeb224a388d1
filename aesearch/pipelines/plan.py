"""What a sync must do, decided from records alone (no disk): the mark of rclip's mark-and-sweep.

    plan_sync(indexed, found) -> SyncPlan

indexed: what the bundle holds, (root, path) -> IndexedFile. found: what the scan listed and the
read hashed. A file is
  * touched: a known path, read again (its size or mtime moved) with the content it had: same id,
    its stored image and vector copied;
  * changed: a known path with new content: same id, encoded again;
  * moved: a new path holding the content of an indexed file that vanished: that file's id, its
    stored image and vector copied (two vanished files of one content pair with two new paths of it
    in path order);
  * added: any other new content: a new id, encoded;
  * removed: indexed, no longer listed; except images pinned by the Python API (root PINNED), files
    under a folder the scan could not list, and everything in an explicit add (`only`).

A plan that would remove a whole root's images, or more than MASS_REMOVAL_SHARE of the index, is
refused (SyncPlan.refused says why) unless allow_mass_removal: an unmounted disk, a symlink to an
empty folder or an emptied list file look like deleted files.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from aesearch import defaults
from aesearch.store.records import PINNED

Key = tuple[int, str]  # (root number, path relative to it)


class IndexedFile(NamedTuple):
    id: int
    size: int
    mtime_ns: int
    content_hash: bytes


@dataclass(frozen=True)
class Found:
    """What a scan and a read saw."""

    roots: Sequence[str]  # the collection's roots, as named in messages
    listed: set[Key]  # every image file the scan listed, read this time or not
    read: Mapping[Key, bytes]  # content hash of each file read this time, in the order read
    unlisted: Sequence[Key] = ()  # (root, prefix) of folders that could not be listed: nothing under them vanishes
    only: bool = False  # an explicit add: these files only, nothing removed


@dataclass
class SyncPlan:
    added: list[Key] = field(default_factory=list)
    changed: list[tuple[Key, int]] = field(default_factory=list)  # (path, its id): encoded again
    touched: list[tuple[Key, int]] = field(default_factory=list)  # (path, its id): only the mtime moved
    moved: list[tuple[Key, Key, int]] = field(default_factory=list)  # (from, to, id)
    removed: list[tuple[Key, int]] = field(default_factory=list)  # sorted by path
    refused: str | None = None  # why publishing this plan looks like an accident (MassRemovalError)

    def ids(self) -> dict[Key, int]:
        """Each file read -> the id it is published under (-1: a new one)."""
        out = {key: -1 for key in self.added}
        out.update(self.changed)
        out.update(self.touched)
        out.update((to, id_) for _, to, id_ in self.moved)
        return out

    def copies(self) -> dict[Key, int]:
        """Files whose content is already indexed -> the id whose stored image and vector they reuse."""
        return dict(self.touched) | {to: id_ for _, to, id_ in self.moved}

    @property
    def changes(self) -> int:
        return len(self.added) + len(self.changed) + len(self.touched) + len(self.moved) + len(self.removed)


def plan_sync(indexed: Mapping[Key, IndexedFile], found: Found, *, allow_mass_removal: bool = False) -> SyncPlan:
    """Sort the files read into touched, changed, moved and added, and the vanished ones into removed."""
    plan = SyncPlan()
    vanished = (
        {}
        if found.only
        else {
            key: entry
            for key, entry in indexed.items()
            if key not in found.listed
            and key[0] != PINNED
            and not any(key[0] == root and key[1].startswith(prefix) for root, prefix in found.unlisted)
        }
    )
    by_hash: dict[bytes, list[Key]] = {}
    for key in sorted(vanished):
        by_hash.setdefault(vanished[key].content_hash, []).append(key)
    for key, digest in found.read.items():
        old = indexed.get(key)
        if old is not None:
            (plan.touched if old.content_hash == digest else plan.changed).append((key, old.id))
        elif by_hash.get(digest):
            source = by_hash[digest].pop(0)
            plan.moved.append((source, key, vanished.pop(source).id))
        else:
            plan.added.append(key)
    plan.removed = sorted((key, entry.id) for key, entry in vanished.items())
    if not allow_mass_removal:
        plan.refused = _mass_removal(indexed, found, vanished)
    return plan


def _mass_removal(indexed: Mapping[Key, IndexedFile], found: Found, vanished: Mapping[Key, IndexedFile]) -> str | None:
    """Why removing `vanished` looks like an accident (a root emptied, or most of the index), or None."""
    for number, root in enumerate(found.roots):
        had = sum(1 for key in vanished if key[0] == number)
        if had and not any(key[0] == number for key in found.listed):
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

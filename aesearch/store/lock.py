"""One writer per bundle: an advisory lock file beside it, refused at once when another holds it."""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Iterator
from pathlib import Path

from aesearch.errors import BundleLockedError

# The lock files this process holds open. flock belongs to the open file description, which a
# fork shares: a forked child (a worker reading images) would keep the bundle locked after the
# writer died, and every later writer would be refused "being updated by process <dead pid>". So
# every fork's child closes them at once (its parent's copies, and the lock, are unaffected).
_HELD: set[int] = set()
# The locks builds in this process hold, by lock file and thread: a build holds its target's lock
# from its first step, and its own writers (the one that publishes its bundle, the one that records
# its recall) hold on to it (within_build). Any other writer is refused, in this thread or another.
_BUILDS: set[tuple[Path, int]] = set()


def _close_in_child() -> None:
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()
    _BUILDS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_child)


def lock_path(bundle: Path) -> Path:
    """`.NAME.lock` beside the bundle: it survives the folder swap of a full rebuild.

    From the absolute path, its folders resolved: `idx`, `./idx`, `/abs/idx` and `.` from inside it
    name one lock (`.` gave `./..lock` inside the bundle, and a second writer by another spelling
    was let in)."""
    bundle = Path(os.path.abspath(bundle))
    return bundle.parent.resolve() / f".{bundle.name}.lock"


@contextlib.contextmanager
def writer_lock(bundle: str | Path, *, within_build: bool = False) -> Iterator[None]:
    """Hold the bundle's writer lock; a second writer gets BundleLockedError at once, never a silent wait.

    within_build: a step of a build in this thread (the writer that publishes its bundle, the one
    that records its recall) holds on to the lock the build took (build_lock); any other writer is
    refused, even in that thread.

    flock is released by the kernel when the holder dies (kill -9 included), so a crashed sync
    never leaves the bundle locked: no process it forked holds it (_HELD).
    """
    bundle = Path(bundle)
    path = lock_path(bundle)
    if within_build and (path, threading.get_ident()) in _BUILDS:  # this thread's build holds it: held on
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    owner = os.getpid()
    _HELD.add(fd)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise BundleLockedError(
                f"{bundle} is being updated by {holder}: wait for it to finish, then run this again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()}".encode(), 0)
        yield
    finally:
        if os.getpid() == owner:  # a forked child that unwinds this frame closed its copy at the fork
            _HELD.discard(fd)
            os.close(fd)  # releases the lock


@contextlib.contextmanager
def build_lock(bundle: str | Path) -> Iterator[None]:
    """The writer lock for a whole build, from its first step (before a model trains for minutes)
    to its last: its own steps hold on to it (writer_lock(within_build=True)), a build inside it
    too; every other writer is refused at once."""
    key = (lock_path(Path(bundle)), threading.get_ident())
    if key in _BUILDS:  # a build inside this thread's build
        yield
        return
    with writer_lock(bundle):
        _BUILDS.add(key)
        try:
            yield
        finally:
            _BUILDS.discard(key)

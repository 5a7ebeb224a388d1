"""One writer per bundle: an advisory lock file beside it, refused at once when another holds it."""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from aesearch.errors import BundleError


def lock_path(bundle: Path) -> Path:
    """`.NAME.lock` beside the bundle: it survives the folder swap of a full rebuild."""
    return bundle.parent / f".{bundle.name}.lock"


@contextlib.contextmanager
def writer_lock(bundle: str | Path) -> Iterator[None]:
    """Hold the bundle's writer lock; a second writer gets one line, never a silent wait.

    flock is released by the kernel when the holder dies (kill -9 included), so a crashed sync
    never leaves the bundle locked.
    """
    bundle = Path(bundle)
    path = lock_path(bundle)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise BundleError(
                f"{bundle} is being updated by {holder}: wait for it to finish, then run this again"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock

"""Atomic file and folder replacement: a reader sees the old version or the new one, never half.

Everything aesearch writes for keeps (checkpoints, index bundles, figures) goes through here, so
an interrupted run (Ctrl-C, kill -9, a full disk) leaves what was there before untouched.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside target; on success it replaces target in one rename.

    The temporary file shares target's folder (so the rename stays on one filesystem) and
    its suffix (so libraries that pick a format by extension still do).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{target.suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes 0600 (and some writers replace the file with 0600 too): a saved file should
        # get the same permissions as any other the user creates.
        os.chmod(tmp, 0o666 & ~_umask())
        _fsync(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def computed_once(lock: str | Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `lock` while computing what it guards, so that processes
    sharing a cache compute each thing once: the second waits (fcntl.flock) until the first has
    written it, then finds it. One lock file per kind of thing, never deleted (a lock file removed
    while held would let a third process lock a new one). Where no lock can be had (a read-only
    folder, a system without flock) nothing waits: each computes, as without the lock.
    """
    lock = Path(lock)
    try:
        import fcntl

        lock.parent.mkdir(parents=True, exist_ok=True)
        handle = open(lock, "a")  # noqa: SIM115 (held across the yield)
    except (ImportError, OSError):
        yield
        return
    with handle:
        with contextlib.suppress(OSError):
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock, also when the computation fails


@contextlib.contextmanager
def atomic_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside target; on success it takes target's place.

    On Linux the swap is one atomic renameat2(RENAME_EXCHANGE): at every instant target is
    either the complete old folder or the complete new one. Elsewhere the old folder is first
    renamed aside, so for a moment between two renames target is absent (never half-written).
    Staging folders left by a killed process are removed by the next build.
    """
    staging = new_staging_folder(target)
    try:
        yield staging
        publish_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def new_staging_folder(target: str | Path, *, name: str | None = None) -> Path:
    """A folder beside target to build its replacement in (removing what killed builds left).

    name: a fixed staging name (a resumable build finds its folder again); default: a fresh one
    tagged with this process's id.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(target)
    if name is not None:
        staging = target.parent / name
        staging.mkdir(exist_ok=True)
    else:
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.building-{os.getpid()}-", dir=target.parent))
    os.chmod(staging, 0o777 & ~_umask())  # mkdtemp makes 0700
    return staging


def publish_folder(staging: Path, target: str | Path) -> None:
    """Put the complete folder staging in target's place atomically; the old target is removed."""
    target = Path(target)
    for path in staging.rglob("*"):
        if path.is_file():
            _fsync(path)
    if not target.exists():
        os.replace(staging, target)
        return
    aside = staging
    if not _exchange(staging, target):
        aside = staging.with_name(f".{target.name}.old-{os.getpid()}-{staging.name[-8:]}")
        os.replace(target, aside)
        os.replace(staging, target)
    shutil.rmtree(aside, ignore_errors=True)  # after an exchange, staging holds the old folder


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system cannot."""
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def rename_no_replace(source: str | Path, destination: str | Path) -> None:
    """Rename source to destination, never replacing a file there (FileExistsError instead).

    Linux: one renameat2(RENAME_NOREPLACE), atomic; elsewhere (or a file system without it) a
    check just before os.rename, which leaves a moment for another process to create the file.
    """
    if sys.platform == "linux":
        try:
            renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
        except (OSError, AttributeError):
            renameat2 = None
        if renameat2 is not None:
            at_fdcwd, rename_noreplace = -100, 1
            if renameat2(at_fdcwd, os.fsencode(source), at_fdcwd, os.fsencode(destination), rename_noreplace) == 0:
                return
            errno = ctypes.get_errno()
            if errno not in (22, 38, 95):  # EINVAL, ENOSYS, EOPNOTSUPP: fall back to the check
                raise OSError(errno, os.strerror(errno), str(source), None, str(destination))
    if os.path.lexists(destination):
        raise FileExistsError(17, "File exists", str(destination))
    os.rename(source, destination)


def _remove_abandoned_staging(target: Path) -> None:
    for prefix in (f".{target.name}.building-", f".{target.name}.old-"):
        for path in target.parent.glob(f"{glob.escape(prefix)}*"):
            pid = path.name[len(prefix) :].split("-")[0]
            if pid.isdigit() and not _process_alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_writable(path: str | Path, *, need_bytes: int = 0, own_folder: bool = False) -> None:
    """Fail early, before minutes of work, if a file cannot be written at path.

    Checks what can be known before writing: every name fits the file system (255 bytes), the
    nearest existing folder takes a new file (tried, not guessed from permission bits: root may
    write anywhere but /proc or a read-only mount), need_bytes fit in its free space, and no
    folder would be created outside the current folder without being asked for (a typo in
    --out should not leave new folders elsewhere on the disk). own_folder: path's folder is itself
    what is being made (a bundle), so only the folders above it count as created on the way.
    """
    from aesearch.errors import InvalidArgumentError, one_line

    path = Path(path)
    shown = one_line(str(path))
    too_long = [part for part in path.parts if len(os.fsencode(part)) > 255]
    if too_long:
        raise InvalidArgumentError(f"cannot write {shown[:120]}...: a name in it is over 255 bytes: shorten it")
    try:
        if path.is_dir():
            raise InvalidArgumentError(f"{shown} is a folder: give a file path to write to")
        parent = path.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise InvalidArgumentError(f"cannot write {shown}: {one_line(str(parent))} is a file, not a folder")
        fd, probe = tempfile.mkstemp(prefix=".aesearch-write-test-", dir=parent)
        os.close(fd)
        os.unlink(probe)
        free = os.statvfs(parent).f_bavail * os.statvfs(parent).f_frsize
    except OSError as exc:
        raise InvalidArgumentError(f"cannot write {shown} ({exc.strerror or exc}): choose a writable place") from None
    if need_bytes and free < need_bytes:
        raise InvalidArgumentError(
            f"cannot write {shown}: {free / 2**20:,.0f} MB free there, about {need_bytes / 2**20:,.0f} MB needed: "
            "free some space or choose another place"
        )
    missing = path.absolute().parent.parent if own_folder else path.absolute().parent
    cwd = Path.cwd().absolute()
    if not missing.exists() and not missing.is_relative_to(cwd):
        raise InvalidArgumentError(
            f"the folder {one_line(str(missing))} does not exist and is outside the current folder: "
            f"create it first (mkdir -p {one_line(str(missing))}) or check the path"
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    with open(path, "rb+") as f:
        os.fsync(f.fileno())

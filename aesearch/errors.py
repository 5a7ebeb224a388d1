"""User-facing errors: each message says what is wrong and what to do about it.

The CLI prints these as one line and exits with status 1; anything else that escapes is a bug.
"""

from __future__ import annotations

import errno
import re
from collections.abc import Callable, Mapping, Sequence


class AesearchError(Exception):
    """A problem the user can fix. The message is one line: what is wrong, then what to do.

    It stays one line whatever it quotes: control characters (a newline in a file name, say)
    are shown escaped, so nothing quoted can split the line or forge another.

    parameter: the library's name for the value at fault ("chunk_size"), or several names; an
    interface rephrases them in its own words (the CLI says "--chunk-size", the server its query
    field): in_words(). The message writes each in backticks ("lower `batch_size`"), which a
    Python caller reads as code and an interface replaces whole; a bare name is rephrased only in
    a message with no backticked one, since a bare word may also be part of a quoted path.
    """

    def __init__(self, message: str = "", *, parameter: str | Sequence[str] | None = None) -> None:
        super().__init__(message)
        self.parameters: tuple[str, ...] = (parameter,) if isinstance(parameter, str) else tuple(parameter or ())
        self.parameter = self.parameters[0] if self.parameters else None

    def __str__(self) -> str:
        return one_line(super().__str__())

    def in_words(self, words: str | Mapping[str, str] | Callable[[str], str]) -> str:
        """The message with each parameter it names called as the caller calls it.

        words: the name for the one parameter, a mapping from parameter to name (parameters it
        leaves out keep their names), or a function of the parameter.
        """
        text = str(self)
        if not self.parameters:
            return text
        if isinstance(words, str):
            words = {self.parameter: words}
        name = words.get if isinstance(words, Mapping) else words
        names = "|".join(re.escape(p) for p in sorted(self.parameters, key=len, reverse=True))
        quoted = re.compile(rf"`({names})`")
        # A bare name is a whole word outside any path: not "k" in "rank" or "/k/", nor "limit" in
        # "--limit" (advice that already names a command's option stays as it is).
        mention = quoted if quoted.search(text) else re.compile(rf"(?<![\w\-/.])({names})(?![\w\-/.])")
        return mention.sub(lambda m: name(m[1]) or m[0], text)


class DataNotFoundError(AesearchError):
    """Fashion-MNIST is in none of the places searched and could not be downloaded."""


class DataError(AesearchError):
    """Dataset files exist but are damaged or not what they claim to be."""


class CheckpointError(AesearchError):
    """A model checkpoint is missing, unreadable, or for a different architecture."""


class BundleError(AesearchError):
    """An index bundle is missing, damaged, from a newer format, or inconsistent."""


class EmptyIndexError(AesearchError):
    """The bundle holds no image (every one was removed): nothing to search until images are added."""


class ImageError(AesearchError):
    """A query image cannot be read: missing, not an image, truncated, or too large."""


class ImageTooLargeError(ImageError):
    """An image has more pixels than the `max_pixels` it may be decoded to (a decompression bomb?)."""

    def __init__(self, label: str, width: int, height: int, max_pixels: int) -> None:
        self.size, self.max_pixels = (width, height), max_pixels
        advice = "downscale it or raise the limit (`max_pixels`)"
        super().__init__(f"{label} {self.what()}: {advice}", parameter="max_pixels")

    def what(self) -> str:
        """`is WxH = N pixels, over the limit of M`: the fact, without the advice."""
        (width, height), limit = self.size, self.max_pixels
        return f"is {width}x{height} = {describe_pixels(width * height)}, over the limit of {describe_pixels(limit)}"


def describe_pixels(count: int) -> str:
    """A count of pixels as a person reads it: `12,000 pixels`, `64.0 megapixels`."""
    return f"{count / 1e6:,.1f} megapixels" if count >= 1_000_000 else f"{count:,} pixels"


class ShardsMissingError(AesearchError):
    """Shards of a bundle served on a Dask cluster did not answer (their worker died or stalled)."""


class InvalidArgumentError(AesearchError, ValueError):
    """An option or argument is out of range (k of 0, a negative batch size, ...)."""


class MissingRootError(InvalidArgumentError):
    """A folder a collection was built from is missing (an unmounted disk?): nothing is synced from it."""


class ShortSourceError(AesearchError):
    """A source of images yielded fewer than it announced (a file truncated or replaced during a build)."""


class BundleLockedError(BundleError):
    """Another writer (a sync, add, remove or build) holds the bundle's lock: wait for it, then run again."""


class ServerError(AesearchError):
    """aesearch.Client got no answer it can use: the server is unreachable, busy (503), or failed."""


# Advice for an OSError that reached a command, by errno: what the user can do about that one.
_OS_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space, then run it again",
    errno.EDQUOT: "the disk quota is used up: free some space, then run it again",
    errno.EACCES: "permission denied: fix the permissions (or run as a user who may), then run it again",
    errno.EPERM: "the operation is not permitted: fix the permissions or the file's attributes, then run it again",
    errno.EROFS: "the file system is read-only: write somewhere else (--index-dir, --out), or remount it",
    errno.ENOENT: "a file or folder vanished while this ran: check the path, then run it again",
    errno.EIO: "the disk reported an input/output error: check the disk (dmesg), then run it again",
    errno.ELOOP: "a loop of symbolic links: fix the link, then run it again",
    errno.ENAMETOOLONG: "a name is too long for the file system: choose a shorter path",
    errno.EMFILE: "too many open files: raise the limit (ulimit -n), then run it again",
    errno.ENOMEM: "out of memory: close other programs or use a smaller --chunk-size, then run it again",
}


def os_error_message(exc: OSError) -> str:
    """One line for an OSError that escaped: what failed, on which file, and advice that fits its errno."""
    where = f" ({exc.filename})" if exc.filename else ""
    advice = _OS_ADVICE.get(exc.errno, "fix the cause, then run it again")
    return one_line(f"{exc.strerror or exc}{where}: nothing was replaced; {advice}")


def reason(exc: BaseException, *, last_line: bool = False) -> str:
    """A library exception as a short clause for our one-line messages (first or last line, capped)."""
    lines = str(exc).strip().splitlines()
    return (lines[-1] if last_line else lines[0])[:200] if lines else type(exc).__name__


def one_line(text: str) -> str:
    """text with newlines, tabs and other control characters shown as escapes (\\n, \\x1b, ...)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def torch_install_advice() -> str:
    """How to add PyTorch to this install: in a source checkout (`make demo` made a lean .venv of it)
    its Makefile's set-up, elsewhere the package's train extra."""
    from pathlib import Path

    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "Makefile").is_file() and (checkout / "pyproject.toml").is_file():
        return f"run `make setup` in {checkout} (or pip install -e '{checkout}[train]')"
    return "pip install 'aesearch[train]'"

"""File paths as the store keeps them: losslessly, whatever bytes the file system allowed.

Linux file names are bytes; Python hands names that are not valid UTF-8 over with the
undecodable bytes as lone surrogates (PEP 383, "surrogateescape"). The store writes a path's bytes
exactly as the file system has them, and reads them back the same way, so a file named b"x\\xff.png"
is found, moved and removed like any other. Showing such a path to a person goes through shown():
one printable line, undecodable bytes as \\xff, control characters (a newline in a name) escaped.
"""

from __future__ import annotations

from aesearch.errors import InvalidArgumentError, one_line

MAX_PATH_BYTES = 4096  # Linux's PATH_MAX: no real path is longer


def encode_path(path: str) -> bytes:
    """The bytes of a path as the file system has them; one line for what no file system allows."""
    if not isinstance(path, str):
        raise InvalidArgumentError(f"a path must be text, got {type(path).__name__}")
    try:
        raw = path.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise InvalidArgumentError(
            f"the path {shown(path)} holds characters that are not Unicode text (lone surrogates): "
            "give the path as the file system spells it"
        ) from None
    if b"\0" in raw or len(raw) > MAX_PATH_BYTES:
        problem = "a NUL character" if b"\0" in raw else f"more than {MAX_PATH_BYTES} bytes"
        raise InvalidArgumentError(f"the path {shown(path)[:80]} has {problem}, which no file system allows")
    return raw


def decode_path(raw: bytes) -> str:
    """A stored path back as the str that os functions take (undecodable bytes as surrogates)."""
    return raw.decode("utf-8", "surrogateescape")


def shown(path: str) -> str:
    """A path as one printable line: undecodable bytes as \\xff, control characters escaped."""
    try:
        text = path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # surrogates that no byte stands for
        text = path.encode("utf-8", "backslashreplace").decode("utf-8")
    return one_line(text)

"""Integers from users, checked in one place: ids, k, steps and feedback marks, for the CLI, the
Python API and the server alike.

Two doors, one rule:
    check_int(value, name)   a Python value (the API): an int or a NumPy integer; bools, floats,
                             strings and everything else are refused, so `remove([True])` or
                             `remove(["3"])` never quietly means id 1 or id 3
    parse_int(text, name)    text (the CLI, a query string): ASCII digits only, so "²", "٣" and
                             "1e3" are refused where str.isdigit() and int() would disagree
Both check the range, so a 30-digit id is one line, not an OverflowError deep in NumPy.
`name` is the caller's word for the value ("k", "--more-like", "more"): errors speak it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from aesearch.errors import InvalidArgumentError

MAX_ID = 2**63 - 1  # ids are int64 in the store
_DIGITS = re.compile(r"[0-9]+")  # ASCII only: re's \d and str.isdigit() take every script's digits
_MAX_DIGITS = 20  # longer text is refused before int() parses it (int() of 100,000 digits is slow)


def _range_text(low: int, high: int) -> str:
    if low <= -MAX_ID and high >= MAX_ID:  # any integer: the caller checks the range that matters (-k's)
        return ""
    return f" from {low:,} to {high:,}" if high < MAX_ID else f" from {low:,} to 2^63-1"


def check_int(value: object, name: str, *, low: int = 0, high: int = MAX_ID) -> int:
    """value as a Python int if it is an integer (not a bool) from low to high; else one line."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        shown = repr(value) if isinstance(value, str | bytes) else type(value).__name__
        raise InvalidArgumentError(f"{name} must be an integer{_range_text(low, high)}, got {shown[:40]}")
    number = int(value)
    if not low <= number <= high:
        raise InvalidArgumentError(f"{name} must be an integer{_range_text(low, high)}, got {_short(number)}")
    return number


def check_ints(values: object, name: str, *, low: int = 0, high: int = MAX_ID) -> list[int]:
    """A flat collection (list, tuple, set, 1-D array) of integers, each checked as check_int does."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray | set | frozenset):
        raise InvalidArgumentError(f"{name} must be a list of integers, got {type(values).__name__}")
    if isinstance(values, np.ndarray) and values.ndim != 1:
        raise InvalidArgumentError(f"{name} must be a flat list of integers, got an array of shape {values.shape}")
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    out = []
    for position, item in enumerate(items):
        try:
            out.append(check_int(item, name, low=low, high=high))
        except InvalidArgumentError:
            shown = repr(item) if isinstance(item, str | bytes | int) else type(item).__name__
            raise InvalidArgumentError(
                f"{name} must be integers{_range_text(low, high)}; item {position} is {_short_text(shown)}"
            ) from None
    return out


def parse_int(text: str, name: str, *, low: int = 0, high: int = MAX_ID) -> int:
    """Text of ASCII digits (surrounding spaces allowed) as an int from low to high; else one line."""
    stripped = text.strip() if isinstance(text, str) else ""
    negative = low < 0 and stripped.startswith("-")
    digits = stripped[1:] if negative else stripped
    if not _DIGITS.fullmatch(digits):
        raise InvalidArgumentError(
            f"{name} must be an integer{_range_text(low, high)} written in digits 0-9, got {_quote(text)}"
        )
    if len(digits.lstrip("0")) > _MAX_DIGITS:
        raise InvalidArgumentError(f"{name} must be an integer{_range_text(low, high)}, got {len(digits)} digits")
    return check_int(-int(digits) if negative else int(digits), name, low=low, high=high)


def parse_int_list(text: str, name: str, *, low: int = 0, high: int = MAX_ID) -> list[int]:
    """Comma-separated integers ("12,345, 6") as a list; an empty or blank text is an empty list."""
    if not isinstance(text, str) or not text.strip():
        return []
    parts = text.split(",")
    try:
        return [parse_int(part, name, low=low, high=high) for part in parts]
    except InvalidArgumentError:
        raise InvalidArgumentError(
            f"{name} takes integers{_range_text(low, high)} separated by commas (e.g. 12,345), got {_quote(text)}"
        ) from None


def _short(number: int) -> str:
    text = str(number)
    return text if len(text) <= 24 else f"{text[:10]}...({len(text)} digits)"


def _short_text(text: str) -> str:
    return text if len(text) <= 24 else f"{text[:10]}...({len(text)} characters)"


def _quote(text: object) -> str:
    return repr(text)[:60] if isinstance(text, str) else type(text).__name__

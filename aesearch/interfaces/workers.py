"""`aesearch serve --workers N`: N server processes answering on one listening socket (by default
one per core, at most 4: parse_workers).

One process runs its Python (HTTP parsing, FastAPI, the parts of a search that hold the GIL) on
one core at a time; N processes use N. The parent loads the app once (a bad bundle fails before
anything forks), then forks: the children share the bundle's memory-mapped arrays and the pages
the parent had loaded, and each accepts from the same socket (the kernel hands each connection to
one of them). No thread and no OpenMP pool has started when they fork (the decode slots' threads
start with the first upload), so nothing a child needs is left locked by a thread it lacks.

Every limit of security.py holds per process, so `aesearch serve` divides them among the workers
(split_limits): the totals stay what one process allowed. The per-address connection cap is then
per worker too, and the kernel does not spread one address's connections evenly: a client may be
refused at a little under its cap.

The parent only watches: SIGINT or SIGTERM go to every child, and when one child ends, the others
are stopped (a server with some workers dead would refuse connections at random).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable

from aesearch import defaults
from aesearch.errors import InvalidArgumentError
from aesearch.integers import parse_int
from aesearch.rowwise import CORES

_POLL_S = 0.1  # how soon the parent notices a signal or a child that ended


def parse_workers(text: str) -> int:
    """`--workers`: `auto` (one process per usable core, at most SERVER_MAX_AUTO_WORKERS; one where
    the system cannot fork) or a number from 1 to 64."""
    if text.strip().lower() == "auto":
        return max(1, min(CORES, defaults.SERVER_MAX_AUTO_WORKERS)) if hasattr(os, "fork") else 1
    try:
        workers = parse_int(text, "--workers", low=1, high=64)
    except InvalidArgumentError:
        raise InvalidArgumentError(f"--workers must be `auto` or a number from 1 to 64, got {text!r:.40}") from None
    if workers > 1 and not hasattr(os, "fork"):
        raise InvalidArgumentError("--workers above 1 needs a system that can fork (Linux, macOS): use --workers 1")
    return workers


def split_limits(workers: int, **totals: int) -> dict[str, int]:
    """Each worker's share of each limit: at least 1, rounded up (the totals may grow by under N)."""
    return {name: max(1, math.ceil(total / workers)) for name, total in totals.items()}


def run_workers(serve: Callable[[], None], workers: int) -> int:
    """serve() in `workers` forked children; the parent's exit status (0 when they were stopped, or all ended well)."""
    sys.stdout.flush()
    sys.stderr.flush()  # or each child would write the parent's buffered lines again
    children: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            _child(serve)  # never returns
        children.append(pid)
    stopping = False

    def stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    status, alive = 0, set(children)
    while alive:
        # Not a blocking os.wait(): a signal sent to the process may land on another of its threads
        # (the warm-up reader, FAISS's OpenMP pool), which does not interrupt the main thread's wait,
        # and Python runs handlers in the main thread only: `kill -INT` then stopped nothing.
        pid, code = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            time.sleep(_POLL_S)
            continue
        if pid in alive:
            alive.discard(pid)
            if not stopping:  # a child ended on its own: a failure, whatever its code
                status = os.waitstatus_to_exitcode(code) or 1
                stop(signal.SIGTERM, None)
    return status if status >= 0 else 1  # killed by a signal: 1


def _child(serve: Callable[[], None]) -> None:
    """Serve until SIGTERM or SIGINT (uvicorn shuts down gracefully on either), then leave at once."""
    status = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _stopped)  # until uvicorn's own handler, and when uvicorn re-raises it
        serve()
        status = 0
    except (KeyboardInterrupt, _Stop):
        status = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(status)  # never back into the parent's code (its click command, its atexit handlers)


class _Stop(BaseException):
    pass


def _stopped(signum: int, frame: object) -> None:
    raise _Stop

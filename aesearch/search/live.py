"""A SearchEngine that follows its bundle: a long-running server sees every published update.

Each get() costs one stat of manifest.json (Bundle.changed()). When a writer has published a new
state, one thread loads and verifies a whole new engine while the others keep answering from the
old one; the new engine replaces the old with one assignment, so a request sees the state before
or the state after, never a half-loaded one. If the new state cannot be loaded (a damaged file),
the old one keeps serving and the load is tried again on a later request.
"""

from __future__ import annotations

import threading
import time

from aesearch.errors import AesearchError
from aesearch.search.engine import SearchEngine

RETRY_SECONDS = 1.0  # after a failed reload, keep serving the old state this long before trying again


class LiveEngine:
    def __init__(self, engine: SearchEngine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        self._failed_at = 0.0
        self.last_error: str | None = None

    def get(self) -> SearchEngine:
        """The engine of the newest published state (reloaded here if a writer published one)."""
        engine = self._engine
        if not engine.bundle.changed() or time.monotonic() - self._failed_at < RETRY_SECONDS:
            return engine
        if not self._lock.acquire(blocking=False):
            return engine  # another request is loading it: answer from the state we have
        try:
            if self._engine is engine:  # not already swapped by the thread before us
                try:
                    self._engine = SearchEngine.load(engine.bundle.path, cluster=engine.cluster)
                    self.last_error = None
                except AesearchError as exc:
                    self._failed_at, self.last_error = time.monotonic(), str(exc)
            return self._engine
        finally:
            self._lock.release()

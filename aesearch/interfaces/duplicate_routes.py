"""The page's duplicate review: groups at any threshold, a page at a time; export; move (if allowed).

    GET  /api/duplicates/prepare  start finding the pairs now, if the bundle has at most
                              DUPLICATE_REVIEW_PREPARE_MAX images (the page asks as it opens)
    GET  /api/duplicates?threshold=0.02&page=1&per_page=50
                              202 {"status": "computing"} while the pairs are found (a background
                              thread, once per bundle state); then the groups of that page with
                              the rule's keep, members' sizes, paths and dimensions
    POST /api/duplicates/export {"threshold", "keep": [ids], "format": "json"|"csv"}
                              every group's decision, as a download
    POST /api/duplicates/move   {"threshold", "keep": [ids], "target": "/folder"}
                              403 unless the server was started with --allow-moves; else the same
                              move_duplicates as `duplicates --move-to`, journal and sync included

The pairs are found once per bundle state up to the slider's largest threshold (duplicate_review.py,
cached on disk beside the bundle too), so moving the slider costs one union-find, not a range
search; a page holds at most DUPLICATE_REVIEW_MAX_PAGE groups, whatever the bundle's size.
"""

from __future__ import annotations

import math
import threading
import time

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response

from aesearch import defaults
from aesearch.errors import AesearchError, InvalidArgumentError
from aesearch.integers import check_ints, parse_int
from aesearch.quality.duplicate_review import KEEP_RULE, DuplicatePairs, decide, duplicate_pairs
from aesearch.quality.duplicates import DEFAULT_THRESHOLD
from aesearch.search.live import LiveEngine

MAX_THRESHOLD = defaults.DUPLICATE_REVIEW_MAX_THRESHOLD
_READ_ONLY = (
    "this server is read-only: start it with `aesearch serve --allow-moves` to move files from the page "
    "(or use `aesearch duplicates --move-to DIR`)"
)


class _Pairs:
    """The duplicate pairs of the live engine's state, found in one background thread per state."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engine = None
        self._pairs: DuplicatePairs | None = None
        self._error: str | None = None
        self._started = 0.0
        self._groups: dict[float, list] = {}  # threshold -> groups, for the state in _pairs

    def get(self, engine) -> tuple[DuplicatePairs | None, float]:
        """(the pairs, or None while they are found; seconds since the search started)."""
        with self._lock:
            if self._engine is not engine:
                self._engine, self._pairs, self._error, self._groups = engine, None, None, {}
                self._started = time.monotonic()
                threading.Thread(target=self._find, args=(engine,), daemon=True, name="duplicate-pairs").start()
            if self._error is not None:
                raise InvalidArgumentError(self._error)
            return self._pairs, time.monotonic() - self._started

    def started(self, engine) -> bool:
        with self._lock:
            return self._engine is engine

    def groups(self, engine, pairs: DuplicatePairs, threshold: float) -> list:
        with self._lock:
            found = self._groups.get(threshold) if self._engine is engine else None
        if found is None:
            found = pairs.groups(engine.bundle, threshold)
            with self._lock:
                if self._engine is engine:
                    if len(self._groups) >= 8:  # a slider visits many values: keep the last few
                        self._groups.pop(next(iter(self._groups)))
                    self._groups[threshold] = found
        return found

    def _find(self, engine) -> None:
        try:
            pairs, error = duplicate_pairs(engine, max_threshold=MAX_THRESHOLD), None
        except AesearchError as exc:
            pairs, error = None, str(exc)
        except Exception as exc:  # a failure in the thread must reach the page, not leave it polling
            pairs, error = None, f"finding the duplicate pairs failed ({type(exc).__name__}: {str(exc)[:200]})"
        with self._lock:
            if self._engine is engine:
                self._pairs, self._error = pairs, error


def duplicate_router(live: LiveEngine, *, allow_moves: bool = False) -> APIRouter:
    router = APIRouter()
    cache = _Pairs()
    moving = threading.Lock()

    def ready(threshold: float):
        engine = live.get()
        pairs, seconds = cache.get(engine)
        if pairs is None:
            return engine, None, seconds
        return engine, cache.groups(engine, pairs, threshold), pairs

    @router.get("/api/duplicates/prepare")
    def prepare() -> dict:
        engine = live.get()
        if len(engine) > defaults.DUPLICATE_REVIEW_PREPARE_MAX and not cache.started(engine):
            return {"status": "on request"}  # a big bundle's pairs cost minutes: only for a review
        pairs, _ = cache.get(engine)
        return {"status": "computing" if pairs is None else "ready"}

    @router.get("/api/duplicates")
    def duplicates(
        threshold: str = Query(str(DEFAULT_THRESHOLD), description="0 to the review's largest"),
        page: str = Query("1", description="1, 2, ...: which page of groups"),
        per_page: str = Query(str(defaults.DUPLICATE_REVIEW_PAGE), description="groups a page"),
    ):
        t = _threshold(threshold)
        number = parse_int(page, "page", low=1)
        size = parse_int(per_page, "per_page", low=1, high=defaults.DUPLICATE_REVIEW_MAX_PAGE)
        engine, groups, pairs = ready(t)
        if groups is None:
            return JSONResponse({"status": "computing", "seconds": round(pairs, 1)}, status_code=202)
        pages = max(1, math.ceil(len(groups) / size))
        number = min(number, pages)
        first = (number - 1) * size
        review = decide(engine.bundle, groups[first : first + size], threshold=t, first=first + 1)
        return {
            "status": "ready",
            "threshold": t,
            "max_threshold": MAX_THRESHOLD,
            "rule": KEEP_RULE,
            "n_images": len(engine),
            "generation": engine.bundle.generation,
            "groups_total": len(groups),
            "images_in_groups": sum(len(g.ids) for g in groups),
            "page": number,
            "pages": pages,
            "per_page": size,
            "has_files": review.has_files,
            "allow_moves": allow_moves,
            "pairs_seconds": pairs.seconds,
            "pairs_from_cache": pairs.from_cache,
            "method": pairs.method,
            "groups": [_decision(d) for d in review.decisions],
        }

    def full_review(body: dict):
        if not isinstance(body, dict):
            raise InvalidArgumentError('send a JSON object: {"threshold": T, "keep": [ids]}')
        t = _threshold(body.get("threshold", DEFAULT_THRESHOLD))
        keep = check_ints(body.get("keep", []), "`keep` (image ids)")
        engine, groups, _ = ready(t)
        if groups is None:
            raise InvalidArgumentError("the duplicate pairs are still being found: try again in a few seconds")
        return decide(engine.bundle, groups, threshold=t, keep=keep)

    @router.post("/api/duplicates/export")
    def export(body: dict) -> Response:
        kind = body.get("format", "json") if isinstance(body, dict) else "json"
        if kind not in ("json", "csv"):
            raise InvalidArgumentError(f"`format` must be json or csv, got {str(kind)[:20]!r}")
        review = full_review(body)
        name = f"duplicates-{review.threshold:g}.{kind}"
        headers = {"Content-Disposition": f'attachment; filename="{name}"'}
        if kind == "csv":
            return Response(review.to_csv(), media_type="text/csv; charset=utf-8", headers=headers)
        return JSONResponse(review.to_dict(), headers=headers)

    @router.post("/api/duplicates/move")
    def move(body: dict, request: Request):
        if not allow_moves:
            return JSONResponse({"detail": _READ_ONLY}, status_code=403)
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            # A form or text/plain POST needs no CORS preflight: another site's page could send one.
            return JSONResponse({"detail": "send the move as application/json"}, status_code=415)
        target = body.get("target") if isinstance(body, dict) else None
        if not isinstance(target, str) or not target.strip() or len(target) > 4096:
            raise InvalidArgumentError("name the folder to move the copies into: `target`, an absolute path")
        from os.path import isabs

        if not isabs(target):
            raise InvalidArgumentError("`target` must be an absolute path (the server's current folder is not yours)")
        from aesearch.pipelines.moves import move_duplicates  # writes: loaded only when a move is asked for

        review = full_review(body)
        if not moving.acquire(blocking=False):
            raise InvalidArgumentError("a move is already running: wait for it to finish")
        try:
            report = move_duplicates(review, target)
        finally:
            moving.release()
        return {
            "journal": report.journal,
            "moved": len(report.moves),
            "groups": report.groups,
            "synced": report.sync.summary() if report.sync else None,
            "sync_problem": report.sync_problem,
            "count": report.sync.count if report.sync else None,
            "undo": f"aesearch duplicates --undo {report.journal}",
        }

    return router


def _threshold(value) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        t = math.nan
    if isinstance(value, bool) or not math.isfinite(t) or not 0 <= t <= MAX_THRESHOLD:
        raise InvalidArgumentError(f"threshold must be a distance from 0 to {MAX_THRESHOLD:g}, got {str(value)[:20]!r}")
    return round(t, 6)


def _decision(d) -> dict:
    return {
        "group": d.group,
        "keep": d.keep,
        "reason": d.reason,
        "chosen_by": d.chosen_by,
        "exact": d.exact,
        "max_distance": d.max_distance,
        "members": [
            {
                "id": m.id,
                "path": m.path,
                "bytes": m.bytes,
                "mtime_ns": m.mtime_ns,
                "width": m.width,
                "height": m.height,
                "has_file": m.file is not None,
            }
            for m in d.members
        ],
    }

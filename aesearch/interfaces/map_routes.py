"""The page's latent map over HTTP: a 2-D layout of every image, computed once, in the background.

    GET  /api/map?method=pca          the layout's state; the first ask starts computing it, and the
                                      page polls this for progress until "ready"
    GET  /api/map/points?method=pca   the points as one binary (quality/map_points.py: 14 bytes a
                                      point); past `limit` (at most defaults.MAP_MAX_POINTS) a sample
                                      stratified by category
    GET  /api/map/points/{id}         one image's record, for the page's hover card
    POST /api/map/records             {"ids": [...]} -> their records, to export a selection

server.py includes `router`; `placement` adds to a search answer (`&map=pca`) where the query and
its hits fall on a ready layout. Layouts are kept per state of the bundle (its generation) and
method: a sync makes the next ask compute anew (from latent_map's cache when it has one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Body, FastAPI, HTTPException, Query, Request
from fastapi.responses import Response

from aesearch import defaults
from aesearch.errors import AesearchError, InvalidArgumentError, reason
from aesearch.integers import check_ints, parse_int
from aesearch.quality import map_points
from aesearch.quality.latent_map import METHODS, Projection, project
from aesearch.search.engine import QueryResult, SearchEngine

router = APIRouter()
_CREATE = threading.Lock()  # creates an app's MapLayouts once


@dataclass
class Layout:
    """A computed map: where each image of one state of the bundle lies, and its category."""

    method: str
    generation: int
    count: int  # live images in the bundle (the layout may hold a sample: t-SNE)
    ids: np.ndarray  # (m,) sorted
    coords: np.ndarray  # (m, 2) float32
    categories: map_points.Categories
    projection: Projection | None  # places queries; None for a layout made some other way (the benchmark's)
    seconds: float = 0.0
    _packed: dict[int, bytes] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def packed(self, limit: int) -> bytes:
        """The points the page draws, at most `limit` of them (the last two answers are kept)."""
        with self._lock:
            if limit not in self._packed:
                keep = map_points.stratified_sample(self.categories.codes, limit)
                data = map_points.pack(self.coords[keep], self.ids[keep], self.categories.codes[keep])
                while len(self._packed) >= 2:
                    self._packed.pop(next(iter(self._packed)))
                self._packed[limit] = data
            return self._packed[limit]

    def summary(self) -> dict:
        lo, hi = (self.coords.min(0), self.coords.max(0)) if len(self.coords) else (np.zeros(2), np.zeros(2))
        return {
            "state": "ready",
            "method": self.method,
            "generation": self.generation,
            "count": self.count,
            "points": len(self.ids),
            "limit": defaults.MAP_MAX_POINTS,
            "kind": self.categories.kind,
            "categories": self.categories.names,
            "counts": self.categories.counts(),
            "bounds": [float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])],
            "seconds": round(self.seconds, 2),
        }


def build_layout(engine: SearchEngine, method: str, progress: Callable[[float], None]) -> Layout:
    """The layout of every live image (latent_map.project: cached beside the bundle), categorised."""
    started = time.perf_counter()
    projection = project(engine, method, progress=lambda fraction: progress(0.9 * fraction))
    categories = map_points.categories(engine, projection.ids)
    progress(1.0)
    return Layout(
        method,
        engine.bundle.generation,
        len(engine),
        projection.ids,
        projection.coords,
        categories,
        projection,
        time.perf_counter() - started,
    )


class MapLayouts:
    """The layouts of one app: one background thread per (state of the bundle, method) asked for."""

    def __init__(self, build: Callable[[SearchEngine, str, Callable[[float], None]], Layout] = build_layout) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, int, str], dict] = {}

    def status(self, engine: SearchEngine, method: str) -> dict:
        """The layout's state for the page; the first ask for a state and method starts the work."""
        key = (str(engine.bundle.path), engine.bundle.generation, method)
        with self._lock:
            for old in [k for k in self._jobs if k[:2] != key[:2]]:  # an older state of the bundle
                del self._jobs[old]
            job = self._jobs.get(key)
            if job is None:
                job = self._jobs[key] = {"state": "computing", "progress": 0.0, "started": time.monotonic()}
                threading.Thread(target=self._run, args=(job, engine, method), daemon=True).start()
            if job["state"] == "ready":
                return job["layout"].summary()
            if job["state"] == "failed":
                del self._jobs[key]  # reported once; the next ask tries again
                return {"state": "failed", "method": method, "detail": job["detail"]}
            elapsed = round(time.monotonic() - job["started"], 1)
            return {"state": "computing", "method": method, "progress": round(job["progress"], 3), "seconds": elapsed}

    def ready(self, engine: SearchEngine, method: str) -> Layout | None:
        with self._lock:
            job = self._jobs.get((str(engine.bundle.path), engine.bundle.generation, method))
        return job["layout"] if job is not None and job["state"] == "ready" else None

    def _run(self, job: dict, engine: SearchEngine, method: str) -> None:
        def progress(fraction: float) -> None:
            job["progress"] = min(max(float(fraction), 0.0), 1.0)

        try:
            layout = self._build(engine, method, progress)
            update = {"state": "ready", "layout": layout}
        except AesearchError as exc:
            update = {"state": "failed", "detail": reason(exc)}
        except Exception as exc:  # a thread's error would otherwise vanish, and the page poll forever
            update = {"state": "failed", "detail": f"the map could not be computed: {reason(exc)}"}
        with self._lock:
            job.update(update)


def layouts(app: FastAPI) -> MapLayouts:
    """The app's MapLayouts (made on first use; a benchmark may set app.state.map_layouts first)."""
    with _CREATE:
        if getattr(app.state, "map_layouts", None) is None:
            app.state.map_layouts = MapLayouts()
        return app.state.map_layouts


def check_method(method: str) -> str:
    if method not in METHODS:
        raise InvalidArgumentError(
            f"unknown map method {method[:20]!r}: choose one of {', '.join(METHODS)}", parameter="method"
        )
    return method


def placement(app: FastAPI, engine: SearchEngine, result: QueryResult, method: str | None) -> dict:
    """{"map": ...} for a search answer asked with `map=METHOD`: where the query, its hits and the
    marked images fall on that layout, when it is ready for this state of the bundle; else {}."""
    if not method:
        return {}
    layout = layouts(app).ready(engine, check_method(method))
    if layout is None or layout.projection is None:
        return {}
    ids = list(dict.fromkeys([hit.id for hit in result.hits] + [*result.feedback.more, *result.feedback.less]))
    query = layout.projection.place(engine.search_space(result.latent[None]))[0]
    placed = layout.projection.place(engine.search_space(engine.bundle.embeddings(ids))).tolist() if ids else []
    return {
        "map": {
            "method": layout.method,
            "generation": layout.generation,
            "query": [float(query[0]), float(query[1])],
            "points": {str(i): xy for i, xy in zip(ids, placed, strict=True)},
        }
    }


def records(engine: SearchEngine, ids: list[int]) -> list[dict]:
    """id, path, class and split of each image, read a column at a time."""
    rows = engine.bundle.records(ids)
    paths = engine.bundle.paths_of(ids)
    names, splits = engine.bundle.class_names, engine.bundle.split_names
    return [
        {"id": i, "path": path, "label_name": names[label] if label >= 0 else None, "split": splits[split]}
        for i, path, label, split in zip(ids, paths, rows["label"].tolist(), rows["split"].tolist(), strict=True)
    ]


@router.get("/api/map")
def map_status(request: Request, method: str = Query(defaults.MAP_METHOD, description="pca or tsne")) -> dict:
    engine = request.app.state.live.get()
    return layouts(request.app).status(engine, check_method(method))


@router.get("/api/map/points")
def map_points_binary(
    request: Request,
    method: str = Query(defaults.MAP_METHOD, description="pca or tsne"),
    limit: str | None = Query(None, description="points at most (default and most: the server's limit)"),
) -> Response:
    engine = request.app.state.live.get()
    method = check_method(method)
    limit = defaults.MAP_MAX_POINTS if limit is None else parse_int(limit, "limit", low=1, high=defaults.MAP_MAX_POINTS)
    layout = layouts(request.app).ready(engine, method)
    if layout is None:
        raise HTTPException(409, f"the {method} map is not ready: ask GET /api/map?method={method} until it is")
    data = layout.packed(limit)
    headers = {
        "X-Map-Points": str(len(data) // map_points.POINT_BYTES),
        "X-Map-Count": str(layout.count),
        "X-Map-Generation": str(layout.generation),
        "Cache-Control": "no-store",
    }
    return Response(data, media_type="application/octet-stream", headers=headers)


@router.get("/api/map/points/{id}")
def map_point(request: Request, id: str) -> dict:
    number = parse_int(id, "image id")
    engine = request.app.state.live.get()
    try:
        return records(engine, [number])[0]
    except InvalidArgumentError as exc:
        raise HTTPException(404, str(exc)) from None


@router.post("/api/map/records")
def map_records(request: Request, body: Annotated[dict, Body(description='{"ids": [id, ...]}')]) -> dict:
    ids = body.get("ids")
    if not isinstance(ids, list):
        raise InvalidArgumentError('send {"ids": [id, ...]}: a JSON object with a list of image ids')
    if len(ids) > defaults.MAP_MAX_POINTS:
        raise InvalidArgumentError(f"ids takes up to {defaults.MAP_MAX_POINTS:,} image ids, got {len(ids):,}")
    engine = request.app.state.live.get()
    return {"records": records(engine, check_ints(ids, "ids")) if ids else []}

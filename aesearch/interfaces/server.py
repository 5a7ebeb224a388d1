"""`aesearch serve`: an HTTP API and a web page over one SearchEngine, loaded once.

    POST /api/search?k=8        multipart field `image` -> the `aesearch query --json` object, plus
                                the preprocessed query and the reconstruction as PNG data URLs;
                                &more=ID,ID&less=ID refines it with feedback marks, &explain=true
                                adds difference maps and interpolation strips (steering.py);
                                a `where` form field (or query parameter) narrows it to the
                                images that match a filter (search/filters.py): 400 if it is bad
                                ?id=N or the field `pixels` search by an indexed image or a framed
                                28x28, &arrays=true sends the arrays exactly (wire.py, client.py)
                                &map=pca adds where the query and hits fall on the map (map_routes.py)
    POST /api/refine?k=8        field `latent` and every mark so far -> the refined hits
    GET  /api/map...            the page's latent map (map_routes.py)
    GET  /api/images/{id}.png   an indexed image (?scale=1..16 enlarges it, nearest neighbour)
    GET  /api/health            bundle summary: count, and when it last changed (generation, updated)
    GET  /                      the page (static/, no external resources)
    /api/duplicates...          the page's duplicate review (duplicate_routes.py)

The engine is read-only and its arrays are shared between threads; FastAPI runs each request in
its thread pool. When a writer (sync, add, remove) publishes a new state, the next request swaps
in a freshly loaded engine (search/live.py). Uploads over the limit are refused with 413 before
they are read whole; a body that is not a usable image gets 400 with the CLI's one-line message;
nothing writes to the bundle (unless started with allow_moves: the duplicate review's moves, then
a sync), and no route reads a file outside the package's static folder.
Every integer a client sends (id, k, scale, more, less) is read by aesearch.integers: anything but
ASCII digits in range is a 400 with one line, never a 500 from an overflow deeper down.
security.py adds the Host allow-list, security headers, time limits, decode slots and connection caps; no
interactive API docs (they would load scripts from a CDN): the schema is at /api/openapi.json.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from aesearch import defaults
from aesearch._version import __version__
from aesearch.errors import AesearchError, InvalidArgumentError, ShardsMissingError
from aesearch.integers import parse_int
from aesearch.interfaces import map_routes, steering, wire
from aesearch.interfaces.duplicate_routes import duplicate_router
from aesearch.interfaces.security import LOCAL_HOSTS, Busy, DecodeSlots, Guard, allowed_name, cors_origin
from aesearch.search.engine import QueryResult, SearchEngine
from aesearch.search.live import LiveEngine

STATIC_DIR = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD_BYTES = defaults.SERVER_MAX_UPLOAD_BYTES
_ECHO = 80  # characters of a client's input quoted back in an error, at most
# Library parameters in a client's words: its query fields, or the setting of `aesearch serve` a
# client cannot change (the library's own name for any other).
_FIELDS = {"k": "k", "max_pixels": "the server's --max-pixels"}


class _GuardedApp(FastAPI):
    """FastAPI with security.Guard outside everything, Starlette's own error answers included."""

    guard_options: dict | None = None

    def build_middleware_stack(self):
        return Guard(super().build_middleware_stack(), **(self.guard_options or {}))


def _example_label(class_names: list[str]) -> str | None:
    """A class name for the search page's example filter: the first written as one plain word
    (no quotes needed), else the first quoted; None without classes."""
    plain = [name for name in class_names if name.replace("-", "").replace("_", "").isalnum()]
    if plain:
        return plain[0]
    return json.dumps(class_names[0]) if class_names else None


def _one_filter(form: str | None, query: str | None) -> str | None:
    """The filter of a request, sent as the form field `where` (it holds a long id list) or as ?where=."""
    if form is not None and query is not None:  # which one was meant? never a silent choice
        raise InvalidArgumentError("give the filter once: as the form field `where` or as ?where=, not both")
    return form if form is not None else query


def create_app(
    index_dir: str | Path = defaults.INDEX_DIR,
    *,
    engine: SearchEngine | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES,
    max_pixels: int = defaults.SERVER_MAX_PIXELS,
    decode_slots: int = defaults.SERVER_DECODE_SLOTS,
    allowed_hosts: Sequence[str] = LOCAL_HOSTS,
    cors_origins: Sequence[str] = (),
    max_in_flight: int = defaults.SERVER_MAX_REQUESTS_IN_FLIGHT,
    allow_moves: bool = False,
) -> FastAPI:
    """The app, with its bundle loaded and verified now (a bad bundle fails here, not per request).

    Args:
        max_pixels: uploads with more pixels are refused before decoding (server-side limit).
        decode_slots: uploads decoded at once; with max_pixels this bounds the server's memory.
        allowed_hosts: Host header names answered (DNS rebinding defence); "*" answers any.
        cors_origins: origins whose pages may read the API from a browser (none by default).
        max_in_flight: requests answered at once; more get 503 at once.
        allow_moves: the duplicate review may move files out of the collection (read-only otherwise).
    """
    hosts = [allowed_name(h) for h in (*LOCAL_HOSTS, *allowed_hosts)]  # a bad --allowed-host fails here
    cors_origins = [cors_origin(o) for o in cors_origins]  # and a bad --cors-origin
    live = LiveEngine(engine or SearchEngine.load(index_dir))  # follows updates (sync, add, remove)
    app = _GuardedApp(
        title="aesearch", version=__version__, docs_url=None, redoc_url=None, openapi_url="/api/openapi.json"
    )
    app.guard_options = {"allowed_hosts": hosts, "max_in_flight": max_in_flight}
    app.add_middleware(_UploadLimit, max_bytes=max_upload_bytes)
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"])
    app.state.live = live
    app.state.engine = live.get()
    slots = DecodeSlots(decode_slots)

    @app.exception_handler(AesearchError)
    async def _user_error(request: Request, exc: AesearchError) -> JSONResponse:
        # error: the exception's class, so aesearch.Client raises the one the engine would have
        status = 503 if isinstance(exc, ShardsMissingError) else 400  # the cluster's fault, not the request's
        return JSONResponse({"detail": exc.in_words(_FIELDS), "error": type(exc).__name__}, status_code=status)

    @app.exception_handler(NotIndexed)
    async def _not_indexed(request: Request, exc: NotIndexed) -> JSONResponse:
        # 404, with the class the engine raises for an id it does not hold (aesearch.Client's)
        return JSONResponse({"detail": str(exc), "error": "InvalidArgumentError"}, status_code=404)

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default answer quotes the input back whole (kilobytes, if that is what was sent).
        problems = [
            "the body is not valid JSON: send a JSON object"
            if e.get("type") == "json_invalid"
            else f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', 'invalid')}"
            for e in exc.errors()[:3]
        ]
        return JSONResponse({"detail": "; ".join(problems)[:300]}, status_code=422)

    @app.get("/api/health")
    def health() -> dict:
        engine = live.get()
        m = engine.manifest
        return {
            "status": "ok",
            "version": __version__,
            "count": len(engine),
            "z_size": m["z_size"],
            "updated": m.get("updated"),
            "generation": m.get("generation"),
            "index_type": m["index_type"],
            "metric": m["metric"],
            "transform": m.get("transform", "none"),
            "dataset": m.get("dataset"),
            "model": m.get("model", {}).get("recipe"),
            # The model's input (size, channels, framing): aesearch.Client prepares queries by it.
            "model_config": engine.autoencoder.config.to_dict(),
            "example_label": _example_label(engine.bundle.class_names),
            "max_upload_bytes": max_upload_bytes,
            **({"cluster": engine.cluster.status()} if engine.cluster is not None else {}),
        }

    @app.post("/api/search")
    async def search(
        image: UploadFile | None = None,
        k: str = Query("8", description="hits wanted: 1 to the number of indexed images"),
        more: str | None = None,
        less: str | None = None,
        explain: bool = False,
        where: str | None = Form(None, description="filter (docs/filters.md); a form field holds a long id list"),
        where_query: str | None = Query(None, alias="where", description="filter, as a query parameter"),
        id: str | None = Query(None, description="search by this indexed image instead of an upload"),
        pixels: str | None = Form(None, description="or an image prepared already: base64 float32, the model's shape"),
        arrays: bool = Query(False, description="add the query, reconstruction and latent as base64 float32"),
        map_method: str | None = Query(None, alias="map", description="place the query on this map: pca or tsne"),
    ) -> Response:
        sources = sum(source is not None for source in (image, id, pixels))
        if sources != 1:
            raise InvalidArgumentError(
                "send either an image (multipart field `image`) or an indexed image's `id` "
                "(or `pixels`, as aesearch.Client does): one of them"
            )
        engine = live.get()
        k = parse_int(k, "k", low=1, high=len(engine))
        where = engine.subset(_one_filter(where, where_query))[0]  # a bad filter: 400 before decoding
        if explain and k > defaults.SERVER_MAX_EXPLAINED_HITS:  # a minute of CPU at k = 70,000 otherwise
            raise InvalidArgumentError(
                f"explain=true explains at most {defaults.SERVER_MAX_EXPLAINED_HITS} hits, got k={k}: ask for fewer "
                "hits, or leave explain out"
            )
        number = None if id is None else parse_int(id, "image id")
        if pixels is not None:  # aesearch.Client frames images as the engine does, and sends them exactly
            framed = wire.floats_from(pixels, engine.autoencoder.config.image_shape, "pixels")
            if not np.isfinite(framed).all() or framed.min(initial=0) < 0 or framed.max(initial=0) > 1:
                raise InvalidArgumentError(  # the engine's words name prepare(), a Python call
                    "pixels hold values outside [0, 1]: send the image framed by the bundle's contract "
                    "(as aesearch.Client does), or upload the image file as `image`"
                )
        filename = (image.filename or "")[:_ECHO] if image is not None else f"id {number}" if number is not None else ""

        def answer() -> JSONResponse:  # on a decode slot: everything but parsing the request
            if number is not None:
                result = _query_id(engine, number, k, where)
            elif pixels is not None:  # framed by the client as the engine frames: not framed again
                result = engine.query_prepared(framed[None], k, where=where)[0]
            else:
                name = f"uploaded file {filename}".rstrip()
                result = engine.query(image.file.read(), k, max_pixels=max_pixels, name=name, where=where)
            result = steering.steer(engine, result, more=more, less=less)  # feedback marks, if any
            return JSONResponse(
                {
                    "query": filename,
                    **result.to_dict(),
                    # a client asking for the arrays has no use for pictures of them
                    **({"arrays": wire.arrays_of(result)} if arrays else {}),
                    **({} if arrays else {"query_png": _png_data_url(result.query)}),
                    **({} if arrays else {"reconstruction_png": _png_data_url(result.reconstruction)}),
                    **({"marked": steering.marked_hits(engine, result)} if result.feedback else {}),
                    **({"explanations": steering.explanations(engine, result)} if explain else {}),
                    **map_routes.placement(app, engine, result, map_method),
                }
            )

        # One hop to a decode thread and back, and the answer made there: a sync route would add
        # a hop through the thread pool, and FastAPI's checks of a returned dict cost more than
        # the JSON itself.
        return await slots.run_async(answer)

    @app.post("/api/refine")
    def refine(
        latent: str = Form(description="the searched vector: base64 of little-endian float32, as arrays=true gives"),
        k: str = Query(description="hits wanted: 1 to the number of indexed images"),
        more: str | None = None,
        less: str | None = None,
        where: str | None = Form(None, description="filter (docs/filters.md): the one the result was made with"),
        where_query: str | None = Query(None, alias="where", description="filter, as a query parameter"),
    ) -> Response:
        """engine.refine for a client that holds the result: every mark so far, in order (the server keeps none)."""
        engine = live.get()
        k = parse_int(k, "k", low=1, high=len(engine))
        vector = wire.floats_from(latent, (engine.autoencoder.z_size,), "latent")
        if np.abs(vector).max(initial=0) > MAX_LATENT:  # past it, whitening overflows float32
            raise InvalidArgumentError(
                f"latent holds values past {MAX_LATENT:g}, far beyond any encoder's output: "
                "send the latent a query returned"
            )
        where = engine.subset(_one_filter(where, where_query))[0]  # ?where= was dropped without a word
        # refine reads only the latent, its marks and its filter
        seed = QueryResult([], vector, vector, 0.0, None, vector, where=where)
        result = engine.refine(seed, steering.parse_ids(more, "more"), steering.parse_ids(less, "less"), k=k)
        return JSONResponse({"k": len(result.hits), "hits": [hit.to_dict() for hit in result.hits]})

    @app.get("/api/images/{id}.png")
    def indexed_image(id: str, scale: str = Query("1", description="enlargement, 1 to 16")) -> Response:
        number, scale = parse_int(id, "image id"), parse_int(scale, "scale", low=1, high=16)
        engine = live.get()
        try:
            pixels = engine.image(number)
        except InvalidArgumentError as exc:
            raise NotIndexed(str(exc)) from None
        image = Image.fromarray(pixels)
        if scale > 1:
            image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        return Response(_png(image), media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})

    app.include_router(duplicate_router(live, allow_moves=allow_moves))

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.include_router(map_routes.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


MAX_LATENT = 1e6  # |z| beyond any trained encoder's output (the shipped model's: under 20 on 10,000 images)


class NotIndexed(Exception):
    """An id the bundle does not hold, asked for by URL: 404."""


def _query_id(engine: SearchEngine, id: int, k: int, where) -> QueryResult:
    try:
        engine.hit(id)
    except InvalidArgumentError as exc:  # not indexed (a malformed id is a 400 before this)
        raise NotIndexed(str(exc)) from None
    return engine.query_id(id, k, where=where)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _png_data_url(array: np.ndarray) -> str:
    """A grey (H, W) or colour (H, W, 3) image in [0, 1] as a data URL of its 8-bit PNG, at its own size.

    The page enlarges it (image-rendering: pixelated). Written here rather than by Pillow: for a
    28x28 picture Pillow's PNG writer costs 110 us, this 25 us, and every search sends two.
    """
    pixels = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    height, width = pixels.shape[:2]
    colour_type = 2 if pixels.ndim == 3 else 0  # PNG's truecolour (RGB) or greyscale
    line = pixels.reshape(height, -1)  # a row's samples in order: R, G, B, R, ... for colour
    rows = np.zeros((height, line.shape[1] + 1), np.uint8)  # each row starts with filter type 0 (none)
    rows[:, 1:] = line
    header = struct.pack(">IIBBBBB", width, height, 8, colour_type, 0, 0, 0)  # 8 bits a sample, no interlace
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows.tobytes()))
    png += _chunk(b"IEND")
    return "data:image/png;base64," + base64.b64encode(png).decode()


def _chunk(kind: bytes, data: bytes = b"") -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


class _UploadLimit:
    """ASGI middleware: 413 for a request body over max_bytes, checked as it streams in."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await self._too_large(send)
        received = 0
        too_large = False

        async def counting_receive():
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return message

        async def guarded_send(message) -> None:
            if not too_large:  # whatever the app answers to a cut-off body, the answer is 413
                await send(message)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, counting_receive, guarded_send)
        if too_large:
            await self._too_large(send)

    async def _too_large(self, send) -> None:
        limit = f"{self.max_bytes / 1024 / 1024:g} MB"
        response = JSONResponse({"detail": f"upload is over the {limit} limit: send a smaller image"}, 413)
        await send({"type": "http.response.start", "status": 413, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})


class _BodyTooLarge(Exception):
    pass

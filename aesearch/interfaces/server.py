"""`aesearch serve`: an HTTP API and a web page over one SearchEngine, loaded once.

    POST /api/search?k=8        multipart field `image` -> the `aesearch query --json` object, plus
                                the preprocessed query and the reconstruction as PNG data URLs;
                                &more=ID,ID&less=ID refines it with feedback marks, &explain=true
                                adds difference maps and interpolation strips (steering.py);
                                &id=ID searches by an indexed image instead of an upload, &map=pca
                                adds where the query and hits fall on the map (map_routes.py)
    GET  /api/map...            the page's latent map (map_routes.py)
    GET  /api/images/{id}.png   an indexed image (?scale=1..16 enlarges it, nearest neighbour)
    GET  /api/health            bundle summary: count, and when it last changed (generation, updated)
    GET  /                      the page (static/, no external resources)

The engine is read-only and its arrays are shared between threads; FastAPI runs each request in
its thread pool. When a writer (sync, add, remove) publishes a new state, the next request swaps
in a freshly loaded engine (search/live.py). Uploads over the limit are refused with 413 before
they are read whole; a body that is not a usable image gets 400 with the CLI's one-line message;
nothing ever writes to the bundle, and no route reads a file outside the package's static folder.
Every integer a client sends (id, k, scale, more, less) is read by aesearch.integers: anything but
ASCII digits in range is a 400 with one line, never a 500 from an overflow deeper down.
security.py adds the Host allow-list, security headers, time limits, decode slots and connection caps; no
interactive API docs (they would load scripts from a CDN): the schema is at /api/openapi.json.
"""

from __future__ import annotations

import base64
import contextlib
import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from fastapi import FastAPI, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from aesearch import defaults
from aesearch._version import __version__
from aesearch.errors import AesearchError, InvalidArgumentError
from aesearch.integers import parse_int
from aesearch.interfaces import map_routes, steering
from aesearch.interfaces.security import LOCAL_HOSTS, Busy, DecodeSlots, Guard, allowed_name
from aesearch.search.engine import SearchEngine
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
) -> FastAPI:
    """The app, with its bundle loaded and verified now (a bad bundle fails here, not per request).

    Args:
        max_pixels: uploads with more pixels are refused before decoding (server-side limit).
        decode_slots: uploads decoded at once; with max_pixels this bounds the server's memory.
        allowed_hosts: Host header names answered (DNS rebinding defence); "*" answers any.
        cors_origins: origins whose pages may read the API from a browser (none by default).
        max_in_flight: requests answered at once; more get 503 at once.
    """
    hosts = [allowed_name(h) for h in (*LOCAL_HOSTS, *allowed_hosts)]  # a bad --allowed-host fails here
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
        return JSONResponse({"detail": exc.in_words(_FIELDS)}, status_code=400)

    @app.exception_handler(Busy)
    async def _busy(request: Request, exc: Busy) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "1"})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default answer quotes the input back whole (kilobytes, if that is what was sent).
        problems = [
            f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg', 'invalid')}"
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
            "max_upload_bytes": max_upload_bytes,
        }

    @app.post("/api/search")
    def search(
        image: UploadFile | None = None,
        k: str = Query("8", description="hits wanted: 1 to the number of indexed images"),
        more: str | None = None,
        less: str | None = None,
        explain: bool = False,
        id: str | None = Query(None, description="search by this indexed image instead of an uploaded one"),
        map_method: str | None = Query(None, alias="map", description="place the query on this map: pca or tsne"),
    ) -> dict:
        engine = live.get()
        k = parse_int(k, "k", low=1, high=len(engine))
        if explain and k > defaults.SERVER_MAX_EXPLAINED_HITS:  # a minute of CPU at k = 70,000 otherwise
            raise InvalidArgumentError(
                f"explain=true explains at most {defaults.SERVER_MAX_EXPLAINED_HITS} hits, got k={k}: ask for fewer "
                "hits, or leave explain out"
            )
        if (image is None) == (id is None):
            raise InvalidArgumentError("send either an image (multipart field `image`) or an indexed image's `id`")
        if id is not None:  # an indexed image: nothing to upload or decode
            number = parse_int(id, "id")
            filename, result = f"id {number}", engine.query_id(number, k)
        else:
            filename = (image.filename or "")[:_ECHO]
            name = f"uploaded file {filename}".rstrip()
            result = slots.run(lambda: engine.query(image.file.read(), k, max_pixels=max_pixels, name=name))
        result = steering.steer(engine, result, more=more, less=less)  # feedback marks, if any
        return {
            "query": filename,
            **result.to_dict(),
            "query_png": _png_data_url(result.query),
            "reconstruction_png": _png_data_url(result.reconstruction),
            **({"marked": steering.marked_hits(engine, result)} if result.feedback else {}),
            **({"explanations": steering.explanations(engine, result)} if explain else {}),
            **map_routes.placement(app, engine, result, map_method),
        }

    @app.get("/api/images/{id}.png")
    def indexed_image(id: str, scale: str = Query("1", description="enlargement, 1 to 16")) -> Response:
        number, scale = parse_int(id, "image id"), parse_int(scale, "scale", low=1, high=16)
        engine = live.get()
        try:
            pixels = engine.image(number)
        except InvalidArgumentError as exc:
            raise HTTPException(404, str(exc)) from None
        image = Image.fromarray(pixels)
        if scale > 1:
            image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        return Response(_png(image), media_type="image/png", headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.include_router(map_routes.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _png_data_url(array: np.ndarray, scale: int = 8) -> str:
    pixels = (np.clip(array, 0, 1) * 255).round().astype(np.uint8)
    image = Image.fromarray(pixels)
    image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
    return "data:image/png;base64," + base64.b64encode(_png(image)).decode()


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

"""aesearch.Client: the search engine's query methods, answered by an `aesearch serve` elsewhere.

    engine = SearchEngine.load("indexes/fashion-mnist")     # local
    engine = Client("http://search.example:8000")           # the same calls, over HTTP

query, query_id, refine and image return what the engine's do, equal to the last bit: hits (ids,
ranks, distances: JSON carries a Python float exactly), labels, paths, trust, and the query,
reconstruction and latent arrays (the server sends them as base64 float32 when asked with
arrays=true; the page's answers leave them out). An image is framed here, by the engine's own
preprocessing (sources/preprocess.py: NumPy and Pillow) under the served model's contract (its
health says which: 28x28 grey silhouettes, or a colour member's size), and what it makes goes to the
server exactly, so every input the engine takes works the same (a path, bytes, a PIL image, an array) and
a photo is not uploaded whole. Errors are the engine's classes with the server's one-line
message; a server that cannot be reached or cannot answer is a ServerError naming the URL.
One HTTP/1.1 connection is kept open (httpx), so a search costs one round trip.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import replace

import httpx
import numpy as np
from PIL import Image

from aesearch import errors
from aesearch.errors import AesearchError, ImageError, InvalidArgumentError, ServerError, reason
from aesearch.integers import check_int
from aesearch.interfaces import wire
from aesearch.model.architecture import ModelConfig
from aesearch.search.engine import Hit, QueryResult
from aesearch.search.feedback import Feedback
from aesearch.search.filters import Filter
from aesearch.search.selection import Selection
from aesearch.search.trust import Trust
from aesearch.sources.preprocess import (
    DEFAULT_MAX_PIXELS,
    SEED,
    ImageSource,
    preprocess_batch,
    preprocess_keeping_originals,
)

DEFAULT_URL = "http://127.0.0.1:8000"  # `aesearch serve`'s own default address
TIMEOUT_S = 60.0  # a server under load queues uploads up to 30 s before it answers 503
# The engine's exception for each refusal that carries no class of its own.
_BY_STATUS = {404: InvalidArgumentError, 413: ImageError, 422: InvalidArgumentError}


class Client:
    """A server's search engine: query, query_id, refine, image and health, over one kept-open connection.

    >>> with Client("http://127.0.0.1:8000") as engine:
    ...     result = engine.query("shoe.jpg", k=8)
    """

    def __init__(self, url: str = DEFAULT_URL, *, timeout: float = TIMEOUT_S) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise InvalidArgumentError(f"url must start with http:// or https://, got {str(url)[:80]!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or not 0 < timeout < float("inf"):
            raise InvalidArgumentError(f"timeout is seconds to wait for the server, above 0, got {timeout!r}")
        self.url = url.rstrip("/")
        self._timeout = float(timeout)
        self._http = httpx.Client(base_url=self.url, timeout=self._timeout)
        self._model_config: ModelConfig | None = None

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (a later call opens another)."""
        self._http.close()

    # --- the engine's methods ---

    def query(
        self,
        image: ImageSource,
        k: int = 8,
        *,
        where: str | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        name: str | None = None,
        keep_original: bool = False,
    ) -> QueryResult:
        """engine.query(image, k) on the server: image is a path, the file's bytes, a PIL image or an array.

        where: a filter, sent as the server's `where` form field (the server's filter language).
        max_pixels, name, keep_original: as the engine's (they concern the framing, done here).
        """
        k = _integer(k, "k")
        max_pixels = check_int(max_pixels, "max_pixels", low=1)
        framing = {"max_pixels": max_pixels, "name": name, "keep_original": keep_original, "where": where}
        config = self.model_config()  # the bundle's contract: 28x28 grey silhouettes, or a colour member's
        try:
            return self._framed_search(image, k, config, **framing)
        except InvalidArgumentError:
            # The server may have been rebuilt with another model since this Client asked for its
            # contract (it refuses pixels of the old size): asked again and, if it changed, framed again.
            self._model_config = None
            if self.model_config() == config:
                raise
            return self._framed_search(image, k, self.model_config(), **framing)

    def _framed_search(self, image, k, config, *, max_pixels, name, keep_original, where) -> QueryResult:
        options = {"max_pixels": max_pixels, "name": name, "model_config": config}
        if keep_original:  # the engine's own calls, so its errors and its framing, to the bit
            framed, (original,) = preprocess_keeping_originals([image], **options)
        else:
            framed, original = preprocess_batch([image], **options), None
        fields = {"pixels": wire.encode(framed[0])["float32"], **_where(where)}  # searched as sent
        return replace(self._search({"k": k}, fields), original=original)

    def query_id(self, id: int, k: int = 8, *, where: str | None = None) -> QueryResult:
        """engine.query_id(id, k): search by an indexed image (it finds itself first, at distance 0)."""
        id, k = _integer(id, "an image id"), _integer(k, "k")
        return self._search({"k": k, "id": id}, _where(where))

    def refine(
        self, result: QueryResult, more: Sequence[int] = (), less: Sequence[int] = (), *, k: int | None = None
    ) -> QueryResult:
        """engine.refine: search again with these ids marked "more like this" / "less like this".

        The marks add up over rounds, as the engine's do; the server keeps none, so every mark so
        far goes with each call, with the result's latent.
        """
        if not isinstance(result, QueryResult):
            raise InvalidArgumentError(
                f"result must be what a query returned (a QueryResult), got {type(result).__name__}"
            )
        feedback = result.feedback.add(more, less)  # the engine's own checks and order
        k = len(result.hits) if k is None else _integer(k, "k")
        params = {"k": k, "more": _ids(feedback.more), "less": _ids(feedback.less)}
        latent = {"latent": wire.encode(result.latent)["float32"], **_where(result.where and result.where.text)}
        answer = self._call("POST", "/api/refine", params=params, data=latent)
        return replace(result, hits=[_hit(h) for h in answer["hits"]], feedback=feedback)

    def image(self, id: int) -> np.ndarray:
        """engine.image(id): the indexed image, as pictures show it (uint8)."""
        id = _integer(id, "an image id")
        response = self._request("GET", f"/api/images/{id}.png")
        try:
            with Image.open(io.BytesIO(response.content)) as picture:
                return np.asarray(picture).copy()
        except Exception as exc:
            raise ServerError(f"{self.url} sent image {id} as something that is not a PNG ({reason(exc)})") from None

    def images(self, ids: Sequence[int]) -> np.ndarray:
        """(n, *picture_shape) uint8: these indexed images (a result's images_of)."""
        pictures = [self.image(id) for id in ids]
        return np.stack(pictures) if pictures else np.zeros((0, *self.model_config().picture_shape), np.uint8)

    def model_config(self) -> ModelConfig:
        """The served bundle's model: its input size, channels and framing (asked once per Client;
        a server older than the field serves the seed's 28x28 grey silhouettes)."""
        if self._model_config is None:
            described = self.health().get("model_config")
            try:
                self._model_config = ModelConfig.from_dict(described) if described else SEED
            except (KeyError, TypeError, ValueError) as exc:
                raise ServerError(f"{self.url} describes its model as something unreadable ({reason(exc)})") from None
        return self._model_config

    def __len__(self) -> int:
        """How many images the server's bundle holds now (asked each time: a sync may change it)."""
        return int(self.health()["count"])

    def health(self) -> dict:
        """The server's /api/health: count, z size, index type, metric, version, generation."""
        return self._call("GET", "/api/health")

    # --- HTTP ---

    def _search(self, params: dict, fields: dict) -> QueryResult:
        answer = self._call("POST", "/api/search", params={**params, "arrays": "true"}, data=fields)
        arrays = {name: wire.decode(answer["arrays"][name]) for name in wire.ARRAYS}
        return QueryResult(
            hits=[_hit(h) for h in answer["hits"]],
            query=arrays["query"],
            reconstruction=arrays["reconstruction"],
            reconstruction_mse=answer["reconstruction_mse"],
            trust=Trust(*(answer[f"{signal}_percentile"] for signal in ("reconstruction", "neighbour", "content"))),
            latent=arrays["latent"],
            feedback=Feedback(),
            images_of=self.images,
            # the server checked it; kept so refine() narrows within it, as the engine's results do
            where=Filter.parse(fields["where"]) if fields.get("where") else None,
            missing_shards=tuple(answer.get("missing_shards", ())),  # a cluster's flagged partial answer
        )

    def _call(self, method: str, path: str, **options) -> dict:
        response = self._request(method, path, **options)
        try:
            return response.json()
        except ValueError:
            raise ServerError(f"{self.url}{path} answered with something other than JSON: is it aesearch?") from None

    def _request(self, method: str, path: str, **options) -> httpx.Response:
        if self._http.is_closed:  # close() ends a connection, not the Client: a later call opens another
            self._http = httpx.Client(base_url=self.url, timeout=self._timeout)
        try:
            response = self._http.request(method, path, **options)
        except httpx.TimeoutException:
            raise ServerError(f"the aesearch server at {self.url} did not answer in time: try again later") from None
        except httpx.TransportError as exc:
            raise ServerError(
                f"cannot reach the aesearch server at {self.url} ({reason(exc) or type(exc).__name__}): "
                "start it with `aesearch serve`, or check the URL"
            ) from None
        if response.is_success:
            return response
        raise refusal(response, self.url)


def refusal(response: httpx.Response, url: str) -> AesearchError:
    """The exception the engine would have raised, with the server's one-line message."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    detail = body.get("detail") if isinstance(body, dict) else None
    status = response.status_code
    if not isinstance(detail, str):
        detail = f"the aesearch server at {url} answered {status} {response.reason_phrase}"
    if status == 404 and not (isinstance(body, dict) and body.get("error")):  # not one of aesearch's own 404s
        try:
            path = f" at {response.request.url.path}"
        except RuntimeError:  # a response made without its request
            path = ""
        return ServerError(
            f"{url} has no aesearch API{path} (404 Not Found): give the server's own address, "
            "as `aesearch serve` prints it (e.g. http://127.0.0.1:8000)"
        )
    if status == 400:
        named = getattr(errors, str(body.get("error")), None)
        kind = named if isinstance(named, type) and issubclass(named, AesearchError) else AesearchError
        return kind(detail)
    if status in _BY_STATUS:
        return _BY_STATUS[status](detail)
    return ServerError(f"{detail} ({url} answered {status})" if status >= 500 else detail)


def _hit(data: dict) -> Hit:
    return Hit(
        rank=data["rank"],
        id=data["id"],
        label=data["label"],
        label_name=data["label_name"],
        split=data["split"],
        position=data["position"],
        distance=data["distance"],
        path=data.get("path", ""),
    )


def _integer(value: object, name: str) -> int:
    """An int to send; its range is the server's to check (k's upper bound is its image count)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise InvalidArgumentError(f"{name} must be an integer, got {type(value).__name__}")
    return int(value)


def _ids(ids: Sequence[int]) -> str:
    return ",".join(str(i) for i in ids)


def _where(where: str | Filter | Selection | Sequence[int] | np.ndarray | None) -> dict:
    """The `where` form field: the filter's text (a Selection or ids as `id in (...)`)."""
    if isinstance(where, Selection):
        where = where.ids
    if isinstance(where, Filter):
        where = where.text
    elif isinstance(where, list | tuple | np.ndarray):  # ids, as the engine takes them
        where = Filter.of_ids(where).text
    if not where:
        return {}
    if not isinstance(where, str):
        raise InvalidArgumentError(
            f"where must be a filter's text, a Filter, a Selection or ids, got {type(where).__name__}"
        )
    return {"where": where}

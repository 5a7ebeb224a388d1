"""aesearch.Client against a real `aesearch serve` subprocess: the engine is the oracle.

Every answer must equal what SearchEngine.load(the same bundle) returns for the same call, to the
last bit (hits, distances, trust, arrays), and every refusal must raise the engine's exception with
the engine's message. Two bundles: a dataset bundle (labels, l2: feedback by Rocchio) and a folder
collection (paths, cosine: feedback by the classifier).
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import time
from dataclasses import fields
from pathlib import Path

import httpx
import numpy as np
import pytest
from image_folders import write_image_folder
from PIL import Image

import aesearch
from aesearch import defaults
from aesearch.errors import AesearchError, ImageError, InvalidArgumentError, ServerError
from aesearch.interfaces.client import Client, refusal
from aesearch.interfaces.workers import split_limits
from aesearch.model.architecture import member_for
from aesearch.pipelines.collection import build_from_folders
from aesearch.search.engine import QueryResult, SearchEngine
from aesearch.search.index import IndexSpec

ROOT = Path(__file__).resolve().parents[1]


def serve(index: Path, *options: str) -> tuple[subprocess.Popen, str]:
    """`aesearch serve` on a free loopback port, once it answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "aesearch", "serve", "--index-dir", str(index), "--port", str(port), *options],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/api/health").raise_for_status()
            return process, url
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"aesearch serve did not start: {process.stderr.read().decode()[-2000:]}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def collection(tmp_path_factory, model) -> tuple[Path, Path]:
    """(a folder of images, its collection bundle): paths, folder labels, cosine."""
    folder = write_image_folder(tmp_path_factory.mktemp("client") / "pics")
    index = folder.root.parent / "idx"
    spec = IndexSpec("flat", "cosine", {}, "none")
    build_from_folders(
        index,
        images=[folder.root],
        labels="folders",
        model=model,
        spec=spec,
        shifts=((0, 0), (1, 1)),
        workers=1,
        log=None,
    )
    return folder.root, index


@pytest.fixture(scope="module", params=["dataset", "collection"])
def pair(request, tiny_bundle, collection):
    """(engine, client) over the same bundle, the client talking to a server of its own."""
    index = tiny_bundle if request.param == "dataset" else collection[1]
    process, url = serve(index)
    try:
        with Client(url) as client:
            yield SearchEngine.load(index), client
    finally:
        process.terminate()
        process.wait(timeout=10)


def assert_same(got: QueryResult, expected: QueryResult) -> None:
    """Every field equal, arrays bit for bit (dtype and shape too); images_of gives the same pixels."""
    assert type(got) is QueryResult
    for field in fields(QueryResult):
        a, b = getattr(got, field.name), getattr(expected, field.name)
        if field.name == "images_of":
            ids = [hit.id for hit in expected.hits]
            assert np.array_equal(a(ids), b(ids)) and a(ids).dtype == b(ids).dtype
        elif isinstance(b, np.ndarray):
            assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), field.name
        else:
            assert a == b, field.name
    assert [h.distance for h in got.hits] == [h.distance for h in expected.hits]  # floats, exactly


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def inputs(engine: SearchEngine, collection_root: Path) -> dict[str, object]:
    """One image in every form the engine takes."""
    pixels = engine.image(len(engine) - 2)
    light = 255 - np.kron(engine.image(3), np.ones((3, 3), np.uint8))  # dark on light, 84x84: framed
    # A grey square on white frames into a light silhouette filling the frame, which framing again
    # would negate: the client refused such images (9% of a new user's icons) before it sent them framed.
    square = np.full((70, 70), 255, np.uint8)
    square[5:65, 5:65], square[33:37, 10:14] = 60, 255
    return {
        "frames light": square,
        "uint8 array": pixels,
        "float array": pixels.astype(np.float32) / 255,
        "light array": light,
        "bytes": png(light),
        "PIL image": Image.fromarray(light).convert("RGB"),
        "path": next(collection_root.glob("ring/light-*.png")),
        "path str": str(next(collection_root.rglob("*.jpg"))),
    }


@pytest.mark.parametrize(
    "form", ["uint8 array", "float array", "light array", "bytes", "PIL image", "path", "path str", "frames light"]
)
def test_query_equals_the_engine_for_every_kind_of_input(pair, collection, form):
    engine, client = pair
    image = inputs(engine, collection[0])[form]
    for k in (1, 5):
        assert_same(client.query(image, k=k), engine.query(image, k=k))


def test_the_engines_query_options_work_the_same(pair, collection):
    engine, client = pair
    path = next(collection[0].glob("ring/light-*.png"))
    got, expected = client.query(path, k=3, keep_original=True), engine.query(path, k=3, keep_original=True)
    assert_same(got, expected)
    assert got.original.tobytes() == expected.original.tobytes() and got.original.size == expected.original.size
    for options in ({"max_pixels": 100}, {"max_pixels": 100, "name": "the sketch"}):
        with pytest.raises(ImageError) as local:
            engine.query(path, k=3, **options)
        with pytest.raises(ImageError, match="over the limit") as remote:
            client.query(path, k=3, **options)
        assert str(remote.value) == str(local.value)


def test_query_id_equals_the_engine(pair):
    engine, client = pair
    for id in (0, len(engine) - 1):
        result = client.query_id(id, k=4)
        assert_same(result, engine.query_id(id, k=4))
        assert result.hits[0].id == id and result.hits[0].distance == 0.0


def test_refine_equals_the_engine_round_after_round(pair):
    engine, client = pair
    image = engine.image(7)
    ours, theirs = client.query(image, k=8), engine.query(image, k=8)
    ids = [hit.id for hit in theirs.hits]
    rounds = [((ids[1], ids[2]), (ids[5],), None), ((ids[6],), (ids[1],), 5), ((), (), None)]
    for more, less, k in rounds:  # marks add up; a later mark replaces an opposite one
        ours, theirs = client.refine(ours, more, less, k=k), engine.refine(theirs, more, less, k=k)
        assert_same(ours, theirs)
        assert ours.feedback == theirs.feedback and ours.feedback


def test_images_and_health(pair):
    engine, client = pair
    for id in (0, 5, len(engine) - 1):
        got = client.image(id)
        assert got.dtype == np.uint8 and np.array_equal(got, engine.image(id))
    health = client.health()
    assert health["count"] == len(engine) and health["z_size"] == engine.manifest["z_size"]
    assert len(client) == len(engine)  # as the engine answers len()


def test_one_connection_serves_every_call(pair):
    engine, client = pair
    client.health()
    client.query_id(1, k=2)
    client.image(1)
    client.refine(client.query(engine.image(2), k=3), more=[4])
    assert len(client._http._transport._pool.connections) == 1


def error_cases(engine: SearchEngine) -> dict[str, object]:
    """Calls the engine refuses, each written once for the engine and the client alike."""
    n = len(engine)
    return {
        "not an image": lambda e: e.query(b"this is not an image"),
        "empty bytes": lambda e: e.query(b""),
        "a wrong type": lambda e: e.query(3.5),
        "k of 0": lambda e: e.query(engine.image(1), k=0),
        "k over the count": lambda e: e.query(engine.image(1), k=n + 1),
        "unknown id": lambda e: e.query_id(n),
        "negative id": lambda e: e.query_id(-1),
        "unknown image": lambda e: e.image(n + 5),
        "a mark on an unknown id": lambda e: e.refine(e.query_id(1, k=2), more=[n]),
        "one id marked both ways": lambda e: e.refine(e.query_id(1, k=2), more=[3], less=[3]),
        "a refine of something else": lambda e: e.refine("hits", more=[3]),
    }


@pytest.mark.parametrize(
    "case",
    [
        "not an image",
        "empty bytes",
        "a wrong type",
        "k of 0",
        "k over the count",
        "unknown id",
        "negative id",
        "unknown image",
        "a mark on an unknown id",
        "one id marked both ways",
        "a refine of something else",
    ],
)
def test_refusals_are_the_engines_exceptions(pair, case):
    engine, client = pair
    call = error_cases(engine)[case]
    with pytest.raises(AesearchError) as expected:
        call(engine)
    with pytest.raises(AesearchError) as got:
        call(client)
    assert type(got.value) is type(expected.value)
    assert "\n" not in str(got.value) and str(got.value)
    if case not in ("negative id", "a wrong type", "unknown image"):  # the server parses text: its own words
        assert str(got.value) == str(expected.value)


def test_a_client_checks_its_timeout_and_outlives_close(pair):
    """Client(timeout=-1) failed at its first request with httpx's ValueError; a call after close()
    raised httpx's RuntimeError, though close() says a later call opens another connection; a URL
    with a path past the server's (…/api) was "InvalidArgumentError: Not Found" (second new-user trial)."""
    _, client = pair
    for timeout in (-1, 0, float("nan"), "5", True):
        with pytest.raises(InvalidArgumentError, match="timeout is seconds to wait"):
            Client(client.url, timeout=timeout)
    client.close()
    assert client.health()["status"] == "ok"
    with Client(client.url + "/api") as wrong, pytest.raises(ServerError, match="has no aesearch API at /api/"):
        wrong.query_id(1, k=1)


def test_an_unreachable_server_is_one_line_naming_it():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    with Client(url) as client, pytest.raises(ServerError, match=f"cannot reach the aesearch server at {url}"):
        client.health()
    with pytest.raises(InvalidArgumentError, match="url must start with http"):
        Client("127.0.0.1:8000")


@pytest.mark.parametrize(
    ("status", "body", "kind", "message"),
    [
        (400, {"detail": "bad k", "error": "InvalidArgumentError"}, InvalidArgumentError, "bad k"),
        (400, {"detail": "not a PNG", "error": "ImageError"}, ImageError, "not a PNG"),
        (400, {"detail": "odd", "error": "SystemExit"}, AesearchError, "odd"),  # only our own classes
        (400, {"detail": "this server does not answer for that Host header"}, AesearchError, "Host header"),
        (404, {"detail": "no id 9", "error": "InvalidArgumentError"}, InvalidArgumentError, "no id 9"),
        (404, {"detail": "Not Found"}, ServerError, "has no aesearch API (404 Not Found): give the server's own"),
        (413, {"detail": "upload is over the 10 MB limit"}, ImageError, "over the 10 MB limit"),
        (422, {"detail": "image: Field required"}, InvalidArgumentError, "Field required"),
        (503, {"detail": "the server is busy decoding 2 other uploads"}, ServerError, "busy decoding"),
        (500, "Internal Server Error", ServerError, "answered 500 Internal Server Error"),
    ],
)
def test_each_status_maps_to_the_engines_exception(status, body, kind, message):
    response = httpx.Response(status, json=body) if isinstance(body, dict) else httpx.Response(status, text=body)
    error = refusal(response, "http://example:8000")
    assert type(error) is kind and message in str(error)


def test_the_server_checks_what_a_client_sends(collection):
    """The fields aesearch.Client uses, sent wrong: one line each, the engine's exception."""
    process, url = serve(collection[1])
    try:
        with Client(url) as client:
            assert client.health()["status"] == "ok"
            with pytest.raises(InvalidArgumentError, match="latent must hold"):
                client._call("POST", "/api/refine", params={"k": 2}, data={"latent": "AAAA"})
            with pytest.raises(InvalidArgumentError, match="send either an image"):
                client._call("POST", "/api/search", params={"id": 1}, data={"pixels": "AAAA"})
            # A Client that asked for the contract before the bundle was rebuilt with another model
            # sent pixels of the old size, refused on every query (new-user trial): it asks again.
            served = client.model_config()
            client._model_config = member_for(32, 3, 16)
            first = collection[0] / SearchEngine.load(collection[1]).bundle.path_of(0)
            assert client.query(first, 3).hits[0].distance == pytest.approx(0, abs=1e-5)
            assert client.model_config() == served
            with pytest.raises(InvalidArgumentError, match="bad filter"):  # a refusal for another cause stays one
                client.query(first, 3, where="nonsense ===")
    finally:
        process.terminate()
        process.wait(timeout=10)


def children_of(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.add(int(stat.parent.name))
    return out


def test_worker_processes_answer_alike_and_stop_together(tiny_bundle):
    """--workers 2: two children of the one process, either answering, all gone on SIGTERM."""
    engine = SearchEngine.load(tiny_bundle)
    process, url = serve(tiny_bundle, "--workers", "2")
    try:
        workers = children_of(process.pid)
        assert len(workers) == 2
        for id in range(8):  # a new connection each: the kernel hands them to either worker
            with Client(url) as client:
                assert_same(client.query(engine.image(id), k=3), engine.query(engine.image(id), k=3))
    finally:
        process.terminate()
        assert process.wait(timeout=20) == 0
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def test_limits_are_divided_among_workers():
    assert split_limits(1, slots=2, cap=32) == {"slots": 2, "cap": 32}
    assert split_limits(2, slots=2, cap=32, total=512) == {"slots": 1, "cap": 16, "total": 256}
    assert split_limits(3, slots=2, cap=32) == {"slots": 1, "cap": 11}  # never 0; the totals grow by under 3


def test_workers_default_to_one_process_per_core(monkeypatch):
    from aesearch.interfaces import workers

    monkeypatch.setattr(workers, "CORES", 2)
    assert workers.parse_workers("auto") == 2 and workers.parse_workers(" AUTO ") == 2
    monkeypatch.setattr(workers, "CORES", 64)
    assert workers.parse_workers("auto") == defaults.SERVER_MAX_AUTO_WORKERS == 4
    monkeypatch.setattr(workers, "CORES", 1)
    assert workers.parse_workers("auto") == 1 and workers.parse_workers("3") == 3
    for bad in ("0", "65", "two", "", "-1"):
        with pytest.raises(InvalidArgumentError, match="--workers must be `auto` or a number from 1 to 64"):
            workers.parse_workers(bad)
    monkeypatch.delattr(workers.os, "fork")  # a system that cannot fork: one process
    assert workers.parse_workers("auto") == 1
    with pytest.raises(InvalidArgumentError, match="--workers 1"):
        workers.parse_workers("2")


def test_client_is_part_of_the_public_api_and_imports_no_torch():
    assert aesearch.Client is Client and "Client" in aesearch.__all__ and "ServerError" in aesearch.__all__
    code = "import sys, aesearch; aesearch.Client; print(sorted(m for m in sys.modules if m.startswith('torch')))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_the_workers_parent_stops_on_a_signal_that_lands_on_another_of_its_threads():
    """`kill -INT` on `serve --workers 2` could stop nothing: a signal the kernel hands to another
    thread of the parent (its warm-up reader) did not wake its blocking wait, and Python runs the
    handler in the main thread only. The parent polls, so the handler runs and stops the children."""
    import signal
    import threading

    from aesearch.interfaces.workers import run_workers

    reader = threading.Event()
    other = threading.Thread(target=reader.wait, daemon=True)  # a thread that is there, and blocks
    other.start()
    threading.Timer(1.0, lambda: signal.pthread_kill(other.ident, signal.SIGINT)).start()
    start = time.perf_counter()
    status = run_workers(lambda: time.sleep(30), 2)  # the children would serve for 30 s
    reader.set()
    assert status == 0 and time.perf_counter() - start < 10

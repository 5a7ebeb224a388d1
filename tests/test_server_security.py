"""The server on a network: Host allow-list, headers on every answer, no CORS, time limits, slots."""

from __future__ import annotations

import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from aesearch.interfaces.security import HEADERS, Busy, DecodeSlots, host_of
from aesearch.interfaces.server import create_app
from aesearch.search.engine import SearchEngine


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    return SearchEngine.load(tiny_bundle)


@pytest.fixture(scope="module")
def app(engine):
    app = create_app(engine=engine, allowed_hosts=["search.lan"], max_upload_bytes=100_000)

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    return app


@pytest.fixture(scope="module")
def client(app):
    return TestClient(app, base_url="http://localhost:8000", raise_server_exceptions=False)


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("host", "allowed"),
    [("localhost:8000", True), ("127.0.0.1", True), ("[::1]:8000", True), ("search.lan:8000", True),
     ("evil.example", False), ("localhost.evil.example", False), ("", False), ("127.0.0.1.nip.io", False)],
)  # fmt: skip
def test_host_allow_list(client, host, allowed):
    response = client.get("/api/health", headers={"host": host})
    assert response.status_code == (200 if allowed else 400)
    if not allowed:
        assert "--allowed-host" in response.json()["detail"]
        assert response.headers["x-frame-options"] == "DENY"


def test_host_names():
    assert host_of("LocalHost:80") == "localhost" and host_of("[::1]:8000") == "::1" and host_of("::1") == "::1"


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [("get", "/", 200), ("get", "/static/app.js", 200), ("get", "/api/images/1.png", 200),
     ("get", "/api/images/999.png", 404), ("get", "/api/images/x.png", 400), ("post", "/api/search", 422),
     ("get", "/nowhere", 404), ("get", "/boom", 500)],
)  # fmt: skip
def test_security_headers_on_every_answer(client, method, url, status):
    response = getattr(client, method)(url)
    assert response.status_code == status
    for name, value in HEADERS:
        assert response.headers[name.decode()] == value.decode()
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]


def test_no_cors_unless_asked(client, engine):
    response = client.get("/api/health", headers={"origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    friendly = TestClient(create_app(engine=engine, cors_origins=["https://app.example"]), base_url="http://localhost")
    response = friendly.get("/api/health", headers={"origin": "https://app.example"})
    assert response.headers["access-control-allow-origin"] == "https://app.example"


def test_api_docs_load_nothing_from_outside(client):
    assert client.get("/api/docs").status_code == 404
    schema = client.get("/api/openapi.json")
    assert schema.status_code == 200 and "cdn" not in schema.text and "http" not in schema.text.replace("https", "")


def test_errors_do_not_echo_the_request(client):
    response = client.post("/api/search", params={"k": "9" * 5000})
    assert response.status_code == 422 and len(response.text) < 400
    name = "n" * 5000 + ".png"
    response = client.post("/api/search", files={"image": (name, b"not an image", "image/png")})
    assert response.status_code == 400 and len(response.text) < 400


def test_a_dataset_image_finds_itself_at_distance_zero_on_any_thread(client, engine):
    from concurrent.futures import ThreadPoolExecutor

    bodies = {i: png(engine.image(i)) for i in range(0, 120, 5)}

    def ask(i: int) -> tuple[int, int, float]:
        hit = client.post("/api/search?k=2", files={"image": ("q.png", bodies[i], "image/png")}).json()["hits"][0]
        return i, hit["id"], hit["distance"]

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(ask, list(bodies) * 3))
    assert all(i == found and distance == 0.0 for i, found, distance in answers), answers


def test_decodes_run_on_the_slots_threads_only_and_a_long_wait_is_refused():
    import threading

    slots = DecodeSlots(2, wait_s=0.2)
    names: set[str] = set()
    release = threading.Event()

    def work() -> str:
        names.add(threading.current_thread().name)
        release.wait(2)
        return "done"

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(slots.run, work) for _ in range(6)]
        time.sleep(0.5)
        release.set()
        outcomes = []
        for future in futures:
            try:
                outcomes.append(future.result())
            except Busy:
                outcomes.append("busy")
    assert len(names) <= 2 and all(name.startswith("aesearch-decode") for name in names)
    assert outcomes.count("done") >= 2 and "busy" in outcomes
    assert slots.run(lambda: 7) == 7  # free again


def test_a_stalled_body_is_cut_off_with_408(engine):
    import uvicorn

    app = create_app(engine=engine)
    app.guard_options.update(idle_timeout=0.3, body_timeout=1.0)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.02)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            head = (f"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 100000\r\n"
                    "Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n")  # fmt: skip
            conn.sendall(head.encode())
            start = time.monotonic()
            answer = conn.recv(4096).decode("latin-1")
            assert answer.startswith("HTTP/1.1 408") and time.monotonic() - start < 3
    finally:
        server.should_exit = True
        thread.join(5)


def assert_our_headers(headers) -> None:
    for name, value in HEADERS:
        assert headers[name.decode()] == value.decode(), name


@pytest.mark.parametrize(
    ("method", "url", "status", "message"),
    [("get", "/api/images/99999999999999999999.png", 400, "image id must be an integer from 0 to 2^63-1"),
     ("get", f"/api/images/{2**63}.png", 400, "image id must be an integer from 0 to 2^63-1"),
     ("get", f"/api/images/{-(2**63) - 1}.png", 400, "image id must be an integer from 0 to 2^63-1"),
     ("get", f"/api/images/{2**63 - 1}.png", 404, "no image with id"),
     ("get", "/api/images/%C2%B2.png", 400, "written in digits 0-9"),  # "²": str.isdigit() says yes
     ("get", "/api/images/%D9%A3.png", 400, "written in digits 0-9"),  # Arabic-Indic three
     ("get", "/api/images/1e3.png", 400, "written in digits 0-9"),
     ("get", "/api/images/3.png?scale=%C2%B2", 400, "scale must be an integer from 1 to 16"),
     ("get", "/api/images/3.png?scale=0", 400, "scale must be an integer from 1 to 16, got 0"),
     ("get", f"/api/images/3.png?scale={2**64}", 400, "scale must be an integer from 1 to 16"),
     ("post", "/api/search?k=%C2%B2", 400, "k must be an integer from 1 to 120 written in digits 0-9"),
     ("post", "/api/search?k=121", 400, "k must be an integer from 1 to 120, got 121"),
     ("post", f"/api/search?k={2**63}", 400, "k must be an integer from 1 to 120"),
     ("post", "/api/search?k=", 400, "k must be an integer from 1 to 120"),
     ("post", f"/api/search?more={2**63}", 400, "more takes integers from 0 to 2^63-1"),
     ("post", "/api/search?more=%C2%B2", 400, "more takes integers from 0 to 2^63-1"),
     ("post", "/api/search?less=1,,2", 400, "less takes integers from 0 to 2^63-1"),
     ("post", f"/api/search?less={2**63 - 1}", 400, "no image with id"),
     ("post", "/api/search?more=" + ",".join(["7"] * 5000), 400, "more takes up to 1000 indexed image ids")],
)  # fmt: skip
def test_integers_are_strict_and_never_a_500(client, engine, method, url, status, message):
    upload = {"files": {"image": ("q.png", png(engine.image(3)), "image/png")}} if method == "post" else {}
    response = getattr(client, method)(url, **upload)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert message in detail and "\n" not in detail and len(detail) < 200
    assert_our_headers(response.headers)

"""The server on a network: Host allow-list, headers on every answer, no CORS, time limits, slots,
strict integers, and (on a real uvicorn server: TestClient skips the protocol layer) the header
deadline, per-address and total connection caps, and uvicorn's own refusals."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from aesearch.errors import InvalidArgumentError
from aesearch.interfaces.security import HEADERS, Busy, DecodeSlots, Guard, GuardedH11Protocol, allowed_name, host_of
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


def assert_our_headers(headers) -> None:
    for name, value in HEADERS:
        assert headers[name.decode()] == value.decode(), name


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("localhost:8000", True),
        ("127.0.0.1", True),
        ("[::1]:8000", True),
        ("[0:0::1]", True),
        ("search.lan:8000", True),
        ("SEARCH.LAN", True),
        ("evil.example", False),
        ("localhost.evil.example", False),
        ("127.0.0.1.nip.io", False),
    ],
)
def test_host_allow_list(client, host, allowed):
    response = client.get("/api/health", headers={"host": host})
    assert response.status_code == (200 if allowed else 400)
    if not allowed:
        assert "--allowed-host" in response.json()["detail"]
        assert_our_headers(response.headers)


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1:1@evil.example",
        "user@localhost",
        "localhost:8000 evil",
        "local host",
        "",
        "localhost:",
        "localhost:99999",
        "localhost:80:80",
        "localhost:+80",
        "localhost:８０",
        "::1",
        "[::1",
        "[::1]x",
        "[fe80::1%25eth0]",
        "[127.0.0.1]",
        "locαlhost",
        "\u212aocalhost",
        "localhost%2e",
        "localhost/x",
    ],
)
def test_malformed_host_headers_are_refused(client, host):
    response = client.get("/api/health", headers={"host": host.encode("utf-8")})
    assert response.status_code == 400 and "\n" not in response.text
    assert "host" in response.json()["detail"].lower()
    assert_our_headers(response.headers)


@pytest.mark.parametrize(
    ("header", "host"),
    [
        ("LocalHost:80", "localhost"),
        ("[::1]:8000", "::1"),
        ("[0:0:0:0:0:0:0:1]", "::1"),
        ("a-b.c_d~e", "a-b.c_d~e"),
        ("127.0.0.1:65535", "127.0.0.1"),
        ("::1", None),
        ("x:65536", None),
        ("127.0.0.1:1@evil.example", None),
        (" localhost", None),
        ("localhost\t", None),
        ("", None),
        ("[::g]", None),
        ("\u212a", None),
    ],
)
def test_host_of(header, host):
    assert host_of(header) == host


def test_allowed_names_are_checked_when_the_app_is_made(engine):
    assert allowed_name("::1") == "::1" and allowed_name("Search.LAN:8000") == "search.lan" and allowed_name("*") == "*"
    with pytest.raises(InvalidArgumentError, match="--allowed-host 'a b' is not a host name"):
        create_app(engine=engine, allowed_hosts=["a b"])


@pytest.mark.parametrize(
    "origin", ["notaurl", "app.example", "https://app.example/", "ftp://app.example", "https://u@app.example", ""]
)
def test_cors_origins_are_checked_when_the_app_is_made(engine, origin):
    """`serve --cors-origin notaurl` was taken without a word, and let no page in: a browser sends
    scheme://host[:port] and nothing else (new-user trial)."""
    with pytest.raises(InvalidArgumentError, match="is not an origin"):
        create_app(engine=engine, cors_origins=[origin])


def asgi_request(app, headers: list[tuple[bytes, bytes]], path: str = "/api/health") -> tuple[int, dict, dict]:
    """One GET through the ASGI app itself, headers exactly as given (a client library would merge them)."""
    sent = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    asyncio.run(app(scope, receive, send))
    start = sent[0]
    body = b"".join(m.get("body", b"") for m in sent[1:])
    return start["status"], {k.decode(): v.decode() for k, v in start["headers"]}, json.loads(body)


@pytest.mark.parametrize(
    ("hosts", "message"),
    [
        ([], "exactly one Host header, got 0"),
        ([b"localhost", b"localhost"], "exactly one Host header, got 2"),
        ([b"localhost", b"evil.example"], "exactly one Host header, got 2"),
        ([b""], "must be a host name"),
    ],
)
def test_missing_or_repeated_host_headers_are_refused_by_the_app_too(app, hosts, message):
    status, headers, body = asgi_request(app, [(b"host", h) for h in hosts])
    assert status == 400 and message in body["detail"]
    assert_our_headers(headers)


def test_requests_in_flight_are_capped_with_503_and_released():
    release = asyncio.Event()

    async def slow_app(scope, receive, send):
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    guard = Guard(slow_app, ["localhost"], max_in_flight=2)

    async def ask() -> int:
        sent = []

        async def send(message):
            sent.append(message)

        scope = {"type": "http", "headers": [(b"host", b"localhost")]}
        await guard(scope, lambda: None, send)
        assert {name for name, _ in sent[0]["headers"]} >= {name for name, _ in HEADERS}
        return sent[0]["status"]

    async def scenario() -> tuple[list[int], int]:
        first = [asyncio.create_task(ask()) for _ in range(2)]
        await asyncio.sleep(0.05)
        refused = [await ask(), await ask()]  # both slots taken: answered at once
        release.set()
        return [*(await asyncio.gather(*first)), *refused], await ask()

    statuses, after = asyncio.run(scenario())
    assert statuses == [200, 200, 503, 503] and after == 200 and guard.in_flight == 0


@pytest.mark.parametrize(
    ("method", "url", "status"),
    [
        ("get", "/", 200),
        ("get", "/static/app.js", 200),
        ("get", "/api/images/1.png", 200),
        ("get", "/api/images/999.png", 404),
        ("get", "/api/images/x.png", 400),
        ("post", "/api/search", 400),
        ("get", "/nowhere", 404),
        ("post", "/api/health", 405),
        ("delete", "/api/search", 405),
        ("post", "/api/search?k=3", 413),
        ("get", "/boom", 500),
    ],
)
def test_security_headers_on_every_answer(client, method, url, status):
    big = {"files": {"image": ("big.png", b"0" * 200_000, "image/png")}} if status == 413 else {}
    response = getattr(client, method)(url, **big)
    assert response.status_code == status
    assert_our_headers(response.headers)
    assert "'unsafe-inline'" not in response.headers["content-security-policy"]


@pytest.mark.parametrize(
    ("method", "url", "status", "message"),
    [
        ("get", "/api/images/99999999999999999999.png", 400, "image id must be an integer from 0 to 2^63-1"),
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
        ("post", "/api/search?more=" + ",".join(["7"] * 5000), 400, "more takes up to 1000 indexed image ids"),
    ],
)
def test_integers_are_strict_and_never_a_500(client, engine, method, url, status, message):
    upload = {"files": {"image": ("q.png", png(engine.image(3)), "image/png")}} if method == "post" else {}
    response = getattr(client, method)(url, **upload)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert message in detail and "\n" not in detail and len(detail) < 200
    assert_our_headers(response.headers)


def test_a_multipart_body_without_the_image_field_is_400(client):
    response = client.post("/api/search", files={"picture": ("q.png", b"x", "image/png")})
    assert response.status_code == 400 and response.json()["detail"].startswith("send either an image")
    assert_our_headers(response.headers)


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
    assert response.status_code == 400 and len(response.text) < 400
    name = "n" * 5000 + ".png"
    response = client.post("/api/search", files={"image": (name, b"not an image", "image/png")})
    assert response.status_code == 400 and len(response.text) < 400


def test_a_dataset_image_finds_itself_at_distance_zero_on_any_thread(client, engine):
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


def test_the_search_routes_async_slots_refuse_a_long_wait_and_keep_the_loop_free():
    slots = DecodeSlots(2, wait_s=0.2)
    release = threading.Event()
    names: set[str] = set()

    def work() -> str:
        names.add(threading.current_thread().name)
        release.wait(2)
        return "done"

    async def scenario() -> tuple[list, int]:
        tasks = [asyncio.create_task(slots.run_async(work)) for _ in range(4)]
        ticks = 0
        while not all(task.done() for task in tasks[2:]):  # the loop runs on while the slots work
            ticks += 1
            await asyncio.sleep(0.01)
        release.set()
        return await asyncio.gather(*tasks, return_exceptions=True), ticks

    outcomes, ticks = asyncio.run(scenario())
    assert outcomes[:2] == ["done", "done"] and all(isinstance(o, Busy) for o in outcomes[2:])
    assert ticks >= 5 and len(names) == 2 and all(n.startswith("aesearch-decode") for n in names)
    assert asyncio.run(slots.run_async(lambda: 7)) == 7  # free again


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
            head = (
                f"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 100000\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n"
            )
            conn.sendall(head.encode())
            start = time.monotonic()
            answer = conn.recv(4096).decode("latin-1")
            assert answer.startswith("HTTP/1.1 408") and time.monotonic() - start < 3
    finally:
        server.should_exit = True
        thread.join(5)


# --- the protocol layer, on a real uvicorn server (TestClient bypasses it) ---

DEADLINE = 0.5  # the header deadline these tests run with (5 s in `aesearch serve`)
PER_ADDRESS, TOTAL = 4, 8


class LiveServer:
    """create_app under uvicorn with GuardedH11Protocol on a free loopback port, in a thread."""

    def __init__(self, engine, send_buffer: int | None = None) -> None:
        import uvicorn

        app = create_app(engine=engine)
        app.guard_options.update(idle_timeout=DEADLINE, body_timeout=2 * DEADLINE)
        self.sock = socket.socket()
        if send_buffer:  # accepted sockets inherit it: answers back up in uvicorn, not in the kernel
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.protocol = GuardedH11Protocol.with_limits(
            header_timeout=DEADLINE, write_timeout=DEADLINE, max_per_address=PER_ADDRESS, max_connections=TOTAL
        )
        config = uvicorn.Config(app, http=self.protocol, ws="none", log_config=None, log_level="warning")
        self.records: list[logging.LogRecord] = []
        self.handler = logging.Handler()
        self.handler.emit = self.records.append
        logging.getLogger("uvicorn.error").addHandler(self.handler)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.02)

    def connect(self, source: str = "127.0.0.1") -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=(source, 0))

    def exchange(self, data: bytes, source: str = "127.0.0.1") -> tuple[float, bytes]:
        """Send data, read until the server closes: (seconds until EOF, everything read)."""
        with self.connect(source) as conn:
            start = time.monotonic()
            conn.sendall(data)
            return read_to_eof(conn, start)

    def request(self, path: str = "/api/health", source: str = "127.0.0.1") -> bytes:
        return self.exchange(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode(), source)[1]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(5)
        logging.getLogger("uvicorn.error").removeHandler(self.handler)


def read_to_eof(conn: socket.socket, start: float) -> tuple[float, bytes]:
    out = b""
    while chunk := conn.recv(65536):
        out += chunk
    return time.monotonic() - start, out


def parse(answer: bytes) -> tuple[int, dict[str, str], bytes]:
    """The answer after any 100 Continue: status, headers, body."""
    while answer.startswith(b"HTTP/1.1 100 "):
        answer = answer.partition(b"\r\n\r\n")[2]
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


@pytest.fixture(scope="module")
def live(engine):
    try:  # other loopback addresses stand for other clients; Linux routes all of 127/8 to lo
        socket.socket().bind(("127.0.0.2", 0))
    except OSError:
        pytest.skip("this system has no loopback address but 127.0.0.1")
    server = LiveServer(engine)
    yield server
    server.stop()


@pytest.fixture
def quiet_log(live):
    """The test leaves no traceback in the server's log: client mistakes are not crashes."""
    before = len(live.records)
    yield
    assert not [r.getMessage() for r in live.records[before:] if r.exc_info or r.levelno >= logging.ERROR]


def trickle(conn: socket.socket, data: bytes, pause: float) -> None:
    for byte in data:
        time.sleep(pause)
        try:
            conn.send(bytes([byte]))
        except OSError:  # closed under us: what the deadline is for
            return


@pytest.mark.parametrize(
    ("sent", "answered"),
    [
        (b"", False),
        (b"GET /api/hea", True),
        (b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: aaa", True),
        ("trickle", True),
    ],
)
def test_a_connection_without_whole_headers_is_closed_at_the_deadline(live, quiet_log, sent, answered):
    with live.connect("127.0.0.21") as conn:
        start = time.monotonic()
        if sent == "trickle":  # a byte every DEADLINE/5: each arrives in time, the headers never do
            feeder = threading.Thread(
                target=trickle, args=(conn, b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", DEADLINE / 5)
            )
            feeder.start()
        else:
            conn.sendall(sent)
        seconds, answer = read_to_eof(conn, start)
        if sent == "trickle":
            feeder.join()
    assert DEADLINE * 0.9 <= seconds < DEADLINE + 1.0
    if answered:
        status, headers, body = parse(answer)
        assert status == 408 and "must arrive within 0.5 s" in json.loads(body)["detail"]
        assert_our_headers(headers)
    else:
        assert answer == b""  # nothing asked, nothing answered


def test_keep_alive_pipelining_and_the_deadline_after_an_answer(live, quiet_log):
    one = b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    with live.connect("127.0.0.22") as conn:
        conn.sendall(one + one)  # pipelined: both answered
        time.sleep(DEADLINE * 0.6)
        conn.sendall(one)  # the deadline restarted after the last answer: still in time
        time.sleep(DEADLINE * 0.6)
        conn.sendall(one)
        start = time.monotonic()
        seconds, answer = read_to_eof(conn, start)  # then idle: closed at the deadline
    assert answer.count(b"HTTP/1.1 200 OK") == 4 and answer.count(b"x-frame-options: DENY") == 4
    assert seconds < DEADLINE + 1.0


def test_accepted_sockets_send_small_writes_at_once(live, quiet_log):
    """TCP_NODELAY on every accepted socket, though the listening socket (like `aesearch serve`'s,
    made with proto 0) keeps asyncio from setting it: with Nagle on, the answer's body waited for
    the client's delayed ACK of its head, 40 ms a request on a keep-alive connection."""
    assert live.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0  # what asyncio would inherit
    with live.connect("127.0.0.30") as conn:
        conn.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert conn.recv(65536).startswith(b"HTTP/1.1 200 OK")
        ours = [c for c in live.server.server_state.connections if c.client and c.client[0] == "127.0.0.30"]
        assert len(ours) == 1
        accepted = ours[0].transport.get_extra_info("socket")
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_one_address_over_its_cap_is_refused_while_others_are_served(live, quiet_log):
    held = [live.connect("127.0.0.23") for _ in range(PER_ADDRESS)]
    for conn in held:
        conn.sendall(b"GET /api/hea")
    try:
        time.sleep(0.05)
        seconds, answer = live.exchange(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", "127.0.0.23")
        status, headers, body = parse(answer)
        assert status == 503 and seconds < DEADLINE / 2 and headers["retry-after"] == "5"
        assert f"{PER_ADDRESS} connections from your address" in json.loads(body)["detail"]
        assert_our_headers(headers)
        assert parse(live.request(source="127.0.0.24"))[0] == 200  # another address is served meanwhile
    finally:
        for conn in held:
            conn.close()
    time.sleep(0.1)  # the server sees them close: the address is served again
    assert parse(live.request(source="127.0.0.23"))[0] == 200


def test_past_the_total_cap_new_connections_are_refused_until_some_close(live, quiet_log):
    held = [live.connect(f"127.0.0.{25 + i // PER_ADDRESS}") for i in range(TOTAL)]
    try:
        time.sleep(0.05)
        status, headers, body = parse(live.request(source="127.0.0.27"))
        assert status == 503 and f"the server has {TOTAL} connections open" in json.loads(body)["detail"]
        assert_our_headers(headers)
    finally:
        for conn in held:
            conn.close()
    time.sleep(0.1)
    assert parse(live.request(source="127.0.0.27"))[0] == 200


HOST = b"Host: 127.0.0.1\r\n"


@pytest.mark.parametrize(
    ("sent", "status", "message"),
    [
        (b"GET /api/health HTTP/1.1\r\n\r\n", 400, "Missing mandatory Host"),
        (b"GET /api/health HTTP/1.1\r\n" + HOST + HOST + b"\r\n", 400, "multiple Host"),
        (b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1:1@evil.example\r\n\r\n", 400, "Host header must be a host name"),
        (b"GET /api/health HTTP/1.1\r\nHost: \r\n\r\n", 400, "Host header must be a host name"),
        (b"GET /api/health HTTP/1.0\r\n\r\n", 400, "exactly one Host header, got 0"),
        (b"GARBAGE\r\n\r\n", 400, "illegal request line"),
        (b"GET /api/health HTTQ/1.1\r\n" + HOST + b"\r\n", 400, "not a valid HTTP/1.1 request"),
        (b"GET /api/health HTTP/1.1\r\n" + HOST + b"X-Bad Name: 1\r\n\r\n", 400, "not a valid HTTP/1.1 request"),
        (b"POST /api/search HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "chunk"),
        (
            b"POST /api/search HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "not a valid HTTP/1.1 request",
        ),
        (
            b"POST /api/search HTTP/1.1\r\n"
            + HOST
            + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            400,
            "must not carry both Content-Length and Transfer-Encoding",
        ),
        (b"GET / HTTP/1.1\r\n" + HOST + b"X-Long: " + b"a" * 1_000_000 + b"\r\n\r\n", 431, "over 16 KB"),
        (b"GET /api/images/99999999999999999999.png HTTP/1.1\r\n" + HOST + b"\r\n", 400, "image id must be"),
        (
            b"POST /api/search HTTP/1.1\r\n" + HOST + b"Content-Length: 1000\r\nExpect: 100-continue\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\n\r\n",
            408,
            "arrived too slowly",
        ),
    ],
)
def test_refusals_by_the_protocol_layer_carry_our_headers_and_one_line(live, quiet_log, sent, status, message):
    seconds, answer = live.exchange(sent, source="127.0.0.28")
    got, headers, body = parse(answer)
    assert (got, seconds < 3 * DEADLINE + 1) == (status, True), answer[:300]
    assert message in json.loads(body)["detail"] and b"\n" not in body
    assert_our_headers(headers)


def test_an_upgrade_request_is_answered_as_plain_http_without_log_noise(live):
    before = len(live.records)
    answer = live.exchange(
        b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade, close\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Key: x\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )[1]
    assert parse(answer)[0] == 200 and live.records[before:] == []


def wait_until(condition, limit: float) -> float:
    """Seconds until condition() held (limit if it never did)."""
    start = time.monotonic()
    while not condition() and time.monotonic() - start < limit:
        time.sleep(0.02)
    return time.monotonic() - start


def test_an_answer_the_client_never_reads_is_dropped_at_the_write_deadline(engine, monkeypatch):
    from aesearch import defaults

    monkeypatch.setattr(defaults, "SERVER_MAX_EXPLAINED_HITS", 120)  # a large answer: 120 hits explained
    server = LiveServer(engine, send_buffer=4096)
    try:
        boundary = "b"
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="q.png"\r\n\r\n'.encode()
            + png(engine.image(5))
            + f"\r\n--{boundary}--\r\n".encode()
        )
        conn = socket.socket()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.bind(("127.0.0.29", 0))
        conn.connect(("127.0.0.1", server.port))
        with conn:  # ~260 KB of explanations, and not one byte read
            conn.sendall(
                f"POST /api/search?k=120&explain=true HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
                f"multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            counts = server.protocol._open_by_address
            assert wait_until(lambda: "127.0.0.29" in counts, 5) < 5  # counted once the server accepted it
            dropped_after = wait_until(lambda: "127.0.0.29" not in counts, 10)
            received = read_to_eof(conn, time.monotonic())[1]
        assert DEADLINE * 0.9 <= dropped_after < DEADLINE + 2.0
        assert received.startswith(b"HTTP/1.1 200") and len(received) < 200_000  # of ~300 KB: cut short
        assert parse(server.request(source="127.0.0.29"))[0] == 200  # its address is served again
        assert not [r for r in server.records if r.exc_info]
    finally:
        server.stop()

"""What makes `aesearch serve` safe behind a proxy or on a LAN: ASGI layers around the app.

* Host allow-list: a web page elsewhere can point a DNS name it controls at 127.0.0.1 (DNS
  rebinding) and then read the API as same-origin; refusing Host headers that are not ours stops
  it. Localhost names by default, more with --allowed-host.
* Security headers on every answer, errors included (the layer wraps Starlette's own error
  handler): a Content-Security-Policy without inline script, no framing, no MIME sniffing, no
  referrer.
* Time limits: a body that stalls or trickles is cut off with 408, so a slow client cannot hold a
  decode slot or a thread.
* Decode slots: uploads are decoded on a few dedicated threads (a 16-megapixel RGBA image takes
  about 140 MB while decoded), so the server's peak memory stays bounded under any mix of uploads.
* Connection limits (GuardedH11Protocol, the HTTP protocol `aesearch serve` runs): the request
  line and headers must arrive within a deadline, one client address may hold only so many open
  connections, and the global limit counts requests being answered, not idle sockets, so a client
  that opens sockets and sends nothing cannot make the server refuse everyone else. Its own
  refusals (a malformed request, too many connections) carry the security headers too.

No CORS here: without --cors-origin, browsers keep other sites' pages from reading answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import ipaddress
import json
import re
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import ClassVar, TypeVar

import h11
from h11._connection import DEFAULT_MAX_INCOMPLETE_EVENT_SIZE  # as uvicorn's h11_impl imports it
from uvicorn.protocols.http.h11_impl import H11Protocol

from aesearch import defaults
from aesearch.errors import InvalidArgumentError

T = TypeVar("T")

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
# 'unsafe-eval': the map's WebGL library (regl, in static/vendor/) compiles its draw calls with
# Function(); scripts still come from this server only, and none inline.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' 'unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]
BODY_TIMEOUT_S = 30.0  # the whole body must arrive within this
IDLE_TIMEOUT_S = 10.0  # and no pause between its parts may be longer
LINGER_S = 1.0  # after a refusal, the client has this long to read it before the socket closes

# uri-host [":" port] (RFC 9110 7.2), narrowed: a reg-name of unreserved characters only (no
# userinfo "@", percent-escapes or sub-delims: no host name has them), or a bracketed IPv6
# literal, then at most one port of ASCII digits. Checked before lower-casing, which could
# otherwise turn a non-ASCII letter into an ASCII one.
_HOST = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._~-]+)(?::([0-9]{1,5}))?")


def host_of(header: str) -> str | None:
    """The host in a Host header value, lower-cased, without port or brackets; None unless strictly valid.

    "127.0.0.1:1@evil.example", "a b", "", "::1" (IPv6 needs brackets) and "x:99999" are None.
    """
    match = _HOST.fullmatch(header) if isinstance(header, str) else None
    if match is None or (match[2] is not None and int(match[2]) > 65535):
        return None
    host = match[1]
    if host.startswith("["):
        try:
            return str(ipaddress.IPv6Address(host[1:-1]))  # one spelling for one address
        except ValueError:
            return None
    return host.lower()


def allowed_name(name: str) -> str:
    """A name for the allow-list as host_of gives it ("*": any); bare IPv6 literals are taken too."""
    if name == "*":
        return name
    with contextlib.suppress(ValueError):
        return str(ipaddress.IPv6Address(name))
    host = host_of(name)
    if host is None:
        raise InvalidArgumentError(
            f"--allowed-host {name[:80]!r} is not a host name, IPv4 address or [IPv6] address: "
            "give the name clients put in the URL"
        )
    return host


def cors_origin(origin: str) -> str:
    """An origin for the CORS allow-list as browsers send it: scheme://host[:port], nothing after
    ("*": any). A browser never sends "example.com" or "https://example.com/", so such an entry
    let no page in, silently."""
    if origin == "*":
        return origin
    scheme, _, rest = origin.partition("://")
    if scheme not in ("http", "https") or host_of(rest) is None:  # host_of takes host[:port], nothing more
        raise InvalidArgumentError(
            f"--cors-origin {origin[:80]!r} is not an origin: give it as a browser sends it, "
            "scheme://host[:port] with nothing after, e.g. https://photos.example.org"
        )
    return origin


class Guard:
    """ASGI layer: Host check, security headers, body time limits, requests in flight. Wraps the whole app."""

    def __init__(
        self,
        app,
        allowed_hosts: Sequence[str],
        *,
        body_timeout: float = BODY_TIMEOUT_S,
        idle_timeout: float = IDLE_TIMEOUT_S,
        max_in_flight: int = defaults.SERVER_MAX_REQUESTS_IN_FLIGHT,
    ) -> None:
        self.app = app
        self.allowed = {allowed_name(h) for h in allowed_hosts}
        self.body_timeout, self.idle_timeout = body_timeout, idle_timeout
        self.max_in_flight, self.in_flight = max_in_flight, 0  # one event loop: no lock needed

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = stalled = False

        async def send_with_headers(message) -> None:
            nonlocal started
            if stalled:  # whatever the app makes of a cut-off body (a 500, say), the answer is 408
                return
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": with_security_headers(message.get("headers", []))}
            await send(message)

        headers = scope.get("headers") or []
        refusal = self._host_problem([value for name, value in headers if name == b"host"])
        if refusal:
            return await _answer(send_with_headers, 400, refusal)
        names = {name for name, _ in headers}
        if b"transfer-encoding" in names and b"content-length" in names:
            # h11 lets Transfer-Encoding win, as RFC 9112 allows; a proxy in front that reads
            # Content-Length would see another request boundary (request smuggling): refuse both.
            return await _answer(
                send_with_headers,
                400,
                "a request must not carry both Content-Length and Transfer-Encoding: send one",
                [(b"connection", b"close")],
            )
        if self.in_flight >= self.max_in_flight:
            return await _answer(
                send_with_headers,
                503,
                f"the server is answering {self.max_in_flight} requests already: try again in a moment",
                [(b"retry-after", b"1")],
            )
        deadline = time.monotonic() + self.body_timeout

        async def timed_receive():
            nonlocal stalled
            remaining = deadline - time.monotonic()
            try:
                return await asyncio.wait_for(receive(), timeout=max(0.001, min(remaining, self.idle_timeout)))
            except asyncio.TimeoutError:
                stalled = True
                raise _Stalled from None

        self.in_flight += 1
        try:
            await self.app(scope, timed_receive, send_with_headers)
        except Exception:
            if not stalled:
                raise
        finally:
            self.in_flight -= 1
        if stalled and not started:
            stalled = False
            await _answer(
                send_with_headers,
                408,
                "the request body arrived too slowly: send it again",
                [(b"connection", b"close")],
            )

    def _host_problem(self, values: list[bytes]) -> str | None:
        """Why the request's Host headers are refused, or None."""
        if len(values) != 1:  # h11 refuses these first; this holds under any server
            return f"a request must carry exactly one Host header, got {len(values)}"
        host = host_of(values[0].decode("latin-1"))
        if host is None:
            return "the Host header must be a host name, IPv4 address or [IPv6] address with an optional :port"
        if "*" not in self.allowed and host not in self.allowed:
            return "this server does not answer for that Host header: start it with --allowed-host NAME to add a name"
        return None


class _Stalled(Exception):
    pass


def with_security_headers(headers) -> list[tuple[bytes, bytes]]:
    """headers plus each security header they do not set already."""
    names = {name.lower() for name, _ in headers}
    return [*headers, *(header for header in HEADERS if header[0] not in names)]


async def _answer(send, status: int, detail: str, extra: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *extra]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def raw_answer(status: int, detail: str, extra: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, for refusals made before h11 has a request."""
    body = json.dumps({"detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *extra,
        *HEADERS,
    ]
    head = [f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}".encode(), *(n + b": " + v for n, v in headers)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class _RecordingConnection(h11.Connection):
    """h11's connection, keeping the last protocol error so the 400 can say what was wrong."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self):
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.last_error = exc
            raise


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with header and write deadlines, per-address and total connection caps.

    Pass a configured class as uvicorn.Config(http=GuardedH11Protocol.with_limits(...)). uvicorn's
    own limits fall short: its keep-alive timer starts only after a first answer and stops at the
    first byte received, so a client that sends half a request line is never timed out; and its
    limit_concurrency counts such connections, so 64 of them make it answer 503 to everyone.
    Here the deadline runs from connection open (or the end of the previous answer) until h11 has
    the whole request line and headers, whatever trickles in meanwhile; the body then has Guard's
    limits. An answer the client stops reading is dropped after write_timeout. limit_concurrency
    is off: Guard caps the requests being answered instead.
    """

    header_timeout: float = defaults.SERVER_HEADER_TIMEOUT_S
    write_timeout: float = defaults.SERVER_WRITE_TIMEOUT_S
    max_per_address: int = defaults.SERVER_MAX_CONNECTIONS_PER_ADDRESS
    max_connections: int = defaults.SERVER_MAX_CONNECTIONS
    _open_by_address: ClassVar[Counter] = Counter()  # per configured class: with_limits gives each its own

    @classmethod
    def with_limits(
        cls,
        *,
        header_timeout: float = defaults.SERVER_HEADER_TIMEOUT_S,
        write_timeout: float = defaults.SERVER_WRITE_TIMEOUT_S,
        max_per_address: int = defaults.SERVER_MAX_CONNECTIONS_PER_ADDRESS,
        max_connections: int = defaults.SERVER_MAX_CONNECTIONS,
    ) -> type[GuardedH11Protocol]:
        limits = {
            "header_timeout": header_timeout,
            "write_timeout": write_timeout,
            "max_per_address": max_per_address,
            "max_connections": max_connections,
            "_open_by_address": Counter(),
        }
        return type(cls.__name__, (cls,), limits)

    def __init__(self, config, server_state, app_state, _loop=None) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.max_header_bytes = config.h11_max_incomplete_event_size or DEFAULT_MAX_INCOMPLETE_EVENT_SIZE
        self.conn = _RecordingConnection(h11.SERVER, self.max_header_bytes)
        self.limit_concurrency = None  # it counts stalled sockets: Guard counts requests instead
        # No WebSocket routes; an upgrade would hand the socket to a protocol the counts do not see.
        self.ws_protocol_class = None
        self._header_deadline: asyncio.TimerHandle | None = None
        self._write_stall: asyncio.TimerHandle | None = None  # armed while the client reads nothing
        self._address: str | None = None  # set while this connection is counted for its address
        self._lingering = False  # a refusal was sent: reading and dropping until LINGER_S is over

    def connection_made(self, transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        _send_small_writes_at_once(transport)  # before anything is written: the 40 ms stall, below
        address = self.client[0] if self.client else ""
        if self._open_by_address[address] >= self.max_per_address:
            return self._refuse(
                f"{self.max_per_address} connections from your address are open already: "
                "close some, or wait for them to finish"
            )
        if sum(self._open_by_address.values()) >= self.max_connections:
            return self._refuse(f"the server has {self.max_connections} connections open: try again in a moment")
        self._open_by_address[address] += 1
        self._address = address
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_deadline()
        if self._write_stall is not None:
            self._write_stall.cancel()
        self._uncount()
        super().connection_lost(exc)

    def _uncount(self) -> None:
        if self._address is not None:
            self._open_by_address[self._address] -= 1
            if not self._open_by_address[self._address]:
                del self._open_by_address[self._address]
            self._address = None

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # h11 yielded a whole request line and headers: a new cycle
            self._cancel_header_deadline()

    def on_response_complete(self) -> None:
        # Armed before uvicorn's handler, which may parse a pipelined request at once (and so cancel it).
        if not self.transport.is_closing():
            self._arm_header_deadline()
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to what h11 cannot parse, with the security headers and a reason."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:  # a bad body: the app's answer is moot
            cycle.disconnected = True  # its receive() gets http.disconnect, its send() is dropped
            cycle.message_event.set()
            if cycle.response_started:  # half an answer is out: a refusal cannot follow it
                return self.transport.close()
        error = self.conn.last_error
        if error is not None and error.error_status_hint == 431:
            status = 431
            limit = f"{self.max_header_bytes // 1024} KB"
            detail = f"the request line and headers are over {limit}: send fewer or shorter headers"
        else:
            status = 400
            # h11 quotes the offending bytes as bytearray(b'...'): shown as b'...', cut short
            reason = re.sub(r"bytearray\((.*)\)", r"\1", " ".join(str(error or "malformed").split()))[:100]
            detail = f"not a valid HTTP/1.1 request ({reason}): fix the client"
        self._answer_and_close(raw_answer(status, detail))

    def data_received(self, data: bytes) -> None:
        if not self._lingering:  # after a refusal, what still comes is read and dropped
            super().data_received(data)

    def shutdown(self) -> None:
        if self._lingering:  # its answer is sent: close now, not at the end of LINGER_S
            return self.transport.close()
        super().shutdown()

    def pause_writing(self) -> None:
        """The transport holds 64 KB the client has not taken: it has write_timeout to take some."""
        super().pause_writing()
        if self._write_stall is None:
            self._write_stall = self.loop.call_later(self.write_timeout, self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_stall is not None:
            self._write_stall.cancel()
            self._write_stall = None

    def _write_stalled(self) -> None:
        self._write_stall = None
        self.transport.abort()  # it reads nothing, so a last answer would not be read either

    def _unsupported_upgrade_warning(self) -> None:
        pass  # WebSockets are off on purpose (no such routes): uvicorn's advice to install a library is wrong

    def _refuse(self, detail: str) -> None:
        self._answer_and_close(raw_answer(503, detail, [(b"retry-after", b"5")]))

    def _answer_and_close(self, answer: bytes) -> None:
        """Send a refusal, then read and drop what the client still sends for a moment before closing.

        Closing a socket with unread data in it makes the kernel send a reset, and a client that is
        still sending (a long header, a request written right after connecting) then loses the
        answer unread; a refused connection stops counting for its address at once.
        """
        self.transport.write(answer)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._lingering = True
        self._uncount()
        self._unset_keepalive_if_required()
        self._cancel_header_deadline()
        self._header_deadline = self.loop.call_later(LINGER_S, self.transport.close)

    def _arm_header_deadline(self) -> None:
        self._cancel_header_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._header_deadline_passed)

    def _cancel_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        if self.transport.is_closing() or (self.cycle is not None and not self.cycle.response_complete):
            return  # a request is being answered: its body has Guard's limits
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:  # half a request came
            return self._answer_and_close(
                raw_answer(
                    408, f"the request line and headers must arrive within {self.header_timeout:g} s: send them at once"
                )
            )
        with contextlib.suppress(h11.LocalProtocolError):
            self.conn.send(h11.ConnectionClosed())
        self.transport.close()


def _send_small_writes_at_once(transport) -> None:
    """TCP_NODELAY on an accepted socket: each write leaves at once (Nagle's algorithm off).

    uvicorn writes an answer's head and its body in two send() calls. With Nagle on, the body (a
    small second segment) waits until the head is acknowledged, and a client delays that ACK up to
    40 ms, hoping to piggyback it on data of its own, which it has none of until the answer is
    whole: every request on a keep-alive connection (httpx, requests) took 40-50 ms, though the
    search took 2. asyncio sets TCP_NODELAY on its transports, but only for sockets whose proto is
    IPPROTO_TCP; a listening socket made with socket.socket(family, SOCK_STREAM) has proto 0, and so
    have the sockets it accepts. curl, a new connection per request, never saw it: Linux acknowledges
    at once on a fresh connection, and starts delaying ACKs only once a connection has gone back and forth.
    """
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class DecodeSlots:
    """Uploads are decoded (and queried) on n dedicated threads; others wait their turn, up to
    wait_s, then get a clear refusal.

    Dedicated threads, not a semaphore over the server's own pool: the C allocator keeps the memory
    a thread freed for that thread's next use, so decoding on any of 40 request threads would let
    each of them keep a large image's worth (measured: 1.3 GB after 12 uploads of 16 megapixels,
    with only 2 decoding at a time); on n threads at most n are kept.
    """

    def __init__(self, n: int, wait_s: float = 30.0) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.n, self.wait_s = n, wait_s
        self._pool = ThreadPoolExecutor(n, thread_name_prefix="aesearch-decode")

    def run(self, work: Callable[[], T]) -> T:
        """work() on a decode thread; Busy if none was free within wait_s."""
        from concurrent.futures import TimeoutError as FutureTimeout

        future = self._pool.submit(work)
        try:
            return future.result(timeout=self.wait_s)
        except FutureTimeout:
            if future.cancel():
                raise Busy(f"the server is busy decoding {self.n} other uploads: try again in a moment") from None
            return future.result()  # it started meanwhile: let it finish

    async def run_async(self, work: Callable[[], T]) -> T:
        """run() for a coroutine: the event loop goes on while work() runs (no pool thread waits for it)."""
        future = self._pool.submit(work)
        waiting = asyncio.wrap_future(future)
        done, _ = await asyncio.wait([waiting], timeout=self.wait_s)
        if not done and future.cancel():
            raise Busy(f"the server is busy decoding {self.n} other uploads: try again in a moment")
        return await waiting


class Busy(Exception):
    """Every decode slot stayed taken for the whole wait: answered with 503."""

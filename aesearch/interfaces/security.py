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

No CORS here: without --cors-origin, browsers keep other sites' pages from reading answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
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


def host_of(header: str) -> str:
    """The host name in a Host header, without the port; IPv6 literals without brackets."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    """ASGI layer: Host allow-list, security headers, body time limits. Wraps the whole app."""

    def __init__(self, app, allowed_hosts: Sequence[str], *, body_timeout: float = BODY_TIMEOUT_S,
                 idle_timeout: float = IDLE_TIMEOUT_S) -> None:  # fmt: skip
        self.app = app
        self.allowed = {host_of(h) for h in allowed_hosts}
        self.body_timeout, self.idle_timeout = body_timeout, idle_timeout

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
                names = {name.lower() for name, _ in message.get("headers", [])}
                extra = [header for header in HEADERS if header[0] not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        if "*" not in self.allowed and host_of(host) not in self.allowed:
            return await _answer(send_with_headers, 400, "this server does not answer for that Host header: "
                                 "start it with --allowed-host NAME to add a name")  # fmt: skip
        deadline = time.monotonic() + self.body_timeout

        async def timed_receive():
            nonlocal stalled
            remaining = deadline - time.monotonic()
            try:
                return await asyncio.wait_for(receive(), timeout=max(0.001, min(remaining, self.idle_timeout)))
            except asyncio.TimeoutError:
                stalled = True
                raise _Stalled from None

        try:
            await self.app(scope, timed_receive, send_with_headers)
        except Exception:
            if not stalled:
                raise
        if stalled and not started:
            stalled = False
            await _answer(send_with_headers, 408, "the request body arrived too slowly: send it again")


class _Stalled(Exception):
    pass


async def _answer(send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


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


class Busy(Exception):
    """Every decode slot stayed taken for the whole wait: answered with 503."""

"""Server speed as clients see it: POST /api/search latency and throughput, by client kind.

Starts `aesearch serve` in a subprocess on a free port and sends a 28x28 PNG of an indexed test
image (the page's sketch target: p50 <= 5 ms from one keep-alive client):
  * one client at a time: httpx and requests keeping their connection open, and curl (a new
    process and connection per request): p50 / p95;
  * 8 concurrent clients (a process each, so the clients' own GIL is not the limit): requests/s,
    p50, and the server's CPU time per request (user + system, from /proc: the figure least moved
    by other work on the machine);
  * the page's steering round trips, one httpx client: the 280x280 canvas PNG of a drawn ring,
    a refine with 5 "more like" and 5 "less like" marks, explain=true;
  * aesearch.Client.query (the Python client: arrays come back as base64 float32).
With --compare DIR (a checkout of another version, e.g. `git clone /work/main /tmp/old`), that
version's server runs beside this one and every figure is measured for both, alternately; with
--workers N, this version with `aesearch serve --workers N` as well (`this` is `aesearch serve` as a user
starts it: since --workers auto, one process per core, at most 4).

    python scripts/bench_server.py [--index-dir indexes/fashion-mnist] [--requests 200] [--clients 8]
                                   [--compare DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image, ImageDraw

from aesearch import Client, SearchEngine

ROOT = Path(__file__).resolve().parents[1]


def canvas_png() -> bytes:
    """What the page sends while drawing: a 280x280 canvas with a white ring on black."""
    image = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(image).ellipse((70, 60, 210, 220), outline=255, width=22)
    return png(image)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def start_server(checkout: Path, index_dir: str, *options: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "aesearch", "serve", "--index-dir", index_dir, "--port", str(port), *options],
        cwd=checkout,
        env={**os.environ, "PYTHONPATH": str(checkout)},
        stdout=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/api/health").raise_for_status()
            return server, url
        except httpx.TransportError:
            assert server.poll() is None and time.monotonic() < deadline, "server did not start"
            time.sleep(0.1)


# --- one client's loop, by kind: (url, body, params, n) -> seconds per request ---


def with_httpx(url: str, body: bytes, params: str, n: int, warm: int = 10) -> list[float]:
    with httpx.Client() as client:
        return timed(lambda: client.post(f"{url}/api/search?{params}", files=form(body)).raise_for_status(), n, warm)


def with_requests(url: str, body: bytes, params: str, n: int, warm: int = 10) -> list[float]:
    import requests

    with requests.Session() as session:
        return timed(lambda: session.post(f"{url}/api/search?{params}", files=form(body)).raise_for_status(), n, warm)


def with_curl(url: str, body: bytes, params: str, n: int, warm: int = 2) -> list[float]:
    with tempfile.NamedTemporaryFile(suffix=".png") as file:
        file.write(body)
        file.flush()
        command = ["curl", "-sf", "-o", "/dev/null", "-F", f"image=@{file.name}", f"{url}/api/search?{params}"]
        return timed(lambda: subprocess.run(command, check=True), n, warm)


def form(body: bytes) -> dict:
    return {"image": ("q.png", body, "image/png")}


def timed(call, n: int, warm: int = 10) -> list[float]:
    for _ in range(warm):
        call()
    times = []
    for _ in range(n):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


CLIENTS = {"httpx": with_httpx, "requests": with_requests, "curl": with_curl}


def one_client(kind: str, url: str, body: bytes, params: str, n: int, warm: int = 10) -> list[float]:
    return CLIENTS[kind](url, body, params, n, warm)


def warm_client(kind: str, url: str, body: bytes) -> list[float]:
    return CLIENTS[kind](url, body, "k=8", 0, 3)


def many_clients(kind: str, url: str, pid: int, body: bytes, clients: int, n: int) -> tuple[float, list[float], float]:
    """(requests/s, latencies, server CPU ms per request) with `clients` processes sending n requests in all."""
    each = max(1, n // clients)
    with ProcessPoolExecutor(clients) as pool:
        [f.result() for f in [pool.submit(warm_client, kind, url, body) for _ in range(clients)]]
        cpu = server_cpu_s(pid)
        start = time.perf_counter()
        futures = [pool.submit(one_client, kind, url, body, "k=8", each, 0) for _ in range(clients)]
        times = [t for f in futures for t in f.result()]
        wall = time.perf_counter() - start
        cpu = server_cpu_s(pid) - cpu
    return len(times) / wall, times, cpu / len(times) * 1e3


def server_cpu_s(pid: int) -> float:
    """CPU seconds of the server process and of its worker processes (with --workers)."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if stat.parent.name == str(pid) or fields[1] == str(pid):  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def p(times: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(times) * 1e3, q))


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    name = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if line.startswith("model name")), "?")
    avx512 = "avx512f" in cpuinfo
    return f"{name}, {os.cpu_count()} cores, avx512 {'yes' if avx512 else 'no'}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index-dir", default="indexes/fashion-mnist")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--compare", type=Path, help="a checkout of another version, measured beside this one")
    parser.add_argument("--workers", type=int, help="also measure this version with --workers N (its default: auto)")
    args = parser.parse_args()
    index_dir = str(Path(args.index_dir).resolve())

    engine = SearchEngine.load(index_dir)
    body = png(Image.fromarray(engine.image(len(engine) - 1)))
    del engine
    versions = {"this": ROOT, **({"compare": args.compare.resolve()} if args.compare else {})}
    servers = {name: start_server(checkout, index_dir) for name, checkout in versions.items()}
    if args.workers is not None:
        servers[f"this, --workers {args.workers}"] = start_server(ROOT, index_dir, "--workers", str(args.workers))
    kinds = [kind for kind in CLIENTS if kind != "curl" or shutil.which("curl")]
    try:
        import requests  # noqa: F401
    except ImportError:
        kinds.remove("requests")
    print(f"{machine()}; load average at start {os.getloadavg()[0]:.2f}")
    print(f"server: {httpx.get(servers['this'][1] + '/api/health').json()['count']:,} images; columns: {list(servers)}")
    try:
        n = args.requests
        for kind in kinds:
            count = n if kind != "curl" else min(n, 60)
            row = {name: one_client(kind, url, body, "k=8", count) for name, (_, url) in servers.items()}
            cells = "   ".join(f"{name}: p50 {p(t, 50):6.2f} ms, p95 {p(t, 95):6.2f} ms" for name, t in row.items())
            print(f"1 client, {kind:8} ({count} requests)   {cells}")
        for kind in kinds:
            cells = []
            for name, (server, url) in servers.items():
                rate, times, cpu = many_clients(kind, url, server.pid, body, args.clients, n * 2)
                cells.append(f"{name}: {rate:5.0f} requests/s, p50 {p(times, 50):6.2f} ms, server CPU {cpu:.2f} ms/req")
            print(f"{args.clients} clients, {kind:8}   " + "   ".join(cells))
        with httpx.Client() as client:
            hits = client.post(f"{servers['this'][1]}/api/search?k=10", files=form(body)).json()["hits"]
        ids = [str(h["id"]) for h in hits]
        marks = f"k=10&more={','.join(ids[:5])}&less={','.join(ids[5:])}"
        for label, image, params in (
            ("sketch, 280x280 canvas PNG", canvas_png(), "k=8"),
            ("refine, 5 more + 5 less marks, k=10", body, marks),
            ("explain, k=8", body, "k=8&explain=true"),
        ):
            row = {name: with_httpx(url, image, params, max(20, n // 3)) for name, (_, url) in servers.items()}
            print(f"{label:38} " + "   ".join(f"{name}: p50 {p(t, 50):6.2f} ms" for name, t in row.items()))
        with Client(servers["this"][1]) as client:
            pixels = np.asarray(Image.open(io.BytesIO(body)))
            times = timed(lambda: client.query(pixels, k=8), n)
        print(f"aesearch.Client.query, k=8 (this version): p50 {p(times, 50):.2f} ms, p95 {p(times, 95):.2f} ms")
        print(f"load average at end {os.getloadavg()[0]:.2f}")
    finally:
        for server, _ in servers.values():
            server.terminate()
            server.wait(timeout=10)


if __name__ == "__main__":
    main()

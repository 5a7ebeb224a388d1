"""Server speed: POST /api/search latency from one client, and throughput with 8 concurrent clients.

Starts `aesearch serve` in a subprocess on a free port (exact search unless the bundle says
otherwise), sends a 28x28 PNG of an indexed test image, and prints p50/p95 latency and requests/s.

    python scripts/bench_server.py [--index-dir indexes/fashion-mnist] [--requests 300] [--clients 8]
"""

from __future__ import annotations

import argparse
import io
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from PIL import Image

from aesearch import SearchEngine


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1e3 for s in samples)
    return f"p50 {ms[len(ms) // 2]:.2f} ms, p95 {ms[min(len(ms) - 1, int(0.95 * len(ms)))]:.2f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index-dir", default="indexes/fashion-mnist")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    engine = SearchEngine.load(args.index_dir)
    buffer = io.BytesIO()
    Image.fromarray(engine.image(len(engine) - 1)).save(buffer, format="PNG")
    body = buffer.getvalue()
    del engine

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "aesearch", "serve", "--index-dir", args.index_dir,
                               "--port", str(port)], stdout=subprocess.DEVNULL)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{url}/api/health").json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        print(f"server: {health['count']:,} images, {health['index_type']}, {health['metric']}")

        def post(client: httpx.Client) -> float:
            start = time.perf_counter()
            response = client.post(f"{url}/api/search?k=8", files={"image": ("q.png", body, "image/png")})
            response.raise_for_status()
            return time.perf_counter() - start

        with httpx.Client() as client:
            for _ in range(10):
                post(client)  # warm-up
            single = [post(client) for _ in range(args.requests)]
        print(f"1 client, {args.requests} sequential requests: {percentiles(single)}")

        def worker(n: int) -> list[float]:
            with httpx.Client() as client:
                return [post(client) for _ in range(n)]

        per_client = max(1, args.requests // args.clients)
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = [t for ts in pool.map(worker, [per_client] * args.clients) for t in ts]
        wall = time.perf_counter() - start
        print(f"{args.clients} concurrent clients, {len(results)} requests: {len(results) / wall:.0f} requests/s, "
              f"{percentiles(results)}")  # fmt: skip
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()

"""Server speed: POST /api/search latency from one client, and throughput with 8 concurrent clients.

Starts `aesearch serve` in a subprocess on a free port (exact search unless the bundle says
otherwise), sends a 28x28 PNG of an indexed test image, and prints p50/p95 latency and requests/s.
Then the page's steering round trips, one client:
  * sketch: a 28x28 PNG (the target: p50 <= 50 ms) and the page's 280x280 canvas PNG of a drawn
    ring (what the page sends while you draw; preprocessing frames it);
  * refine: the same query with 5 "more like" and 5 "less like" marks on its first 10 hits;
  * explain: k=8 with explain=true (difference maps and interpolation strips for every hit).

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
from PIL import Image, ImageDraw

from aesearch import SearchEngine


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1e3 for s in samples)
    return f"p50 {ms[len(ms) // 2]:.2f} ms, p95 {ms[min(len(ms) - 1, int(0.95 * len(ms)))]:.2f} ms"


def canvas_png() -> bytes:
    """What the page sends while drawing: a 280x280 canvas with a white ring on black."""
    image = Image.new("L", (280, 280), 0)
    ImageDraw.Draw(image).ellipse((70, 60, 210, 220), outline=255, width=22)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


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
    server = subprocess.Popen(
        [sys.executable, "-m", "aesearch", "serve", "--index-dir", args.index_dir, "--port", str(port)],
        stdout=subprocess.DEVNULL,
    )
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

        def post(client: httpx.Client, image: bytes = body, params: str = "k=8") -> float:
            start = time.perf_counter()
            response = client.post(f"{url}/api/search?{params}", files={"image": ("q.png", image, "image/png")})
            response.raise_for_status()
            return time.perf_counter() - start

        with httpx.Client() as client:
            for _ in range(10):
                post(client)  # warm-up
            single = [post(client) for _ in range(args.requests)]
        print(f"1 client, {args.requests} sequential requests: {percentiles(single)}")

        with httpx.Client() as client:
            hits = client.post(f"{url}/api/search?k=10", files={"image": ("q.png", body, "image/png")}).json()["hits"]
            ids = [str(h["id"]) for h in hits]
            marks = f"k=10&more={','.join(ids[:5])}&less={','.join(ids[5:])}"
            for label, image, params in (
                ("sketch, 28x28 PNG", body, "k=8"),
                ("sketch, 280x280 canvas PNG", canvas_png(), "k=8"),
                ("refine, 5 more + 5 less marks, k=10", body, marks),
                ("explain, k=8", body, "k=8&explain=true"),
            ):
                for _ in range(5):
                    post(client, image, params)  # warm-up (the first refine reads the pseudo-negatives)
                times = [post(client, image, params) for _ in range(max(20, args.requests // 3))]
                print(f"{label}: {percentiles(times)}")

        def worker(n: int) -> list[float]:
            with httpx.Client() as client:
                return [post(client) for _ in range(n)]

        per_client = max(1, args.requests // args.clients)
        start = time.perf_counter()
        with ThreadPoolExecutor(args.clients) as pool:
            results = [t for ts in pool.map(worker, [per_client] * args.clients) for t in ts]
        wall = time.perf_counter() - start
        print(
            f"{args.clients} concurrent clients, {len(results)} requests: {len(results) / wall:.0f} requests/s, "
            f"{percentiles(results)}"
        )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()

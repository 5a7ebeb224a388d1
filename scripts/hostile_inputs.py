"""A catalogue of hostile inputs against the CLI, the Python API and the server; prints the counts.

    python scripts/hostile_inputs.py [--index-dir indexes/fashion-mnist] [--only cli,api,collection,server]

Run it with PYTHONPATH pointing at another checkout to compare versions: it uses the public API,
the `aesearch` command (as `python -m aesearch`) and `aesearch serve` over HTTP only. Each case is
judged as one of
  ok         a right answer, or a one-line error with a non-zero exit (CLI) or a 4xx (server); for
             files that are off-spec but readable (a tRNS chunk of the wrong length) either
  traceback  the CLI printed a Python traceback
  raw        the Python API raised something other than aesearch's own errors
  500        the server answered 500 (or dropped the connection)
  wrong      a silently wrong or unclear answer: NaN in --json, a multi-line error, exit 0 for bad
             input, an indexed image not at distance 0, a missing security header, a stalled
             upload or half-sent request held open, a refusal without a one-line JSON detail,
             peak server memory over 1 GiB...
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

import aesearch
from aesearch import Collection, SearchEngine

try:
    from aesearch.errors import AesearchError
except ImportError:  # pragma: no cover
    AesearchError = Exception

GIB = 1024**3
HANG_S = 120  # a command still running after this long is counted as a hang
WORKS = ("good.png", "int32.tiff", "one-pixel.png")  # the files that must give a result
EITHER = ("bad-tRNS.png",)  # off-spec but readable: a result or a one-line error are both right


def _png(array: np.ndarray, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array).save(out, format="PNG", **options)
    return out.getvalue()


def _chunked(png: bytes, extra: tuple[bytes, bytes], *, replace_ihdr: bytes | None = None) -> bytes:
    """png with one more chunk after IHDR (valid CRC), or with IHDR's data replaced."""
    length = struct.unpack(">I", png[8:12])[0]
    ihdr_end = 8 + 12 + length

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = png[:ihdr_end] if replace_ihdr is None else png[:8] + chunk(b"IHDR", replace_ihdr)
    return head + chunk(*extra) + png[ihdr_end:]


def make_files(folder: Path, engine: SearchEngine) -> dict[str, Path]:
    """The hostile files (and one good one), written into folder."""
    image = engine.image(len(engine) - 1)
    good = _png(image)
    files = {
        "good.png": good,
        "zero-length-sRGB.png": _chunked(good, (b"sRGB", b"")),
        "short-cHRM.png": _chunked(good, (b"cHRM", b"\0\0\0")),
        "short-pHYs.png": _chunked(good, (b"pHYs", b"\1")),
        "bad-tRNS.png": _chunked(good, (b"tRNS", b"\0" * 700)),
        "zTXt-bomb.png": _chunked(good, (b"zTXt", b"k\0\0" + zlib.compress(b"\0" * (1 << 24), 9))),
        "iCCP-bomb.png": _chunked(good, (b"iCCP", b"k\0\0" + zlib.compress(b"\0" * (1 << 24), 9))),
        "garbage-IHDR.png": _chunked(good, (b"tEXt", b"a\0b"), replace_ihdr=b"\xff" * 13),
        "truncated.png": good[: len(good) // 2],
        "text.png": b"just some text, not an image\n",
        "empty.png": b"",
        "truncated.jpg": _jpeg(image)[:300],
    }
    nan = np.full((40, 40), np.nan, np.float32)
    files["nan-float.tiff"] = _tiff(Image.fromarray(nan, "F"))
    inf = np.zeros((40, 40), np.float32)
    inf[10:30, 10:30] = np.inf
    files["inf-float.tiff"] = _tiff(Image.fromarray(inf, "F"))
    files["int32.tiff"] = _tiff(Image.fromarray(image.astype(np.int32) * 16843009, "I"))
    files["one-pixel.png"] = _png(np.full((1, 1), 255, np.uint8))
    files["line\nbreak.png"] = b"not an image"
    files["x" * 300 + ".png"] = good  # a name too long for the file system: not written
    paths = {}
    for name, data in files.items():
        path = folder / name
        with contextlib.suppress(OSError):
            path.write_bytes(data)
        paths[name] = path
    (folder / "a-folder.png").mkdir()
    paths["a-folder.png"] = folder / "a-folder.png"
    paths["missing.png"] = folder / "missing.png"
    return paths


def _expect(name: str) -> bool | None:
    """True: must give a result; False: must be refused; None: either."""
    return True if name in WORKS else None if name in EITHER else False


def _jpeg(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG")
    return out.getvalue()


def _tiff(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="TIFF")
    return out.getvalue()


# --- the CLI ---


def cli_cases(files: dict[str, Path], index_dir: str, tmp: Path) -> list[tuple[str, list[str], bool]]:
    """(name, arguments, should it succeed)."""
    q = ["query", "--index-dir", index_dir, "-k", "3", "--json"]
    cases = [(f"query {name!r}", [*q, str(path)], _expect(name)) for name, path in files.items()]
    good = str(files["good.png"])
    cases += [
        ("query -k 0", [*q[:-3], "-k", "0", good], False),
        ("query -k huge", [*q[:-3], "-k", "99999999999", good], False),
        ("query --index-dir missing", ["query", "--index-dir", str(tmp / "none"), good], False),
        ("query --index-dir a file", ["query", "--index-dir", good, good], False),
        ("query --out /proc", ["query", "--index-dir", index_dir, good, "--out", "/proc/aesearch.png"], False),
        ("query --out in a file", ["query", "--index-dir", index_dir, good, "--out", f"{good}/x.png"], False),
        (
            "query --out name too long",
            ["query", "--index-dir", index_dir, good, "--out", str(tmp / ("y" * 300))],
            False,
        ),
        ("query --out no parent", ["query", "--index-dir", index_dir, good, "--out", "/proc/none/x.png"], False),
        ("info --index-dir missing", ["info", "--index-dir", str(tmp / "none")], False),
        ("query --where unknown field", [*q, "--where", "colour = red", good], False),
        ("query --where unclosed quote", [*q, "--where", 'path ~ "a/**', good], False),
        ("query --where 10,000 parentheses", [*q, "--where", "(" * 10_000 + "id = 1" + ")" * 10_000, good], False),
        (
            "build-index --out /proc",
            [
                "build-index",
                "--index-dir",
                "/proc/aesearch-index",
                "--model",
                str(Path(index_dir) / "model.safetensors"),
            ],
            False,
        ),
    ]
    return cases


def run_cli(cases, env) -> Counter:
    counts: Counter = Counter()
    for name, args, should_work in cases:
        try:
            # `-m` puts the working folder first on sys.path: run from the checkout under test
            done = subprocess.run(
                [sys.executable, "-m", "aesearch", *args],
                capture_output=True,
                text=True,
                env=env,
                timeout=HANG_S,
                cwd=Path(aesearch.__file__).parents[1],
            )
        except subprocess.TimeoutExpired:
            counts["wrong"] += 1
            print(f"  cli hang      {name}: still running after {HANG_S} s")
            continue
        err = done.stderr.strip()
        if "Traceback" in err:
            verdict = "traceback"
        elif should_work is None and done.returncode == 0:
            verdict = "ok" if _finite_json(done.stdout) else "wrong"
        elif should_work:
            verdict = "ok" if done.returncode == 0 and _finite_json(done.stdout) else "wrong"
        else:
            verdict = "ok" if done.returncode != 0 and err and len(err.splitlines()) == 1 else "wrong"
        counts[verdict] += 1
        if verdict != "ok":
            print(f"  cli {verdict:9s} {name}: exit {done.returncode}, {err.splitlines()[-1:] or done.stdout[:80]}")
    return counts


def _finite_json(text: str) -> bool:
    if not text.strip().startswith(("{", "[")):
        return True  # a picture or a table was asked for, not JSON
    try:
        json.loads(text, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        return True
    except ValueError:
        return False


# --- the Python API ---


def api_cases(files: dict[str, Path], engine: SearchEngine) -> list[tuple[str, object, bool]]:
    """(name, a function to call, should it succeed)."""
    import torch

    good = files["good.png"]
    image = engine.image(3)
    nan = np.zeros((28, 28), np.float32)
    nan[5, 5] = np.nan
    lazy = Image.open(io.BytesIO(good.read_bytes()[:-40]))
    z = engine.encode(image[None])
    cases = [(f"query {name!r}", (lambda p=path: engine.query(p, k=3)), _expect(name)) for name, path in files.items()]
    cases += [
        ("lazy damaged PIL image", lambda: engine.query(lazy, k=3), False),
        ("NaN array", lambda: engine.query(nan, k=3), False),
        ("inf tensor", lambda: engine.query(torch.full((28, 28), float("inf")), k=3), False),
        ("NaN batch", lambda: engine.query_batch(np.stack([nan, nan]), k=3), False),
        ("bfloat16 tensor", lambda: engine.query(torch.from_numpy(image).to(torch.bfloat16), k=3), True),
        ("sparse tensor", lambda: engine.query(torch.from_numpy(image).float().to_sparse(), k=3), False),
        ("meta tensor", lambda: engine.query(torch.empty((28, 28), device="meta"), k=3), False),
        ("zero-size array", lambda: engine.query(np.zeros((0, 28), np.uint8), k=3), False),
        ("zero-size PIL image", lambda: engine.query(Image.new("L", (0, 3)), k=3), False),
        ("4-D array", lambda: engine.query(np.zeros((2, 2, 28, 28), np.uint8), k=3), False),
        ("None", lambda: engine.query(None, k=3), False),
        ("an int as images", lambda: engine.query_batch(5, k=3), False),
        ("k numpy int64", lambda: engine.query(image, k=np.int64(3)), True),
        ("k 0", lambda: engine.query(image, k=0), False),
        ("k '3'", lambda: engine.query(image, k="3"), False),
        ("search 1-D vector", lambda: engine.search(z[0], 3), False),
        ("search wrong width", lambda: engine.search(z[:, :-1], 3), False),
        ("search NaN vector", lambda: engine.search(np.full_like(z, np.nan), 3), False),
        ("search strings", lambda: engine.search([["a"] * z.shape[1]], 3), False),
        ("decode wrong width", lambda: engine.decode(np.zeros((2, z.shape[1] * 2), np.float32)), False),
        ("decode flat", lambda: engine.decode(np.zeros(z.shape[1] * 3, np.float32)), False),
        ("decode NaN", lambda: engine.decode(np.full_like(z, np.nan)), False),
        ("image id -1", lambda: engine.image(-1), False),
        ("image id numpy", lambda: engine.image(np.int32(4)), True),
        (
            "k near the size: exactly k hits",
            lambda: _exactly(engine.query(image, k=len(engine) - 3).hits, len(engine) - 3),
            True,
        ),
        ("query_batch of no image", lambda: engine.query_batch([], k=3), True),
        ("where 10,000-deep parentheses", lambda: engine.query(image, k=3, where="(" * 10_000 + "id = 1"), False),
        ("where 10,000 nots", lambda: engine.query(image, k=3, where="not " * 10_000 + "id = 1"), False),
        ("where a 100 MB string", lambda: engine.query(image, k=3, where="id = 1 or " * 10**7), False),
        ("where 1 M ids", lambda: _exactly(engine.query(image, k=3, where=np.arange(10**6)).hits, 3), True),
        ("where 1 M ids as text", lambda: engine.query(image, k=3, where=f"id in ({','.join(['7'] * 10**6)})"), True),
        ("where a dict", lambda: engine.query(image, k=3, where={"label": 1}), False),
        ("where NaN ids", lambda: engine.query(image, k=3, where=[float("nan")]), False),
        ("where unknown class", lambda: engine.query(image, k=3, where="label = nothing"), False),
        ("where matches nothing", lambda: engine.query(image, k=3, where="id > 99999999999"), True),
    ]
    return cases


def _exactly(hits: list, k: int) -> list:
    if len(hits) != k:
        raise RuntimeError(f"{len(hits)} hits for k={k}")  # a silent wrong answer, counted as raw
    return []


def api_write_cases(copy: SearchEngine) -> list[tuple[str, object, bool]]:
    """Calls that would change a bundle if taken: on a copy, each must be refused in one line."""
    result = copy.query_id(3, k=5)
    one = copy.image(3)[None]
    huge = 10**30
    writer = Collection.open(copy.bundle.path)
    return [
        *[
            (f"remove({v!r})", (lambda v=v: writer.remove(v)), False)
            for v in (None, "abc", [[1, 2]], [float("nan")], [huge], [True], [1.5], ["3"], [4.999])
        ],
        ("add zero images", lambda: writer.add(np.zeros((0, 28, 28))), False),
        ("add paths=[1]", lambda: writer.add(one, paths=[1]), False),
        ("add a path with a lone surrogate", lambda: writer.add(one, paths=["\ud800.png"]), False),
        *[
            (f"add labels={v!r}", (lambda v=v: writer.add(one, labels=v)), False)
            for v in (["abc"], [None], [1.5], ["1"])
        ],
        ("refine more=None", lambda: copy.refine(result, more=None), False),
        ("refine more=5", lambda: copy.refine(result, more=5), False),
        ("refine more=[10**30]", lambda: copy.refine(result, more=[huge]), False),
        ("refine k='5'", lambda: copy.refine(result, more=[4], k="5"), False),
        ("refine k=10**9", lambda: copy.refine(result, more=[4], k=10**9), False),
        ("refine None", lambda: copy.refine(None, more=[4]), False),
        ("explain 30-digit id", lambda: copy.explain(result, huge), False),
        ("interpolate 30-digit id", lambda: copy.interpolate(huge, 3), False),
        ("query_id 30-digit id", lambda: copy.query_id(huge), False),
        ("image 30-digit id", lambda: copy.image(huge), False),
    ]


def collection_cases(tmp: Path, index_dir: str, engine: SearchEngine) -> list[tuple[str, list[str], bool]]:
    """A folder collection of 40 of the bundle's images (its model), and what must not break it."""
    photos, index = tmp / "photos", tmp / "collection"
    for i in range(40):
        (photos / f"class{i % 2}").mkdir(parents=True, exist_ok=True)
        (photos / f"class{i % 2}" / f"img-{i:02d}.png").write_bytes(_png(engine.image(i)))
    model = str(Path(index_dir) / "model.safetensors")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "aesearch",
            "build-index",
            "--images",
            str(photos),
            "--model",
            model,
            "--index-dir",
            str(index),
        ],
        check=True,
        capture_output=True,
    )
    (photos.parent / "photos.away").mkdir()
    d = ["--index-dir", str(index)]
    return [
        ("sync with the root emptied (unmounted disk)", ["sync", *d], False),  # prepared by run_collection
        ("remove a 30-digit id", ["remove", "9" * 30, *d], False),
        ("remove a superscript digit", ["remove", "²", *d], False),
        ("query --id 30 digits", ["query", "--id", "9" * 30, "--no-picture", *d], False),
        ("query --more-like ²", ["query", "--id", "3", "--more-like", "²", "--no-picture", *d], False),
        ("interpolate 30 digits", ["interpolate", "9" * 30, "3", *d], False),
        ("map --out m.txt", ["map", "--out", str(tmp / "m.txt"), *d], False),
        ("map --id 30 digits", ["map", "--id", "9" * 30, *d], False),
        ("remove every id", ["remove", *[str(i) for i in range(40)], *d], True),
        ("query the emptied index", ["query", "--id", "3", "--no-picture", *d], False),
        ("duplicates on the emptied index", ["duplicates", *d], False),
        ("map of the emptied index", ["map", *d], False),
        ("eval of the emptied index", ["eval", *d], False),
        ("sync after the folder is back", ["sync", *d], True),
    ]


def run_collection(cases, env, tmp: Path) -> Counter:
    """run_cli over collection_cases, with the root emptied for the first and restored before the last."""
    photos, away = tmp / "photos", tmp / "photos.away"
    photos.rename(away / "photos")
    photos.mkdir()
    counts = run_cli(cases[:1], env)
    photos.rmdir()
    (away / "photos").rename(photos)
    counts.update(run_cli(cases[1:], env))
    return counts


def run_api(cases) -> Counter:
    counts: Counter = Counter()
    for name, call, should_work in cases:
        try:
            result = call()
        except AesearchError as exc:
            verdict = "wrong" if should_work or "\n" in str(exc) else "ok"  # None (either): an error is fine
            detail = str(exc)[:90]
        except Exception as exc:
            verdict, detail = "raw", f"{type(exc).__name__}: {str(exc)[:80]}"
        else:
            verdict = "ok" if should_work is not False and _finite(result) else "wrong"
            detail = "returned a result" if not should_work else "non-finite result"
        counts[verdict] += 1
        if verdict != "ok":
            print(f"  api {verdict:9s} {name}: {detail!r}")
    return counts


def _finite(result: object) -> bool:
    if hasattr(result, "to_dict"):
        return _finite_json(json.dumps(result.to_dict()))
    if isinstance(result, tuple | list):
        return all(_finite(r) for r in result)
    return bool(np.all(np.isfinite(np.asarray(result, dtype=np.float64))))


# --- the server ---


class Server:
    """`aesearch serve` in a subprocess, on a free port."""

    def __init__(self, index_dir: str, env: dict) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        # `-m` puts the working folder first on sys.path: run from the checkout under test
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aesearch",
                "serve",
                "--index-dir",
                str(Path(index_dir).resolve()),
                "--port",
                str(self.port),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=Path(aesearch.__file__).parents[1],
        )
        self.proc.stdout.readline()  # "Serving ..."
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)

    def peak_rss(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: dict | None = None,
        timeout: float = 60,
        source: str = "127.0.0.1",
    ):
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout, source_address=(source, 0))
        try:
            conn.request(method, path, body=body or None, headers=headers or {})
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        except OSError:
            return 0, {}, b""
        finally:
            conn.close()

    def upload(
        self,
        data: bytes,
        name: str = "q.png",
        k: int | str = 3,
        headers: dict | None = None,
        query: str = "",
        source: str = "127.0.0.1",
    ):
        boundary = "hostileboundary"
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n"
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        kind = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        return self.request(
            "POST", f"/api/search?k={k}{query}", body=body, headers={**kind, **(headers or {})}, source=source
        )

    def raw(self, data: bytes, *, source: str = "127.0.0.1", give_up: float = 15) -> tuple[int, dict, bytes, float]:
        """Bytes sent as they are, read until the server closes: status (0: none), headers, body, seconds."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=give_up, source_address=(source, 0)) as conn:
            start = time.monotonic()
            answer = b""
            with contextlib.suppress(OSError):
                conn.sendall(data)
                while chunk := conn.recv(65536):
                    answer += chunk
            seconds = time.monotonic() - start
        while answer.startswith(b"HTTP/1.1 100 "):
            answer = answer.partition(b"\r\n\r\n")[2]
        head, _, body = answer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split()[1])
        except (IndexError, ValueError):
            return 0, {}, answer, seconds
        headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
        return status, headers, body, seconds

    def stop(self) -> str:
        """Stop it; what it printed after "Serving ..." (its log)."""
        self.proc.terminate()
        log, _ = self.proc.communicate(timeout=10)
        return log


def run_server(files: dict[str, Path], engine: SearchEngine, index_dir: str, env: dict) -> tuple[Counter, dict]:
    counts: Counter = Counter()
    figures: dict = {}
    server = Server(index_dir, env)

    def judge(name: str, verdict: str, detail: str = "") -> None:
        counts[verdict] += 1
        if verdict != "ok":
            print(f"  server {verdict:9s} {name} {detail}")

    try:
        for name, path in files.items():
            if not _is_file(path):
                continue
            status, _, body = server.upload(path.read_bytes(), name=name.replace("\n", " ")[:60])
            should_work = _expect(name)
            if status >= 500 or status == 0:
                judge(f"upload {name!r}", "500", f"{status}")
            elif should_work is None:
                right = (status == 200 and _finite_json(body.decode())) or 400 <= status < 500
                judge(f"upload {name!r}", "ok" if right else "wrong", f"{status}")
            elif should_work:
                right = status == 200 and _finite_json(body.decode())
                judge(f"upload {name!r}", "ok" if right else "wrong", f"{status}")
            else:
                judge(f"upload {name!r}", "ok" if 400 <= status < 500 else "wrong", f"{status}")
        good = files["good.png"].read_bytes()
        status, _, body = server.upload(good, k="9" * 5000)
        judge("k of 5,000 digits", "ok" if 400 <= status < 500 and len(body) < 1000 else "wrong", f"{len(body)} bytes")
        status, _, body = server.upload(b"x", name="n" * 3000 + ".png")
        judge(
            "3,000-character file name",
            "ok" if 400 <= status < 500 and len(body) < 1000 else "wrong",
            f"{len(body)} bytes",
        )
        status, _, _ = server.request("GET", "/api/health", headers={"Host": "attacker.example"})
        judge("foreign Host header (DNS rebinding)", "ok" if status == 400 else "wrong", f"{status}")
        status, headers, _ = server.request("GET", "/")
        lower = {k.lower(): v for k, v in headers.items()}
        for header in ("content-security-policy", "x-content-type-options", "x-frame-options", "referrer-policy"):
            judge(f"header {header}", "ok" if header in lower else "wrong", "missing")
        status, _, body = server.request("GET", "/api/docs")
        judge("API docs from a CDN", "wrong" if status == 200 and b"cdn" in body else "ok")
        status, headers, _ = server.request("GET", "/api/health", headers={"Origin": "https://attacker.example"})
        judge("CORS for any origin", "wrong" if "access-control-allow-origin" in {k.lower() for k in headers} else "ok")
        figures["stalled upload held open (s)"] = held = _stalled(server)
        judge("stalled upload", "ok" if held < 40 else "wrong", f"held {held:.0f} s")
        for name, verdict, detail in _http_cases(server, good, len(engine)):
            judge(name, verdict, detail)
        for name, verdict, detail in _slow_clients(server, good, figures):
            judge(name, verdict, detail)
        # Distance 0 for dataset images, whatever thread serves them.
        ids = np.random.default_rng(0).choice(len(engine), 100, replace=False)
        bodies = {int(i): _png(engine.image(int(i))) for i in ids}

        def ask(i: int) -> bool:
            status, _, body = server.upload(bodies[i], k=1)
            hit = json.loads(body)["hits"][0] if status == 200 else {}
            return hit.get("id") == i and hit.get("distance") == 0.0

        with ThreadPoolExecutor(8) as pool:
            found = list(pool.map(ask, bodies))
        figures["dataset uploads at distance 0"] = f"{sum(found)} of {len(found)}"
        judge("dataset images at distance 0", "ok" if all(found) else "wrong", f"{sum(found)} of {len(found)}")
        # Memory: 12 uploads at once of a large blank RGBA canvas (a few KB each, 16 megapixels:
        # under both versions' pixel limits, so each is decoded).
        canvas = _png(np.full((4000, 4000, 4), 255, np.uint8))
        before = server.peak_rss()
        with ThreadPoolExecutor(12) as pool:
            statuses = list(pool.map(lambda _: server.upload(canvas)[0], range(12)))
        peak = server.peak_rss()
        key = "server peak memory, 12 blank 16 MP RGBA canvases at once (MiB)"
        figures[key] = f"{before / 2**20:.0f} -> {peak / 2**20:.0f}"
        bounded = peak < GIB and 0 not in statuses
        judge("12 large canvases at once", "ok" if bounded else "wrong", f"{peak / 2**20:.0f} MiB")
    finally:
        log = server.stop()
    tracebacks = log.count("Traceback")
    judge("no traceback in the server's log", "ok" if not tracebacks else "traceback", f"{tracebacks}")
    return counts, figures


SECURITY_HEADERS = ("content-security-policy", "x-content-type-options", "x-frame-options", "referrer-policy")


def _verdict(status: int, headers: dict, body: bytes, expected: tuple[int, ...]) -> tuple[str, str]:
    """ok: an expected status, the security headers, and (for an error) a one-line JSON detail."""
    if status == 0 or (status >= 500 and status not in expected):
        return "500", f"{status or 'no answer'}"
    lower = {k.lower() for k in headers}
    missing = [h for h in SECURITY_HEADERS if h not in lower]
    if status not in expected or missing:
        return "wrong", f"{status} (expected {expected}){', missing ' + missing[0] if missing else ''}"
    if status >= 400:
        try:
            detail = json.loads(body)["detail"]
        except (ValueError, KeyError, TypeError):
            return "wrong", f"{status} without a JSON detail: {body[:60]!r}"
        if not isinstance(detail, str) or "\n" in detail or len(detail) > 300:
            return "wrong", f"{status} detail is not one short line"
    return "ok", ""


def _http_cases(server: Server, good: bytes, count: int) -> list[tuple[str, str, str]]:
    """Integers the server takes, Host headers, and HTTP the protocol layer must refuse with our headers."""
    out = []
    host = f"Host: 127.0.0.1:{server.port}\r\n".encode()
    paths = [
        "/api/images/99999999999999999999.png",
        f"/api/images/{2**63}.png",
        f"/api/images/{-(2**63) - 1}.png",
        "/api/images/%C2%B2.png",
        "/api/images/3.png?scale=%C2%B2",
        f"/api/images/3.png?scale={2**64}",
    ]
    for path in paths:
        status, headers, body = server.request("GET", path)
        out.append((f"GET {path}", *_verdict(status, headers, body, (400,))))
    hostile_where = ("&where=label%20%3D%20nope", "&where=" + "%28" * 1000, "&where=id%20in%20%281%2C", "&where=%22")
    for query in (f"&more={2**63}", "&more=%C2%B2", "&less=1,,2", "&more=" + ",".join(["7"] * 5000), *hostile_where):
        status, headers, body = server.upload(good, query=query)
        out.append((f"search with {query[:30]}", *_verdict(status, headers, body, (400,))))
    for k in ("%C2%B2", str(2**63), "0", "-1", "1e3", ""):
        status, headers, body = server.upload(good, k=k)
        out.append((f"search k={k!r}", *_verdict(status, headers, body, (400,))))
    status, headers, body = server.request("GET", f"/api/images/{count}.png")
    out.append(("GET an id one past the last", *_verdict(status, headers, body, (404,))))
    for value in (b"127.0.0.1:1@evil.example", b"127.0.0.1 evil", b"", b"localhost:", b"[::1", b"::1"):
        answer = server.raw(b"GET /api/health HTTP/1.1\r\nHost: " + value + b"\r\nConnection: close\r\n\r\n")
        out.append((f"Host: {value.decode()!r}", *_verdict(*answer[:3], (400,))))
    boundary = "hostileboundary"
    no_image = (f'--{boundary}\r\nContent-Disposition: form-data; name="picture"; filename="q.png"\r\n\r\n').encode()
    no_image += good + f"\r\n--{boundary}--\r\n".encode()
    multipart = f"Content-Type: multipart/form-data; boundary={boundary}\r\n".encode()
    raw_cases = [
        ("no Host header", b"GET /api/health HTTP/1.1\r\n\r\n", (400,)),
        ("two Host headers", b"GET /api/health HTTP/1.1\r\n" + host + host + b"\r\n", (400,)),
        ("invalid request line", b"GET /api/health HTTQ/1.1 x\r\n" + host + b"\r\n", (400,)),
        ("HTTP/1.0 without Host", b"GET /api/health HTTP/1.0\r\n\r\n", (400,)),
        ("HTTP/1.0 with Host", b"GET /api/health HTTP/1.0\r\n" + host + b"\r\n", (200,)),
        ("a 1 MB header line", b"GET / HTTP/1.1\r\n" + host + b"X-Long: " + b"a" * 2**20 + b"\r\n\r\n", (431,)),
        (
            "3,000 headers",
            b"GET /api/health HTTP/1.1\r\n"
            + host
            + b"Connection: close\r\n"
            + b"".join(b"X-H%d: 1\r\n" % i for i in range(3000))
            + b"\r\n",
            (200, 431),
        ),
        (
            "chunked body, bad chunk size",
            b"POST /api/search HTTP/1.1\r\n" + host + multipart + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
            (400,),
        ),
        (
            "chunked body, a 30-digit chunk size",
            b"POST /api/search HTTP/1.1\r\n"
            + host
            + multipart
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"f" * 30
            + b"\r\nab\r\n0\r\n\r\n",
            (400,),
        ),
        (
            "Content-Length and Transfer-Encoding (request smuggling)",
            b"POST /api/search HTTP/1.1\r\n"
            + host
            + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            (400,),
        ),
        (
            "two Content-Length headers",
            b"POST /api/search HTTP/1.1\r\n" + host + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
            (400,),
        ),
        (
            "multipart body with no image field",
            b"POST /api/search HTTP/1.1\r\n"
            + host
            + multipart
            + b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(no_image)
            + no_image,
            (400,),  # neither an image nor an id: one line saying to send one
        ),
        (
            "Expect: 100-continue, then no body",
            b"POST /api/search HTTP/1.1\r\n"
            + host
            + multipart
            + b"Content-Length: 5000\r\nExpect: 100-continue\r\n\r\n",
            (408,),
        ),
        ("DELETE /api/search", b"DELETE /api/search HTTP/1.1\r\n" + host + b"Connection: close\r\n\r\n", (405,)),
    ]
    for name, data, expected in raw_cases:
        status, headers, body, seconds = server.raw(data)
        verdict, detail = _verdict(status, headers, body, expected)
        if verdict == "ok" and seconds > 15:
            verdict, detail = "wrong", f"held {seconds:.0f} s"
        out.append((name, verdict, detail))
    pipelined = b"GET /api/health HTTP/1.1\r\n" + host + b"\r\n"
    status, headers, body, _ = server.raw(pipelined + pipelined[:-2] + b"Connection: close\r\n\r\n")
    both = body.count(b"HTTP/1.1 200 OK") == 1 and status == 200  # the second answer is in the first's "body"
    out.append(("two pipelined requests", "ok" if both else "wrong", f"{status}"))
    return out


def _slow_clients(server: Server, good: bytes, figures: dict) -> list[tuple[str, str, str]]:
    """40 half-sent requests from 127.0.0.1: the ones over the per-address cap are refused at once, the
    rest are closed at the header deadline, and a client from 127.0.0.2 is served meanwhile."""
    out = []
    try:
        socket.socket().bind(("127.0.0.2", 0))
    except OSError:
        return [("slow clients (needs 127.0.0.2)", "ok", "skipped: no second loopback address")]
    conns, refused = [], 0
    start = time.monotonic()
    for i in range(40):
        conn = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        conn.sendall(b"GET /api/hea" if i % 2 else b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-")
        conns.append(conn)
    status, headers, body = server.upload(good, source="127.0.0.2")
    out.append(("a search from another address during the stall", *_verdict(status, headers, body, (200,))))
    closed_after = []
    give_up = start + 20  # for them all: a server that never closes them must not hold this script
    for conn in conns:
        with conn, contextlib.suppress(OSError):
            conn.settimeout(max(0.01, give_up - time.monotonic()))
            answer = conn.recv(65536)
            refused += answer.startswith(b"HTTP/1.1 503")
            while conn.recv(65536):
                pass
        closed_after.append(time.monotonic() - start)
    figures["40 stalled connections from one address: refused at once, last closed after (s)"] = (
        f"{refused}, {max(closed_after):.1f}"
    )
    out.append(("stalled connections over the per-address cap refused", "ok" if refused else "wrong", f"{refused}"))
    out.append(
        (
            "stalled connections closed within 10 s",
            "ok" if max(closed_after) < 10 else "wrong",
            f"last after {max(closed_after):.1f} s",
        )
    )
    return out


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a name too long to exist
        return False


def _stalled(server: Server, give_up: float = 60) -> float:
    """Seconds the server keeps a connection whose body stops coming (give_up: we stop waiting)."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=give_up) as conn:
        conn.sendall(
            f"POST /api/search HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Length: 100000\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\n\r\n--x\r\n".encode()
        )
        start = time.monotonic()
        with contextlib.suppress(OSError):
            conn.recv(100)
        return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--index-dir", default="indexes/fashion-mnist")
    parser.add_argument("--only", default="cli,api,collection,server")
    args = parser.parse_args()
    args.index_dir = str(Path(args.index_dir).resolve())  # the commands run from the checkout under test
    print(f"aesearch from {Path(aesearch.__file__).parent}, bundle {args.index_dir}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    engine = SearchEngine.load(args.index_dir)
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        files = make_files(Path(tmp), engine)
        if "api" in args.only:
            import shutil

            copy_dir = Path(tmp) / "bundle-copy"
            shutil.copytree(args.index_dir, copy_dir)
            table["Python API"] = run_api(api_cases(files, engine) + api_write_cases(SearchEngine.load(copy_dir)))
        if "collection" in args.only:
            table["collections (CLI)"] = run_collection(
                collection_cases(Path(tmp), args.index_dir, engine), env, Path(tmp)
            )
        if "cli" in args.only:
            table["CLI"] = run_cli(cli_cases(files, args.index_dir, Path(tmp)), env)
        figures = {}
        if "server" in args.only:
            table["server"], figures = run_server(files, engine, args.index_dir, env)
    print("\n| surface | cases | ok | tracebacks | raw exceptions | HTTP 500 | wrong or unclear |")
    print("|---|---|---|---|---|---|---|")
    total: Counter = Counter()
    for surface, counts in table.items():
        total.update(counts)
        print(
            f"| {surface} | {sum(counts.values())} | {counts['ok']} | {counts['traceback']} | {counts['raw']} | "
            f"{counts['500']} | {counts['wrong']} |"
        )
    print(
        f"| all | {sum(total.values())} | {total['ok']} | {total['traceback']} | {total['raw']} | {total['500']} | "
        f"{total['wrong']} |"
    )
    for name, value in figures.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    main()

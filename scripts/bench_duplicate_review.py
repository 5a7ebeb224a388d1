"""How fast the page's duplicate review opens, beside today's `duplicates`, on 70,000-image bundles.

    python scripts/bench_duplicate_review.py --bundle /work/main/indexes/fashion-mnist --work /tmp/dup-bench
    python scripts/bench_duplicate_review.py ... --folder-bundle   # also a bundle of 70,000 PNG files

The bundle is copied into --work first: the review writes its pairs cache beside the bundle
(`.NAME.cache/`). Figures, each through the HTTP routes (FastAPI's test client, in process):
  * old: find_duplicates at 0.01 (what `aesearch duplicates` spends, less loading and the picture);
  * cold open: from the server's start to the first page of groups, nothing cached (the pairs are
    found up to the slider's largest threshold, 0.05, in the background);
  * warm open: a new server, the pairs cache file present (every later open of the same bundle state);
  * slider: a page of groups at each of 11 thresholds from 0 to 0.05 (the groups from the cached pairs);
  * next page, and the export of every decision as JSON.
With --chromium, also the warm open in headless Chromium: from navigating to /#duplicates to the
first 12 thumbnails drawn (needs selenium, chromium and chromedriver).
With --folder-bundle the 70,000 images are also written as PNG files (once) and built into a bundle
of folders with the same model, whose review reads each member's width and height from its file.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image

from aesearch import SearchEngine, defaults
from aesearch.interfaces.server import create_app
from aesearch.pipelines.collection import build_from_folders
from aesearch.quality.duplicates import find_duplicates
from aesearch.search.index import IndexSpec

SPEC = IndexSpec("flat", "cosine", {"whiten_shrinkage": 0.03, "whiten_dims": 192}, "whiten")


def first_page(client: TestClient, query: str) -> dict:
    while True:
        response = client.get(f"/api/duplicates{query}")
        if response.status_code == 200:
            return response.json()
        assert response.status_code == 202, response.text
        time.sleep(0.02)


def open_review(bundle: Path) -> tuple[float, TestClient, dict]:
    start = time.perf_counter()
    client = TestClient(create_app(bundle), base_url="http://localhost")
    body = first_page(client, "?threshold=0.01&per_page=24")
    return time.perf_counter() - start, client, body


def measure(name: str, bundle: Path, *, chromium: bool = False) -> None:
    print(f"\n{name}: {bundle}")
    engine = SearchEngine.load(bundle)
    start = time.perf_counter()
    old = find_duplicates(engine, threshold=0.01)
    old_s = time.perf_counter() - start
    print(f"  {len(engine):,} images; old find_duplicates(0.01): {old_s:6.2f} s, {len(old.groups):,} groups")
    cache = bundle.resolve().parent / f".{bundle.resolve().name}.cache"
    for stale in cache.glob("duplicates-*.npz"):
        stale.unlink()
    cold, _, body = open_review(bundle)
    assert body["groups_total"] == len(old.groups), (body["groups_total"], len(old.groups))
    print(f"  review, cold open (pairs found, up to 0.05):    {cold:6.2f} s  ({body['method']})")
    warm, client, body = open_review(bundle)
    assert body["pairs_from_cache"]
    print(f"  review, warm open (pairs cache file):           {warm:6.2f} s")
    times = []
    for threshold in np.linspace(0, defaults.DUPLICATE_REVIEW_MAX_THRESHOLD, 11):
        start = time.perf_counter()
        body = first_page(client, f"?threshold={threshold:.3f}&per_page=24")
        times.append(time.perf_counter() - start)
        groups = body["groups_total"]
    print(
        f"  slider: a page at a new threshold, median {statistics.median(times) * 1000:6.0f} ms, "
        f"max {max(times) * 1000:.0f} ms ({groups:,} groups at 0.05)"
    )
    start = time.perf_counter()
    first_page(client, "?threshold=0.05&per_page=24&page=2")
    print(f"  next page:                                      {(time.perf_counter() - start) * 1000:6.0f} ms")
    start = time.perf_counter()
    exported = client.post("/api/duplicates/export", json={"threshold": 0.05, "format": "json"})
    print(
        f"  export of all decisions at 0.05 (JSON):         {(time.perf_counter() - start) * 1000:6.0f} ms, "
        f"{len(exported.content) / 1024:,.0f} KB"
    )
    if chromium:
        print(f"  Chromium: open the view to 12 thumbnails drawn:  {chromium_open(bundle):6.2f} s")


def chromium_open(bundle: Path) -> float:
    """Seconds from navigating to the Duplicates view to its first 12 thumbnails drawn (pairs cached)."""
    import socket
    import threading

    import uvicorn
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(bundle), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1200,1000",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"))
    try:
        driver.get(f"http://127.0.0.1:{port}/")  # the page's own assets, loaded once (a browser's cache)
        start = time.perf_counter()
        driver.get(f"http://127.0.0.1:{port}/#duplicates")
        driver.refresh()
        drawn = (
            "const imgs = [...document.querySelectorAll('#dup-groups img')].slice(0, 12);"
            "return imgs.length === 12 && imgs.every(i => i.complete && i.naturalWidth > 0)"
        )
        WebDriverWait(driver, 120).until(lambda d: d.execute_script(drawn))
        return time.perf_counter() - start
    finally:
        driver.quit()
        server.should_exit = True
        thread.join(timeout=10)


def write_folder(engine: SearchEngine, out: Path) -> None:
    """The bundle's 70,000 images as PNG files, one folder per class."""
    bundle = engine.bundle
    ids = bundle.live_ids()
    records = bundle.records(ids)
    names = [n.replace("/", "-").replace(" ", "-") for n in bundle.class_names]
    for start in range(0, len(ids), 10_000):
        chunk = ids[start : start + 10_000]
        for id_, image, label in zip(
            chunk, bundle.images(chunk), records["label"][start : start + 10_000], strict=True
        ):
            path = out / names[label] / f"{id_:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(path, compress_level=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bundle", type=Path, default=defaults.INDEX_DIR)
    parser.add_argument("--work", type=Path, required=True, help="scratch folder (about 600 MB with --folder-bundle)")
    parser.add_argument("--folder-bundle", action="store_true", help="also a bundle of 70,000 PNG files")
    parser.add_argument("--chromium", action="store_true", help="also the warm open in headless Chromium")
    args = parser.parse_args()
    cpu = subprocess.run("lscpu | grep 'Model name'", shell=True, capture_output=True, text=True).stdout.strip()
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    print(f"{cpu.split(':', 1)[-1].strip()}; avx512: {'yes' if 'avx512f' in flags else 'no'}")
    args.work.mkdir(parents=True, exist_ok=True)
    copy = args.work / "dataset-bundle"
    if not copy.exists():
        shutil.copytree(args.bundle, copy)
    measure("Dataset bundle (no files)", copy, chromium=args.chromium)
    if args.folder_bundle:
        folder, index = args.work / "png", args.work / "folder-bundle"
        if not folder.exists():
            start = time.perf_counter()
            write_folder(SearchEngine.load(copy), folder)
            print(f"\nwrote 70,000 PNG files in {time.perf_counter() - start:.0f} s")
        if not index.exists():
            start = time.perf_counter()
            build_from_folders(
                index,
                images=[folder],
                labels="folders",
                model=copy / "model.safetensors",
                spec=SPEC,
                shifts=defaults.EMBEDDING_SHIFTS,
                log=None,
            )
            print(f"built the folder bundle in {time.perf_counter() - start:.0f} s")
        measure("Folder bundle (70,000 PNG files)", index, chromium=args.chromium)


if __name__ == "__main__":
    main()

"""The page's latent map at a million points, in headless Chromium on this machine: how long from the
layout being ready to the map drawn, frame times while panning, and a lasso over ~10,000 points.

No million-image bundle is needed: the server is `aesearch serve`'s app over a real bundle (for
the page itself), with its map layouts made by a function that returns N random clustered points
(10 Gaussian clusters, one class each) instead of projecting the bundle. The points go through the
same routes (GET /api/map, /api/map/points) and the same page code. WebGL runs on SwiftShader
(Chromium's CPU renderer: no GPU here), so every frame of a million points is drawn by the CPU.

    python scripts/bench_map_page.py --index-dir indexes/fashion-mnist
    python scripts/bench_map_page.py --index-dir DIR --sizes 250000,500000,1000000,2000000

Timings come from the page (performance.now()): `ready` when GET /api/map first says "ready",
`drawn` two animation frames after regl-scatterplot's draw() resolved (the points are on screen);
a lasso from the mouse button's release to the selection shown.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path

import numpy as np

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"


def cpu() -> str:
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown CPU"
    model = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), "?")
    avx512 = "avx512f" in lscpu
    cores = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("CPU(s)")), "?")
    return f"{model}, {cores} CPUs, avx512 {'yes' if avx512 else 'no'}"


def clustered(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n points in 10 Gaussian clusters of different sizes and spreads: (coords (n, 2), classes (n,))."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-8, 8, size=(10, 2))
    spreads = rng.uniform(0.6, 2.0, size=10)
    classes = rng.choice(10, size=n, p=np.linspace(1, 2, 10) / np.linspace(1, 2, 10).sum())
    coords = centres[classes] + rng.normal(size=(n, 2)) * spreads[classes, None]
    return coords.astype(np.float32), classes.astype(np.uint16)


def synthetic_app(index_dir: str, n: int):
    """The server's app over a real bundle, its map layouts replaced by n clustered points."""
    from aesearch import defaults

    defaults.MAP_MAX_POINTS = max(defaults.MAP_MAX_POINTS, n)  # the page is sent all of them
    from aesearch.interfaces import map_routes
    from aesearch.interfaces.server import create_app
    from aesearch.quality.map_points import Categories

    coords, classes = clustered(n)

    def build(engine, method, progress):
        names = [f"cluster {c}" for c in range(10)]
        return map_routes.Layout(
            method, engine.bundle.generation, n, np.arange(n), coords, Categories("class", names, classes), None
        )

    app = create_app(index_dir)
    app.state.map_layouts = map_routes.MapLayouts(build)
    return app, coords


def serve(app) -> tuple[str, object]:
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port}", server


def chromium(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
        "--disable-dev-shm-usage",
        "--window-size=1280,1100",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))


def open_map(driver, url: str) -> dict:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return !!window.aesearchMap"))
    driver.find_element(By.ID, "map-show").click()
    WebDriverWait(driver, 120, poll_frequency=0.05).until(
        lambda d: d.execute_script("return !!window.aesearchMap.map.timings.drawn")
    )
    driver.execute_script("document.getElementById('map-frame').scrollIntoView({block: 'center'})")
    return driver.execute_script("return window.aesearchMap.map.timings")


def normalised(driver, coords: np.ndarray) -> np.ndarray:
    """The points as the page gives them to the plot (docs/map.md: one scale for both axes)."""
    x0, y0, x1, y1 = driver.execute_script("return window.aesearchMap.map.summary.bounds")
    return (coords - [(x0 + x1) / 2, (y0 + y1) / 2]) / (max(x1 - x0, y1 - y0) / 2 * 1.04)


def screen_positions(driver, coords: np.ndarray) -> np.ndarray:
    """Each point's pixel in the map's frame, through the plot's camera."""
    view = np.array(driver.execute_script("return Array.from(window.aesearchMap.map.plot.get('cameraView'))"))
    width, height = driver.execute_script(
        "const r = document.getElementById('map-frame').getBoundingClientRect(); return [r.width, r.height]"
    )
    ndc = normalised(driver, coords)
    h = np.c_[ndc, np.zeros(len(ndc)), np.ones(len(ndc))] @ view.reshape(4, 4)
    return np.c_[width * (h[:, 0] / (width / height) + 1) / 2, height * (0.5 - h[:, 1] / 2)]


def inside(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Even-odd rule: which points lie inside the closed polygon."""
    result = np.zeros(len(points), bool)
    px, py = points[:, 0], points[:, 1]
    for (ax, ay), (bx, by) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        crosses = (ay > py) != (by > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = ax + (py - ay) * (bx - ax) / (by - ay)
        result ^= crosses & (px < at)
    return result


def pan_frames(driver, seconds: float = 3.0) -> dict:
    """Drag the map round a circle for a few seconds: the intervals between the plot's redraws while
    the view moves (the page's motion sample), and the full redraws when it rests (the harness's
    mouse moves wait for the page to answer each one: on a busy machine it pauses past REST_MS)."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "map-canvas")
    driver.execute_script(
        "window.draws_ = []; const m = window.aesearchMap.map;"
        "m.plot.subscribe('draw', () => window.draws_.push([performance.now(), m.coarse]));"
    )
    steps = int(seconds * 20)
    actions = ActionBuilder(driver, duration=50)
    actions.pointer_action.move_to(canvas, -200, 0).pointer_down()
    for i in range(steps):
        angle = 2 * np.pi * i / steps
        actions.pointer_action.move_to(canvas, int(-200 + 200 * np.cos(angle)), int(150 * np.sin(angle)))
    actions.pointer_action.pointer_up()
    started = time.perf_counter()
    actions.perform()
    wall = time.perf_counter() - started
    draws = np.array(driver.execute_script("return window.draws_"), dtype=float)
    gaps, coarse = np.diff(draws[:, 0]), draws[1:, 1].astype(bool)
    moving = gaps[coarse] if coarse.any() else np.array([np.nan])
    return {
        "wall_s": wall,
        "moves": steps,
        "draws": len(draws),
        "p50_ms": float(np.median(moving)),
        "p95_ms": float(np.percentile(moving, 95)),
        "full": int((~coarse).sum()),
        "full_ms": float(np.median(gaps[~coarse])) if (~coarse).any() else float("nan"),
    }


def lasso(driver, coords: np.ndarray, target: int = 10_000) -> dict:
    """A mouse lasso round the `target` points nearest a dense spot; the time from release to the
    selection shown, and the selection against the points inside the lasso the page recorded."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By

    screen = screen_positions(driver, coords)
    width, height = driver.execute_script(
        "const r = document.getElementById('map-frame').getBoundingClientRect(); return [r.width, r.height]"
    )
    visible = (screen[:, 0] > 60) & (screen[:, 0] < width - 60) & (screen[:, 1] > 60) & (screen[:, 1] < height - 60)
    centre = np.median(screen[visible], axis=0)
    radius = float(np.sort(np.linalg.norm(screen - centre, axis=1))[target])
    polygon = centre + radius * np.c_[np.cos(np.linspace(0, 2 * np.pi, 49)), np.sin(np.linspace(0, 2 * np.pi, 49))]
    button = driver.find_element(By.ID, "map-lasso")
    if button.get_attribute("aria-pressed") != "true":
        button.click()
    canvas = driver.find_element(By.ID, "map-canvas")
    actions = ActionBuilder(driver, duration=10)
    actions.pointer_action.move_to(canvas, int(polygon[0, 0] - width / 2), int(polygon[0, 1] - height / 2))
    actions.pointer_action.pointer_down()
    for x, y in polygon[1:]:
        actions.pointer_action.move_to(canvas, int(x - width / 2), int(y - height / 2))
    actions.pointer_action.pointer_up()
    driver.execute_script("window.aesearchMap.map.timings.selected = 0")
    actions.perform()
    deadline = time.monotonic() + 30
    while not driver.execute_script("return window.aesearchMap.map.timings.selected > 0"):
        assert time.monotonic() < deadline, "the lasso selected nothing"
        time.sleep(0.02)
    t = driver.execute_script("return window.aesearchMap.map.timings")
    ids = np.array(driver.execute_script("const m = window.aesearchMap.map; return m.selection.map((i) => m.ids[i])"))
    drawn = np.array(driver.execute_script("return window.aesearchMap.map.lassoPolygon"))
    expected = np.flatnonzero(inside(drawn, normalised(driver, coords)))  # ids are 0..n-1 here
    return {
        "release_to_selection_ms": t["selected"] - t["pointerUp"],
        "selected": len(ids),
        "inside": len(expected),
        "same": bool(np.array_equal(np.sort(ids), expected)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index-dir", default="indexes/fashion-mnist", help="a bundle for the page (not changed)")
    parser.add_argument("--sizes", default="1000000", help="points drawn, comma-separated (the last is panned)")
    parser.add_argument("--repeats", type=int, default=3, help="page loads per size")
    parser.add_argument("--work", default="/tmp/aesearch-bench-map", help="a folder for Chromium's profile")
    args = parser.parse_args()

    print(f"CPU: {cpu()}")
    print("Chromium headless, WebGL on SwiftShader (CPU); regl-scatterplot 1.16.0")
    sizes = [int(s) for s in args.sizes.split(",")]
    for n in sizes:
        app, coords = synthetic_app(args.index_dir, n)
        url, server = serve(app)
        driver = chromium(Path(args.work) / f"profile-{n}")
        try:
            loads = [open_map(driver, url) for _ in range(args.repeats)]
            drawn = [t["drawn"] - t["ready"] for t in loads]
            fetched = [t["fetched"] - t["ready"] for t in loads]
            print(
                f"{n:>9,} points: layout ready -> drawn p50 {statistics.median(drawn) / 1000:.2f} s "
                f"(runs {', '.join(f'{d / 1000:.2f}' for d in drawn)}; of which fetching "
                f"{14 * n / 1e6:.0f} MB {statistics.median(fetched) / 1000:.2f} s)"
            )
            if n == sizes[-1]:
                pan = pan_frames(driver)
                print(
                    f"{n:>9,} points: panning ({pan['moves']} mouse moves in {pan['wall_s']:.1f} s): "
                    f"{pan['draws']} redraws; while moving (a 50,000-point sample) p50 {pan['p50_ms']:.0f} ms "
                    f"apart, p95 {pan['p95_ms']:.0f} ms; {pan['full']} full redraws at rest, "
                    f"{pan['full_ms']:.0f} ms each (p50)"
                )
                open_map(driver, url)  # the view as loaded: the lasso's polygon is computed for it
                result = lasso(driver, coords)
                print(
                    f"{n:>9,} points: lasso: {result['selected']:,} selected "
                    f"({'exactly' if result['same'] else 'NOT'} the {result['inside']:,} inside the lasso drawn), "
                    f"{result['release_to_selection_ms']:.0f} ms from the button's release"
                )
        finally:
            driver.quit()
            server.should_exit = True
            time.sleep(0.5)


if __name__ == "__main__":
    main()

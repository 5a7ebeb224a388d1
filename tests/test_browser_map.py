"""The page's latent map in a real headless Chromium (WebGL through SwiftShader): drawn, hovered,
clicked, lassoed, exported and marked, checked against the points the server sent; screenshots.

Where a point lands on the screen is computed here from the layout, the page's normalisation
(docs/map.md) and the camera, independently of the page's code: the lasso's selection must be the
points inside the polygon the mouse drew. Uses Debian's chromium and chromium-driver like
test_browser.py; skipped where they are missing unless AESEARCH_REQUIRE_BROWSER=1.
"""

import csv
import itertools
import json
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from browsers import ARTIFACTS, chromium, serving

from aesearch.interfaces.server import create_app
from aesearch.quality.map_points import unpack
from aesearch.search.engine import SearchEngine

EDGE_PX = 4.0  # points this close to the lasso's edge may fall either side (the mouse path is sampled)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def folder_bundle(tmp_path_factory, model) -> Path:
    """A labelled folder collection: points with paths, coloured by class folder."""
    from image_folders import write_image_folder

    from aesearch.pipelines.collection import build_from_folders
    from aesearch.search.index import IndexSpec

    root = tmp_path_factory.mktemp("map-bundle")
    folder = write_image_folder(root / "pics", n=90)
    spec = IndexSpec("flat", "cosine", {}, "none")
    build_from_folders(
        root / "idx", images=[folder.root], labels="folders", model=model, spec=spec, shifts=((0, 0),), log=None
    )
    return root / "idx"


@pytest.fixture(scope="module")
def live_server(folder_bundle):
    with serving(create_app(folder_bundle)) as url:
        yield url


@pytest.fixture(scope="module")
def downloads(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(tmp_path_factory, downloads):
    driver = chromium(tmp_path_factory, webgl=True, downloads=downloads)
    yield driver
    driver.quit()


def open_map(driver, url: str) -> dict:
    """Load the page, show the map, wait until it is drawn; the layout's summary."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, 20).until(lambda d: "images" in d.find_element(By.ID, "bundle").text)
    driver.find_element(By.ID, "map-show").click()
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return !!window.aesearchMap.map.timings.drawn"))
    # Wholly in view: the mouse's offsets are from the centre of the element's visible part.
    driver.execute_script("document.getElementById('map-frame').scrollIntoView({block: 'center'})")
    return driver.execute_script("return window.aesearchMap.map.summary")


class Screen:
    """Where each point the server sent lands in the map's frame, computed from the layout."""

    def __init__(self, driver, url: str, summary: dict) -> None:
        with urllib.request.urlopen(f"{url}/api/map/points") as response:
            self.coords, self.ids, self.codes = unpack(response.read())
        page_ids = driver.execute_script("return Array.from(window.aesearchMap.map.ids)")
        assert page_ids == self.ids.tolist(), "the page holds the points in the order sent"
        x0, y0, x1, y1 = summary["bounds"]
        centre, half = np.array([(x0 + x1) / 2, (y0 + y1) / 2]), max(x1 - x0, y1 - y0) / 2 * 1.04
        self.ndc = (self.coords - centre) / half  # docs/map.md: one scale for both axes, 4% margin
        self.view = np.array(driver.execute_script("return Array.from(window.aesearchMap.map.plot.get('cameraView'))"))
        self.width, self.height = driver.execute_script(
            "const r = document.getElementById('map-frame').getBoundingClientRect(); return [r.width, r.height]"
        )

    def of(self, ndc: np.ndarray) -> np.ndarray:
        """(n, 2) normalised coordinates -> (n, 2) pixels in the frame, through the camera's view
        matrix (column-major) and the canvas's aspect ratio, as regl-scatterplot draws them."""
        m = self.view.reshape(4, 4).T
        h = np.c_[ndc, np.zeros(len(ndc)), np.ones(len(ndc))] @ m.T
        aspect = self.width / self.height
        return np.c_[self.width * (h[:, 0] / aspect + 1) / 2, self.height * (0.5 - h[:, 1] / 2)]

    def points(self) -> np.ndarray:
        return self.of(self.ndc)

    def isolated(self, count: int, gap: float = 18.0) -> list[int]:
        """Indices of points with no other point within `gap` pixels, well inside the frame."""
        screen = self.points()
        distance = np.sqrt(((screen[:, None] - screen[None]) ** 2).sum(-1)) + np.eye(len(screen)) * 1e9
        inside = (screen[:, 0] > 40) & (screen[:, 0] < self.width - 200) & (screen[:, 1] > 40)
        inside &= screen[:, 1] < self.height - 200
        found = np.flatnonzero((distance.min(1) > gap) & inside)
        assert len(found) >= count, "the test bundle's map has too few isolated points"
        return found[:count].tolist()


def pointer_to(driver, x: float, y: float, *, click: bool = False) -> None:
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By

    canvas = driver.find_element(By.ID, "map-canvas")
    width, height = canvas.size["width"], canvas.size["height"]
    actions = ActionBuilder(driver, duration=20)
    actions.pointer_action.move_to(canvas, round(x - width / 2), round(y - height / 2))
    if click:
        actions.pointer_action.click()
    actions.perform()


def inside(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Even-odd rule (ray casting): which points lie inside the closed polygon."""
    result = np.zeros(len(points), bool)
    px, py = points[:, 0], points[:, 1]
    for (ax, ay), (bx, by) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        crosses = (ay > py) != (by > py)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = ax + (py - ay) * (bx - ax) / (by - ay)
        result ^= crosses & (px < at)
    return result


def edge_distance(polygon: np.ndarray, points: np.ndarray) -> np.ndarray:
    best = np.full(len(points), np.inf)
    for a, b in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        ab = b - a
        t = np.clip(((points - a) @ ab) / max(ab @ ab, 1e-12), 0, 1)
        best = np.minimum(best, np.linalg.norm(points - (a + t[:, None] * ab), axis=1))
    return best


def lasso(driver, polygon: np.ndarray) -> None:
    """Draw a closed lasso through these frame pixels with the mouse, in the page's Lasso mode."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.by import By

    button = driver.find_element(By.ID, "map-lasso")
    if button.get_attribute("aria-pressed") != "true":
        button.click()
    canvas = driver.find_element(By.ID, "map-canvas")
    width, height = canvas.size["width"], canvas.size["height"]
    actions = ActionBuilder(driver, duration=15)
    path = [*polygon, polygon[0]]
    actions.pointer_action.move_to(canvas, round(path[0][0] - width / 2), round(path[0][1] - height / 2))
    actions.pointer_action.pointer_down()
    for (x0, y0), (x1, y1) in itertools.pairwise(path):
        for t in np.linspace(0, 1, 8)[1:]:  # small steps along each side: the lasso samples the path
            actions.pointer_action.move_to(
                canvas, round(x0 + t * (x1 - x0) - width / 2), round(y0 + t * (y1 - y0) - height / 2)
            )
    actions.pointer_action.pointer_up()
    actions.perform()


def selected_ids(driver) -> list[int]:
    return driver.execute_script("const m = window.aesearchMap.map; return m.selection.map((i) => m.ids[i])")


def test_the_map_draws_every_image_coloured_by_class(live_server, browser, folder_bundle):
    from selenium.webdriver.common.by import By

    summary = open_map(browser, live_server)
    engine = SearchEngine.load(folder_bundle)
    assert summary["points"] == summary["count"] == len(engine) and summary["kind"] == "class"
    status = browser.find_element(By.ID, "map-status").text
    assert status.startswith(f"{len(engine)} images, PCA of the search space, coloured by class"), status
    legend = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#map-legend li")]
    assert [t.rsplit(" (", 1)[0] for t in legend] == summary["categories"]
    assert {"ellipse", "rectangle", "ring", "unlabelled"} <= set(summary["categories"])
    # Pixels drawn: the canvas's own picture has many coloured pixels, in more than one colour.
    from io import BytesIO

    from PIL import Image

    picture = np.asarray(
        Image.open(BytesIO(browser.find_element(By.ID, "map-canvas").screenshot_as_png)).convert("RGB")
    )
    coloured = picture[(np.abs(picture.astype(int) - 255).sum(-1) > 60)]
    assert len(coloured) > 200, "no points drawn"
    assert len({tuple(c // 40) for c in coloured}) >= 3, "one colour only: the categories are not coloured"


def test_hover_shows_the_thumbnail_and_path_and_a_click_searches(live_server, browser, folder_bundle):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    summary = open_map(browser, live_server)
    screen = Screen(browser, live_server, summary)
    page_positions = browser.execute_script(
        "const p = window.aesearchMap.map.plot; return [0, 1, 2].map((i) => p.getScreenPosition(i))"
    )
    np.testing.assert_allclose(page_positions, screen.points()[:3], atol=0.5)  # the oracle sees what the page does
    engine = SearchEngine.load(folder_bundle)
    index = screen.isolated(1)[0]
    point_id = int(screen.ids[index])
    x, y = screen.points()[index]
    pointer_to(browser, x, y)
    tip = browser.find_element(By.ID, "map-tip")
    WebDriverWait(browser, 10).until(lambda d: tip.is_displayed() and tip.get_attribute("data-id") == str(point_id))
    WebDriverWait(browser, 10).until(
        lambda d: d.find_element(By.ID, "map-tip-path").text == engine.bundle.path_of(point_id)
    )
    image = browser.find_element(By.ID, "map-tip-image")
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return arguments[0].naturalWidth > 0", image))
    assert image.get_attribute("src").endswith(f"/api/images/{point_id}.png?scale=4")

    pointer_to(browser, x, y, click=True)
    WebDriverWait(browser, 20).until(
        lambda d: f"neighbours of image {point_id}" in d.find_element(By.ID, "status").text
    )
    hits = browser.execute_script("return [...document.querySelectorAll('#hits .hit')].map(e => +e.dataset.id)")
    assert hits == [h.id for h in engine.query_id(point_id, 8).hits]
    # The query and its hits are marked where their points are.
    WebDriverWait(browser, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#map-marks .map-query"))
    transform = browser.find_element(By.CSS_SELECTOR, "#map-marks .map-query").get_attribute("transform")
    qx, qy = (float(v) for v in transform.removeprefix("translate(").removesuffix(")").split())
    np.testing.assert_allclose([qx, qy], [x, y], atol=1.0)  # the query is the clicked image itself
    marks = browser.find_elements(By.CSS_SELECTOR, "#map-marks circle.map-hit")
    at = {int(i): xy for i, xy in zip(screen.ids, screen.points(), strict=True)}
    assert sorted(int(m.get_attribute("data-id")) for m in marks) == sorted(hits)
    for mark in marks:
        expected = at[int(mark.get_attribute("data-id"))]
        np.testing.assert_allclose(
            [float(mark.get_attribute("cx")), float(mark.get_attribute("cy"))], expected, atol=1.0
        )
    ARTIFACTS.mkdir(exist_ok=True)
    browser.execute_script("document.getElementById('map-view').scrollIntoView()")
    assert browser.save_screenshot(str(ARTIFACTS / "map-desktop.png"))


def test_lasso_selects_the_points_inside_then_export_mark_and_limit(live_server, browser, folder_bundle, downloads):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    engine = SearchEngine.load(folder_bundle)
    summary = open_map(browser, live_server)
    screen = Screen(browser, live_server, summary)
    points = screen.points()
    centre = np.median(points, axis=0)
    angles = np.linspace(0, 2 * np.pi, 9)[:-1]
    polygon = centre + np.c_[np.cos(angles) * 120, np.sin(angles) * 90] * (1 + 0.35 * (np.arange(8) % 2))[:, None]
    lasso(browser, polygon)
    expected = inside(polygon, points)
    certain = edge_distance(polygon, points) > EDGE_PX
    WebDriverWait(browser, 10).until(lambda d: len(selected_ids(d)) > 0)
    chosen = np.isin(screen.ids, selected_ids(browser))
    assert expected.sum() >= 5, "the lasso should hold a few points"
    assert np.array_equal(chosen[certain], expected[certain]), "the lasso selected other points than those inside"
    assert browser.find_element(By.ID, "map-selected").text == f"{chosen.sum()} selected"

    # Export: the same ids, with their paths and classes.
    for button, name in (("map-json", "json"), ("map-csv", "csv")):
        browser.find_element(By.ID, button).click()
        target = downloads / f"aesearch-selection-{chosen.sum()}.{name}"
        WebDriverWait(browser, 10).until(lambda d, target=target: target.is_file() and target.stat().st_size > 0)
        if name == "json":
            records = json.loads(target.read_text())["records"]
        else:
            with target.open(newline="") as f:
                records = [{**row, "id": int(row["id"])} for row in csv.DictReader(f)]
        assert sorted(r["id"] for r in records) == sorted(screen.ids[chosen].tolist())
        for record in records:
            assert record["path"] == engine.bundle.path_of(record["id"])

    # More like: needs a query; the marks go with the search and show on the list and the map.
    assert browser.find_element(By.ID, "map-more").get_attribute("disabled") is not None
    query = int(screen.ids[~chosen][0])
    browser.execute_script(f"window.aesearchMap.searchId({query})")  # as a click on its point does
    WebDriverWait(browser, 20).until(lambda d: f"neighbours of image {query}" in d.find_element(By.ID, "status").text)
    WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "map-more").get_attribute("disabled") is None)
    browser.find_element(By.ID, "map-more").click()
    n = int(chosen.sum())
    WebDriverWait(browser, 20).until(lambda d: f"refined by {n} marks" in d.find_element(By.ID, "status").text)
    tray = browser.execute_script("return [...document.querySelectorAll('#marked .mark')].map(e => e.className)")
    assert len(tray) == n and all("marked-more" in c for c in tray)
    WebDriverWait(browser, 10).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#map-marks .map-mark-more")) == n)
    browser.find_element(By.ID, "map-less").click()  # the same images, now "less like": a mark replaces a mark
    WebDriverWait(browser, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#map-marks .map-mark-less")) == n)
    tray = browser.execute_script("return [...document.querySelectorAll('#marked .mark')].map(e => e.className)")
    assert len(tray) == n and all("marked-less" in c for c in tray)
    shown = browser.execute_script("return [...document.querySelectorAll('#hits .hit')].map(e => +e.dataset.id)")
    assert not set(shown) & set(screen.ids[chosen].tolist()), "images marked less like are left out of the hits"

    # Limit searches to the selection: a chip, and `where` = id in (...) with every search.
    browser.execute_script(
        "window.sentWhere = [];"
        "const original = window.fetch;"
        "window.fetch = (url, options) => {"
        "  if (String(url).startsWith('/api/search')) window.sentWhere.push(options.body.get('where'));"
        "  return original(url, options); };"
    )
    browser.find_element(By.ID, "map-limit").click()
    chip = browser.find_element(By.ID, "map-chip")
    WebDriverWait(browser, 10).until(lambda d: chip.is_displayed())
    assert chip.text.startswith(f"limited to {n} selected images")
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return window.sentWhere.length") >= 1)
    where = browser.execute_script("return window.sentWhere.at(-1)")
    assert where.startswith("id in (") and sorted(int(v) for v in where[7:-1].split(",")) == sorted(
        screen.ids[chosen].tolist()
    )
    chip.find_element(By.TAG_NAME, "button").click()
    WebDriverWait(browser, 10).until(lambda d: not chip.is_displayed())
    WebDriverWait(browser, 10).until(lambda d: d.execute_script("return window.sentWhere.at(-1)") is None)


def test_phone_width_and_nothing_from_outside(live_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get_log("browser")  # this test's page only
    try:
        browser.set_window_size(390, 844)
        WebDriverWait(browser, 10).until(lambda d: d.execute_script("return window.innerWidth") <= 400)
        open_map(browser, live_server)
        wide = browser.execute_script(
            "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > innerWidth)"
            ".map(e => e.id || e.className || e.tagName)"
        )
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a phone screen: {wide}"
        assert browser.find_element(By.ID, "map-frame").size["width"] <= 390
        browser.execute_script("document.getElementById('map-view').scrollIntoView()")
        ARTIFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "map-phone.png"))
    finally:
        browser.set_window_size(1280, 1100)
    foreign = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith(location.origin + '/'))"
    )
    assert foreign == [], f"the page loaded from outside: {foreign}"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors


def test_past_the_limit_the_page_says_what_it_shows(live_server, browser, monkeypatch):
    from selenium.webdriver.common.by import By

    from aesearch import defaults

    monkeypatch.setattr(defaults, "MAP_MAX_POINTS", 40)  # read by the server at each request
    summary = open_map(browser, live_server)
    status = browser.find_element(By.ID, "map-status").text
    assert status.startswith(f"showing 40 of {summary['count']} images: a sample stratified by class"), status
    assert "(the page is sent at most 40 points)" in status
    assert browser.execute_script("return window.aesearchMap.map.ids.length") == 40


def test_after_a_change_to_the_collection_the_next_search_redraws_the_map(live_server, browser, folder_bundle):
    """Last in this file: it removes two images from the module's bundle."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from aesearch.pipelines.writer import Collection

    before = open_map(browser, live_server)
    gone = browser.execute_script("return Array.from(window.aesearchMap.map.ids.slice(0, 2))")
    Collection(folder_bundle).remove(gone)
    query = browser.execute_script("return window.aesearchMap.map.ids[5]")
    browser.execute_script(f"window.aesearchMap.searchId({query})")
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return window.aesearchMap.map.summary.count") == before["count"] - 2
    )
    WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#map-marks .map-query"))
    ids = browser.execute_script("return Array.from(window.aesearchMap.map.ids)")
    assert len(ids) == before["count"] - 2 and not set(gone) & set(ids)

"""End to end in a real headless Chromium: upload, sketch, mark and explain through the page; screenshots.

Uses Debian's chromium and chromium-driver (`.ci/run` installs them). Skipped where they are
missing, except when AESEARCH_REQUIRE_BROWSER=1 (as in CI), where it fails instead.
"""

import numpy as np
import pytest
from browsers import ARTIFACTS, chromium, serving
from PIL import Image

from aesearch.interfaces.server import create_app

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def live_server(trained_bundle):
    with serving(create_app(trained_bundle)) as url:
        yield url


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = chromium(tmp_path_factory)
    yield driver
    driver.quit()


def test_upload_through_the_page_shows_reconstruction_and_k_neighbours(live_server, browser, trained_bundle, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from aesearch.search.engine import SearchEngine

    query = tmp_path / "query.png"
    Image.fromarray(SearchEngine.load(trained_bundle).image(700)).save(query)  # a test-split image
    browser.get(live_server)
    WebDriverWait(browser, 20).until(lambda d: "images" in d.find_element(By.ID, "bundle").text)
    k = browser.find_element(By.ID, "k")
    k.clear()
    k.send_keys("6")
    browser.find_element(By.ID, "file-input").send_keys(str(query))

    def rendered(driver) -> bool:
        hits = driver.find_elements(By.CSS_SELECTOR, "#hits .hit img")
        pictures = [driver.find_element(By.ID, name) for name in ("reconstruction", "preprocessed", "sent")]
        loaded = "return arguments[0].complete && arguments[0].naturalWidth > 0"
        return len(hits) == 6 and all(driver.execute_script(loaded, img) for img in hits + pictures)

    WebDriverWait(browser, 30).until(rendered)
    assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
    labels = [el.text for el in browser.find_elements(By.CSS_SELECTOR, "#hits .hit .label")]
    assert labels[0].startswith("#1 ") and len(labels) == 6
    assert "6 neighbours of query.png" in browser.find_element(By.ID, "status").text
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "browser-search.png"))


def test_a_broken_upload_shows_the_one_line_error(live_server, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    bad = tmp_path / "notes.png"
    bad.write_text("not an image\n")
    browser.get(live_server)
    browser.find_element(By.ID, "file-input").send_keys(str(bad))
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "not an image this tool can read" in browser.find_element(By.ID, "error").text


def _hit_ids(driver) -> list[str]:
    """The ids shown, read in one go (the list is re-rendered as results arrive)."""
    return driver.execute_script("return [...document.querySelectorAll('#hits .hit')].map(e => e.dataset.id)")


def _loaded(driver, element) -> bool:
    return driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", element)


def test_sketch_searches_as_the_stroke_grows(live_server, browser):
    """A stroke drawn with real pointer events: results appear mid-stroke and change as it grows."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.interaction import POINTER_MOUSE
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live_server)
    WebDriverWait(browser, 20).until(lambda d: "images" in d.find_element(By.ID, "bundle").text)
    canvas = browser.find_element(By.ID, "canvas")
    size = canvas.size["width"]
    pointer = PointerInput(POINTER_MOUSE, "pen-like mouse")

    def stroke(points, *, down: bool, up: bool) -> None:
        actions = ActionBuilder(browser, mouse=pointer, duration=30)
        x0, y0 = points[0]
        actions.pointer_action.move_to(canvas, int((x0 - 0.5) * size), int((y0 - 0.5) * size))
        if down:
            actions.pointer_action.pointer_down()
        for x, y in points[1:]:
            actions.pointer_action.move_to(canvas, int((x - 0.5) * size), int((y - 0.5) * size))
        if up:
            actions.pointer_action.pointer_up()
        actions.perform()

    stroke([(0.3, 0.3), (0.4, 0.3), (0.5, 0.32)], down=True, up=False)  # a short bar, pointer still down
    WebDriverWait(browser, 20).until(lambda d: len(_hit_ids(d)) == 8)
    first = _hit_ids(browser)
    assert browser.find_element(By.ID, "status").text.startswith("8 neighbours of sketch.png")
    # the stroke grows into a large ring: the results must change
    ring = [(0.5 + 0.3 * np.cos(a), 0.5 + 0.3 * np.sin(a)) for a in np.linspace(-1.2, 2 * np.pi, 24)]
    stroke([(0.5, 0.32), *ring], down=False, up=True)
    WebDriverWait(browser, 20).until(lambda d: _hit_ids(d) != first and len(_hit_ids(d)) == 8)
    reconstruction = browser.find_element(By.ID, "sketch-reconstruction")
    WebDriverWait(browser, 10).until(lambda d: _loaded(d, reconstruction))
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "browser-sketch.png"))

    browser.find_element(By.ID, "undo").click()  # back to no strokes: the reconstruction goes
    WebDriverWait(browser, 10).until(lambda d: not d.find_element(By.ID, "sketch-reconstruction").get_attribute("src"))


@pytest.mark.parametrize("kind", ["touch", "pen"])
def test_touch_and_pen_draw_too(live_server, browser, kind):
    """Pointer events of every kind draw: a finger or a pen stroke searches like a mouse stroke."""
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(live_server)
    WebDriverWait(browser, 20).until(lambda d: "images" in d.find_element(By.ID, "bundle").text)
    canvas = browser.find_element(By.ID, "canvas")
    actions = ActionBuilder(browser, mouse=PointerInput(kind, kind), duration=30)
    actions.pointer_action.move_to(canvas, -60, -40).pointer_down(pressure=0.8)
    for x, y in ((-20, -40), (20, -30), (40, 10), (20, 50), (-30, 50)):
        actions.pointer_action.move_to(canvas, x, y)
    actions.pointer_action.pointer_up()
    actions.perform()
    WebDriverWait(browser, 20).until(lambda d: len(_hit_ids(d)) == 8)
    assert "of sketch.png" in browser.find_element(By.ID, "status").text


def test_marks_refine_the_hits_and_stay_visible(live_server, browser, trained_bundle, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from aesearch.search.engine import SearchEngine

    query = tmp_path / "ring.png"
    Image.fromarray(SearchEngine.load(trained_bundle).image(702)).save(query)
    browser.get_log("browser")  # drain what earlier tests logged (a deliberate 400): this page's own count
    browser.get(live_server)
    WebDriverWait(browser, 20).until(lambda d: "images" in d.find_element(By.ID, "bundle").text)
    browser.find_element(By.ID, "file-input").send_keys(str(query))
    WebDriverWait(browser, 30).until(lambda d: len(_hit_ids(d)) == 8)
    before = _hit_ids(browser)
    less = before[1]
    browser.find_element(By.CSS_SELECTOR, f'#hits .hit[data-id="{less}"] .mark-less').click()
    WebDriverWait(browser, 20).until(lambda d: less not in _hit_ids(d) and len(_hit_ids(d)) == 8)
    WebDriverWait(browser, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#marked .mark")) == 1)
    more = _hit_ids(browser)[2]  # one of the refined hits
    browser.find_element(By.CSS_SELECTOR, f'#hits .hit[data-id="{more}"] .mark-more').click()
    WebDriverWait(browser, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#marked .mark")) == 2)
    assert browser.find_element(By.ID, "marks").is_displayed()
    assert len(browser.find_elements(By.CSS_SELECTOR, "#marked .mark.marked-less")) == 1
    tray = browser.execute_script(
        "return [...document.querySelectorAll('#marked .mark')].map(e => [e.className, e.textContent])"
    )
    assert any("marked-more" in c and more in t for c, t in tray) and any(
        "marked-less" in c and less in t for c, t in tray
    )
    for liked in browser.find_elements(By.CSS_SELECTOR, f'#hits .hit[data-id="{more}"]'):  # marked where shown
        assert "marked-more" in liked.get_attribute("class")
        assert liked.find_element(By.CSS_SELECTOR, ".mark-more").get_attribute("aria-pressed") == "true"
    assert "refined by 2 marks" in browser.find_element(By.ID, "status").text

    browser.find_element(By.ID, "explain").click()  # explanations for every hit
    WebDriverWait(browser, 20).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#hits .explanation img")) == 24)
    WebDriverWait(browser, 10).until(
        lambda d: all(_loaded(d, img) for img in d.find_elements(By.CSS_SELECTOR, "#hits .explanation img"))
    )
    assert len(browser.find_elements(By.CSS_SELECTOR, "#marked .mark")) == 2  # marks survive the toggle
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "browser-desktop.png"))
    try:
        browser.set_window_size(390, 844)  # a phone
        WebDriverWait(browser, 10).until(lambda d: d.execute_script("return window.innerWidth") <= 400)
        overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"the page is {overflow} px wider than a phone screen"
        assert browser.find_element(By.ID, "canvas").size["width"] <= 390
        browser.execute_script("window.scrollTo(0, 0)")
        assert browser.save_screenshot(str(ARTIFACTS / "browser-phone.png"))
    finally:
        browser.set_window_size(1280, 1100)

    foreign = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
        ".filter(n => !n.startsWith(location.origin + '/'))"
    )
    assert foreign == [], f"the page loaded from outside: {foreign}"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == [], errors


def test_the_filter_box_narrows_the_search_and_shows_a_bad_filter(live_server, browser, trained_bundle, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    from aesearch.search.engine import SearchEngine

    engine = SearchEngine.load(trained_bundle)
    rings = set(engine.select("label = ring").ids.tolist())
    query = tmp_path / "filtered.png"
    Image.fromarray(engine.image(700)).save(query)
    browser.get(live_server)
    WebDriverWait(browser, 20).until(lambda d: "images" in d.find_element(By.ID, "bundle").text)
    browser.find_element(By.ID, "where").send_keys("label = ring")
    browser.find_element(By.ID, "file-input").send_keys(str(query))
    WebDriverWait(browser, 30).until(lambda d: "within label = ring" in d.find_element(By.ID, "status").text)
    ids = [int(i) for i in _hit_ids(browser)]
    assert ids and set(ids) <= rings
    box = browser.find_element(By.ID, "where")
    box.clear()
    box.send_keys("label = nope", Keys.ENTER)
    WebDriverWait(browser, 20).until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert browser.find_element(By.ID, "error").text.startswith("bad filter: no class 'nope'")


def test_the_page_describes_the_bundle_s_own_model_input(live_server, browser, trained_bundle, tmp_path):
    """A colour collection's page said "preprocessed 28×28" and "as Fashion-MNIST was made (... light
    object on black)" under every search, and "672 folders images" (new-user trial)."""
    import torch
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from aesearch.model.architecture import member_for
    from aesearch.model.checkpoint import Checkpoint
    from aesearch.model.network import AutoEncoder
    from aesearch.store.bundle import load_bundle
    from tests.conftest import make_bundle

    def described(url: str) -> tuple[str, str]:
        browser.get(url)
        WebDriverWait(browser, 20).until(lambda d: "images" in d.find_element(By.ID, "bundle").text)
        caption = browser.find_element(By.ID, "preprocessed-caption").get_attribute("textContent")
        return caption, browser.find_element(By.ID, "preprocessing").text

    caption, preprocessing = described(live_server)
    assert caption == "preprocessed 28×28" and "as Fashion-MNIST was made" in preprocessing
    where = browser.find_element(By.ID, "where").get_attribute("placeholder")
    assert where.startswith("label = ") and where.split()[2] in load_bundle(trained_bundle).class_names

    torch.manual_seed(0)
    model = AutoEncoder(member_for(32, 3, 16))
    checkpoint = Checkpoint(model.weights(), model.config, {"recipe": "untrained", "test_mse": 0.1})
    images = np.random.default_rng(0).integers(0, 256, size=(24, 32, 32, 3), dtype=np.uint8)
    bundle = make_bundle(tmp_path / "colour", checkpoint=checkpoint, images=images, labels=np.zeros(24, np.int64))
    with serving(create_app(bundle)) as url:
        caption, preprocessing = described(url)
        where = browser.find_element(By.ID, "where").get_attribute("placeholder")
    assert caption == "preprocessed 32×32"
    assert "Shirt" not in where and where.startswith(("label = ", "not path")), where
    assert preprocessing.startswith("The query is framed as the collection's images were (colour, aspect kept")


def test_the_sketch_ink_follows_the_bundle_s_framing(live_server, browser, tmp_path):
    """A colour collection's photo framing keeps a drawing as drawn, so light ink on black searched
    for traffic lights among dark-on-white emoji (new-user trial): its default ink is dark on light,
    Fashion-MNIST's stays light on dark, and each kind remembers its own choice."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait
    from test_colour_collection import SPEC, write_colour_folder

    from aesearch.pipelines.collection import build_from_folders

    folder, index = tmp_path / "images", tmp_path / "colour"
    write_colour_folder(folder, per_class=4)
    build_from_folders(index, images=[folder], spec=SPEC, shifts=((0, 0),), epochs=1, log=None)

    def ink(url: str) -> str:
        browser.get(url)
        WebDriverWait(browser, 20).until(lambda d: "images" in d.find_element(By.ID, "bundle").text)
        return Select(browser.find_element(By.ID, "polarity")).first_selected_option.get_attribute("value")

    browser.get(live_server)
    browser.execute_script("localStorage.clear()")
    with serving(create_app(index)) as colour:
        assert (ink(live_server), ink(colour)) == ("light-on-dark", "dark-on-light")
        Select(browser.find_element(By.ID, "polarity")).select_by_value("light-on-dark")  # chosen for photos
        assert (ink(live_server), ink(colour)) == ("light-on-dark", "light-on-dark")
    browser.get(live_server)
    browser.execute_script("localStorage.clear()")


def test_the_neighbours_box_takes_what_it_says_or_says_why_not(live_server, browser, trained_bundle, tmp_path):
    """0, -5, 1e3 and "abc" searched for 8 or 1 hits without a word (second new-user trial)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from aesearch.search.engine import SearchEngine

    query = tmp_path / "query.png"
    Image.fromarray(SearchEngine.load(trained_bundle).image(700)).save(query)
    browser.get(live_server)
    WebDriverWait(browser, 20).until(lambda d: "images" in d.find_element(By.ID, "bundle").text)
    browser.find_element(By.ID, "file-input").send_keys(str(query))
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#hits .hit")) == 8)
    k = browser.find_element(By.ID, "k")
    typing = "arguments[0].value = arguments[1]; arguments[0].dispatchEvent(new Event('change'))"
    # (a number box holds "" for "abc": the browser drops what is not a number)
    for typed, said in [("0", '"0"'), ("-5", '"-5"'), ("1e3", '"1e3"'), ("abc", "nothing"), ("101", '"101"')]:
        browser.execute_script(typing, k, typed)
        WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "error").is_displayed())
        assert f"got {said}" in browser.find_element(By.ID, "error").text
        assert "whole number from 1 to 100" in browser.find_element(By.ID, "error").text
    browser.execute_script(typing, k, "3")
    WebDriverWait(browser, 30).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#hits .hit")) == 3)
    assert not browser.find_element(By.ID, "error").is_displayed()

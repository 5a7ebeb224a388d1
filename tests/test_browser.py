"""End to end in a real headless Chromium: upload through the page, wait for the results, screenshot.

Uses Debian's chromium and chromium-driver (`.ci/run` installs them). Skipped where they are
missing, except when AESEARCH_REQUIRE_BROWSER=1 (as in CI), where it fails instead.
"""

import os
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest
import uvicorn
from PIL import Image

from aesearch.interfaces.server import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def live_server(trained_bundle):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(create_app(trained_bundle), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if os.environ.get("AESEARCH_REQUIRE_BROWSER") == "1":
            missing = f"Chromium or ChromeDriver missing ({CHROMIUM}, {CHROMEDRIVER})"
            pytest.fail(f"{missing}: apt-get install chromium chromium-driver")
        pytest.skip("Chromium not installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1100", f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):  # fmt: skip
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
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

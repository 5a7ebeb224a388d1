"""The Duplicates view in a real headless Chromium: open it, move the threshold, change a keep,
export, and (on a server started with allow_moves) move the others and see the bundle shrink.

Uses test_browser.py's Chromium (skipped where it is missing, failing under AESEARCH_REQUIRE_BROWSER=1).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from browsers import ARTIFACTS, serving
from conftest import make_bundle
from test_browser import browser  # noqa: F401 (the Chromium fixture)
from test_duplicate_review import COPIES, folder_bundle, snapshot
from test_duplicates import planted_images

from aesearch.interfaces.server import create_app
from aesearch.pipelines.moves import undo

pytestmark = pytest.mark.browser


def groups_shown(driver) -> list[list[str]]:
    return driver.execute_script(
        "return [...document.querySelectorAll('#dup-groups .dup-group')]"
        ".map(g => [...g.querySelectorAll('.dup-member')].map(m => m.dataset.id + ':' + m.className))"
    )


def set_threshold(driver, value: float) -> None:
    driver.execute_script(
        "const s = document.getElementById('dup-threshold'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('input', {bubbles: true}));",
        str(value),
    )


def test_review_threshold_keep_export_and_phone_width(browser, tmp_path):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    images, _ = planted_images()
    bundle = make_bundle(tmp_path / "b", images=images, metric="cosine")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Page.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    with serving(create_app(bundle)) as url:
        browser.get_log("browser")
        browser.get(url + "/#duplicates")
        WebDriverWait(browser, 30).until(lambda d: "groups" in d.find_element(By.ID, "dup-summary").text)
        assert not browser.find_element(By.ID, "search-view").is_displayed()
        assert "dataset bundle has no files" in browser.find_element(By.ID, "dup-note").text
        assert not browser.find_element(By.ID, "dup-move-button").is_enabled()
        set_threshold(browser, 0)
        WebDriverWait(browser, 20).until(lambda d: "distance ≤ 0 ·" in d.find_element(By.ID, "dup-summary").text)
        exact = groups_shown(browser)
        set_threshold(browser, 0.05)
        WebDriverWait(browser, 20).until(lambda d: "≤ 0.05" in d.find_element(By.ID, "dup-summary").text)
        WebDriverWait(browser, 20).until(lambda d: len(groups_shown(d)) > len(exact))
        set_threshold(browser, 0)
        WebDriverWait(browser, 20).until(lambda d: groups_shown(d) == exact)

        three = next(g for g in groups_shown(browser) if len(g) == 3)
        chosen = three[2].split(":")[0]
        assert "move" in three[2]
        browser.find_element(By.CSS_SELECTOR, f'.dup-member[data-id="{chosen}"] button').click()
        WebDriverWait(browser, 10).until(
            lambda d: (
                "keep" in d.find_element(By.CSS_SELECTOR, f'.dup-member[data-id="{chosen}"]').get_attribute("class")
            )
        )
        group = browser.find_element(By.CSS_SELECTOR, f'.dup-member[data-id="{chosen}"]').find_element(
            By.XPATH, "ancestor::li[contains(@class, 'dup-group')]"
        )
        assert "your choice" in group.text and len(group.find_elements(By.CSS_SELECTOR, ".dup-member.keep")) == 1

        browser.find_element(By.ID, "dup-export-json").click()
        WebDriverWait(browser, 20).until(lambda d: list(downloads.glob("*.json")))
        time.sleep(0.3)  # the download is renamed into place when whole
        (exported,) = downloads.glob("*.json")
        decisions = json.loads(exported.read_text())["decisions"]
        mine = next(d for d in decisions if int(chosen) in [m["id"] for m in d["members"]])
        assert mine["keep"] == int(chosen) and mine["chosen_by"] == "you"
        WebDriverWait(browser, 10).until(
            lambda d: d.execute_script(
                "return [...document.querySelectorAll('#dup-groups img')].every(i => i.complete && i.naturalWidth > 0)"
            )
        )
        ARTIFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "browser-duplicates-desktop.png"))
        try:
            browser.set_window_size(390, 844)
            WebDriverWait(browser, 10).until(lambda d: d.execute_script("return window.innerWidth") <= 400)
            overflow = browser.execute_script("return document.documentElement.scrollWidth - window.innerWidth")
            assert overflow <= 0, f"the view is {overflow} px wider than a phone screen"
            browser.execute_script("window.scrollTo(0, 0)")
            assert browser.save_screenshot(str(ARTIFACTS / "browser-duplicates-phone.png"))
        finally:
            browser.set_window_size(1280, 1100)
        browser.find_element(By.CSS_SELECTOR, '.views a[href="#search"]').click()
        WebDriverWait(browser, 10).until(lambda d: d.find_element(By.ID, "search-view").is_displayed())
        assert not browser.find_element(By.ID, "duplicates-view").is_displayed()
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors


def test_moving_from_the_page_shrinks_the_bundle(browser, tmp_path, model):  # noqa: F811
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    root, index = folder_bundle(tmp_path, model)
    before = snapshot(root)
    with serving(create_app(index, allow_moves=True)) as url:
        browser.get(url + "/#duplicates")
        WebDriverWait(browser, 30).until(lambda d: "groups" in d.find_element(By.ID, "dup-summary").text)
        set_threshold(browser, 0)
        WebDriverWait(browser, 20).until(lambda d: "distance ≤ 0 ·" in d.find_element(By.ID, "dup-summary").text)
        summary = browser.find_element(By.ID, "dup-summary").text
        count = int(summary.split(" images indexed")[0].replace(",", ""))
        assert "1 groups" in summary and browser.find_element(By.ID, "dup-move-button").is_enabled()
        assert "journal" in browser.find_element(By.ID, "dup-note").text
        browser.find_element(By.ID, "dup-target").send_keys(str(tmp_path / "moved"))
        browser.find_element(By.ID, "dup-move-button").click()
        WebDriverWait(browser, 60).until(lambda d: "Moved 2 files" in d.find_element(By.ID, "dup-result").text)
        WebDriverWait(browser, 30).until(
            lambda d: f"{count - 2} images indexed" in d.find_element(By.ID, "dup-summary").text
        )
        assert "0 groups" in browser.find_element(By.ID, "dup-summary").text
        ARTIFACTS.mkdir(exist_ok=True)
        assert browser.save_screenshot(str(ARTIFACTS / "browser-duplicates-moved.png"))
        status = browser.find_element(By.ID, "dup-result").text
        journal = status.split("Journal: ")[1].split(" (undo")[0]
    assert not (root / COPIES[1]).exists() and Path(journal).is_file()
    undo(journal, workers=1)
    assert snapshot(root) == before

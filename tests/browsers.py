"""What the browser tests share: a server of an app on a free local port, and Debian's headless Chromium.

Chromium and ChromeDriver come from Debian (`.ci/run` installs them). Where they or selenium are
missing the tests are skipped, except under AESEARCH_REQUIRE_BROWSER=1 (as in CI), where they fail.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@contextmanager
def serving(app) -> Iterator[str]:
    """Serve app with uvicorn in a thread on a free port of 127.0.0.1; yields its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def require_chromium() -> None:
    """Skip (or fail, under AESEARCH_REQUIRE_BROWSER=1) where Chromium, ChromeDriver or selenium is missing."""
    required = os.environ.get("AESEARCH_REQUIRE_BROWSER") == "1"
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        if required:
            missing = f"Chromium or ChromeDriver missing ({CHROMIUM}, {CHROMEDRIVER})"
            pytest.fail(f"{missing}: apt-get install chromium chromium-driver")
        pytest.skip("Chromium not installed (apt-get install chromium chromium-driver)")
    if importlib.util.find_spec("selenium") is None:
        if required:
            pytest.fail("selenium missing: pip install -e '.[test]'")
        pytest.skip("selenium not installed (pip install -e '.[test]')")


def chromium(tmp_path_factory, *, webgl: bool = False, downloads: Path | None = None, size: str = "1280,1100"):
    """A headless Chromium driver. webgl: draw WebGL on the CPU (SwiftShader, which Chromium uses
    only when told; without it the page's map cannot draw); downloads: where downloads land."""
    require_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    graphics = ("--use-angle=swiftshader", "--enable-unsafe-swiftshader") if webgl else ("--disable-gpu",)
    for flag in (
        "--headless=new",
        "--no-sandbox",
        *graphics,
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--window-size={size}",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium')}",
    ):
        options.add_argument(flag)
    if downloads is not None:
        options.add_experimental_option(
            "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
        )
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # to check the page logs no JS errors
    return webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))

"""A real browser for the tests of the web page of `specc serve`: Debian's Chromium, headless, driven by Selenium 4.

`chromium()` starts `/usr/bin/chromium` through `/usr/bin/chromedriver` (both found on PATH first), yields the
Selenium WebDriver and quits it on the way out, test passed or failed. The driver is named in `Service(...)`, so
Selenium Manager (which would download a driver and a browser from the internet) never runs; SE_OFFLINE=true
forbids it besides, should a future Selenium consult it anyway. The browser gets a fresh profile in a temporary folder
(removed afterwards), a page of 1280 x 900 CSS pixels (the window a little larger, for its frame) at a
device scale of 1, and the flags that keep a headless Chromium from reaching the network on
its own (updates, sync, QUIC) or failing in a container (no sandbox as root, no /dev/shm of 64 MB, no GPU).

Without Chromium, its driver or Selenium the test is skipped, with a reason naming what to install (the Debian
packages `chromium` and `chromium-driver`; PyPI `selenium`, in the `test` extra). A browser that is installed but does
not start fails the test: that is a broken machine, not a missing feature.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

WIDTH, HEIGHT = 1280, 900
BROWSERS = ("chromium", "chromium-browser")  # Debian's name, then Ubuntu's
DRIVER = "chromedriver"
FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage")
INSTALL = "install the Debian packages `chromium` and `chromium-driver` (apt-get install chromium chromium-driver)"
PAGE_LOAD_TIMEOUT = 60  # seconds; a page of 127.0.0.1 loads in well under one


def find_chromium() -> tuple[str, str] | None:
    """The paths of the Chromium browser and of its chromedriver, or None when either is missing."""
    browser = next((p for p in (shutil.which(b) or f"/usr/bin/{b}" for b in BROWSERS) if os.access(p, os.X_OK)), None)
    driver = shutil.which(DRIVER) or f"/usr/bin/{DRIVER}"
    if browser is None or not os.access(driver, os.X_OK):
        return None
    return browser, driver


def missing() -> str | None:
    """Why the browser tests cannot run here (a reason for pytest.skip), or None when they can."""
    if importlib.util.find_spec("selenium") is None:
        return "Selenium is not installed: pip install -e '.[test]' (PyPI `selenium`)"
    if find_chromium() is None:
        return f"Chromium or its driver is not installed: {INSTALL}"
    return None


@contextlib.contextmanager
def chromium(width: int = WIDTH, height: int = HEIGHT) -> Iterator[Any]:
    """A headless Chromium driven by Selenium (see the module's docstring); skips the test when it is not installed.
    The chromedriver's log is kept in the profile folder while it runs and its end is in the error when the
    browser does not start."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    assert found is not None
    browser, driver_path = found
    profile = Path(tempfile.mkdtemp(prefix="specc-chromium-"))
    log = profile / "chromedriver.log"
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile / 'profile'}")
    options.add_argument(f"--window-size={width},{height}")
    options.add_argument("--force-device-scale-factor=1")  # a screenshot's pixels are CSS pixels
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # for console_errors()
    offline = os.environ.get("SE_OFFLINE")
    os.environ["SE_OFFLINE"] = "true"
    try:
        service = Service(executable_path=driver_path, log_output=str(log))
        try:
            driver = webdriver.Chrome(service=service, options=options)
        except Exception as err:
            tail = log.read_text(errors="replace")[-3000:] if log.exists() else "(no chromedriver log)"
            raise RuntimeError(f"Chromium ({browser}) did not start through {driver_path}: {err}\n{tail}") from err
        try:
            driver.set_page_load_timeout(PAGE_LOAD_TIMEOUT)
            _fit_viewport(driver, width, height)
            yield driver
        finally:
            driver.quit()
    finally:
        if offline is None:
            os.environ.pop("SE_OFFLINE", None)
        else:
            os.environ["SE_OFFLINE"] = offline
        shutil.rmtree(profile, ignore_errors=True)


def _fit_viewport(driver: Any, width: int, height: int) -> None:
    """Grows the window by what its frame takes, so that the page itself (and a screenshot) is width x height:
    headless Chromium still counts a frame of about 140 pixels in --window-size."""
    inner = driver.execute_script("return [window.innerWidth, window.innerHeight]")
    outer = driver.get_window_size()
    if inner != [width, height]:
        driver.set_window_size(outer["width"] + width - inner[0], outer["height"] + height - inner[1])


def console_errors(driver: Any) -> list[str]:
    """The messages of level SEVERE the page wrote to the browser's console since the last call: uncaught
    JavaScript errors, and requests that failed (a 4xx answer is one too)."""
    return [entry["message"] for entry in driver.get_log("browser") if entry.get("level") == "SEVERE"]

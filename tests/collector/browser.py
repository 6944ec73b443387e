"""A real headless browser for the dashboard tests: Debian's chromium driven by selenium through
Debian's chromedriver (``make test`` installs both with apt-get when run as root).

The browser is found on the machine, never downloaded: selenium's own driver manager is bypassed
by naming the chromedriver binary, so a missing browser fails with a message saying what to
install instead of a network error.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

T = TypeVar("T")

INSTALL_HINT = (
    "the dashboard's browser tests need Debian's chromium and chromium-driver: run `make test` "
    "as root (it installs them) or  sudo apt-get install chromium chromium-driver"
)


def _find(*names: str) -> str | None:
    for name in names:
        found = shutil.which(name) or (
            f"/usr/bin/{name}" if os.access(f"/usr/bin/{name}", os.X_OK) else None
        )
        if found:
            return found
    return None


def start_browser(width: int = 1280, height: int = 900, javascript: bool = True):
    """A headless chromium (selenium WebDriver); the caller quits it. ``javascript=False``:
    scripts disabled, as a user who turned them off."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = _find("chromium", "chromium-browser")
    driver_path = _find("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root in CI; chromium refuses its sandbox there
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    if not javascript:
        options.add_experimental_option(
            "prefs", {"profile.managed_default_content_settings.javascript": 2}
        )
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture
def browser() -> Iterator[object]:
    driver = start_browser()
    try:
        yield driver
    finally:
        driver.quit()


def wait_dom(
    driver,
    condition: Callable[[object], T],
    timeout: float = 20.0,
    what: str = "the page",
    reload: bool = False,
) -> T:
    """Poll the DOM until ``condition(driver)`` returns something truthy (selenium's
    WebDriverWait); with ``reload`` the page is reloaded between polls, for a page without
    auto-refresh. Fails naming ``what`` and showing the page's text."""
    from selenium.common.exceptions import WebDriverException

    deadline = time.monotonic() + timeout
    while True:
        try:
            result = condition(driver)
        except WebDriverException:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            text = driver.find_element("tag name", "body").text[:2000]
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; page:\n{text}")
        if reload:
            driver.refresh()
        time.sleep(0.25)  # polling interval of a DOM wait, not a synchronisation guess

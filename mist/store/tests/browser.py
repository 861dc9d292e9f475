"""Headless Chromium (Debian's chromium + chromedriver) driven by Selenium, for the store's browser tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
ARTIFACTS = Path(settings.BASE_DIR) / "test-artifacts" / "store"


@contextmanager
def chromium(*, width: int = 1366, height: int = 900, downloads: Path | None = None) -> Iterator[WebDriver]:
    """A fresh headless Chromium with its own profile, closed (and its profile removed) afterwards."""
    profile = Path(tempfile.mkdtemp(prefix="mist-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
        f"--user-data-dir={profile}", f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # console messages (CSP reports) readable
    if downloads is not None:
        options.add_experimental_option(
            "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
        )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    if downloads is not None:
        # Headless Chromium ignores the download prefs unless told over DevTools too.
        driver.execute_cdp_cmd(
            "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
        )
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: WebDriver, css: str, timeout: float = 10) -> object:
    return WebDriverWait(driver, timeout).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))


def screenshot(driver: WebDriver, name: str, *, full_page: bool = True) -> Path:
    """Save test-artifacts/store/<name>.png (the whole page height when full_page)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    size = driver.get_window_size()
    if full_page:
        height = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(size["width"], min(max(height + 100, size["height"]), 6000))
    driver.save_screenshot(str(path))
    if full_page:
        driver.set_window_size(size["width"], size["height"])
    return path


def log_in(driver: WebDriver, base_url: str, username: str, password: str) -> None:
    """Sign in through the real login form, with the keyboard (Enter submits)."""
    driver.get(f"{base_url}/accounts/login/")
    driver.find_element(By.NAME, "username").send_keys(username)
    field = driver.find_element(By.NAME, "password")
    field.send_keys(password)
    field.submit()

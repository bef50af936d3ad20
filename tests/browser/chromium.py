"""Headless Chromium for the browser tests, driven through its chromedriver (Selenium).

`make test-browser` installs Debian's `chromium` and `chromium-driver` if they are
missing and names the driver in MEDITRACK_CHROMEDRIVER; without it these tests are not
collected (tests/conftest.py). Screenshots go to MEDITRACK_ARTIFACTS (default
`browser-artifacts/` in the checkout), kept after the run for a person to look at.
"""

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

ARTIFACTS = Path(os.environ.get("MEDITRACK_ARTIFACTS", Path(__file__).resolve().parents[2] / "browser-artifacts"))
WAIT = 15  # seconds a page may take to show what a test waits for


@contextmanager
def chromium(width: int = 1280, height: int = 900):
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     f"--window-size={width},{height}"):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(os.environ["MEDITRACK_CHROMEDRIVER"]))
    # A window cannot be made narrower than about 500 px; the DevTools protocol sets the
    # viewport itself, as a phone of that width has it.
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {
        "width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(driver, condition, timeout: float = WAIT):
    return WebDriverWait(driver, timeout).until(lambda _: condition())


def screenshot(driver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path

"""Headless Chromium for the humaneval page tests: Debian's chromium and
chromium-driver packages driven by Selenium, never a downloaded browser.

Where the browser is missing, the tests fail with the install instruction
(``scripts/test.sh`` installs it as root: ``apt-get install -y chromium chromium-driver``):
a browser test is never skipped, so a green run always means the page was driven.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = "apt-get install -y chromium chromium-driver (as root; bash scripts/test.sh does this) and pip install 'selenium>=4.51,<4.52'"


def require_browser() -> None:
    """Fail, naming what to install, when Chromium, its driver or Selenium is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.isfile(p) and os.access(p, os.X_OK))]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("selenium (Python package)")
    if not missing:
        return
    pytest.fail(f"browser test needs {missing}: {INSTALL_HINT}")


def start_chromium(download_dir: Path, width: int = 1280, height: int = 900):
    """A headless Chromium whose downloads land in ``download_dir`` without asking."""
    require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    # Both paths given, so Selenium Manager has nothing to look up or download.
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--no-first-run", "--disable-extensions", "--hide-scrollbars", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(download_dir),
        "download.prompt_for_download": False,
        "download.directory_upgrade": True,
    })
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)})
    driver.set_page_load_timeout(30)
    return driver


def set_viewport(driver, width: int, height: int) -> None:
    """Exact CSS viewport (window size includes browser chrome in some versions)."""
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600})


def wait_for_download(folder: Path, pattern: str = "*.json", timeout: float = 20.0) -> Path:
    """The finished download (no ``.crdownload`` left) in ``folder``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.glob(pattern) if not p.name.endswith(".crdownload")]
        partial = list(folder.glob("*.crdownload"))
        if done and not partial:
            return done[0]
        time.sleep(0.1)
    raise AssertionError(f"no download in {folder} after {timeout} s: {sorted(p.name for p in folder.iterdir())}")

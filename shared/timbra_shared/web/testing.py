"""A small real-browser driver for the web pages' tests: Debian's ``chromium`` in headless mode
through its matching ``chromedriver`` (selenium), no browser downloads. Screenshots go to the
artifacts folder (``$TIMBRA_ARTIFACTS_DIR`` or ``<repo>/test-artifacts``)."""

import base64
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "chrome")
DEFAULT_WAIT = float(os.environ.get("TIMBRA_BROWSER_WAIT", "30"))
PHONE = {"deviceMetrics": {"width": 390, "height": 844, "pixelRatio": 2.0},
         "userAgent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0 Mobile Safari/537.36"}


class BrowserMissing(RuntimeError):
    pass


def find_browser() -> tuple[str, str]:
    """``(chromium, chromedriver)`` paths, or ``BrowserMissing`` saying what to install."""
    chromium = os.environ.get("TIMBRA_CHROMIUM") or next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    driver = os.environ.get("TIMBRA_CHROMEDRIVER") or shutil.which("chromedriver")
    missing = [name for name, path in (("chromium", chromium), ("chromium-driver (chromedriver)", driver)) if not path]
    if missing:
        raise BrowserMissing(f"{' and '.join(missing)} not found: install them with `apt-get install -y --no-install-recommends chromium chromium-driver` (or run `make install` as root)")
    try:
        import selenium  # noqa: F401
    except ImportError as exc:
        raise BrowserMissing("the selenium package is missing: run `make install` (requirements-dev.txt)") from exc
    return chromium, driver  # type: ignore[return-value]


def artifacts_dir(default_root: Path, *parts: str) -> Path:
    root = Path(os.environ.get("TIMBRA_ARTIFACTS_DIR") or default_root / "test-artifacts")
    folder = root.joinpath(*parts)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def require_browser(what: str) -> None:
    """Fail ``what`` (a test area) with the install command when Chromium is missing; skip it
    instead only when TIMBRA_ALLOW_NO_BROWSER is set, so a missing browser never passes silently."""
    import pytest

    try:
        find_browser()
    except BrowserMissing as exc:
        if os.environ.get("TIMBRA_ALLOW_NO_BROWSER"):
            pytest.skip(f"no browser (TIMBRA_ALLOW_NO_BROWSER is set): {exc}")
        pytest.fail(f"{what} need Chromium: {exc}. Set TIMBRA_ALLOW_NO_BROWSER=1 to skip them instead.", pytrace=False)


def browser_for_test(base_url: str, folder: Path, *, what: str, phone: bool = False) -> Iterator["Browser"]:
    """A fixture body (``yield from``): a Browser whose screenshots go to ``folder``, emptied first
    so that an earlier run's files are never taken for this run's; the last screenshot shows where
    the test stopped, pass or fail."""
    require_browser(what)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    browser = Browser(base_url, folder, phone=phone)
    try:
        yield browser
    finally:
        browser.screenshot("end")
        browser.quit()


class Browser:
    def __init__(self, base_url: str, artifacts: Path, *, phone: bool = False, size: tuple[int, int] = (1280, 1000)) -> None:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        chromium, driver = find_browser()
        self.base_url = base_url.rstrip("/")
        self.artifacts = artifacts
        self.downloads = artifacts / "downloads"
        shutil.rmtree(self.downloads, ignore_errors=True)  # a rerun in the same checkout must not find the last run's files
        self.downloads.mkdir(parents=True, exist_ok=True)
        self._returned: set[Path] = set()
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--disable-extensions",
                    "--no-first-run", "--disable-background-networking", "--lang=es-MX", f"--window-size={size[0]},{size[1]}"):
            options.add_argument(arg)
        options.add_experimental_option("prefs", {"download.default_directory": str(self.downloads), "download.prompt_for_download": False,
                                                  "plugins.always_open_pdf_externally": True, "intl.accept_languages": "es-MX,es"})
        if phone:
            options.add_experimental_option("mobileEmulation", PHONE)
        self.driver = webdriver.Chrome(options=options, service=Service(executable_path=driver, log_output=str(artifacts / "chromedriver.log")))
        self.driver.set_page_load_timeout(60)
        self.driver.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(self.downloads), "eventsEnabled": True})
        self.shots: list[Path] = []

    # ------------------------------------------------------------------ basics

    def open(self, path: str) -> None:
        self.driver.get(path if path.startswith("http") else self.base_url + path)
        self.wait_ready()

    def wait_ready(self) -> None:
        self.until(lambda: self.driver.execute_script("return document.readyState") == "complete" and self.driver.execute_script("return !!window.htmx"), "page load")

    def until(self, check: Callable[[], Any], what: str, timeout: float = DEFAULT_WAIT) -> Any:
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                result = check()
                if result:
                    return result
            except Exception as exc:  # noqa: BLE001 - stale elements while htmx swaps
                last_error = exc
            time.sleep(0.1)
        self.screenshot(f"timeout-{what}")
        raise AssertionError(f"waited {timeout:.0f}s for {what}; url={self.driver.current_url}" + (f"; last error: {last_error!r}" if last_error else ""))

    def find(self, css: str, timeout: float = DEFAULT_WAIT):  # noqa: ANN201
        from selenium.webdriver.common.by import By

        return self.until(lambda: next((e for e in self.driver.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()), None), f"element {css}", timeout)

    def all(self, css: str) -> list[Any]:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def exists(self, css: str) -> bool:
        return bool(self.all(css))

    def text(self, css: str) -> str:
        return self.find(css).text

    def fill(self, css: str, value: str, *, within: Any = None) -> Any:
        element = self._in(within, css)
        element.clear()
        element.send_keys(value)
        return element

    def type(self, css: str, value: str, *, within: Any = None) -> Any:
        """Type like a person (one key at a time), so htmx's input triggers fire."""
        element = self._in(within, css)
        element.clear()
        for char in value:
            element.send_keys(char)
            time.sleep(0.03)
        return element

    def select(self, css: str, value: str, *, within: Any = None) -> None:
        from selenium.webdriver.support.select import Select

        Select(self._in(within, css)).select_by_value(value)

    def click(self, css: str, *, within: Any = None) -> None:
        element = self._in(within, css)
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'});", element)
        element.click()

    def upload(self, css: str, path: Path) -> None:
        from selenium.webdriver.common.by import By

        self.driver.find_element(By.CSS_SELECTOR, css).send_keys(str(path))

    def _in(self, within: Any, css: str) -> Any:
        from selenium.webdriver.common.by import By

        if within is None:
            return self.find(css)
        return self.until(lambda: next((e for e in within.find_elements(By.CSS_SELECTOR, css) if e.is_displayed()), None), f"element {css} in row")

    def wait_text(self, css: str, text: str, timeout: float = DEFAULT_WAIT) -> str:
        return self.until(lambda: text in self.find(css, timeout).text and self.find(css).text, f"«{text}» in {css}", timeout)

    def wait_url(self, part: str, timeout: float = DEFAULT_WAIT) -> str:
        return self.until(lambda: part in self.driver.current_url and self.driver.current_url, f"url with {part}", timeout)

    def htmx_idle(self) -> None:
        self.until(lambda: not self.driver.execute_script("return document.querySelector('.htmx-request') !== null"), "htmx requests to finish")

    def screenshot(self, name: str) -> Path:
        path = self.artifacts / f"{len(self.shots) + 1:02d}-{name}.png"
        try:
            # the whole page, not just the viewport
            size = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 10_000), "scale": 1}
            shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
            path.write_bytes(base64.b64decode(shot["data"]))
        except Exception:  # noqa: BLE001 - a screenshot never fails a test
            return path
        self.shots.append(path)
        return path

    def wait_download(self, suffix: str, timeout: float = DEFAULT_WAIT) -> Path:
        """The newest finished download ending in ``suffix`` that no earlier call returned."""
        def fresh() -> Path | None:
            files = sorted((p for p in self.downloads.glob(f"*{suffix}") if p not in self._returned), key=lambda p: p.stat().st_mtime, reverse=True)
            return files[0] if files else None

        found = self.until(fresh, f"download *{suffix}", timeout)
        self._returned.add(found)
        return found

    def cookies(self) -> dict[str, dict[str, Any]]:
        return {c["name"]: c for c in self.driver.get_cookies()}

    def overflows_horizontally(self) -> bool:
        return bool(self.driver.execute_script("return document.documentElement.scrollWidth > window.innerWidth + 1"))

    def quit(self) -> None:
        try:
            self.driver.quit()
        except Exception:  # noqa: BLE001
            pass

"""The demo page in headless Chromium against `make dev`'s stack: sign in, fetch a token, watch answers stream."""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from tests.support import ROOT

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
EXPECTED = "Hello ada! You said: Count to five slowly."

if not (CHROMIUM and CHROMEDRIVER):
    if os.environ.get("CI"):
        pytest.fail("CI needs chromium and chromedriver: `make test` installs them with apt-get", pytrace=False)
    pytest.skip("chromium/chromedriver not installed (`make test` installs them on Debian)", allow_module_level=True)

from selenium import webdriver  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


@pytest.fixture(scope="module")
def stack() -> Iterator[dict[str, str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "--api-port", "0", "--stream-port", "0", "--identity-port", "0",
         "--behest-port", "0", "--secrets-port", "0", "--chunk-delay", "0.15"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    banner = []
    for line in process.stdout:
        banner.append(line)
        if "Ctrl-C stops everything" in line:
            break
    text = "".join(banner)
    match = re.search(r"API \(token \+ chat relay\)\s+(\S+)", text)
    assert match, text
    threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
    yield {"api": match.group(1)}
    process.terminate()
    process.wait(timeout=15)
    process.stdout.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,900", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout: float = 15) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.02).until(condition)


def text_of(driver: Any, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def sign_in_and_get_token(driver: Any) -> None:
    wait_for(driver, lambda d: d.execute_script("return typeof state !== 'undefined' && state.config !== null"))
    driver.find_element(By.ID, "sign-in").click()
    wait_for(driver, lambda d: d.find_element(By.ID, "get-token").is_enabled() or "failed" in text_of(d, "sign-in-status"))
    driver.find_element(By.ID, "get-token").click()
    wait_for(driver, lambda d: text_of(d, "token-status") != "")


def test_the_page_signs_in_gets_a_token_and_renders_both_answers_as_they_stream(stack: dict[str, str],
                                                                                 browser: Any) -> None:
    browser.get(stack["api"] + "/")
    sign_in_and_get_token(browser)
    assert text_of(browser, "token-status").startswith("Token for session "), text_of(browser, "token-status")

    browser.find_element(By.ID, "ask").click()
    seen: dict[str, list[str]] = {"direct-output": [], "relay-output": []}

    def finished(driver: Any) -> bool:
        for output, texts in seen.items():
            texts.append(text_of(driver, output))
        return "done" in text_of(driver, "direct-status") and "done" in text_of(driver, "relay-status")

    wait_for(browser, finished, timeout=30)
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "browser-demo.png"))

    assert text_of(browser, "direct-output") == EXPECTED
    assert text_of(browser, "relay-output") == EXPECTED
    for output, texts in seen.items():
        partial = [t for t in texts if t and t != EXPECTED]
        assert partial, f"{output} never showed a partial answer: it did not stream"
        assert all(EXPECTED.startswith(t) for t in partial)


class _PageOnly(SimpleHTTPRequestHandler):
    """Serves the demo page and its config from another origin: one the stack does not allow."""

    config = b"{}"

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/config.json":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(self.config)))
            self.end_headers()
            self.wfile.write(self.config)
        else:
            super().do_GET()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_page_on_a_disallowed_origin_is_refused_by_cors(stack: dict[str, str], browser: Any) -> None:
    with open_config(stack["api"]) as config:
        handler = functools.partial(_PageOnly, directory=str(ROOT / "devstack" / "web"))
        _PageOnly.config = json.dumps(config).encode()
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            browser.get(f"http://127.0.0.1:{server.server_address[1]}/")
            sign_in_and_get_token(browser)
            status = text_of(browser, "token-status")
        finally:
            server.shutdown()
            server.server_close()

    assert status.startswith("Token request failed"), status
    assert "Failed to fetch" in status


class open_config:
    """The stack's own page config, read over HTTP as the page does."""

    def __init__(self, api: str) -> None:
        self.api = api

    def __enter__(self) -> dict[str, str]:
        import urllib.request

        deadline = time.monotonic() + 10
        while True:
            try:
                with urllib.request.urlopen(self.api + "/config.json", timeout=5) as response:
                    return dict(json.loads(response.read()))
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        pass


def test_the_screenshot_artifact_is_a_png(stack: dict[str, str], browser: Any) -> None:
    shot = ARTIFACTS / "browser-demo.png"
    if not shot.exists():
        browser.get(stack["api"] + "/")
        browser.save_screenshot(str(shot))

    assert Path(shot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

"""What the browser tests share: the page server, the stack as the browser sees it, page helpers."""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

import jwt
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from tests.support import ROOT

ARTIFACTS = ROOT / "test-artifacts"
WEB_ROOT = ROOT / "devstack" / "web"
CLIENT_MODULE = ROOT / "client" / "behest-client.js"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".json": "application/json"}


def skip_without_chromium() -> None:
    """Skip the calling test module when Chromium is missing (fail on CI, where `make test` installs it)."""
    if CHROMIUM and CHROMEDRIVER:
        return
    if os.environ.get("CI"):
        pytest.fail("CI needs chromium and chromedriver: `make test` installs them with apt-get", pytrace=False)
    pytest.skip("chromium/chromedriver not installed (`make test` installs them on Debian)", allow_module_level=True)


class PageServer:
    """Serves the demo page as `make dev` does (files at /<name>, the client at /behest-client.js) from another origin."""

    def __init__(self) -> None:
        self.config = b"{}"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?", 1)[0]
                found = server.file_for(path)
                if path == "/config.json":
                    self._send(200, "application/json", server.config)
                elif found is None:
                    self._send(404, "text/plain", b"not found")
                else:
                    self._send(200, CONTENT_TYPES.get(found.suffix, "application/octet-stream"), found.read_bytes())

            def _send(self, status: int, content_type: str, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    @staticmethod
    def file_for(path: str) -> Optional[Path]:
        """The file served at `path`: / is index.html, /behest-client.js the module, /<name> a file of the page."""
        if path == "/":
            return WEB_ROOT / "index.html"
        if path == "/behest-client.js":
            return CLIENT_MODULE
        name = path.lstrip("/")
        candidate = WEB_ROOT / name
        return candidate if "/" not in name and candidate.is_file() else None

    def start(self) -> PageServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@dataclass
class Stack:
    """`make dev`'s stack as the browser sees it, plus the stand-in's control API."""

    api: str
    config: dict[str, str]

    @property
    def page(self) -> str:
        """Where `make dev` serves the demo page (its origin; the page is at /)."""
        return self.api

    @property
    def behest(self) -> str:
        return self.config["behestUrl"]

    def inject(self, *faults: dict[str, Any]) -> None:
        """Queue faults in the stand-in (POST /_standin/faults)."""
        call("POST", self.behest + "/_standin/faults", {"faults": list(faults)})

    def reset_standin(self) -> None:
        call("DELETE", self.behest + "/_standin/faults")
        call("DELETE", self.behest + "/_standin/requests")

    def chat_requests(self) -> list[dict[str, Any]]:
        """Chat completions the stand-in received, oldest first."""
        requests = call("GET", self.behest + "/_standin/requests")["requests"]
        return [r for r in requests if r["path"] == "/v1/chat/completions"]


def call(method: str, url: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def page_server_for(config: dict[str, str]) -> PageServer:
    server = PageServer()
    server.config = json.dumps(config).encode()
    return server.start()


def wait_for(driver: Any, condition: Callable[[Any], Any], timeout: float = 15) -> Any:
    return WebDriverWait(driver, timeout, poll_frequency=0.02).until(condition)


def text_of(driver: Any, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def open_page(driver: Any, url: str) -> None:
    driver.get(url)
    wait_for(driver, lambda d: d.execute_script("return Boolean(window.demo && window.demo.ready)"))


def sign_in(driver: Any) -> None:
    """Sign in as the page's dev user and wait until its first token is there (or its fetch failed)."""
    driver.find_element(By.ID, "sign-in").click()
    wait_for(driver, lambda d: text_of(d, "token-status").startswith(("Token for session", "Token request failed"))
             or "failed" in text_of(d, "sign-in-status"))


def jti_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


def current_token(driver: Any) -> dict[str, Any]:
    return dict(driver.execute_script("return window.demo.client.current"))


def screenshot(driver: Any, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path

"""`make dev` as a process the tests start and stop: free ports, its URLs read off the banner, its log lines kept."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any, Optional

from tests.log_hygiene import SCANNER
from tests.support import ROOT

BANNER_URLS = {
    "api": r"API \(token \+ chat relay\)\s+(\S+)",
    "stream": r"streaming chat relay\s+(\S+)",
    "identity": r"identity provider\s+(\S+)",
    "behest": r"Behest stand-in\s+(\S+)",
    "service": r"server-to-server \(IAM\)\s+(\S+)",
}


class DevProcess:
    """`python -m devstack` on free ports; `lines` collects everything it prints after the banner."""

    def __init__(self, *args: str, chunk_delay: float = 0.0) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "devstack", "--api-port", "0", "--stream-port", "0", "--identity-port", "0",
             "--behest-port", "0", "--secrets-port", "0", "--service-port", "0", "--chunk-delay", str(chunk_delay), *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        assert self.process.stdout is not None
        banner: list[str] = []
        for line in self.process.stdout:
            banner.append(line)
            if "Ctrl-C stops everything" in line:
                break
        self.banner = "".join(banner)
        SCANNER.scan(self.banner, "make dev (banner)")
        found = {name: re.search(pattern, self.banner) for name, pattern in BANNER_URLS.items()}
        if not all(found.values()):
            self.stop()
            raise RuntimeError("make dev did not start:\n" + self.banner)
        self.urls = {name: match.group(1) for name, match in found.items() if match}
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)
            SCANNER.scan(line, f"make dev ({os.environ.get('PYTEST_CURRENT_TEST', '-')})")

    def records(self, message: Optional[str] = None) -> list[dict[str, Any]]:
        """The JSON log lines printed so far (those with `message`, when given)."""
        found = []
        for line in list(self.lines):
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and (message is None or record.get("message") == message):
                found.append(record)
        return found

    def wait_for_records(self, message: str, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Wait until `count` records with `message` have been printed."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.records(message)
            if len(found) >= count:
                return found
            time.sleep(0.02)
        return self.records(message)

    def identity_token(self, user: str = "ada", plan: Optional[str] = None) -> str:
        body = json.dumps({"user": user, **({"plan": plan} if plan else {})}).encode()
        request = urllib.request.Request(self.urls["identity"] + "/token", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return str(json.loads(response.read())["id_token"])

    def standin_requests(self) -> list[dict[str, Any]]:
        """What the stand-in Behest received, as recorded by its control API."""
        with urllib.request.urlopen(self.urls["behest"] + "/_standin/requests", timeout=10) as response:
            document = json.loads(response.read())
        return list(document["requests"] if isinstance(document, dict) else document)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=15)
        if self.process.stdout is not None:
            self.process.stdout.close()

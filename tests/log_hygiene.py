"""Log hygiene for the whole suite: every line the functions log, and every line a test lets out, is scanned.

tests/conftest.py wraps Telemetry's writer for the session and feeds it captured stdout/stderr; at the
end of the session no line may hold a PEM, a minted token, a tenant API key or a committed test key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

KEYS = Path(__file__).resolve().parent / "keys"

# A JWT: three base64url segments, the first a JSON object (`{"` → `eyJ`).
TOKEN = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
# A tenant API key with at least one character of secret after the prefix (a bare "behest_sk_live_…" is a hint).
API_KEY = re.compile(r"behest_sk_live_[A-Za-z0-9_]")
# A PEM private key, raw or base64-encoded as BEHEST_KEY may carry it ("-----BEGIN" → "LS0tLS1CRUdJTi").
PEM = re.compile(r"PRIVATE KEY|-----BEGIN|LS0tLS1CRUdJT")


def committed_key_lines() -> frozenset[str]:
    """Every base64 line of the committed test private keys: a fragment of key material, wherever it turns up."""
    lines: set[str] = set()
    for path in KEYS.glob("*_private.pem"):
        lines.update(line for line in path.read_text().splitlines() if len(line) >= 40 and "-----" not in line)
    return frozenset(lines)


@dataclass(frozen=True)
class Leak:
    kind: str
    where: str
    hint: str  # a few characters around the leak's start, never the secret itself


@dataclass
class LeakScanner:
    """Counts scanned lines and keeps what leaked (kind, where, a redacted hint)."""

    key_lines: frozenset[str] = field(default_factory=committed_key_lines, repr=False)
    lines: int = 0
    leaks: list[Leak] = field(default_factory=list)

    def scan(self, text: str, where: str) -> None:
        for line in text.splitlines():
            self.lines += 1
            self._scan_line(line, where)

    def scan_all(self, texts: Iterable[str], where: str) -> None:
        for text in texts:
            self.scan(text, where)

    def _scan_line(self, line: str, where: str) -> None:
        for kind, pattern in (("token", TOKEN), ("api_key", API_KEY), ("pem", PEM)):
            match = pattern.search(line)
            if match:
                self.leaks.append(Leak(kind, where, _redacted(line, match.start())))
        if any(key_line in line for key_line in self.key_lines):
            self.leaks.append(Leak("key_material", where, "(a line of a committed test key)"))


def _redacted(line: str, start: int) -> str:
    return repr(line[max(0, start - 24):start] + line[start:start + 6] + "…")


# One scanner for the session: conftest's hooks feed it captured output, the log_hygiene fixture the functions'
# lines, tests/dev_process.py every line `make dev` prints.
SCANNER = LeakScanner()

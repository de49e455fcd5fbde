"""The suite-wide log hygiene check can fail: it recognises each kind of secret, and it is wired in."""

from __future__ import annotations

import base64

import pytest

from behest_lambda.telemetry import Telemetry
from tests.log_hygiene import LeakScanner
from tests.support import key_pem

MINTED = ("eyJhbGciOiJSUzI1NiIsImtpZCI6InNrX3Rlc3QiLCJ0eXAiOiJKV1QifQ"
          ".eyJ1aWQiOiJ1c2VyLTQyIn0.c2lnbmF0dXJlLWJ5dGVz-_")


@pytest.mark.parametrize(("line", "kind"), [
    ('{"message": "token minted", "token": "' + MINTED + '"}', "token"),
    ("Authorization: Bearer " + MINTED, "token"),
    ('{"detail": "mint failed for behest_sk_live_abc123"}', "api_key"),
    ('{"detail": "' + key_pem("tenant").replace("\n", "\\n")[:80] + '"}', "pem"),
    ('{"detail": "' + base64.b64encode(key_pem("tenant").encode()).decode()[:60] + '"}', "pem"),
    ("nothing to see " + key_pem("tenant_rotated").splitlines()[5], "key_material"),
])
def test_each_kind_of_secret_is_recognised(line: str, kind: str) -> None:
    scanner = LeakScanner()

    scanner.scan(line, "here")

    assert kind in [leak.kind for leak in scanner.leaks]
    assert all(MINTED not in leak.hint and "abc123" not in leak.hint for leak in scanner.leaks)


@pytest.mark.parametrize("line", [
    '{"message": "token minted", "uid": "user-42", "sid": "3f1c…", "kid": "sk_test_primary", "ttl": 600}',
    '{"error": {"message": "BEHEST_KEY must be an API key (behest_sk_live_…), behest_pk_<PEM>, …"}}',
    '{"message": "the tenant private key is corrupt: its signatures do not verify"}',
    "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9",  # one segment: not a token
])
def test_ordinary_lines_pass(line: str) -> None:
    scanner = LeakScanner()

    scanner.scan(line, "here")

    assert scanner.leaks == [] and scanner.lines == 1


def test_every_telemetry_line_of_the_session_goes_through_the_scanner(log_hygiene: LeakScanner) -> None:
    before = log_hygiene.lines

    Telemetry("hygiene-check", stream=_Sink()).info("an ordinary line")

    assert log_hygiene.lines == before + 1


class _Sink:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass

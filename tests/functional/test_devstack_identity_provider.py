"""The dev identity provider: tokens for named dev users, and only configured pages may ask for them."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Iterator, Optional

import jwt
import pytest

from devstack.identity import LocalIdentityProvider

PAGE = "http://127.0.0.1:3000"


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalIdentityProvider]:
    with LocalIdentityProvider(allowed_origins=[PAGE]) as idp:
        yield idp


def ask(provider: LocalIdentityProvider, origin: str, *, preflight: bool = False) -> tuple[int, dict[str, str], bytes]:
    method = "OPTIONS" if preflight else "POST"
    headers = {"Origin": origin, "Content-Type": "application/json"}
    if preflight:
        headers["Access-Control-Request-Method"] = "POST"
    request = urllib.request.Request(provider.url + "/token", data=None if preflight else b'{"user": "ada"}',
                                     method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def allow_origin(headers: dict[str, str]) -> Optional[str]:
    return headers.get("access-control-allow-origin")


def test_a_configured_page_may_ask_for_a_dev_token_from_the_browser(provider: LocalIdentityProvider) -> None:
    status, preflight, _ = ask(provider, PAGE, preflight=True)
    answered, headers, body = ask(provider, PAGE)

    assert status == 204 and allow_origin(preflight) == PAGE
    assert answered == 200 and allow_origin(headers) == PAGE
    assert jwt.decode(json.loads(body)["id_token"], options={"verify_signature": False})["sub"] == "ada"


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://127.0.0.1:3000.evil.example"])
def test_any_other_page_gets_no_cors_grant_so_the_browser_keeps_the_token_from_it(
    provider: LocalIdentityProvider, origin: str
) -> None:
    _, preflight, _ = ask(provider, origin, preflight=True)
    _, headers, _ = ask(provider, origin)

    assert allow_origin(preflight) is None
    assert allow_origin(headers) is None


def test_a_provider_without_configured_origins_grants_no_page() -> None:
    with LocalIdentityProvider() as idp:
        _, headers, _ = ask(idp, PAGE)

    assert allow_origin(headers) is None

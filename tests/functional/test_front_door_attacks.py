"""Attacks on the identity front door through both fronts of `make dev`'s stack, as a browser or a script sends them.

The stack is `devstack.stack.DevStack` with an imitated provider (the `dev` fixture of
test_providers_on_both_fronts.py). Raw requests go through http.client where urllib would tidy
them (a header sent twice). The local fronts hand repeated headers over joined with commas, as
API Gateway and Function URLs do.
"""

# ruff: noqa: F811 - the tests take the imported `dev` fixture by name

from __future__ import annotations

import http.client
import json
import urllib.parse
from typing import Optional

import pytest

from devstack.identity.cookies import cookie_header
from tests.functional.test_providers_on_both_fronts import (  # noqa: F401 - `dev` is the stack fixture
    CLERK_DOCS,
    HI,
    STREAM_HI,
    SUPABASE_SSR,
    Answer,
    Dev,
    assert_refused,
    dev,
    send,
)


def raw_send(url: str, path: str, headers: list[tuple[str, str]], body: Optional[dict[str, object]] = HI,
             method: str = "POST") -> Answer:
    """One request with the headers exactly as listed, repeats included."""
    split = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(split.hostname or "127.0.0.1", split.port, timeout=20)
    data = json.dumps(body).encode() if body is not None else b""
    try:
        connection.putrequest(method, path)
        for name, value in [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers]:
            connection.putheader(name, value)
        connection.endheaders(data)
        response = connection.getresponse()
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


def both_fronts(dev: Dev, headers: list[tuple[str, str]], query: str = "") -> list[Answer]:
    """The mint and the buffered relay on the HTTP API, the streamed relay on the Function URL."""
    return [raw_send(dev.api, "/api/behest/token" + query, headers, {}),
            raw_send(dev.api, "/v1/chat/completions" + query, headers),
            raw_send(dev.stream, "/v1/chat/completions" + query, headers, STREAM_HI)]


CLERK = pytest.param("clerk", CLERK_DOCS, id="clerk")
AUTH0 = pytest.param("auth0", "https://auth0.com/docs/secure/tokens/access-tokens/validate-access-tokens", id="auth0")
SUPABASE = pytest.param("supabase", SUPABASE_SSR, id="supabase")


@pytest.mark.parametrize(("dev", "docs"), [CLERK, AUTH0], indirect=["dev"])
def test_two_authorization_headers_are_refused_on_both_fronts_even_when_both_are_good(dev: Dev, docs: str) -> None:
    """API Gateway and Function URLs join a repeated header with a comma: "Bearer a,Bearer b" is no token."""
    token = dev.sign_in("ada")["id_token"]
    assert dev.mint(dev.bearer(token)).status == 200

    for answer in both_fronts(dev, [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]):
        assert answer.status == 401, answer
        assert_refused(answer)


@pytest.mark.parametrize(("dev", "docs"), [CLERK, AUTH0], indirect=["dev"])
def test_a_token_in_the_query_string_is_ignored_on_both_fronts(dev: Dev, docs: str) -> None:
    token = dev.sign_in("ada")["id_token"]
    query = "?" + urllib.parse.urlencode({"access_token": token, "id_token": token, "token": token,
                                          "authorization": f"Bearer {token}"})

    for answer in both_fronts(dev, [("Origin", dev.origin)], query):
        assert answer.status == 401, answer
        assert_refused(answer)


@pytest.mark.parametrize(("dev", "docs"), [CLERK, SUPABASE], indirect=["dev"])
@pytest.mark.parametrize("authorization", ["Bearer not-a-token", "Basic YWRhOnB3", "Bearer"])
def test_a_bad_authorization_header_is_not_rescued_by_a_good_session_cookie(dev: Dev, docs: str,
                                                                           authorization: str) -> None:
    pairs = [(c["name"], c["value"]) for c in dev.sign_in("ada")["cookies"]]
    good = [("Cookie", cookie_header(pairs)), ("Origin", dev.origin)]
    assert raw_send(dev.api, "/api/behest/token", good, {}).status == 200

    for answer in both_fronts(dev, [*good, ("Authorization", authorization)]):
        assert answer.status == 401, answer
        assert_refused(answer)


@pytest.mark.parametrize(("dev", "docs"), [CLERK], indirect=["dev"])
def test_a_session_cookie_on_a_get_without_origin_is_refused_on_the_function_url(dev: Dev, docs: str) -> None:
    """Browsers send no Origin on a same-origin GET; the cookie is still not taken (no Origin, no cookie)."""
    pairs = [(c["name"], c["value"]) for c in dev.sign_in("ada")["cookies"]]

    answer = raw_send(dev.stream, "/v1/models", [("Cookie", cookie_header(pairs))], None, method="GET")

    assert answer.status == 403, answer
    assert answer.json["error"]["code"] == "origin_not_allowed"
    assert send(dev.stream + "/v1/models", None, {"Cookie": cookie_header(pairs), "Origin": dev.origin},
                method="GET").status == 200


@pytest.mark.parametrize(("dev", "docs"), [SUPABASE], indirect=["dev"])
def test_a_whole_supabase_cookie_tossed_in_beside_the_chunks_is_refused_on_both_fronts(dev: Dev, docs: str) -> None:
    chunked = dev.sign_in("linus", user_metadata={"bio": "x" * 2500})["cookies"]
    tossed = dev.sign_in("mallory")["cookies"]
    pairs = [(c["name"], c["value"]) for c in chunked + tossed]
    assert len(chunked) >= 2 and [c["name"] for c in tossed] == [dev.identity.cookie_name]

    for answer in both_fronts(dev, [("Cookie", cookie_header(pairs)), ("Origin", dev.origin)]):
        assert answer.status == 401, answer
        assert "chunks" in answer.json["error"]["message"]

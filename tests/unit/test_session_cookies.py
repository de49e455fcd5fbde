"""Session cookies as a second transport, through the token function as the HTTP API invokes it without an authorizer.

The sample event `events/token_mint_session_cookie.json` is what API Gateway sends: cookies in
payload 2.0's `cookies` array, one pair per entry, and the page's Origin. Tokens are signed by the
loopback provider (provider_fake.py) as Clerk and Supabase document theirs.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Iterator, Optional
from urllib.parse import quote

import pytest

from behest_lambda import session_cookie
from behest_lambda.app import Service
from behest_lambda.routes import TOKEN_FUNCTION
from behest_lambda.settings import Settings
from tests.support import CapturedTelemetry, load_event, sign_env
from tests.unit.provider_fake import AUDIENCE, ProviderServer, serve

APP_ORIGIN = "https://app.example.com"
SUPABASE_CHUNK = 3180  # @supabase/ssr's MAX_CHUNK_SIZE (src/utils/chunker.ts)


# Each preset's issuer path (providers.py checks it, loopback hosts included).
ISSUER_PATHS = {"clerk": "", "supabase": "/auth/v1", "auth0": "/", "oidc": ""}


@pytest.fixture(params=["clerk"])
def provider(request: pytest.FixtureRequest) -> Iterator[ProviderServer]:
    yield from serve(ISSUER_PATHS[request.param])


def service(provider: ProviderServer, preset: str, **extra: str) -> Service:
    env = sign_env(**{"BEHEST_IDENTITY_PROVIDER": preset, "BEHEST_CALLER_ISSUER": provider.issuer,
                      "BEHEST_CALLER_AUDIENCE": AUDIENCE, "BEHEST_ALLOWED_ORIGINS": APP_ORIGIN,
                      "BEHEST_VERIFY_CALLERS": "true", **extra})
    return Service.build(TOKEN_FUNCTION, Settings.from_env(env), CapturedTelemetry())


def mint(service: Service, cookies: list[str], origin: Optional[str] = APP_ORIGIN,
         authorization: Optional[str] = None) -> tuple[int, dict[str, Any]]:
    event = load_event("token_mint_session_cookie")
    event["cookies"] = cookies
    if origin is None:
        del event["headers"]["origin"]
    else:
        event["headers"]["origin"] = origin
    if authorization is not None:
        event["headers"]["authorization"] = authorization
    answer = service.handle(event)
    return answer["statusCode"], json.loads(answer["body"])


def minted_user(body: dict[str, Any]) -> str:
    payload = body["token"].split(".")[1]
    user: str = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["uid"]
    return user


def supabase_cookies(name: str, access_token: str, *, chunk: Optional[int] = None, raw: bool = False) -> list[str]:
    """The cookies @supabase/ssr writes for a session: base64- + base64url JSON, split at `chunk` characters."""
    session = json.dumps({"access_token": access_token, "token_type": "bearer", "expires_in": 3600,
                          "refresh_token": "r" * 12, "user": {"id": "user-42", "app_metadata": {"plan": "pro"}}})
    value = quote(session, safe="") if raw else "base64-" + base64.urlsafe_b64encode(session.encode()).decode().rstrip("=")
    if chunk is None:
        return [f"{name}={value}"]
    parts = [value[i:i + chunk] for i in range(0, len(value), chunk)]
    return [f"{name}.{i}={part}" for i, part in enumerate(parts)]


def test_clerks_session_cookie_signs_the_user_in_from_an_allowed_origin(provider: ProviderServer) -> None:
    """Clerk keeps the session token in the __session cookie for same-origin requests; azp is the origin.

    https://clerk.com/docs/guides/sessions/manual-jwt-verification
    """
    token = provider.token(aud=None, azp=APP_ORIGIN, sub="user_2abc")

    status, body = mint(service(provider, "clerk"), ["theme=dark", f"__session={token}"])

    assert status == 200, body
    assert minted_user(body) == "user_2abc"


@pytest.mark.parametrize("origin", [None, "https://evil.example.com", "https://app.example.com.evil.com", "null"])
def test_a_cookie_from_a_foreign_origin_or_none_is_refused(provider: ProviderServer, origin: Optional[str]) -> None:
    token = provider.token(aud=None, azp=APP_ORIGIN)

    status, body = mint(service(provider, "clerk"), [f"__session={token}"], origin=origin)

    assert status == 403
    assert body["error"]["code"] == "origin_not_allowed"


def test_two_cookies_of_the_same_name_are_refused(provider: ProviderServer) -> None:
    token = provider.token(aud=None, azp=APP_ORIGIN)

    status, body = mint(service(provider, "clerk"), [f"__session={token}", f"__session={token}"])

    assert status == 401
    assert "2 cookies named '__session'" in body["error"]["message"]


def test_two_cookies_of_the_same_name_in_one_entry_are_refused_too(provider: ProviderServer) -> None:
    token = provider.token(aud=None, azp=APP_ORIGIN)

    status, _ = mint(service(provider, "clerk"), [f"__session={token}; __session={token}"])

    assert status == 401


def test_the_bearer_header_wins_over_a_cookie(provider: ProviderServer) -> None:
    header_token = provider.token(aud=None, azp=APP_ORIGIN, sub="user_header")
    cookie_token = provider.token(aud=None, azp=APP_ORIGIN, sub="user_cookie")

    status, body = mint(service(provider, "clerk"), [f"__session={cookie_token}"], origin=None,
                        authorization=f"Bearer {header_token}")

    assert status == 200, body
    assert minted_user(body) == "user_header"


def test_without_a_header_or_the_cookie_the_answer_names_both(provider: ProviderServer) -> None:
    status, body = mint(service(provider, "clerk"), ["theme=dark"])

    assert status == 401
    assert "__session cookie" in body["error"]["message"]


@pytest.mark.parametrize("provider", ["supabase"], indirect=True)
@pytest.mark.parametrize("chunk", [None, SUPABASE_CHUNK, 200])
def test_supabases_session_cookie_is_read_whole_or_from_its_chunks(provider: ProviderServer,
                                                                   chunk: Optional[int]) -> None:
    """@supabase/ssr stores the session as "base64-" + base64url JSON in sb-<ref>-auth-token, chunked .0, .1, ….

    https://supabase.com/docs/guides/auth/server-side/creating-a-client (cookie code: supabase/ssr src/cookies.ts)
    """
    token = provider.token(aud="authenticated", role="authenticated", sub="8d9c2f0e-uuid")

    status, body = mint(service(provider, "supabase", BEHEST_CALLER_AUDIENCE="authenticated"),
                        supabase_cookies("sb-127-auth-token", token, chunk=chunk))

    assert status == 200, body
    assert minted_user(body) == "8d9c2f0e-uuid"


@pytest.mark.parametrize("provider", ["supabase"], indirect=True)
def test_supabases_raw_cookie_encoding_is_read_too(provider: ProviderServer) -> None:
    token = provider.token(aud="authenticated")

    status, body = mint(service(provider, "supabase", BEHEST_CALLER_AUDIENCE="authenticated"),
                        supabase_cookies("sb-127-auth-token", token, raw=True))

    assert status == 200, body


@pytest.mark.parametrize("provider", ["supabase"], indirect=True)
@pytest.mark.parametrize("tamper", ["flip_character", "drop_chunk_1", "swap_chunks", "foreign_prefix"])
def test_tampered_supabase_chunks_are_refused(provider: ProviderServer, tamper: str) -> None:
    token = provider.token(aud="authenticated")
    cookies = supabase_cookies("sb-127-auth-token", token, chunk=120)
    assert len(cookies) >= 4
    if tamper == "flip_character":
        name, value = cookies[1].split("=", 1)
        cookies[1] = f"{name}={value[:50]}{'A' if value[50] != 'A' else 'B'}{value[51:]}"
    elif tamper == "drop_chunk_1":
        del cookies[1]
    elif tamper == "swap_chunks":
        first, second = cookies[1].split("=", 1)[1], cookies[2].split("=", 1)[1]
        cookies[1], cookies[2] = f"sb-127-auth-token.1={second}", f"sb-127-auth-token.2={first}"
    else:
        cookies[0] = cookies[0].replace("base64-", "base64x", 1)

    status, body = mint(service(provider, "supabase", BEHEST_CALLER_AUDIENCE="authenticated"), cookies)

    assert status == 401, body
    assert body["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("provider", ["supabase"], indirect=True)
def test_an_oversized_supabase_chunk_is_refused(provider: ProviderServer) -> None:
    big = "base64-" + "A" * session_cookie.MAX_COOKIE_CHARS

    status, body = mint(service(provider, "supabase", BEHEST_CALLER_AUDIENCE="authenticated"),
                        [f"sb-127-auth-token.0={big}"])

    assert status == 401
    assert "larger than a browser keeps" in body["error"]["message"]


@pytest.mark.parametrize("provider", ["supabase"], indirect=True)
def test_more_supabase_chunks_than_a_session_needs_are_refused(provider: ProviderServer) -> None:
    cookies = [f"sb-127-auth-token.{i}=QUFB" for i in range(session_cookie.MAX_CHUNKS + 1)]

    status, body = mint(service(provider, "supabase", BEHEST_CALLER_AUDIENCE="authenticated"), cookies)

    assert status == 401
    assert "more than" in body["error"]["message"]


@pytest.mark.parametrize("provider", ["auth0"], indirect=True)
def test_a_cookie_named_in_auth_cookie_name_carries_a_raw_jwt_for_any_preset(provider: ProviderServer) -> None:
    token = provider.token(sub="auth0|user-7")

    status, body = mint(service(provider, "auth0", BEHEST_CALLER_COOKIE="app_session"), [f"app_session={token}"])

    assert status == 200, body
    assert minted_user(body) == "auth0|user-7"


@pytest.mark.parametrize("provider", ["oidc"], indirect=True)
def test_without_a_cookie_configured_a_cookie_is_ignored(provider: ProviderServer) -> None:
    token = provider.token()

    status, body = mint(service(provider, "oidc"), [f"__session={token}"])

    assert status == 401
    assert "Authorization: Bearer" in body["error"]["message"]


def test_the_cookie_jar_reads_each_pair_with_the_standard_library() -> None:
    jar = session_cookie.cookie_jar(['a=1', 'b="quoted value"', "c=x; d=y", "", "garbage", "e="])

    assert jar == {"a": ["1"], "b": ["quoted value"], "c": ["x"], "d": ["y"], "e": [""]}

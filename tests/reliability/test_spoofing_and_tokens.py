"""Nobody gets a token for someone else, and every token is what the gateway expects.

Spoofing: a user id or tier in the body, the query, headers, other authorizer shapes, cookies, path or
stage variables, or OpenAI's `user` field is ignored by both routes. Tokens: RS256 with the configured
kid whatever is asked, lifetime clamped to [60 s, BEHEST_MAX_TTL], issuer and audience right, and a
fresh jti (and sid) every time.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Callable

import jwt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from behest_lambda.app import Service
from behest_lambda.routes import RELAY_FUNCTION, TOKEN_FUNCTION
from devstack.standin import StandinGateway
from tests.figures import Figures
from tests.reliability.suite import body_of, event_for, sized
from tests.support import AUDIENCE, ISSUER, KID, PROJECT_ID, TENANT_ID, CapturedTelemetry, public_key, sign_env

TOPIC = "Spoofing and token properties"
TIERS = {"BEHEST_TIER_CLAIM": "plan", "BEHEST_TIER_MAP": "free=1,pro=2"}
ADMIN = "admin"
SPOOF_FIELDS = {"uid": ADMIN, "user": ADMIN, "user_id": ADMIN, "userId": ADMIN, "sub": ADMIN, "tier": 99, "plan": "pro",
                "tid": "tenant-evil", "pid": "project-evil", "role": "admin", "scp": ["admin"], "kid": "sk_evil",
                "alg": "none", "iss": "https://evil.example", "aud": "evil", "exp": 4102444800, "jti": "fixed"}


def with_body_fields(event: dict[str, Any]) -> None:
    body = json.loads(event["body"] or "{}")
    event["body"] = json.dumps({**SPOOF_FIELDS, **body})


def with_query(event: dict[str, Any]) -> None:
    event["rawQueryString"] = "user_id=admin&sub=admin&tier=99&plan=pro"
    event["queryStringParameters"] = {"user_id": ADMIN, "sub": ADMIN, "tier": "99", "plan": "pro"}


def with_headers(event: dict[str, Any]) -> None:
    event["headers"].update({"x-user-id": ADMIN, "x-behest-user": ADMIN, "x-tier": "99", "x-plan": "pro",
                             "x-amzn-oidc-identity": ADMIN, "x-forwarded-user": ADMIN, "x-remote-user": ADMIN,
                             "x-amzn-oidc-data": "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiJ9.",
                             "authorization": "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJhZG1pbiIsInBsYW4iOiJwcm8ifQ."})


def with_other_authorizers(event: dict[str, Any]) -> None:
    authorizer = event["requestContext"]["authorizer"]
    authorizer["lambda"] = {"sub": ADMIN, "plan": "pro"}
    authorizer["iam"] = {"userId": ADMIN, "cognitoIdentity": {"identityId": ADMIN}}
    authorizer["principalId"] = ADMIN
    authorizer["claims"] = {"sub": ADMIN}  # a REST API (v1) authorizer's shape


def with_cookies_path_and_stage(event: dict[str, Any]) -> None:
    event["cookies"] = ["user=admin", "tier=99"]
    event["pathParameters"] = {"user": ADMIN}
    event["stageVariables"] = {"BEHEST_USER_CLAIM": "email", "user": ADMIN}


def with_openai_user_fields(event: dict[str, Any]) -> None:
    body = json.loads(event["body"])
    body.update(user=ADMIN, metadata={"user_id": ADMIN, "tier": "99"}, safety_identifier=ADMIN)
    body["messages"][0]["name"] = ADMIN
    event["body"] = json.dumps(body)


SPOOFS: dict[str, Callable[[dict[str, Any]], None]] = {
    "body fields": with_body_fields, "query string": with_query, "headers": with_headers,
    "other authorizer shapes": with_other_authorizers, "cookies, path, stage variables": with_cookies_path_and_stage,
}


def all_at_once(event: dict[str, Any]) -> None:
    for spoof in SPOOFS.values():
        spoof(event)


def verified_event(name: str) -> dict[str, Any]:
    event = event_for(name, "user-42")
    event["requestContext"]["authorizer"]["jwt"]["claims"]["plan"] = "free"
    if name == "chat_completion":
        event["body"] = json.dumps({"messages": [{"role": "user", "content": "hi"}], "model": "m"})
    return event


def assert_token_is_for_user_42(token: str) -> None:
    assert jwt.get_unverified_header(token) == {"alg": "RS256", "kid": KID, "typ": "JWT"}
    claims = jwt.decode(token, public_key("tenant"), algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)
    assert (claims["uid"], claims["tier"], claims["tid"], claims["pid"]) == ("user-42", 1, TENANT_ID, PROJECT_ID)
    assert (claims["role"], claims["scp"], claims["jti"] != "fixed", claims["exp"] - claims["iat"] <= 3600) == (
        "user", [], True, True)


@pytest.mark.parametrize("spoof", [*SPOOFS.values(), all_at_once], ids=[*SPOOFS, "all at once"])
def test_identity_and_tier_anywhere_but_the_verified_claims_are_ignored_by_the_token_route(
    spoof: Callable[[dict[str, Any]], None], telemetry: CapturedTelemetry,
) -> None:
    event = verified_event("token_mint")
    spoof(event)

    response = Service.from_env(TOKEN_FUNCTION, telemetry, sign_env(**TIERS)).handle(event)

    assert response["statusCode"] == 200
    assert_token_is_for_user_42(body_of(response)["token"])


@pytest.mark.parametrize("spoof", [*SPOOFS.values(), with_openai_user_fields, all_at_once],
                         ids=[*SPOOFS, "OpenAI user, metadata, name", "all at once"])
def test_identity_and_tier_anywhere_but_the_verified_claims_are_ignored_by_the_relay(
    spoof: Callable[[dict[str, Any]], None], clean_standin: StandinGateway, telemetry: CapturedTelemetry,
) -> None:
    event = verified_event("chat_completion")
    spoof(event)
    if spoof is all_at_once:
        with_openai_user_fields(event)

    env = sign_env(BEHEST_BASE_URL=clean_standin.url, **TIERS)
    response = Service.from_env(RELAY_FUNCTION, telemetry, env).handle(event)

    assert response["statusCode"] == 200
    assert body_of(response)["choices"][0]["message"]["content"].startswith("Hello user-42!")
    (recorded,) = clean_standin.requests
    assert recorded.body["user"] == "user-42"
    assert_token_is_for_user_42((recorded.header("authorization") or "").removeprefix("Bearer "))


@pytest.mark.parametrize("name", ["token_mint", "chat_completion"])
def test_without_verified_claims_every_spoof_at_once_gets_a_401_and_nothing_upstream(
    name: str, clean_standin: StandinGateway, telemetry: CapturedTelemetry, figures: Figures,
) -> None:
    event = verified_event(name)
    all_at_once(event)
    del event["requestContext"]["authorizer"]["jwt"]

    env = sign_env(BEHEST_BASE_URL=clean_standin.url, **TIERS)
    function = TOKEN_FUNCTION if name == "token_mint" else RELAY_FUNCTION
    response = Service.from_env(function, telemetry, env).handle(event)

    assert response["statusCode"] == 401
    assert not clean_standin.requests
    if name == "chat_completion":
        figures(TOPIC, f"spoofed identity/tier in {len(SPOOFS)} places (+ OpenAI user/metadata/name on the relay), "
                       "each alone and all at once: every token and upstream request for the verified user only; "
                       "with no verified claims, all spoofs together → 401, nothing sent upstream")


@sized(short=10_000, long=100_000)
def test_every_token_is_rs256_under_the_configured_kid_with_a_unique_jti_and_sid(
    size: int, telemetry: CapturedTelemetry, figures: Figures,
) -> None:
    function = Service.from_env(TOKEN_FUNCTION, telemetry, sign_env())
    event = event_for("token_mint")
    expected_header = base64.urlsafe_b64encode(
        json.dumps({"alg": "RS256", "kid": KID, "typ": "JWT"}, separators=(",", ":")).encode()).rstrip(b"=").decode()
    key = public_key("tenant")
    jtis: set[str] = set()
    sids: set[str] = set()

    started = time.perf_counter()
    for index in range(size):
        token = json.loads(function.handle(event)["body"])["token"]
        header, payload, _ = token.split(".")
        assert header == expected_header
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        jtis.add(claims["jti"])
        sids.add(claims["sid"])
        if index % 500 == 0:
            jwt.decode(token, key, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)
        telemetry.buffer.seek(0)
        telemetry.buffer.truncate()  # the buffer would hold every log line of the run
    elapsed = time.perf_counter() - started

    assert len(jtis) == size and len(sids) == size
    figures(TOPIC, f"{size} mints: {len(jtis)} distinct jti, {len(sids)} distinct sid, every header RS256 + kid "
                   f"{KID}, every 500th verified by PyJWT; {size / elapsed:.0f} mints/s through the handler")


@settings(max_examples=300, derandomize=True, database=None, deadline=None)
@given(requested=st.one_of(st.none(), st.integers(), st.integers(min_value=-(10**30), max_value=10**30),
                           st.sampled_from([0, 59, 60, 61, 3599, 3600, 3601, 86400, 2**31, 2**63])))
def test_any_requested_ttl_gives_a_lifetime_within_60_s_and_the_maximum_with_issuer_and_audience_right(
    requested: Any,
) -> None:
    function = Service.from_env(TOKEN_FUNCTION, CapturedTelemetry(), sign_env(BEHEST_MAX_TTL="3600", BEHEST_TTL="900",
                                                                    BEHEST_ISSUER="https://iss.example",
                                                                    BEHEST_AUDIENCE="behest-test"))
    before = int(time.time())
    response = function.handle(event_for("token_mint", body={} if requested is None else {"ttl": requested}))
    answer = body_of(response)

    claims = jwt.decode(answer["token"], public_key("tenant"), algorithms=["RS256"], audience="behest-test",
                        issuer="https://iss.example")
    lifetime = claims["exp"] - claims["iat"]
    expected = 900 if requested is None else max(60, min(requested, 3600))
    assert lifetime == answer["ttl"] == expected
    assert 60 <= lifetime <= 3600
    assert claims["nbf"] == claims["iat"] and before <= claims["iat"] <= int(time.time())
    assert answer["expiresAt"] == claims["exp"]

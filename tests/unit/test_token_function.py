"""The token route end to end in-process: events in, HTTP answers out, tokens verified with PyJWT."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest

from behest_lambda import token_handler
from behest_lambda.app import Service, entry_point
from behest_lambda.routes import TOKEN_FUNCTION
from behest_lambda.telemetry import Telemetry
from tests.support import (
    AUDIENCE,
    ISSUER,
    KID,
    PROJECT_ID,
    TENANT_ID,
    CapturedTelemetry,
    FakeContext,
    key_pem,
    load_event,
    public_key,
    sign_env,
)


def body_of(response: dict[str, Any]) -> Any:
    return json.loads(response["body"])


def verify(token: str, key_name: str = "tenant") -> dict[str, Any]:
    return jwt.decode(
        token,
        public_key(key_name),
        algorithms=["RS256"],
        audience=AUDIENCE,
        issuer=ISSUER,
        options={"require": ["exp", "nbf", "iat", "jti", "sid", "uid", "tid", "pid"]},
    )


@pytest.fixture
def function(telemetry: CapturedTelemetry) -> Service:
    return Service.from_env(TOKEN_FUNCTION, telemetry, sign_env())


def test_a_verified_user_gets_a_token_that_verifies_with_the_tenant_public_key(function: Service) -> None:
    response = function.handle(load_event("token_mint"))

    assert response["statusCode"] == 200
    assert response["headers"]["cache-control"] == "no-store"
    answer = body_of(response)
    assert set(answer) == {"token", "ttl", "sessionId", "expiresAt"}
    claims = verify(answer["token"])
    assert claims["uid"] == "user-42"
    assert claims["sid"] == answer["sessionId"]
    assert claims["exp"] == answer["expiresAt"]
    assert answer["ttl"] == 600


def test_the_token_has_exactly_the_protocol_header_and_claims_in_order(function: Service) -> None:
    token = body_of(function.handle(load_event("token_mint")))["token"]

    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    payload = json.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))
    assert list(header.items()) == [("alg", "RS256"), ("kid", KID), ("typ", "JWT")]
    assert list(payload) == ["tid", "pid", "uid", "role", "scp", "iss", "aud", "iat", "nbf", "exp", "jti", "sid"]
    assert (payload["tid"], payload["pid"], payload["role"], payload["scp"]) == (TENANT_ID, PROJECT_ID, "user", [])
    assert payload["iat"] == payload["nbf"] == payload["exp"] - 600


def test_each_token_gets_a_fresh_jti_and_a_fresh_session(function: Service) -> None:
    tokens = [verify(body_of(function.handle(load_event("token_mint")))["token"]) for _ in range(20)]

    assert len({t["jti"] for t in tokens}) == 20
    assert len({t["sid"] for t in tokens}) == 20


def test_identity_in_body_query_or_headers_is_ignored(function: Service) -> None:
    answer = body_of(function.handle(load_event("token_spoofed_identity")))

    claims = verify(answer["token"])
    assert claims["uid"] == "user-42"
    assert "tier" not in claims


def test_no_authorizer_claims_is_refused_with_401_even_with_an_authorization_header(function: Service) -> None:
    event = load_event("token_no_identity")
    event["headers"]["authorization"] = "Bearer something"
    event["body"] = json.dumps({"userId": "user-42"})

    response = function.handle(event)

    assert response["statusCode"] == 401
    assert body_of(response)["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("claims", [{}, {"email": "x@example.com"}, {"sub": ""}, {"sub": "x" * 300}, {"sub": ["a"]}])
def test_claims_without_a_usable_user_id_are_refused_with_401(function: Service, claims: dict[str, Any]) -> None:
    event = load_event("token_mint")
    event["requestContext"]["authorizer"]["jwt"]["claims"] = claims

    assert function.handle(event)["statusCode"] == 401


def test_the_user_claim_and_tier_claim_are_configurable(telemetry: CapturedTelemetry) -> None:
    function = Service.from_env(
        TOKEN_FUNCTION, telemetry,
        sign_env(BEHEST_USER_CLAIM="email", BEHEST_TIER_CLAIM="plan", BEHEST_TIER_MAP="free=1,pro=3"),
    )

    claims = verify(body_of(function.handle(load_event("token_mint")))["token"])

    assert claims["uid"] == "ada@example.com"
    assert claims["tier"] == 3
    assert list(claims)[-1] == "tier"


@pytest.mark.parametrize(("plan", "expected"), [("2", 2), ("gold", 7), (None, 7)])
def test_a_numeric_tier_claim_is_used_and_anything_else_falls_back_to_behest_tier(
    telemetry: CapturedTelemetry, plan: Any, expected: int
) -> None:
    function = Service.from_env(TOKEN_FUNCTION, telemetry, sign_env(BEHEST_TIER_CLAIM="plan", BEHEST_TIER="7"))
    event = load_event("token_mint")
    event["requestContext"]["authorizer"]["jwt"]["claims"]["plan"] = plan

    assert verify(body_of(function.handle(event))["token"])["tier"] == expected


@pytest.mark.parametrize(("asked", "granted"), [(1, 60), (59, 60), (60, 60), (1800, 1800), (10**9, 3600), (-5, 60)])
def test_the_requested_ttl_is_clamped_between_60_seconds_and_the_maximum(
    function: Service, asked: int, granted: int
) -> None:
    event = load_event("token_mint")
    event["body"] = json.dumps({"ttl": asked})

    answer = body_of(function.handle(event))

    assert answer["ttl"] == granted
    claims = verify(answer["token"])
    assert claims["exp"] - claims["iat"] == granted


def test_an_empty_or_absent_body_mints_with_the_default_ttl(function: Service) -> None:
    for body in (None, "", "   "):
        event = load_event("token_mint")
        event["body"] = body
        answer = body_of(function.handle(event))
        assert answer["ttl"] == 900


def test_a_valid_session_id_is_continued(function: Service) -> None:
    event = load_event("token_mint")
    event["body"] = json.dumps({"sessionId": "sess_2026-11-21:abc.1"})

    answer = body_of(function.handle(event))

    assert answer["sessionId"] == "sess_2026-11-21:abc.1"
    assert verify(answer["token"])["sid"] == "sess_2026-11-21:abc.1"


@pytest.mark.parametrize(
    "body",
    [
        '{"ttl": "600"}',
        '{"ttl": true}',
        '{"ttl": 1.5}',
        '{"sessionId": "has space"}',
        '{"sessionId": "x\\r\\nSet-Cookie: a=b"}',
        '{"sessionId": 42}',
        '{"sessionId": "' + "a" * 129 + '"}',
        "[1, 2]",
        '"text"',
        "{not json",
        '{"ttl": 60, "ttl": 600}',
        "[" * 100_000 + "]" * 100_000,
    ],
)
def test_malformed_bodies_get_a_400_with_a_clear_message(function: Service, body: str) -> None:
    event = load_event("token_mint")
    event["body"] = body

    response = function.handle(event)

    assert response["statusCode"] == 400
    error = body_of(response)["error"]
    assert error["code"] == "invalid_request"
    assert error["message"]


def test_the_sample_bad_body_event_gets_a_400(function: Service) -> None:
    assert function.handle(load_event("token_bad_body"))["statusCode"] == 400


def test_a_base64_encoded_body_is_decoded(function: Service) -> None:
    event = load_event("token_mint")
    event["body"] = base64.b64encode(b'{"ttl": 120}').decode()
    event["isBase64Encoded"] = True

    assert body_of(function.handle(event))["ttl"] == 120


def test_invalid_base64_or_invalid_utf8_bodies_get_a_400(function: Service) -> None:
    for body in ("***", base64.b64encode(b'{"ttl": "\xff"}').decode()):
        event = load_event("token_mint")
        event["body"] = body
        event["isBase64Encoded"] = True
        assert function.handle(event)["statusCode"] == 400


def test_an_oversized_body_gets_a_413(telemetry: CapturedTelemetry) -> None:
    function = Service.from_env(TOKEN_FUNCTION, telemetry, sign_env(BEHEST_MAX_BODY_BYTES="2048"))
    event = load_event("token_mint")
    event["body"] = json.dumps({"ttl": 60, "pad": "x" * 3000})

    response = function.handle(event)

    assert response["statusCode"] == 413
    assert body_of(response)["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("verb", ["GET", "PUT", "DELETE"])
def test_other_methods_get_a_405_with_allow_post(function: Service, verb: str) -> None:
    event = load_event("token_mint")
    event["requestContext"]["http"]["method"] = verb

    response = function.handle(event)

    assert response["statusCode"] == 405
    assert response["headers"]["allow"] == "POST"


def test_sign_mode_without_its_ids_names_every_missing_variable(telemetry: CapturedTelemetry) -> None:
    function = Service.from_env(TOKEN_FUNCTION, telemetry, sign_env(BEHEST_KID=None, BEHEST_PROJECT_ID=None))

    response = function.handle(load_event("token_mint"))

    assert response["statusCode"] == 500
    message = body_of(response)["error"]["message"]
    assert "BEHEST_KID" in message and "BEHEST_PROJECT_ID" in message
    assert "BEHEST_TENANT_ID" not in message


def test_the_lambda_handler_answers_a_configuration_error_as_json_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("BEHEST_KEY", "BEHEST_API_KEY", "BEHEST_KEY_SECRET_ID"):
        monkeypatch.delenv(name, raising=False)
    handler = entry_point(TOKEN_FUNCTION, "behest-token", telemetry=CapturedTelemetry())

    response = handler(load_event("token_mint"), FakeContext())

    assert response["statusCode"] == 500
    assert "BEHEST_KEY" in body_of(response)["error"]["message"]


def counting_builder(monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[Service]]:
    """A route builder reading a sign-mode environment, and the list of what it built."""
    for name, value in sign_env().items():
        monkeypatch.setenv(name, value)
    builds: list[Service] = []

    def build(function: str, telemetry: Telemetry) -> Service:
        builds.append(Service.from_env(function, telemetry))
        return builds[-1]

    return build, builds


def test_the_lambda_handler_builds_once_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    build, builds = counting_builder(monkeypatch)

    handler = entry_point(TOKEN_FUNCTION, "behest-token", telemetry=CapturedTelemetry(), build=build)
    first = handler(load_event("token_mint"), FakeContext())
    second = handler(load_event("token_mint"), FakeContext())

    assert first["statusCode"] == second["statusCode"] == 200
    assert len(builds) == 1
    verify(body_of(second)["token"])


def test_the_deployed_handler_serves_a_mint(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in sign_env().items():
        monkeypatch.setenv(name, value)
    import importlib

    module = importlib.reload(token_handler)

    verify(body_of(module.handler(load_event("token_mint"), FakeContext()))["token"])


def test_logs_carry_the_request_id_and_a_metric_but_never_the_token_or_key(
    function: Service, telemetry: CapturedTelemetry
) -> None:
    telemetry.start_invocation(FakeContext())
    token = body_of(function.handle(load_event("token_mint")))["token"]
    function.handle(load_event("token_bad_body"))

    logs = telemetry.logs()
    assert [r["message"] for r in logs] == ["token minted", "request refused"]
    assert all(r["function_request_id"] == "req-test-0001" for r in logs)
    assert all(r["correlation_id"] == load_event("token_mint")["requestContext"]["requestId"] for r in logs)
    assert telemetry.metrics() == ["TokenMinted", "RequestRefused"]
    text = telemetry.text()
    assert token not in text and token.split(".")[2] not in text
    assert "PRIVATE KEY" not in text and key_pem("tenant").splitlines()[1] not in text


@pytest.mark.parametrize("body", ['{"ttl": NaN}', '{"ttl": Infinity}', '{"ttl": -Infinity}', '{"ttl": 1e400}'])
def test_non_standard_json_numbers_get_a_400(function: Service, body: str) -> None:
    event = load_event("token_mint")
    event["body"] = body

    assert function.handle(event)["statusCode"] == 400


def test_a_snapstart_restore_drops_the_built_route_so_keys_and_ids_are_fetched_afresh(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys
    import types

    hooks: list[Any] = []
    fake = types.ModuleType("snapshot_restore_py")
    fake.register_after_restore = hooks.append  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "snapshot_restore_py", fake)
    build, builds = counting_builder(monkeypatch)

    telemetry = CapturedTelemetry()
    handler = entry_point(TOKEN_FUNCTION, "behest-token", telemetry=telemetry, build=build)
    handler(load_event("token_mint"), FakeContext())
    for hook in hooks:
        hook()
    handler(load_event("token_mint"), FakeContext())

    assert len(hooks) == 1
    assert len(builds) == 2
    assert [r["cold_start"] for r in telemetry.logs()] == [True, True]

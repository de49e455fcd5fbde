"""Malformed input gets a 4xx with a JSON body on every function where it applies, never an exception.

The token and relay functions read the HTTP API authorizer's claims; the streaming function
verifies the bearer token itself. The stand-in Behest answers the relays; a loopback JWKS
serves the identity provider's key to the streaming function.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Callable, Iterator

import jwt
import pytest

from behest_lambda.app import Service
from behest_lambda.routes import RELAY_FUNCTION, STREAM_FUNCTION, TOKEN_FUNCTION
from behest_lambda.settings import Settings
from devstack.standin import StandinGateway
from tests.support import CapturedTelemetry, load_event, private_key, sign_env
from tests.unit.test_caller_token import JwksServer

ISSUER = "https://issuer.example.com/pool-1"
AUDIENCE = "app-client-1"
IDP_KID = "idp-key-1"  # the key JwksServer publishes (tests/keys/tenant)
HI = {"messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


Answer = Callable[[dict[str, Any], Any], tuple[int, dict[str, Any]]]


def environment(standin: StandinGateway, jwks: JwksServer, **extra: str) -> dict[str, str]:
    return sign_env(**{"BEHEST_BASE_URL": standin.url, "BEHEST_TIER_CLAIM": "plan", "BEHEST_TIER_MAP": "free=1,pro=2",
                       "BEHEST_CALLER_ISSUER": ISSUER, "BEHEST_CALLER_AUDIENCE": AUDIENCE,
                       "BEHEST_CALLER_JWKS_URL": jwks.url, **extra})


def front(function: str, standin: StandinGateway, jwks: JwksServer, **extra: str) -> Answer:
    """Send one request to `function` with `claims` (verified, or signed into a bearer token); (status, JSON body)."""
    service = Service.build(function, Settings.from_env(environment(standin, jwks, **extra)), CapturedTelemetry())

    def answer(claims: dict[str, Any], bearer: Any = None) -> tuple[int, dict[str, Any]]:
        event = load_event("token_mint")
        if function != TOKEN_FUNCTION:
            event["rawPath"] = event["requestContext"]["http"]["path"] = "/v1/chat/completions"
            event["body"] = json.dumps(HI)
        if function == STREAM_FUNCTION:
            del event["requestContext"]["authorizer"]
            event["headers"]["authorization"] = f"Bearer {bearer if bearer is not None else caller_token(claims)}"
            prelude, body = service.respond(event)
            return prelude["statusCode"], json.loads(b"".join(body).split(b"\n")[0] or b"{}")
        event["requestContext"]["authorizer"]["jwt"]["claims"] = claims
        response = service.handle(event)
        return response["statusCode"], json.loads(response["body"])

    return answer


def identity_claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-42", "iat": now, "exp": now + 600}
    claims.update(overrides)
    return claims


def caller_token(claims: dict[str, Any]) -> str:
    return jwt.encode(identity_claims(**claims), private_key("tenant"), algorithm="RS256", headers={"kid": IDP_KID})


FUNCTIONS = [TOKEN_FUNCTION, RELAY_FUNCTION, STREAM_FUNCTION]


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("plan", ["²", "①", "９", "٣", "1²", " ", "", "pro-plus"])
def test_a_tier_claim_that_is_not_ascii_digits_counts_as_no_tier(standin: StandinGateway, jwks: JwksServer,
                                                                 function: str, plan: str) -> None:
    status, body = front(function, standin, jwks, BEHEST_TIER="1")({"sub": "user-42", "plan": plan})

    assert status == 200, body
    standin_claims = standin.requests[-1].claims if function != TOKEN_FUNCTION else jwt.decode(
        body["token"], options={"verify_signature": False})
    assert standin_claims is not None and standin_claims["tier"] == 1  # BEHEST_TIER


@pytest.mark.parametrize("function", FUNCTIONS)
@pytest.mark.parametrize("plan", ["101", "9999999", "-1"])
def test_a_tier_outside_the_configured_range_is_refused_with_403(standin: StandinGateway, jwks: JwksServer,
                                                                function: str, plan: str) -> None:
    claims = {"sub": "user-42", "plan": int(plan) if function == STREAM_FUNCTION else plan}
    status, body = front(function, standin, jwks)(claims)

    if plan == "-1" and function != STREAM_FUNCTION:
        assert status == 200  # "-1" is not written in digits: no tier claim, BEHEST_TIER (none)
        return
    assert (status, body["error"]["code"]) == (403, "tier_out_of_range")


@pytest.mark.parametrize("function", FUNCTIONS)
def test_a_tier_range_can_be_configured(standin: StandinGateway, jwks: JwksServer, function: str) -> None:
    answer = front(function, standin, jwks, BEHEST_TIER_MIN="5", BEHEST_TIER_MAX="500", BEHEST_TIER="5",
                   BEHEST_TIER_MAP="free=5,pro=6")

    assert answer({"sub": "user-42", "plan": "250"})[0] == 200
    assert answer({"sub": "user-42", "plan": "4"})[0] == 403


def test_a_tier_map_or_default_outside_the_range_is_a_configuration_error_naming_it() -> None:
    from behest_lambda.errors import ConfigurationError

    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(sign_env(BEHEST_TIER_MAP="free=1,pro=200", BEHEST_TIER="300"))

    assert "BEHEST_TIER_MAP" in caught.value.message and "BEHEST_TIER " in caught.value.message + " "


def segment(document: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def signed(header: dict[str, Any], payload: str) -> str:
    """A token signed RS256 by the identity provider's key over exactly `payload` (which may be anything)."""
    signing_input = f"{segment(header)}.{payload}"
    signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(
        signing_input.encode("utf-8"), private_key("tenant"))
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def good_parts() -> list[str]:
    return caller_token({}).split(".")


def malformed_tokens() -> list[tuple[str, Any]]:
    header = {"alg": "RS256", "kid": IDP_KID}
    now = int(time.time())
    tokens: list[tuple[str, Any]] = []
    for index, name in enumerate(("header", "payload", "signature")):
        for bad in ("é", "☃", "\u0000", "+/=", "*", " "):
            parts = good_parts()
            parts[index] = parts[index][:5] + bad + parts[index][5:]
            tokens.append((f"{name} with {bad!r}", ".".join(parts)))
    for claim in ("exp", "iat", "nbf"):
        tokens.append((f"{claim} 10^400", signed(header, segment({**identity_claims(), claim: 0}).replace(
            segment({**identity_claims(), claim: 0}), base64.urlsafe_b64encode(
                json.dumps(identity_claims()).replace(f'"{claim}": {identity_claims().get(claim, 0)}', "")[:-1].encode()
                + f', "{claim}": 1{"0" * 400}}}'.encode()).rstrip(b"=").decode()))))
        tokens.append((f"{claim} 1e400", signed(header, base64.urlsafe_b64encode(
            (json.dumps({k: v for k, v in identity_claims().items() if k != claim})[:-1]
             + f', "{claim}": 1e400}}').encode()).rstrip(b"=").decode())))
    for claim, value in (("exp", [now + 600]), ("exp", {"at": now}), ("iat", "yesterday"), ("nbf", None),
                         ("iss", 42), ("aud", {"a": 1}), ("sub", ["user-42"]), ("exp", -(10**30))):
        tokens.append((f"{claim} {value!r}", signed(header, segment({**identity_claims(), claim: value}))))
    tokens.append(("payload not an object", signed(header, segment(["a", "b"]))))
    tokens.append(("payload nested deep", signed(header, base64.urlsafe_b64encode(
        b"[" * 100_000 + b"]" * 100_000).rstrip(b"=").decode())))
    tokens.append(("header kid a list", signed({"alg": "RS256", "kid": [IDP_KID]}, segment(identity_claims()))))
    tokens.append(("header not JSON", "bm90IGpzb24." + ".".join(good_parts()[1:])))
    return tokens


@pytest.mark.parametrize(("case", "token"), malformed_tokens(), ids=[case for case, _ in malformed_tokens()])
def test_a_malformed_or_forged_caller_token_is_a_401_with_a_json_body(standin: StandinGateway, jwks: JwksServer,
                                                                      case: str, token: str) -> None:
    status, body = front(STREAM_FUNCTION, standin, jwks)({}, bearer=token)

    assert status == 401, (case, body)
    assert body["error"]["type"] == "authentication_error"

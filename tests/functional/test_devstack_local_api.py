"""`make dev`'s local HTTP API routes as the deployed one does: the route table, its JWT authorizer, `$default`."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from typing import Any, Iterator, Mapping, Optional

import pytest

from behest_lambda.routes import HTTP_API, RELAY_FUNCTION, TOKEN_FUNCTION, routes_for
from devstack.identity import LocalIdentityProvider
from devstack.local_api import JwtAuthorizer, LocalHttpApi

PAGE = "http://127.0.0.1:5173"


class RecordingFunction:
    """A Lambda handler that answers 200 with its name and keeps every event it was handed."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.events: list[Mapping[str, Any]] = []

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        return {"statusCode": 200, "headers": {"content-type": "application/json"},
                "body": json.dumps({"function": self.name})}


class Api:
    def __init__(self, provider: LocalIdentityProvider) -> None:
        self.provider = provider
        self.token_function = RecordingFunction(TOKEN_FUNCTION)
        self.relay_function = RecordingFunction(RELAY_FUNCTION)
        self.api = LocalHttpApi({TOKEN_FUNCTION: self.token_function, RELAY_FUNCTION: self.relay_function},
                                JwtAuthorizer(provider.issuer, [provider.audience], provider.jwks_url),
                                allowed_origins=[PAGE]).start()

    def call(self, method: str, path: str, *, token: Optional[str] = None, body: Optional[bytes] = None,
             headers: Optional[dict[str, str]] = None) -> tuple[int, dict[str, str], Any]:
        request = urllib.request.Request(self.api.url + path, data=body, method=method, headers=headers or {})
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                status, answer_headers, raw = response.status, response.headers, response.read()
        except urllib.error.HTTPError as e:
            status, answer_headers, raw = e.code, e.headers, e.read()
        return status, {k.lower(): v for k, v in answer_headers.items()}, json.loads(raw) if raw else None

    @property
    def events(self) -> list[Mapping[str, Any]]:
        return self.token_function.events + self.relay_function.events


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalIdentityProvider]:
    with LocalIdentityProvider() as idp:
        yield idp


@pytest.fixture
def api(provider: LocalIdentityProvider) -> Iterator[Api]:
    started = Api(provider)
    yield started
    started.api.stop()


@pytest.mark.parametrize("route", routes_for(HTTP_API), ids=lambda r: f"{r.method} {r.path}")
def test_every_route_of_the_table_reaches_its_function_with_the_verified_claims(api: Api, route: Any) -> None:
    path = route.path.replace("{model}", "behest-mini")

    status, _, answer = api.call(route.method, path, token=api.provider.issue("ada", plan="pro"),
                                 body=b"{}" if route.method == "POST" else None)

    assert (status, answer) == (200, {"function": route.function})
    [event] = api.events
    assert event["routeKey"] == event["requestContext"]["routeKey"] == f"{route.method} {route.path}"
    claims = event["requestContext"]["authorizer"]["jwt"]["claims"]
    assert (claims["sub"], claims["plan"]) == ("ada", "pro")


def test_a_path_parameter_reaches_the_function_as_api_gateway_puts_it(api: Api) -> None:
    api.call("GET", "/v1/models/behest-mini", token=api.provider.issue("ada"))

    [event] = api.relay_function.events
    assert event["pathParameters"] == {"model": "behest-mini"}
    assert event["rawPath"] == "/v1/models/behest-mini"


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/nothing-here"), ("POST", "/v2/chat/completions"), ("GET", "/v1/chat/completions"),
    ("DELETE", "/v1/models"), ("PUT", "/api/behest/token"),
])
def test_what_the_table_does_not_route_goes_to_the_relay_without_authorizer_or_claims(
    api: Api, method: str, path: str
) -> None:
    status, _, answer = api.call(method, path, token=api.provider.issue("ada"))

    assert (status, answer) == (200, {"function": RELAY_FUNCTION})
    [event] = api.relay_function.events
    assert event["routeKey"] == "$default"
    assert "authorizer" not in event["requestContext"]
    assert "pathParameters" not in event


def test_an_unrouted_request_reaches_the_relay_even_with_no_token_at_all(api: Api) -> None:
    status, _, _ = api.call("GET", "/v1/nothing-here")

    assert status == 200
    assert len(api.relay_function.events) == 1


def bent_tokens(provider: LocalIdentityProvider) -> dict[str, Optional[str]]:
    now = int(time.time())
    return {
        "no token": None,
        "another audience": provider.issue("ada", audience="someone-else"),
        "another issuer": provider.issue("ada", issuer="https://evil.example"),
        # API Gateway allows no leeway: a second either side is already refused.
        "expired a second ago": provider.issue("ada", iat=now - 60, not_before=now - 60, ttl=-1),
        "not yet valid": provider.issue("ada", not_before=now + 2),
        "issued in the future": provider.issue("ada", iat=now + 2),
        "not a JWT": "not-a-jwt",
    }


@pytest.mark.parametrize("case", ["no token", "another audience", "another issuer", "expired a second ago",
                                  "not yet valid", "issued in the future", "not a JWT"])
@pytest.mark.parametrize("path", ["/api/behest/token", "/v1/chat/completions"])
def test_a_routed_request_without_a_valid_token_gets_api_gateways_own_401(api: Api, case: str, path: str) -> None:
    status, headers, answer = api.call("POST", path, token=bent_tokens(api.provider)[case], body=b"{}")

    assert (status, answer) == (401, {"message": "Unauthorized"})
    assert headers["www-authenticate"] == "Bearer"
    assert api.events == []


def test_a_preflight_from_an_allowed_origin_allows_get_and_post(api: Api) -> None:
    status, headers, _ = api.call("OPTIONS", "/v1/models", headers={"Origin": PAGE, "Access-Control-Request-Method": "GET"})

    assert status == 204
    assert headers["access-control-allow-origin"] == PAGE
    assert {m.strip() for m in headers["access-control-allow-methods"].split(",")} >= {"GET", "POST"}
    assert api.events == []


def test_a_preflight_from_another_origin_gets_no_grant(api: Api) -> None:
    _, headers, _ = api.call("OPTIONS", "/v1/models", headers={"Origin": "https://evil.example",
                                                               "Access-Control-Request-Method": "GET"})

    assert "access-control-allow-origin" not in headers


def test_a_function_missing_for_a_route_of_the_table_is_refused_at_construction(provider: LocalIdentityProvider) -> None:
    with pytest.raises(ValueError, match=RELAY_FUNCTION):
        LocalHttpApi({TOKEN_FUNCTION: RecordingFunction(TOKEN_FUNCTION)},
                     JwtAuthorizer(provider.issuer, [provider.audience], provider.jwks_url))

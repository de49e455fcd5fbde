"""What the reliability tests share: short/long sizes, events for a given user, answers' bodies, a relay on test parts."""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest

from behest_lambda.app import Service
from behest_lambda.cores import relay_core
from behest_lambda.relay import Relay
from behest_lambda.routes import HTTP_API, RELAY_FUNCTION, routes_for
from behest_lambda.settings import Settings
from behest_lambda.telemetry import Telemetry
from tests.support import load_event

API_KEY = "behest_sk_live_reliability_suite"


def sized(short: Any, long: Any) -> pytest.MarkDecorator:
    """Parametrize `size`: the short run always, the long one with --long."""
    return pytest.mark.parametrize(
        "size", [pytest.param(short, id="short"), pytest.param(long, id="long", marks=pytest.mark.long)]
    )


def event_for(name: str, user: str = "user-42", *, body: Optional[Any] = None, **headers: str) -> dict[str, Any]:
    """events/<name>.json for a verified `user`, with a JSON `body` and extra headers when given."""
    event = load_event(name)
    event["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = user
    if body is not None:
        event["body"] = json.dumps(body)
    event["headers"].update(headers)
    return event


def body_of(response: dict[str, Any]) -> Any:
    return json.loads(response["body"])


def relay_service(settings: Settings, relay: Relay, telemetry: Telemetry) -> Service:
    """The RelayFunction's service (every relayed route of the HTTP API) around a given relay (say, one whose
    `send` records Behest's responses)."""
    routes = routes_for(HTTP_API, RELAY_FUNCTION)
    return Service(settings, telemetry, routes, HTTP_API,
                   {route.core: relay_core(route.core, relay, settings.relay, telemetry) for route in routes})

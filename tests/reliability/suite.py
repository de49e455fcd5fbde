"""What the reliability tests share: short/long sizes, events for a given user, answers' bodies."""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest

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

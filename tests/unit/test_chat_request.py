"""What the relay checks and rewrites in a chat-completions body before anything leaves the function."""

from __future__ import annotations

from typing import Any, Optional

import pytest

from behest_lambda.errors import InvalidRequestError, UpstreamError, UpstreamTimeoutError
from behest_lambda.identity import Identity
from behest_lambda.relay import ChatRequest, buffered_stream, chat_request
from behest_lambda.settings import Settings

USER = Identity(user_id="user-42")
MESSAGES = [{"role": "user", "content": "hi"}]


def settings(**env: str) -> Settings:
    return Settings.from_env({"BEHEST_KEY": "behest_sk_live_x", **env})


def request(body: Optional[dict[str, Any]], session: Optional[str] = None, **env: str) -> ChatRequest:
    return chat_request(body, USER, settings(**env), session)


def test_the_user_field_is_always_the_verified_user() -> None:
    assert request({"messages": MESSAGES, "user": "admin"}).body["user"] == "user-42"
    assert request({"messages": MESSAGES}).body["user"] == "user-42"


def test_unknown_fields_pass_through_untouched_and_the_input_is_not_mutated() -> None:
    body = {"messages": MESSAGES, "temperature": 0.2, "tools": [{"type": "function"}], "stream_options": {"a": 1}}

    rewritten = request(body).body

    assert {k: rewritten[k] for k in ("temperature", "tools", "stream_options")} == {
        "temperature": 0.2, "tools": [{"type": "function"}], "stream_options": {"a": 1}}
    assert "user" not in body


def test_model_may_be_omitted() -> None:
    assert "model" not in request({"messages": MESSAGES}).body


@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        {"messages": []},
        {"messages": "hi"},
        {"messages": ["hi"]},
        {"messages": [{"content": "no role"}]},
        {"messages": [{"role": ""}]},
        {"messages": MESSAGES, "stream": "yes"},
        {"messages": MESSAGES, "model": 5},
    ],
)
def test_bodies_the_relay_cannot_rely_on_are_refused(body: Optional[dict[str, Any]]) -> None:
    with pytest.raises(InvalidRequestError):
        request(body)


def test_a_model_outside_the_allowlist_is_refused_and_inside_passes() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        request({"messages": MESSAGES, "model": "gpt-big"}, BEHEST_ALLOWED_MODELS="small, medium")

    assert caught.value.code == "model_not_allowed"
    allowed = request({"messages": MESSAGES, "model": "medium"}, BEHEST_ALLOWED_MODELS="small,medium")
    assert allowed.body["model"] == "medium"


@pytest.mark.parametrize(
    ("given", "expected"),
    [({}, {"max_tokens": 256}), ({"max_tokens": 10}, {"max_tokens": 10}), ({"max_tokens": 9999}, {"max_tokens": 256}),
     ({"max_completion_tokens": 9999}, {"max_completion_tokens": 256})],
)
def test_the_max_tokens_ceiling_caps_or_sets_the_limit(given: dict[str, int], expected: dict[str, int]) -> None:
    body = request({"messages": MESSAGES, **given}, BEHEST_MAX_TOKENS="256").body

    assert {k: body[k] for k in expected} == expected


def test_a_non_numeric_max_tokens_is_refused_under_a_ceiling() -> None:
    with pytest.raises(InvalidRequestError):
        request({"messages": MESSAGES, "max_tokens": "lots"}, BEHEST_MAX_TOKENS="256")


def test_a_valid_session_header_is_kept_and_an_unsafe_one_refused() -> None:
    assert request({"messages": MESSAGES}, "sess-1").session_id == "sess-1"
    with pytest.raises(InvalidRequestError):
        request({"messages": MESSAGES}, "bad\r\nheader")


def test_a_buffered_stream_that_breaks_drops_the_torn_event_and_ends_with_an_error_event() -> None:
    def chunks() -> Any:
        yield b'data: {"a":1}\n\n'
        yield b'data: {"torn'
        raise UpstreamError("Behest's stream broke off")

    joined = buffered_stream(chunks())

    assert joined.startswith(b'data: {"a":1}\n\ndata: {"error":')
    assert b"torn" not in joined
    assert b"broke off" in joined


def test_a_buffered_stream_that_fails_before_any_byte_raises() -> None:
    def chunks() -> Any:
        raise UpstreamTimeoutError("late")
        yield b""

    with pytest.raises(UpstreamTimeoutError):
        buffered_stream(chunks())

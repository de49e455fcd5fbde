"""What the relay checks and rewrites in a chat-completions body before anything leaves the function."""

from __future__ import annotations

import json
from typing import Any, Optional

import pytest

from behest_lambda.app import buffered_stream
from behest_lambda.errors import InvalidRequestError, UpstreamError, UpstreamTimeoutError
from behest_lambda.identity import Identity
from behest_lambda.relay import UpstreamCall, chat_call, relayed_events
from behest_lambda.request import Request
from behest_lambda.settings import Settings
from behest_lambda.usage import UsageMeter

USER = Identity(user_id="user-42")
MESSAGES = [{"role": "user", "content": "hi"}]


def settings(**env: str) -> Settings:
    return Settings.from_env({"BEHEST_KEY": "behest_sk_live_x", **env})


def request(body: Optional[dict[str, Any]], session: Optional[str] = None, **env: str) -> UpstreamCall:
    headers = {"x-session-id": session} if session is not None else {}
    data = b"" if body is None else json.dumps(body).encode()
    return chat_call(Request("POST", "/v1/chat/completions", headers, {}, data, "req-1"), USER, settings(**env).relay)


def test_the_user_field_is_always_the_verified_user() -> None:
    assert request({"messages": MESSAGES, "user": "admin"}).body["user"] == "user-42"
    assert request({"messages": MESSAGES}).body["user"] == "user-42"


def test_a_spoofed_safety_identifier_is_replaced_by_the_verified_user() -> None:
    # OpenAI's chat API takes safety_identifier too, and it supersedes `user` (the AI SDK sends it).
    body = request({"messages": MESSAGES, "safety_identifier": "mallory"}).body

    assert (body["user"], body["safety_identifier"]) == ("user-42", "user-42")


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

    joined, failure = buffered_stream(relayed_events(chunks(), UsageMeter("chat", "user-42", None, None, None, True),
                                                     drop_usage_chunk=False))

    assert isinstance(failure, UpstreamError)
    assert joined.startswith(b'data: {"a":1}\n\ndata: {"error":')
    assert b"torn" not in joined
    assert b"broke off" in joined


def test_a_buffered_stream_that_fails_before_any_byte_raises() -> None:
    def chunks() -> Any:
        raise UpstreamTimeoutError("late")
        yield b""

    with pytest.raises(UpstreamTimeoutError):
        buffered_stream(chunks())


def test_n_above_the_ceiling_is_refused_and_within_it_passes() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        request({"messages": MESSAGES, "n": 128})

    assert caught.value.code == "n_too_large"
    assert request({"messages": MESSAGES, "n": 2}).body["n"] == 2
    with pytest.raises(InvalidRequestError):
        request({"messages": MESSAGES, "n": 3}, BEHEST_MAX_N="2")


def test_without_configuration_max_tokens_is_still_held_to_the_default_ceiling() -> None:
    assert request({"messages": MESSAGES, "max_tokens": 10**9}).body["max_tokens"] == 4096
    assert request({"messages": MESSAGES}).body["max_tokens"] == 4096


def test_a_stream_always_asks_behest_for_usage_and_remembers_whether_the_client_did() -> None:
    plain = request({"messages": MESSAGES, "stream": True})
    asked = request({"messages": MESSAGES, "stream": True, "stream_options": {"include_usage": True}})

    assert plain.body["stream_options"] == {"include_usage": True} and plain.client_wants_usage is False
    assert asked.body["stream_options"] == {"include_usage": True} and asked.client_wants_usage is True

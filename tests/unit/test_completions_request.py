"""Legacy completions take chat's policy: model allowlist, n (and best_of) cap, max_tokens ceiling, the verified user."""

from __future__ import annotations

import json
from typing import Any

import pytest

from behest_lambda.errors import InvalidRequestError
from behest_lambda.identity import Identity
from behest_lambda.relay import POLICIES, UpstreamCall
from behest_lambda.request import Request
from behest_lambda.settings import Settings
from tests.support import load_event


def call(body: Any, **env: str) -> UpstreamCall:
    settings = Settings.from_env({"BEHEST_KEY": "behest_sk_live_x", **env}).relay
    request = Request("POST", "/v1/completions", {}, {}, json.dumps(body).encode(), "req-1")
    return POLICIES["completions"](request, Identity(user_id="user-42"), settings)


def test_the_sample_event_is_forwarded_for_the_verified_user_under_the_ceiling() -> None:
    body = json.loads(load_event("completions")["body"])

    forwarded = call({**body, "user": "mallory", "max_tokens": 10**6}, BEHEST_MAX_TOKENS="256")

    assert (forwarded.path, forwarded.route, forwarded.stream) == ("/v1/completions", "completions", False)
    assert forwarded.body is not None and (forwarded.body["user"], forwarded.body["max_tokens"]) == ("user-42", 256)
    assert "safety_identifier" not in forwarded.body  # not a field of the legacy API


def test_an_absent_max_tokens_is_the_apis_own_default_of_16_not_the_ceiling() -> None:
    """OpenAI's legacy completions default max_tokens to 16 (https://platform.openai.com/docs/api-reference/completions/create):
    a client that sends none expects a short answer, so the relay must not raise it to the ceiling."""
    assert call({"prompt": "hi"}).body == {"prompt": "hi", "user": "user-42", "max_tokens": 16}
    assert call({"prompt": "hi"}, BEHEST_MAX_TOKENS="8").body == {"prompt": "hi", "user": "user-42", "max_tokens": 8}


@pytest.mark.parametrize("prompt", ["hi", ["a", "b"], [1, 2, 3], [[1, 2], [3]]])
def test_every_prompt_shape_of_the_api_is_taken(prompt: Any) -> None:
    assert call({"prompt": prompt}).body["prompt"] == prompt  # type: ignore[index]


@pytest.mark.parametrize("prompt", [None, "", [], [""], [1, "a"], {"text": "hi"}, 7])
def test_a_missing_or_malformed_prompt_is_refused(prompt: Any) -> None:
    with pytest.raises(InvalidRequestError):
        call({"prompt": prompt})


@pytest.mark.parametrize("name", ["n", "best_of"])
def test_n_and_best_of_are_held_to_the_choice_cap(name: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        call({"prompt": "hi", name: 5}, BEHEST_MAX_N="4")

    assert caught.value.code == "n_too_large"
    assert call({"prompt": "hi", name: 4}, BEHEST_MAX_N="4").body[name] == 4  # type: ignore[index]


def test_a_model_outside_the_allowlist_is_refused() -> None:
    with pytest.raises(InvalidRequestError) as caught:
        call({"prompt": "hi", "model": "gpt-4-32k"}, BEHEST_ALLOWED_MODELS="behest-default")

    assert caught.value.code == "model_not_allowed"


def test_a_stream_always_asks_behest_for_usage_and_remembers_whether_the_client_did() -> None:
    plain = call(json.loads(load_event("completions_stream")["body"]))
    asked = call({"prompt": "hi", "stream": True, "stream_options": {"include_usage": True}})

    assert plain.stream and plain.body["stream_options"] == {"include_usage": True}  # type: ignore[index]
    assert (plain.client_wants_usage, asked.client_wants_usage) == (False, True)
    assert plain.stream_style == "chat"

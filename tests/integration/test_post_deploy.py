"""The post-deploy check: mint, relay, stream and refuse, as a client sees the stack from outside.

Runs against a deployed stack's Outputs (`STACK_NAME`, AWS credentials, `BEHEST_TEST_ID_TOKEN`)
or, with `BEHEST_INTEGRATION_TARGET=local` or no `STACK_NAME`, against `make dev`'s URLs; see
targets.py. Only public entry points are used, so every check must hold against the real Behest.
"""

from __future__ import annotations

import base64
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import openai
import pytest

from tests.integration.targets import TARGET_VARIABLE, Targets, TargetUnavailable, deployed_stack, target_name

if target_name(os.environ) == "deployed":
    # Resolved at collection so that a missing piece skips the module once, with one reason.
    try:
        deployed_stack()
    except TargetUnavailable as e:
        pytest.skip(f"{e} ({TARGET_VARIABLE}=local runs the same checks against make dev's stack)",
                    allow_module_level=True)

HTTP_TIMEOUT_SECONDS = 30  # a cold start on a deployed stack takes seconds, not tens of them
# Clocks of the test machine and of Lambda may differ a little; a unit mistake (ms for s) is far larger.
CLOCK_SKEW_SECONDS = 30
COUNTING = [{"role": "user", "content": "Count from one to twenty in words, separated by spaces."}]
HI = [{"role": "user", "content": "hi"}]
MALFORMED_JSON = b'{"messages": [{"role": "user", "content": "hi"'
FRONTS = ["http_api", "function_url"]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(method: str, url: str, token: Optional[str] = None, body: Optional[bytes] = None) -> Answer:
    """One HTTP exchange with urllib; an error status is an answer, not an exception."""
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_SECONDS) as response:
            return Answer(response.status, dict(response.headers.items()), response.read())
    except urllib.error.HTTPError as e:
        with e:
            return Answer(e.code, dict(e.headers.items()), e.read())


def sdk(base_url: str, token: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url, api_key=token, max_retries=0, timeout=HTTP_TIMEOUT_SECONDS)


def forged(token: str) -> str:
    """The same identity token with a signature its issuer never made."""
    header, payload, signature = token.split(".")
    return f"{header}.{payload}.{'A' * len(signature)}"


def segment(part: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def front_url(targets: Targets, front: str) -> str:
    return targets.openai_base_url if front == "http_api" else targets.stream_base_url


def assert_openai_error(answer: Answer, status: int) -> dict[str, Any]:
    """`status` with an OpenAI-shaped JSON body `{"error": {"message", "type", …}}`; returns the error."""
    assert answer.status == status
    assert answer.headers.get("Content-Type", answer.headers.get("content-type", "")).startswith("application/json")
    error = answer.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    return dict(error)


@pytest.fixture(scope="module")
def model(targets: Targets) -> str:
    """BEHEST_TEST_MODEL when given, else the first model the stack lists."""
    return targets.model or sdk(targets.openai_base_url, targets.identity_token).models.list().data[0].id


def test_a_signed_in_caller_mints_a_behest_token_that_expires_when_the_answer_says(targets: Targets) -> None:
    before = time.time()
    answer = call("POST", targets.token_endpoint, targets.identity_token, b'{"sessionId": "post-deploy-check"}')

    assert answer.status == 200
    minted = answer.json()
    assert set(minted) == {"token", "ttl", "sessionId", "expiresAt"}
    assert minted["sessionId"] == "post-deploy-check"
    parts = minted["token"].split(".")
    assert len(parts) == 3 and all(parts)
    header, claims = segment(parts[0]), segment(parts[1])
    assert header["alg"] == "RS256" and header["kid"]
    ttl, expires_at = minted["ttl"], minted["expiresAt"]
    assert isinstance(ttl, int) and ttl > 0 and isinstance(expires_at, int)
    assert before + ttl - CLOCK_SKEW_SECONDS <= expires_at <= time.time() + ttl + CLOCK_SKEW_SECONDS
    # Equal when the function signs; within a clock's drift when Behest mints (API-key mode).
    assert abs(claims["exp"] - expires_at) <= 5


def test_an_openai_client_gets_a_chat_completion_through_the_http_api(targets: Targets, model: str) -> None:
    completion = sdk(targets.openai_base_url, targets.identity_token).chat.completions.create(model=model, messages=HI)

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert isinstance(completion.choices[0].message.content, str) and completion.choices[0].message.content.strip()


def test_an_openai_client_lists_the_models_through_the_http_api(targets: Targets) -> None:
    models = sdk(targets.openai_base_url, targets.identity_token).models.list().data

    assert models and all(isinstance(m.id, str) and m.id and m.object == "model" for m in models)


def test_the_function_url_streams_the_first_delta_before_the_last(targets: Targets, model: str) -> None:
    started = time.monotonic()
    deltas: list[float] = []
    arrivals: list[float] = []
    finish_reasons: list[str] = []
    text = ""
    stream = sdk(targets.stream_base_url, targets.identity_token).chat.completions.create(
        model=model, messages=COUNTING, stream=True)
    with stream:
        for chunk in stream:
            arrivals.append(time.monotonic() - started)
            for choice in chunk.choices:
                if choice.delta.content:
                    deltas.append(arrivals[-1])
                    text += choice.delta.content
                if choice.finish_reason:
                    finish_reasons.append(choice.finish_reason)

    assert text.strip() and finish_reasons
    assert len(deltas) > 1, "the answer came in one chunk: the Function URL did not stream"
    assert deltas[0] < arrivals[-1]
    if targets.chunk_delay is not None:
        # The upstream paces its chunks: a live stream hands over the first while the rest are still coming.
        assert arrivals[-1] - deltas[0] >= (len(deltas) - 1) * targets.chunk_delay * 0.5


def test_the_http_api_refuses_a_missing_or_forged_identity_token_with_its_own_401(targets: Targets) -> None:
    unauthorized = {"message": "Unauthorized"}

    anonymous = call("POST", targets.token_endpoint, body=b"{}")
    forged_mint = call("POST", targets.token_endpoint, forged(targets.identity_token), b"{}")
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(targets.openai_base_url, forged(targets.identity_token)).chat.completions.create(model="any", messages=HI)

    assert (anonymous.status, anonymous.json()) == (401, unauthorized)
    assert (forged_mint.status, forged_mint.json()) == (401, unauthorized)
    assert refused.value.status_code == 401 and refused.value.response.json() == unauthorized


def test_the_function_url_refuses_a_missing_or_forged_identity_token_with_an_openai_shaped_401(targets: Targets) -> None:
    anonymous = call("POST", targets.stream_base_url + "/chat/completions", body=json.dumps({"messages": HI}).encode())
    with pytest.raises(openai.AuthenticationError) as refused:
        sdk(targets.stream_base_url, forged(targets.identity_token)).chat.completions.create(
            model="any", messages=HI, stream=True)

    assert_openai_error(anonymous, 401)
    assert refused.value.status_code == 401
    assert isinstance(refused.value.response.json()["error"]["message"], str)


@pytest.mark.parametrize("front", FRONTS)
def test_a_malformed_request_body_gets_an_openai_shaped_400(targets: Targets, front: str) -> None:
    answer = call("POST", front_url(targets, front) + "/chat/completions", targets.identity_token, MALFORMED_JSON)

    assert assert_openai_error(answer, 400)["type"] == "invalid_request_error"


def test_a_malformed_mint_body_gets_an_openai_shaped_400(targets: Targets) -> None:
    answer = call("POST", targets.token_endpoint, targets.identity_token, b'{"ttl": ')

    assert assert_openai_error(answer, 400)["type"] == "invalid_request_error"


@pytest.mark.parametrize("front", FRONTS)
def test_an_unknown_path_gets_an_openai_shaped_404(targets: Targets, front: str) -> None:
    answer = call("GET", front_url(targets, front) + "/no-such-route", targets.identity_token)

    assert_openai_error(answer, 404)

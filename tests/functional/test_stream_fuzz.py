"""Fuzzing the public Function URL through the real Runtime API loop: malformed and forged caller tokens.

Every answer must be a 4xx with an OpenAI-shaped JSON body, streamed as a whole response, and
nothing may reach the Runtime API's /error endpoint (which Lambda counts as a function error and
which pages an operator). The loop runs in-process against the Runtime API emulator.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any, Iterator

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from behest_lambda.app import Service
from behest_lambda.routes import STREAM_FUNCTION
from behest_lambda.settings import Settings
from behest_lambda.stream_handler import StreamFunction
from behest_lambda.stream_runtime import RuntimeApi, RuntimeApiError, serve
from tests.runtime_emulator import RuntimeEmulator
from tests.support import CapturedTelemetry, load_event, private_key, sign_env
from tests.unit.test_caller_token import JwksServer

ISSUER = "https://issuer.example.com/pool-1"
AUDIENCE = "app-client-1"
IDP_KID = "idp-key-1"


class Loop:
    """The streaming function served by its own Runtime API loop, in a thread, against the emulator."""

    def __init__(self, jwks: JwksServer) -> None:
        env = sign_env(BEHEST_BASE_URL="http://127.0.0.1:9", BEHEST_CALLER_ISSUER=ISSUER,
                       BEHEST_CALLER_AUDIENCE=AUDIENCE, BEHEST_CALLER_JWKS_URL=jwks.url)
        self.telemetry = CapturedTelemetry("behest-stream")
        self.function = StreamFunction(Service.build(STREAM_FUNCTION, Settings.from_env(env), self.telemetry))
        self.emulator = RuntimeEmulator().start()
        self.answers: dict[int, int] = {}
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            serve(RuntimeApi(self.emulator.address), self.function, self.telemetry)
        except RuntimeApiError:
            pass  # the emulator stopped

    def answer(self, authorization: str) -> tuple[int, dict[str, Any]]:
        event = load_event("stream_chat_completion")
        event["headers"]["authorization"] = authorization
        request_id = self.emulator.queue(event)
        response = self.emulator.response(request_id, timeout=10)
        assert self.emulator.outcome(request_id) == "response"
        assert not response.trailers, response.trailers
        status = int(response.prelude()["statusCode"])
        self.answers[status] = self.answers.get(status, 0) + 1
        return status, json.loads(response.payload())

    def stop(self) -> None:
        self.emulator.stop()
        self._thread.join(5)


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    jwks = JwksServer()
    running = Loop(jwks)
    yield running
    running.stop()
    jwks.stop()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def signed(header: Any, payload: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(payload)}"
    signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(
        signing_input.encode(), private_key("tenant"))
    return f"{signing_input}.{b64(signature)}"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(10**500), max_value=10**500) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
claim_sets = st.fixed_dictionaries(
    {},
    optional={name: json_values for name in ("iss", "aud", "sub", "exp", "nbf", "iat", "client_id", "plan")},
)
headers = st.fixed_dictionaries({"alg": st.sampled_from(["RS256", "none", "HS256", "RS512", 1, None]),
                                 "kid": st.sampled_from([IDP_KID, "other", "", 7, None])})


def token_text() -> st.SearchStrategy[str]:
    """Bearer values: forged signatures over arbitrary claims, mangled segments, arbitrary text."""
    forged = st.builds(lambda h, c: signed(h, json.dumps(c, default=str).encode()), headers, claim_sets)
    raw_payload = st.builds(lambda h, p: signed(h, p), headers, st.binary(max_size=200))
    segments = st.lists(st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40),
                        min_size=1, max_size=5).map(".".join)
    return st.one_of(forged, raw_payload, segments, st.text(max_size=200))


@settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(token=token_text())
def test_malformed_and_forged_tokens_get_a_json_4xx_and_never_a_function_error(loop: Loop, token: str) -> None:
    header_safe = token.replace("\r", "").replace("\n", "")
    status, body = loop.answer(f"Bearer {header_safe}")

    assert 400 <= status < 500, body
    assert set(body["error"]) == {"message", "type", "code"}


def test_the_fuzz_run_reached_the_loop_and_left_no_traceback(loop: Loop, figures: Any) -> None:
    started = time.monotonic()
    status, _ = loop.answer("Bearer " + jwt.encode({"iss": ISSUER}, "k" * 32, algorithm="HS256"))

    assert status == 401
    text = loop.telemetry.text()
    assert "Traceback" not in text and "unhandled error" not in text
    figures("Streaming route fuzzing (runtime loop)",
            f"{sum(loop.answers.values())} invocations, answers {dict(sorted(loop.answers.items()))}, "
            f"0 reached /error; last in {(time.monotonic() - started) * 1000:.1f} ms")

"""The streaming function for real: its own Runtime API loop in a fresh process, against a Runtime API
emulator, the stand-in Behest gateway and a local identity provider; and the OpenAI SDK reading it
through a local Function URL.

Streaming is shown by the order of events on one clock (time.monotonic, shared by every process
on the machine): a chunk reaching the emulator (or the SDK) before the stand-in sent its last one
is a chunk that was not buffered. No assertion depends on how fast the machine is.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

import jwt
import openai
import pytest

from behest_lambda.errors import UpstreamError, sse_error_event
from behest_lambda.relay import sse_events
from behest_lambda.stream_handler import AnswerBody, StreamFunction
from behest_lambda.stream_runtime import RuntimeApi, serve
from devstack.identity import LocalIdentityProvider
from devstack.standin import Fault, StandinGateway
from devstack.stream_url import StreamFunctionUrl
from tests.runtime_emulator import DELIMITER, RecordedResponse, RuntimeEmulator
from tests.support import ROOT, CapturedTelemetry, load_event, private_key, sign_env

FUNCTIONS = ROOT / "functions"
BOOTSTRAP = FUNCTIONS / "stream-bootstrap"
HI = [{"role": "user", "content": "hi"}]
GREETING = "Hello user-42! You said: hi"
PACING = 0.2
STARTUP_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def identity_provider() -> Iterator[LocalIdentityProvider]:
    with LocalIdentityProvider() as provider:
        yield provider


@pytest.fixture(autouse=True)
def fresh_standin(standin: StandinGateway) -> Iterator[None]:
    standin.clear_faults()
    standin.clear_records()
    standin.chunk_delay = 0.0
    yield
    standin.clear_faults()
    standin.chunk_delay = 0.0


def function_env(provider: LocalIdentityProvider, standin: StandinGateway, **overrides: str) -> dict[str, str]:
    """The streaming function's configuration; the JWKS URL is left to its default (issuer + well-known path)."""
    env = {"BEHEST_BASE_URL": standin.url, "BEHEST_UPSTREAM_TIMEOUT": "5", "BEHEST_CALLER_ISSUER": provider.issuer,
           "BEHEST_CALLER_AUDIENCE": provider.audience}
    return sign_env(**{**env, **overrides})


class RuntimeProcess:
    """`python -m behest_lambda.stream_runtime` (or the wrapper script) in a fresh process, output kept in a file."""

    def __init__(self, emulator: RuntimeEmulator, env: Mapping[str, str], log: Path,
                 argv: Optional[list[str]] = None) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("BEHEST_", "PYTHON", "AWS_"))}
        full_env = {**base, **env, "AWS_LAMBDA_RUNTIME_API": emulator.address, "LAMBDA_TASK_ROOT": str(FUNCTIONS)}
        if argv is None:
            argv = [sys.executable, "-m", "behest_lambda.stream_runtime"]
            full_env["PYTHONPATH"] = str(FUNCTIONS)
        self.log = log
        self._log_file = log.open("wb")
        self.process = subprocess.Popen(argv, env=full_env, stdout=self._log_file, stderr=subprocess.STDOUT,
                                        cwd=ROOT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(10)
        self._log_file.close()

    def records(self) -> list[dict[str, Any]]:
        lines = self.log.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]


@pytest.fixture(scope="module")
def emulator() -> Iterator[RuntimeEmulator]:
    with RuntimeEmulator() as runtime_api:
        yield runtime_api


@pytest.fixture(scope="module")
def runtime(emulator: RuntimeEmulator, identity_provider: LocalIdentityProvider, standin: StandinGateway,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[RuntimeProcess]:
    process = RuntimeProcess(emulator, function_env(identity_provider, standin),
                             tmp_path_factory.mktemp("runtime") / "stream_runtime.log")
    yield process
    process.stop()


def chat_event(provider: LocalIdentityProvider, body: Optional[dict[str, Any]] = None, *,
               authorization: Optional[str] = "issue", **changes: Any) -> dict[str, Any]:
    """events/stream_chat_completion.json with a real identity token (or the given Authorization) and body."""
    event = load_event("stream_chat_completion")
    if authorization == "issue":
        authorization = "Bearer " + provider.issue("user-42")
    if authorization is None:
        del event["headers"]["authorization"]
    else:
        event["headers"]["authorization"] = authorization
    event["body"] = json.dumps(body if body is not None else {"model": "m", "stream": True, "messages": HI})
    event.update(changes)
    return event


def invoke(emulator: RuntimeEmulator, event: Any) -> RecordedResponse:
    return emulator.response(emulator.queue(event), timeout=STARTUP_TIMEOUT)


def sse_data(payload: bytes) -> list[Any]:
    """The `data:` values of an SSE body, JSON-decoded ([DONE] kept as text)."""
    values: list[Any] = []
    for event in payload.decode("utf-8").split("\n\n"):
        for line in event.splitlines():
            if line.startswith("data: "):
                value = line[len("data: "):]
                values.append(value if value == "[DONE]" else json.loads(value))
    return values


def streamed_text(payload: bytes) -> str:
    return "".join(chunk["choices"][0]["delta"].get("content") or ""
                   for chunk in sse_data(payload) if isinstance(chunk, dict) and chunk.get("choices"))


def test_tokens_reach_the_runtime_api_before_behest_has_finished(runtime: RuntimeProcess, emulator: RuntimeEmulator,
                                                                 identity_provider: LocalIdentityProvider,
                                                                 standin: StandinGateway) -> None:
    standin.chunk_delay = PACING
    # With usage asked for, the relay passes on every event Behest sends (it drops the usage-only one otherwise).
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True}, "messages": HI}

    response = invoke(emulator, chat_event(identity_provider, body))

    sent = [event for event in standin.events if event.kind == "chunk_sent"]
    data_chunks = response.chunks[1:]
    first_content = next(chunk for chunk in data_chunks if b'"content": "Hello' in chunk.data)
    assert first_content.at < sent[-1].at, "the first token arrived only after Behest had sent everything"
    # One HTTP chunk per SSE event, each through before Behest sent the next.
    assert len(data_chunks) == len(sent) + 1  # + data: [DONE]
    for chunk, next_sent in zip(data_chunks[: len(sent) - 1], sent[1:], strict=True):
        assert chunk.at < next_sent.at
    assert streamed_text(response.payload()) == GREETING


def test_the_answer_is_a_json_prelude_then_eight_nul_bytes_then_the_stream(runtime: RuntimeProcess,
                                                                           emulator: RuntimeEmulator,
                                                                           identity_provider: LocalIdentityProvider,
                                                                           standin: StandinGateway) -> None:
    response = invoke(emulator, chat_event(identity_provider))

    first = response.chunks[0].data
    assert first.endswith(DELIMITER) and first.count(b"\0") == 8
    prelude = json.loads(first[: -len(DELIMITER)])
    assert prelude["statusCode"] == 200
    assert prelude["cookies"] == []
    assert prelude["headers"]["content-type"] == "text/event-stream"
    assert prelude["headers"]["x-session-id"] == "chat-session-1"
    assert response.headers["lambda-runtime-function-response-mode"] == "streaming"
    assert response.headers["transfer-encoding"] == "chunked"
    assert response.headers["content-type"] == "application/vnd.awslambda.http-integration-response"
    assert response.headers["trailer"] == "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body"
    assert response.trailers == {}
    assert sse_data(response.payload())[-1] == "[DONE]"
    assert standin.requests[-1].claims["uid"] == "user-42"  # type: ignore[index]


def test_a_non_streaming_request_gets_a_json_completion(runtime: RuntimeProcess, emulator: RuntimeEmulator,
                                                        identity_provider: LocalIdentityProvider) -> None:
    response = invoke(emulator, chat_event(identity_provider, {"model": "m", "messages": HI}))

    assert response.prelude()["statusCode"] == 200
    assert response.prelude()["headers"]["content-type"] == "application/json"
    completion = json.loads(response.payload())
    assert completion["choices"][0]["message"]["content"] == GREETING


def test_an_upstream_429_keeps_its_status_and_retry_after(runtime: RuntimeProcess, emulator: RuntimeEmulator,
                                                          identity_provider: LocalIdentityProvider,
                                                          standin: StandinGateway) -> None:
    standin.inject(Fault("status", status=429, retry_after=7, code="rate_limited", path="chat"))

    response = invoke(emulator, chat_event(identity_provider))

    prelude = response.prelude()
    assert prelude["statusCode"] == 429
    assert prelude["headers"]["retry-after"] == "7"
    error = json.loads(response.payload())["error"]
    assert (error["code"], error["type"]) == ("rate_limited", "rate_limit_error")


@pytest.mark.parametrize("status", [500, 503])
def test_an_upstream_5xx_is_a_502(runtime: RuntimeProcess, emulator: RuntimeEmulator,
                                  identity_provider: LocalIdentityProvider, standin: StandinGateway,
                                  status: int) -> None:
    standin.inject(Fault("status", status=status, path="chat"))

    response = invoke(emulator, chat_event(identity_provider))

    assert response.prelude()["statusCode"] == 502
    assert json.loads(response.payload())["error"]["code"] == "upstream_error"


def test_a_reset_mid_stream_ends_with_an_error_event_and_a_clean_end(runtime: RuntimeProcess,
                                                                     emulator: RuntimeEmulator,
                                                                     identity_provider: LocalIdentityProvider,
                                                                     standin: StandinGateway) -> None:
    standin.inject(Fault("reset_after", chunks=2, path="chat"))

    request_id = emulator.queue(chat_event(identity_provider))
    response = emulator.response(request_id, timeout=STARTUP_TIMEOUT)

    assert response.prelude()["statusCode"] == 200
    events = sse_data(response.payload())
    assert len(events) == 3 and "[DONE]" not in events
    assert "broke off" in events[-1]["error"]["message"]
    assert response.chunks[-1].data == sse_error_event(UpstreamError(events[-1]["error"]["message"]))
    # An ordinary upstream failure: no error trailers, so Lambda does not count a function error.
    assert response.trailers == {}
    warning = wait_for_record(runtime, "stream ended with an error event")
    assert (warning["level"], warning["code"]) == ("WARNING", "upstream_error")


def test_a_stream_still_running_near_the_deadline_ends_cleanly_before_lambda_would_cut_it(
    runtime: RuntimeProcess, emulator: RuntimeEmulator, identity_provider: LocalIdentityProvider,
    standin: StandinGateway,
) -> None:
    # A 3 s invocation and a Behest that never ends (BEHEST_UPSTREAM_TIMEOUT is 5 s here): the deadline decides.
    standin.inject(Fault("endless", seconds=0.05, path="chat"))

    request_id = emulator.queue(chat_event(identity_provider), timeout_ms=3_000)
    response = emulator.response(request_id, timeout=STARTUP_TIMEOUT)
    ended_at = response.chunks[-1].at

    handed_out = emulator.handed_out_at(request_id)
    assert handed_out is not None and ended_at - handed_out < 3.0, "the stream ran into the deadline"
    assert response.prelude()["statusCode"] == 200 and len(response.chunks) > 2
    last = sse_data(response.chunks[-1].data)[-1]
    assert "error" in last, last
    assert response.trailers == {}  # a clean end: no function error
    assert wait_for_record(runtime, "stream ended with an error event")["level"] == "WARNING"


def wait_for_record(runtime: RuntimeProcess, message: str, timeout: float = 5.0) -> dict[str, Any]:
    """The runtime's first log record with this message (the process writes it just after answering)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [record for record in runtime.records() if record.get("message") == message]
        if found or time.monotonic() > deadline:
            assert found, f"no {message!r} in the runtime's log"
            return found[0]
        time.sleep(0.05)


@pytest.mark.parametrize("event", [b"not json at all", b"[1, 2, 3]", b"\xff\xfe"], ids=["text", "array", "bytes"])
def test_an_unreadable_event_is_reported_and_the_next_invocation_is_served(runtime: RuntimeProcess,
                                                                           emulator: RuntimeEmulator,
                                                                           identity_provider: LocalIdentityProvider,
                                                                           event: bytes) -> None:
    bad = emulator.queue(event)
    good = emulator.queue(chat_event(identity_provider, {"model": "m", "messages": HI}))

    error = emulator.error(bad, timeout=STARTUP_TIMEOUT)
    assert error.error_type == "Runtime.InvalidEvent"
    assert error.body["errorType"] == "Runtime.InvalidEvent"
    assert emulator.response(good, timeout=STARTUP_TIMEOUT).prelude()["statusCode"] == 200
    assert runtime.process.poll() is None


def forged_tokens(provider: LocalIdentityProvider) -> dict[str, Optional[str]]:
    claims = {"sub": "user-42", "iss": provider.issuer, "aud": provider.audience, "exp": int(time.time()) + 600}
    return {
        "missing": None,
        "not a bearer": "Basic dXNlcjpwYXNz",
        "raw Behest key": "Bearer behest_sk_live_anything",
        "alg none": "Bearer " + jwt.encode(claims, None, algorithm="none", headers={"kid": provider.kid}),
        "HS256": "Bearer " + jwt.encode(claims, "an attacker's own secret, 32+ bytes long", algorithm="HS256",
                                        headers={"kid": provider.kid}),
        "other key, provider's kid": "Bearer " + jwt.encode(claims, private_key("other"), algorithm="RS256",
                                                            headers={"kid": provider.kid}),
        "expired": "Bearer " + provider.issue("user-42", ttl=-120),
        "wrong audience": "Bearer " + provider.issue("user-42", audience="another-app"),
        "wrong issuer": "Bearer " + provider.issue("user-42", issuer="https://evil.example.com"),
    }


def test_a_caller_without_a_valid_identity_token_gets_a_401_and_behest_sees_nothing(
    runtime: RuntimeProcess, emulator: RuntimeEmulator, identity_provider: LocalIdentityProvider,
    standin: StandinGateway,
) -> None:
    for name, authorization in forged_tokens(identity_provider).items():
        response = invoke(emulator, chat_event(identity_provider, authorization=authorization))

        assert response.prelude()["statusCode"] == 401, name
        assert response.prelude()["headers"]["www-authenticate"] == "Bearer"
        error = json.loads(response.payload())["error"]
        assert (error["type"], error["code"]) == ("authentication_error", "unauthenticated"), name
    assert not standin.requests


@pytest.mark.parametrize(("path", "method", "status"), [("/v1/files", "POST", 404), ("/", "POST", 404),
                                                        ("/v1/chat/completions", "GET", 405)])
def test_a_path_or_method_the_function_url_does_not_route_is_refused_before_behest(
    runtime: RuntimeProcess, emulator: RuntimeEmulator, identity_provider: LocalIdentityProvider,
    standin: StandinGateway, path: str, method: str, status: int,
) -> None:
    event = chat_event(identity_provider, rawPath=path)
    event["requestContext"]["http"].update(method=method, path=path)

    response = invoke(emulator, event)

    assert response.prelude()["statusCode"] == status
    assert json.loads(response.payload())["error"]["type"] == "invalid_request_error"
    assert not standin.requests


def test_a_missing_setting_is_reported_to_init_error_by_name(identity_provider: LocalIdentityProvider,
                                                             standin: StandinGateway, tmp_path: Path) -> None:
    env = function_env(identity_provider, standin)
    del env["BEHEST_CALLER_ISSUER"], env["BEHEST_CALLER_AUDIENCE"]
    with RuntimeEmulator() as emulator:
        process = RuntimeProcess(emulator, env, tmp_path / "runtime.log")
        try:
            error = emulator.init_error(timeout=STARTUP_TIMEOUT)
            assert process.process.wait(10) == 1
        finally:
            process.stop()

    assert error.error_type == "Runtime.ConfigurationError"
    assert "BEHEST_CALLER_ISSUER" in error.body["errorMessage"]
    assert "BEHEST_CALLER_AUDIENCE" in error.body["errorMessage"]


def test_the_wrapper_script_starts_the_streaming_loop_as_lambda_would(identity_provider: LocalIdentityProvider,
                                                                      standin: StandinGateway,
                                                                      tmp_path: Path) -> None:
    assert BOOTSTRAP.read_text().startswith("#!/bin/sh\n")
    assert os.access(BOOTSTRAP, os.X_OK), "stream-bootstrap must be executable (git update-index --chmod=+x)"
    standin.chunk_delay = PACING
    # Lambda runs: $AWS_LAMBDA_EXEC_WRAPPER /var/lang/bin/python3.13 /var/runtime/bootstrap.py; here with this
    # interpreter, anywhere (test_stream_runtime_bootstrap.py passes the exact paths, in a mount namespace).
    argv = [str(BOOTSTRAP), sys.executable, "/var/runtime/bootstrap.py"]
    with RuntimeEmulator() as emulator:
        process = RuntimeProcess(emulator, function_env(identity_provider, standin), tmp_path / "runtime.log", argv)
        try:
            response = invoke(emulator, chat_event(identity_provider))
        finally:
            process.stop()

    last_sent = [event for event in standin.events if event.kind == "chunk_sent"][-1]
    assert response.prelude()["statusCode"] == 200
    assert response.chunks[1].at < last_sent.at
    assert streamed_text(response.payload()) == GREETING


class Misbehaving:
    """A responder with bugs on demand: before the first byte, or after it."""

    def __init__(self) -> None:
        self.telemetry = CapturedTelemetry("stream")

    def respond(self, event: Mapping[str, Any], context: Any = None) -> tuple[dict[str, Any], AnswerBody]:
        if event.get("fail") == "before":
            raise RuntimeError("a bug before the first byte")

        def parts() -> Iterator[bytes]:
            yield b"data: {\"n\": 1}\n\n"
            if event.get("fail") == "after":
                raise KeyError("a bug mid-stream")
            yield b"data: [DONE]\n\n"

        return {"statusCode": 200, "headers": {"content-type": "text/event-stream"}, "cookies": []}, \
            AnswerBody(parts(), sse=True)


def test_a_handler_exception_is_reported_and_the_loop_goes_on() -> None:
    function = Misbehaving()
    with RuntimeEmulator() as emulator:
        before, after, fine = (emulator.queue({"fail": "before"}), emulator.queue({"fail": "after"}),
                               emulator.queue({}))
        loop = threading.Thread(target=serve, args=(RuntimeApi(emulator.address), function, function.telemetry),
                                kwargs={"invocations": 3}, daemon=True)
        loop.start()
        loop.join(10)

        error = emulator.error(before)
        broken = emulator.response(after)
        served = emulator.response(fine)

    assert not loop.is_alive()
    assert (error.error_type, error.body["errorMessage"]) == ("Function.RuntimeError", "a bug before the first byte")
    assert sse_data(broken.payload())[-1]["error"]["message"] == "the relay failed mid-stream"
    assert broken.trailers["lambda-runtime-function-error-type"] == "Function.KeyError"
    detail = json.loads(base64.b64decode(broken.trailers["lambda-runtime-function-error-body"]))
    assert detail == {"errorMessage": "'a bug mid-stream'", "errorType": "KeyError"}
    assert sse_data(served.payload()) == [{"n": 1}, "[DONE]"]
    assert served.trailers == {}
    assert [r["message"] for r in function.telemetry.logs()] == ["unhandled error", "unhandled error mid-stream"]


def test_a_half_received_event_is_dropped_before_the_error_event() -> None:
    def upstream() -> Iterator[bytes]:
        yield b'data: {"n": 1}\n\ndata: {"n": 2}\n\nda'
        yield b'ta: {"n": 3}\n\ndata: {"n"'
        raise UpstreamError("Behest's stream broke off (ConnectionResetError)")

    # As the relay hands Behest's stream to the body: whole events, split as they complete.
    body = AnswerBody((event for event, _ in sse_events(upstream())), sse=True)

    parts = list(body)

    assert parts[:3] == [b'data: {"n": 1}\n\n', b'data: {"n": 2}\n\n', b'data: {"n": 3}\n\n']
    assert sse_data(b"".join(parts)) == [{"n": 1}, {"n": 2}, {"n": 3},
                                         {"error": {"message": "Behest's stream broke off (ConnectionResetError)",
                                                    "type": "server_error", "code": "upstream_error"}}]
    assert isinstance(body.failure, UpstreamError)


class FunctionUrl:
    """The streaming function behind a local Function URL, for the OpenAI SDK."""

    def __init__(self, provider: LocalIdentityProvider, standin: StandinGateway, **env: str) -> None:
        self.telemetry = CapturedTelemetry("stream")
        self.function = StreamFunction.from_env(self.telemetry, function_env(provider, standin, **env))
        self.url = StreamFunctionUrl(self.function).start()
        self.provider = provider

    def client(self, user: str = "user-42", api_key: Optional[str] = None) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url.url + "/v1", api_key=api_key or self.provider.issue(user), max_retries=0)


@pytest.fixture(scope="module")
def function_url(identity_provider: LocalIdentityProvider, standin: StandinGateway) -> Iterator[FunctionUrl]:
    url = FunctionUrl(identity_provider, standin)
    yield url
    url.url.stop()


def test_the_openai_sdk_gets_the_first_token_before_behest_sends_its_last(function_url: FunctionUrl,
                                                                          standin: StandinGateway) -> None:
    standin.chunk_delay = PACING
    first_token_at: Optional[float] = None
    text = ""

    for chunk in function_url.client().chat.completions.create(messages=HI, model="m", stream=True):  # type: ignore[arg-type]
        content = chunk.choices[0].delta.content if chunk.choices else None
        if content and first_token_at is None:
            first_token_at = time.monotonic()
        text += content or ""

    last_sent = [event for event in standin.events if event.kind == "chunk_sent"][-1]
    assert first_token_at is not None and first_token_at < last_sent.at
    assert text == GREETING


def test_the_openai_sdk_gets_a_whole_completion_too(function_url: FunctionUrl) -> None:
    completion = function_url.client("alice").chat.completions.create(messages=HI, model="m", user="admin")  # type: ignore[arg-type]

    assert completion.choices[0].message.content == "Hello alice! You said: hi"


def test_the_sdk_raises_rate_limit_error_with_retry_after(function_url: FunctionUrl, standin: StandinGateway) -> None:
    standin.inject(Fault("status", status=429, retry_after=3, code="rate_limited", path="chat"))

    with pytest.raises(openai.RateLimitError) as caught:
        function_url.client().chat.completions.create(messages=HI, model="m", stream=True)  # type: ignore[arg-type]

    assert caught.value.response.headers["retry-after"] == "3"


def test_the_sdk_raises_authentication_error_for_a_forged_token(function_url: FunctionUrl,
                                                                standin: StandinGateway) -> None:
    forged = jwt.encode({"sub": "user-42", "iss": function_url.provider.issuer, "aud": function_url.provider.audience,
                         "exp": int(time.time()) + 600}, private_key("other"), algorithm="RS256",
                        headers={"kid": function_url.provider.kid})

    with pytest.raises(openai.AuthenticationError):
        function_url.client(api_key=forged).chat.completions.create(messages=HI, model="m", stream=True)  # type: ignore[arg-type]

    assert not standin.requests


def test_the_sdk_raises_api_error_when_behest_resets_mid_stream(function_url: FunctionUrl,
                                                                standin: StandinGateway) -> None:
    standin.inject(Fault("reset_after", chunks=2, path="chat"))
    received: list[str] = []

    with pytest.raises(openai.APIError) as caught:
        for chunk in function_url.client().chat.completions.create(messages=HI, model="m", stream=True):  # type: ignore[arg-type]
            received.append(chunk.choices[0].delta.content or "")

    assert len(received) == 2
    assert "broke off" in caught.value.message


def test_a_stream_that_never_ends_is_cut_with_an_error_at_the_upstream_timeout(
    identity_provider: LocalIdentityProvider, standin: StandinGateway,
) -> None:
    url = FunctionUrl(identity_provider, standin, BEHEST_UPSTREAM_TIMEOUT="0.6")
    standin.inject(Fault("endless", seconds=0.05, path="chat"))
    try:
        with pytest.raises(openai.APIError) as caught:
            list(url.client().chat.completions.create(messages=HI, model="m", stream=True))  # type: ignore[arg-type]
    finally:
        url.url.stop()

    assert "timeout" in caught.value.message
    assert standin.wait_for_event("stream_aborted").kind == "stream_aborted"  # Behest's connection was closed


def test_the_sdk_gets_not_found_in_openai_shape_for_another_path(function_url: FunctionUrl) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        function_url.client().files.list()

    assert caught.value.code == "not_found"


def test_the_loop_serves_the_server_to_server_function_when_its_handler_says_so(standin: StandinGateway,
                                                                               tmp_path: Path) -> None:
    # What Lambda sets for ServiceFunction (template.yaml): its Handler, and the roles it trusts.
    env = sign_env(BEHEST_BASE_URL=standin.url, BEHEST_TRUSTED_ROLE_ARNS="arn:aws:iam::123456789012:role/digest-worker",
                   _HANDLER="behest_lambda.stream_handler.service_handler")
    event = load_event("service_chat_completion")
    with RuntimeEmulator() as emulator:
        process = RuntimeProcess(emulator, env, tmp_path / "runtime.log")
        try:
            response = invoke(emulator, event)
            event["requestContext"]["authorizer"]["iam"]["userArn"] = (
                "arn:aws:sts::123456789012:assumed-role/other-service/nightly-digest")
            refused = invoke(emulator, event)
        finally:
            process.stop()

    assert response.prelude()["statusCode"] == 200
    assert streamed_text(response.payload()) == "Hello user-42! You said: Summarise today's documents."
    assert standin.requests[-1].claims["uid"] == "user-42" and standin.requests[-1].claims["tier"] == 2
    assert refused.prelude()["statusCode"] == 403
    assert json.loads(refused.payload())["error"]["code"] == "caller_not_trusted"
    usage = [r for r in process.records() if r.get("message") == "usage"]
    assert usage[-1]["caller"] == "arn:aws:iam::123456789012:role/digest-worker"

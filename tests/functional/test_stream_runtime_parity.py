"""The streaming loop does per invocation what AWS's own runtime clients do, against the Runtime API emulator.

Compared with awslambdaric (bootstrap.py, lambda_context.py), the Node.js runtime interface client
(InvokeContext.ts), aws-lambda-go (invoke_loop.go) and aws-lambda-rust-runtime (runtime.rs): the
trace id is set or cleared per invocation, the handler gets a LambdaContext-like `context`, an
ordinary mid-stream failure is no function error, a slow client keeps its stream while the
invocation has time, and telemetry is flushed once per invocation whatever happened.

The loop runs in a thread of the test; the responder and telemetry are fakes that record what
they were given.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Iterable, Iterator, Mapping, Optional

import pytest

from behest_lambda import stream_runtime
from behest_lambda.errors import BehestLambdaError, UnauthenticatedError, UpstreamError, sse_error_event
from behest_lambda.stream_runtime import RuntimeApi, serve
from tests.runtime_emulator import FUNCTION_ARN, RecordedResponse, RuntimeEmulator

TRACE = "_X_AMZN_TRACE_ID"
SSE_PRELUDE = {"statusCode": 200, "headers": {"content-type": "text/event-stream"}, "cookies": []}
DONE = b"data: [DONE]\n\n"
LOOP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Line:
    level: str
    message: str
    request_id: Optional[str]
    fields: dict[str, Any]


class RecordingTelemetry:
    """Telemetry that keeps what it was told, in order: log lines, metrics and flushes."""

    def __init__(self) -> None:
        self.request_id: Optional[str] = None
        self.contexts: list[Any] = []
        self.events: list[tuple[str, Optional[str]]] = []
        self.lines: list[Line] = []

    def start_invocation(self, context: Any) -> None:
        self.contexts.append(context)
        self.request_id = context.aws_request_id
        self.events.append(("start", self.request_id))

    def _log(self, level: str, message: str, fields: dict[str, Any]) -> None:
        self.lines.append(Line(level, message, self.request_id, fields))
        self.events.append(("log", self.request_id))

    def debug(self, message: str, **fields: Any) -> None:
        self._log("DEBUG", message, fields)

    def info(self, message: str, **fields: Any) -> None:
        self._log("INFO", message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._log("WARNING", message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._log("ERROR", message, fields)

    def metric(self, name: str, value: float = 1, unit: str = "Count", **dimensions: str) -> None:
        self.events.append(("metric", self.request_id))

    def flush(self) -> None:
        self.events.append(("flush", self.request_id))


class Body:
    """An answer body as stream_handler makes them: bytes as they come, `close()`, and `failure` once it broke off.

    `breaks_with` is how Behest's side ends it: the body sets `failure` and ends with its SSE error
    event (as stream_handler does), or, with `raises`, raises it for the loop to handle.
    """

    def __init__(self, parts: Iterable[bytes], breaks_with: Optional[BaseException] = None, *,
                 raises: bool = False) -> None:
        self.failure: Optional[BaseException] = None
        self.closed = False
        self._parts = iter(parts)
        self._breaks_with = breaks_with
        self._raises = raises

    def __iter__(self) -> Body:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._parts)
        except StopIteration:
            error, self._breaks_with = self._breaks_with, None
            if error is None:
                raise
            if self._raises:
                raise error from None
            assert isinstance(error, BehestLambdaError)
            self.failure = error
            return sse_error_event(error)

    def close(self) -> None:
        self.closed = True


@dataclass(frozen=True)
class Seen:
    event: Mapping[str, Any]
    context: Any
    trace_id: Optional[str]
    remaining_ms: int


def events(n: int) -> list[bytes]:
    return [b'data: {"n": %d}\n\n' % i for i in range(n)]


def endless() -> Iterator[bytes]:
    while True:
        time.sleep(0.01)
        yield b'data: {"n": 0}\n\n'


class Responder:
    """Answers by what the event asks for, and notes what each invocation ran with."""

    def __init__(self, parts: Optional[list[bytes]] = None) -> None:
        self.parts = parts if parts is not None else [*events(2), DONE]
        self.seen: list[Seen] = []
        self.bodies: list[Body] = []

    def respond(self, event: Mapping[str, Any], context: Any = None) -> tuple[dict[str, Any], Body]:
        remaining_ms = context.get_remaining_time_in_millis() if context is not None else -1
        self.seen.append(Seen(event, context, os.environ.get(TRACE), remaining_ms))
        ask = event.get("ask")
        if ask == "bug before":
            raise RuntimeError("a bug before the first byte")
        if ask == "refuse":
            refusal = UnauthenticatedError("no valid identity token")
            document = {"error": {"message": refusal.message, "type": refusal.type, "code": refusal.code}}
            return ({"statusCode": 401, "headers": {"content-type": "application/json"}, "cookies": []},
                    self._body([json.dumps(document).encode("utf-8")]))
        if ask == "bug after":
            return SSE_PRELUDE, self._body(events(1), KeyError("a bug mid-stream"), raises=True)
        if ask == "reset":
            return SSE_PRELUDE, self._body(events(2), UpstreamError("Behest's stream broke off (ConnectionResetError)"))
        if ask == "reset raised":
            return SSE_PRELUDE, self._body(events(2), UpstreamError("Behest's stream broke off (ConnectionResetError)"),
                                           raises=True)
        if ask == "endless":
            return SSE_PRELUDE, self._body(endless())
        return SSE_PRELUDE, self._body(self.parts)

    def _body(self, parts: Iterable[bytes], breaks_with: Optional[BaseException] = None, *,
              raises: bool = False) -> Body:
        body = Body(parts, breaks_with, raises=raises)
        self.bodies.append(body)
        return body


def run_loop(emulator: RuntimeEmulator, function: Responder, telemetry: RecordingTelemetry, invocations: int) -> None:
    """Serve `invocations` queued invocations in a thread; the loop must come back, whatever they did."""
    loop = threading.Thread(target=serve, args=(RuntimeApi(emulator.address), function, telemetry),
                            kwargs={"invocations": invocations}, daemon=True)
    loop.start()
    loop.join(LOOP_TIMEOUT)
    assert not loop.is_alive(), "the loop did not come back"


def sse_data(payload: bytes) -> list[Any]:
    return [json.loads(line[len("data: "):]) if line != "data: [DONE]" else "[DONE]"
            for line in payload.decode("utf-8").splitlines() if line.startswith("data: ")]


@pytest.fixture
def no_trace_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop sets _X_AMZN_TRACE_ID in this process: monkeypatch puts the test's own value back."""
    monkeypatch.delenv(TRACE, raising=False)


def test_an_invocation_without_a_trace_id_does_not_run_under_the_previous_ones(no_trace_id: None) -> None:
    function, telemetry = Responder(), RecordingTelemetry()
    with RuntimeEmulator() as emulator:
        traced = emulator.queue({}, trace_id="Root=1-65a1b2c3-0123456789abcdef01234567;Sampled=1")
        untraced = emulator.queue({}, traced=False)
        traced_again = emulator.queue({})
        run_loop(emulator, function, telemetry, 3)
        expected = [emulator.trace_id(request_id) for request_id in (traced, untraced, traced_again)]

    assert [seen.trace_id for seen in function.seen] == expected
    assert expected[1] is None and expected[2] not in (None, expected[0])
    assert TRACE not in os.environ or os.environ[TRACE] == expected[2]


def test_the_handler_gets_a_lambda_context_counting_down_to_the_invocations_deadline(
    no_trace_id: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    lambda_env = {"AWS_LAMBDA_FUNCTION_NAME": "chat-stream", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                  "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024", "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/chat-stream",
                  "AWS_LAMBDA_LOG_STREAM_NAME": "2025/01/01/[$LATEST]0123456789abcdef"}
    for name, value in lambda_env.items():
        monkeypatch.setenv(name, value)
    function, telemetry = Responder(), RecordingTelemetry()
    with RuntimeEmulator() as emulator:
        request_id = emulator.queue({}, timeout_ms=5_000)
        run_loop(emulator, function, telemetry, 1)
        deadline_ms = emulator.deadline_ms(request_id)

    seen = function.seen[0]
    context = seen.context
    assert (context.aws_request_id, context.invoked_function_arn) == (request_id, FUNCTION_ARN)
    assert (context.function_name, context.function_version, context.memory_limit_in_mb, context.log_group_name,
            context.log_stream_name) == tuple(lambda_env.values())
    assert deadline_ms is not None
    assert 0 < seen.remaining_ms <= 5_000
    assert abs(context.get_remaining_time_in_millis() - (deadline_ms - int(time.time() * 1000))) <= 5
    assert telemetry.contexts == [context]  # the log lines carry the same invocation


@pytest.mark.parametrize("ask", ["reset", "reset raised"], ids=["body reports it", "body raises it"])
def test_an_upstream_reset_mid_stream_ends_with_its_error_event_and_a_clean_end(no_trace_id: None, ask: str) -> None:
    function, telemetry = Responder(), RecordingTelemetry()
    with RuntimeEmulator() as emulator:
        request_id = emulator.queue({"ask": ask})
        run_loop(emulator, function, telemetry, 1)
        response = emulator.response(request_id)

    assert response.complete and response.trailers == {}  # no function error: Lambda's Errors metric is for bugs
    assert sse_data(response.payload()) == [{"n": 0}, {"n": 1}, {"error": {
        "message": "Behest's stream broke off (ConnectionResetError)", "type": "server_error", "code": "upstream_error"}}]
    assert [(line.level, line.message, line.fields["code"]) for line in telemetry.lines] == [
        ("WARNING", "stream ended with an error event", "upstream_error")]
    assert function.bodies[0].closed


def test_a_bug_mid_stream_still_goes_to_lambda_in_the_error_trailers(no_trace_id: None) -> None:
    function, telemetry = Responder(), RecordingTelemetry()
    with RuntimeEmulator() as emulator:
        request_id = emulator.queue({"ask": "bug after"})
        run_loop(emulator, function, telemetry, 1)
        response = emulator.response(request_id)

    assert sse_data(response.payload())[-1]["error"]["message"] == "the relay failed mid-stream"
    assert response.trailers["lambda-runtime-function-error-type"] == "Function.KeyError"
    assert [(line.level, line.message) for line in telemetry.lines] == [("ERROR", "unhandled error mid-stream")]


def test_a_client_reading_slower_than_the_post_timeout_keeps_its_stream_while_the_invocation_has_time(
    no_trace_id: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Scaled down: a 0.5 s POST_TIMEOUT (60 s in production) and a client that stops reading for 2 s.
    monkeypatch.setattr(stream_runtime, "POST_TIMEOUT", 0.5)
    part = b"data: " + b"x" * 65_000 + b"\n\n"
    function, telemetry = Responder([part] * 64), RecordingTelemetry()
    with RuntimeEmulator(receive_buffer=4096) as emulator:
        request_id = emulator.queue({}, timeout_ms=30_000, read_pause=2.0)
        started = time.monotonic()
        run_loop(emulator, function, telemetry, 1)
        response = emulator.response(request_id)

    assert time.monotonic() - started >= 2.0
    assert not response.cut and response.complete
    assert response.payload() == part * 64
    assert telemetry.lines == []


def test_a_client_that_stops_reading_past_the_deadline_is_cut_and_the_loop_goes_on(
    no_trace_id: None, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Not the Go client's unbounded wait: past the deadline (+ margin, scaled down here) the write gives up.
    monkeypatch.setattr(stream_runtime, "DEADLINE_MARGIN", 0.3, raising=False)
    part = b"data: " + b"x" * 65_000 + b"\n\n"
    function, telemetry = Responder([part] * 64), RecordingTelemetry()
    with RuntimeEmulator(receive_buffer=4096) as emulator:
        stuck = emulator.queue({}, timeout_ms=200, read_pause=5.0)
        fine = emulator.queue({})
        started = time.monotonic()
        run_loop(emulator, function, telemetry, 2)
        elapsed = time.monotonic() - started
        served = emulator.response(fine)

    assert elapsed < 4.0
    assert [(line.level, line.message, line.request_id) for line in telemetry.lines] == [
        ("WARNING", "the response stream was cut", stuck)]
    assert served.complete and served.payload() == part * 64


def test_telemetry_is_flushed_once_at_the_end_of_every_invocation_whatever_happened(no_trace_id: None) -> None:
    function, telemetry = Responder(), RecordingTelemetry()
    asks = ["refuse", "bug before", "bug after", "reset", "endless", None]
    with RuntimeEmulator() as emulator:
        unreadable = emulator.queue(b"not json at all")
        ids = [emulator.queue({"ask": ask} if ask else {}, cut_after=2 if ask == "endless" else None) for ask in asks]
        run_loop(emulator, function, telemetry, 1 + len(asks))
        recorded: list[Optional[RecordedResponse]] = [emulator.response(i, complete=False) if emulator.outcome(i) ==
                                                      "response" else None for i in ids]

    request_ids = [unreadable, *ids]
    assert [request_id for kind, request_id in telemetry.events if kind == "flush"] == request_ids
    for request_id in request_ids:  # the flush is the last thing each invocation does
        mine = [kind for kind, rid in telemetry.events if rid == request_id]
        assert mine[0] == "start" and mine[-1] == "flush" and mine.count("flush") == 1, (request_id, mine)
    cut = recorded[asks.index("endless")]
    assert cut is not None and cut.cut
    assert ("WARNING", "the response stream was cut") in [(line.level, line.message) for line in telemetry.lines]

"""Behest misbehaving every way the stand-in can: each answer is the documented status or a clean stream end,
and no call outlives its timeout (elapsed is measured against BEHEST_UPSTREAM_TIMEOUT / BEHEST_MINT_TIMEOUT)."""

from __future__ import annotations

import base64
import gc
import json
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

import pytest

from behest_lambda.app import Service
from behest_lambda.key_source import key_source_for
from behest_lambda.mint import Minter
from behest_lambda.relay import Relay
from behest_lambda.routes import RELAY_FUNCTION, TOKEN_FUNCTION
from behest_lambda.settings import Settings
from behest_lambda.upstream import open_request
from devstack.standin import Fault, StandinGateway
from tests.figures import Figures
from tests.log_hygiene import TOKEN
from tests.reliability.suite import API_KEY, event_for, relay_service
from tests.support import CapturedTelemetry, sign_env

TOPIC = "Upstream faults (stand-in Behest)"
UPSTREAM_TIMEOUT = 1.0
MINT_TIMEOUT = 0.5
SLACK = 0.5  # loopback and scheduling allowance over a timeout; never a tight threshold
HI = [{"role": "user", "content": "hi"}]


@dataclass(frozen=True)
class Case:
    name: str
    fault: Fault
    status: int
    code: Optional[str] = None  # error code of a refused answer
    stream: bool = False
    ends: Optional[str] = None  # a 200 stream's last event: "done" or an error code
    route: str = "relay"  # "relay" (sign mode), "relay-api-key" or "token-api-key"
    timeout: Optional[float] = None  # set when the case must wait for a timeout to fire
    retry_after: Optional[str] = None


CASES = [
    # Behest refusing the token we minted is the deployment's fault: never the caller's 401.
    Case("401 invalid_token", Fault("status", status=401, code="invalid_token", path="chat"), 502,
         "upstream_auth_failed"),
    Case("401 on a stream", Fault("status", status=401, code="invalid_token", path="chat"), 502,
         "upstream_auth_failed", stream=True),
    Case("403 token_expired", Fault("status", status=403, code="token_expired", path="chat"), 502,
         "upstream_auth_failed"),
    Case("403 forbidden", Fault("status", status=403, code="forbidden", path="chat"), 403, "forbidden"),
    Case("429 Retry-After 7", Fault("status", status=429, retry_after=7, path="chat"), 429, "rate_limited",
         retry_after="7"),
    *[Case(f"{s} from Behest", Fault("status", status=s, path="chat"), 502, "upstream_error") for s in (500, 502, 503, 504)],
    # A 503 that says when to come back is passed on as it is, so clients back off instead of retrying at once.
    Case("503 Retry-After 2", Fault("status", status=503, retry_after=2, path="chat"), 503, "server_error",
         retry_after="2"),
    Case("503 on a stream", Fault("status", status=503, path="chat"), 502, "upstream_error", stream=True),
    Case("slow but in time (0.3 s)", Fault("delay", seconds=0.3, path="chat"), 200),
    Case("slow past the timeout", Fault("delay", seconds=5, path="chat"), 504, "upstream_timeout",
         timeout=UPSTREAM_TIMEOUT),
    Case("slow stream past the timeout", Fault("delay", seconds=5, path="chat"), 504, "upstream_timeout", stream=True,
         timeout=UPSTREAM_TIMEOUT),
    Case("reset before any byte", Fault("reset_after", chunks=0, path="chat"), 502, "upstream_error"),
    Case("reset mid-body", Fault("reset_after", chunks=1, path="chat"), 502, "upstream_error"),
    Case("reset before a stream's first event", Fault("reset_after", chunks=0, path="chat"), 502, "upstream_error",
         stream=True),
    Case("reset mid-stream", Fault("reset_after", chunks=2, path="chat"), 200, stream=True, ends="upstream_error"),
    Case("garbage body", Fault("garbage", path="chat"), 502, "upstream_error"),
    # OpenAI SDKs would die on it with a UnicodeDecodeError: the relay ends the stream with an error event instead.
    Case("garbage event in a stream", Fault("garbage", path="chat"), 200, stream=True, ends="upstream_error"),
    Case("never-ending body", Fault("endless", seconds=0.05, path="chat"), 504, "upstream_timeout",
         timeout=UPSTREAM_TIMEOUT),
    Case("never-ending stream", Fault("endless", seconds=0.05, path="chat"), 200, stream=True, ends="upstream_timeout",
         timeout=UPSTREAM_TIMEOUT),
    *[Case(f"mint: {name}", fault, status, code, route=route, timeout=timeout, retry_after=retry_after)
      for route in ("relay-api-key", "token-api-key")
      for name, fault, status, code, timeout, retry_after in (
          # Behest refusing the deployment's own API key is the deployment's fault, as a refused token is.
          ("401", Fault("status", status=401, path="mint"), 502, "upstream_auth_failed", None, None),
          ("403", Fault("status", status=403, path="mint"), 502, "upstream_auth_failed", None, None),
          ("429", Fault("status", status=429, retry_after=3, path="mint"), 429, "rate_limited", None, "3"),
          ("500", Fault("status", status=500, path="mint"), 502, "upstream_error", None, None),
          ("slow past the mint timeout", Fault("delay", seconds=5, path="mint"), 504, "upstream_timeout",
           MINT_TIMEOUT, None),
          ("never-ending body", Fault("endless", seconds=0.05, path="mint"), 504, "upstream_timeout",
           MINT_TIMEOUT, None),
          ("reset", Fault("reset_after", chunks=1, path="mint"), 502, "upstream_error", None, None),
          ("garbage", Fault("garbage", path="mint"), 502, "upstream_error", None, None),
      )],
]


@pytest.fixture(scope="module")
def routes(standin: StandinGateway) -> dict[str, Any]:
    telemetry = CapturedTelemetry()
    common = {"BEHEST_BASE_URL": standin.url, "BEHEST_UPSTREAM_TIMEOUT": str(UPSTREAM_TIMEOUT),
              "BEHEST_MINT_TIMEOUT": str(MINT_TIMEOUT)}
    api_key = {"BEHEST_KEY": API_KEY, "BEHEST_KID": "", "BEHEST_TENANT_ID": "", "BEHEST_PROJECT_ID": "", **common}
    return {
        "relay": Service.from_env(RELAY_FUNCTION, telemetry, sign_env(**common)),
        "relay-api-key": Service.from_env(RELAY_FUNCTION, telemetry, sign_env(**api_key)),
        "token-api-key": Service.from_env(TOKEN_FUNCTION, telemetry, sign_env(**api_key)),
    }


def handle_within(function: Any, event: dict[str, Any], seconds: float) -> tuple[dict[str, Any], float]:
    """Call the handler on a thread, so a regression that hangs fails the test instead of stalling the suite."""
    box: dict[str, Any] = {}
    started = time.monotonic()
    worker = threading.Thread(target=lambda: box.update(response=function.handle(event)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"the handler was still busy after {seconds:g} s"
    return box["response"], time.monotonic() - started


def text_of(response: dict[str, Any]) -> str:
    body = str(response["body"])
    return base64.b64decode(body).decode("utf-8", "replace") if response.get("isBase64Encoded") else body


def sse_events(body: str) -> list[str]:
    assert body.endswith("\n\n"), "the stream ends mid-event"
    return body[:-2].split("\n\n")


@pytest.mark.parametrize("case", CASES, ids=[f"{c.route}: {c.name}" for c in CASES])
def test_each_upstream_fault_gets_its_documented_answer_within_the_timeout(
    case: Case, routes: dict[str, Any], clean_standin: StandinGateway, figures: Figures,
) -> None:
    # A user per case, so API-key mode cannot reuse a token minted before the fault.
    user = "user-" + case.name.replace(" ", "-").replace(":", "")[:40]
    if case.route == "token-api-key":
        event = event_for("token_mint", user)
    else:
        event = event_for("chat_completion", user, body={"messages": HI, "stream": case.stream})
    clean_standin.inject(case.fault)

    response, elapsed = handle_within(routes[case.route], event, UPSTREAM_TIMEOUT + 4)

    assert not clean_standin.pending_faults, "the fault never fired"
    body = text_of(response)
    assert response["statusCode"] == case.status, body[:300]
    assert "Traceback" not in body and not TOKEN.search(body)  # no case here answers a token
    limit = MINT_TIMEOUT if case.route == "token-api-key" else UPSTREAM_TIMEOUT
    assert elapsed <= limit + SLACK, f"{elapsed:.2f} s for a {limit:g} s timeout"
    if case.timeout is not None:
        assert elapsed >= case.timeout * 0.9, "gave up before the timeout"
    if case.code is not None:
        assert json.loads(body)["error"]["code"] == case.code
        assert set(json.loads(body)["error"]) == {"message", "type", "code"}
    if case.retry_after is not None:
        assert response["headers"]["retry-after"] == case.retry_after
    outcome = f"{case.status} {case.code or ''}".strip()
    if case.ends is not None:
        assert response["headers"]["content-type"] == "text/event-stream"
        last = sse_events(body)[-1]
        if case.ends == "done":
            assert last == "data: [DONE]"
        else:
            assert json.loads(last.removeprefix("data: "))["error"]["code"] == case.ends
        outcome = f"200 stream ending {'data: [DONE]' if case.ends == 'done' else 'in an error event ' + case.ends}"
    timing = f"{elapsed * 1000:6.0f} ms"
    if case.timeout is not None:
        timing += f" (timeout {case.timeout:g} s, ×{elapsed / case.timeout:.2f})"
    figures(TOPIC, f"{case.route:<13} {case.name + (' (stream)' if case.stream and 'stream' not in case.name else ''):<40}"
                   f" → {outcome:<48} {timing}")


BREAKS = {
    "garbage event": Fault("garbage", path="chat"),
    "reset mid-stream": Fault("reset_after", chunks=2, path="chat"),
    "never-ending stream": Fault("endless", seconds=0.05, path="chat"),
}


@pytest.mark.parametrize("front", ["HTTP API", "Function URL"])
@pytest.mark.parametrize("fault", BREAKS.values(), ids=BREAKS.keys())
def test_a_stream_that_breaks_off_has_closed_behests_connection_by_the_time_the_answer_ends(
    fault: Fault, front: str, clean_standin: StandinGateway,
) -> None:
    config = Settings.from_env(sign_env(BEHEST_BASE_URL=clean_standin.url,
                                        BEHEST_UPSTREAM_TIMEOUT=str(UPSTREAM_TIMEOUT)))
    telemetry = CapturedTelemetry()
    opened: list[Any] = []

    def send(*args: Any) -> Any:
        response = open_request(*args)
        opened.append(response)
        return response

    relay = Relay(config.relay, Minter(config.mint, key_source_for(config.key, telemetry)), send=send)
    service = relay_service(config, relay, telemetry)
    clean_standin.inject(fault)
    event = event_for("chat_completion", body={"messages": HI, "stream": True})

    gc.disable()  # closed by the relay itself, not by a garbage collection that happens to run in between
    try:
        if front == "HTTP API":
            body = text_of(service.handle(event))
        else:
            _, answer = service.respond(event)
            body = b"".join(answer).decode()
        closed = [response.isclosed() for response in opened]
    finally:
        gc.enable()

    assert json.loads(sse_events(body)[-1].removeprefix("data: "))["error"]["code"] in ("upstream_error",
                                                                                       "upstream_timeout")
    assert closed == [True]


class StallingErrorServer:
    """Answers every request 500 at once, sends one body byte after `first_byte_after` seconds, then stalls."""

    def __init__(self, first_byte_after: float) -> None:
        self.first_byte_after = first_byte_after
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._closing = threading.Event()
        self._connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._connections.append(connection)
            connection.recv(65536)
            connection.sendall(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 64\r\n\r\n")
            if not self._closing.wait(self.first_byte_after):
                connection.sendall(b"{")

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        for connection in self._connections:
            connection.close()


@pytest.mark.parametrize("route", ["relay", "token-api-key"])
def test_an_error_answer_whose_body_stalls_is_cut_at_the_deadline_not_a_socket_timeout_later(route: str) -> None:
    timeout = 1.0
    server = StallingErrorServer(first_byte_after=timeout * 0.8)
    env = {"BEHEST_BASE_URL": server.url, "BEHEST_UPSTREAM_TIMEOUT": str(timeout), "BEHEST_MINT_TIMEOUT": str(timeout)}
    try:
        if route == "relay":
            function: Any = Service.from_env(RELAY_FUNCTION, CapturedTelemetry(), sign_env(**env))
            event = event_for("chat_completion", body={"messages": HI})
        else:
            api_key = {"BEHEST_KEY": API_KEY, "BEHEST_KID": "", "BEHEST_TENANT_ID": "", "BEHEST_PROJECT_ID": ""}
            function = Service.from_env(TOKEN_FUNCTION, CapturedTelemetry(), sign_env(**env, **api_key))
            event = event_for("token_mint")

        response, elapsed = handle_within(function, event, timeout + 4)
    finally:
        server.close()

    assert response["statusCode"] == 504
    assert elapsed <= timeout + SLACK  # the read after the late byte waits out what is left, not a whole timeout

"""How a relayed stream that breaks off after its first byte ends: in its own API's way, on both fronts."""

from __future__ import annotations

import json
from typing import Any, Iterator

from behest_lambda.app import AnswerBody, buffered_stream
from behest_lambda.errors import UpstreamError
from behest_lambda.identity import Identity
from behest_lambda.relay import StreamTail, relayed_events, responses_call
from behest_lambda.request import Request
from behest_lambda.settings import Settings
from behest_lambda.usage import UsageMeter

RESPONSES_EVENTS = [
    b'event: response.created\ndata: {"type":"response.created","sequence_number":0,"response":{}}\n\n',
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,'
    b'"delta":"Hi"}\n\n',
]


def broken(events: list[bytes]) -> Iterator[bytes]:
    yield from events
    raise UpstreamError("Behest's stream broke off (ConnectionResetError)")


def relayed(events: list[bytes], style: str) -> tuple[Iterator[bytes], StreamTail]:
    tail = StreamTail(style)
    meter = UsageMeter("responses", "user-42", None, None, None, True)
    return relayed_events(broken(events), meter, drop_usage_chunk=False, tail=tail), tail


def sse(payload: bytes) -> list[tuple[str | None, Any]]:
    """Each event of an SSE body as (event name, parsed data)."""
    out = []
    for block in payload.decode().strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        out.append((fields.get("event"), json.loads(fields["data"])))
    return out


def test_the_responses_policy_asks_for_responses_style_error_events_and_chat_keeps_its_own() -> None:
    settings = Settings.from_env({"BEHEST_KEY": "behest_sk_live_x"}).relay
    body = json.dumps({"input": "hi", "stream": True}).encode()
    call = responses_call(Request("POST", "/v1/responses", {}, {}, body, "req-1"), Identity("user-42"), settings)

    assert call.stream_style == "responses"


def test_a_broken_responses_stream_buffered_ends_with_an_error_event_numbered_after_the_last() -> None:
    events, tail = relayed(RESPONSES_EVENTS, "responses")

    joined, failure = buffered_stream(events, tail.error_event)

    assert isinstance(failure, UpstreamError)
    *passed, last = sse(joined)
    assert [name for name, _ in passed] == ["response.created", "response.output_text.delta"]
    assert last == ("error", {"type": "error", "code": "upstream_error", "param": None, "sequence_number": 2,
                              "message": "Behest's stream broke off (ConnectionResetError)"})


def test_a_broken_responses_stream_on_the_function_url_ends_with_the_same_error_event() -> None:
    events, tail = relayed(RESPONSES_EVENTS, "responses")
    ended: list[Any] = []

    body = AnswerBody(events, sse=True, error_event=tail.error_event, on_end=lambda f, c: ended.append((f, c)))
    name, data = sse(b"".join(body))[-1]

    assert (name, data["type"], data["sequence_number"], data["code"]) == ("error", "error", 2, "upstream_error")
    assert isinstance(body.failure, UpstreamError) and ended == [(body.failure, False)]


def test_a_broken_chat_stream_keeps_its_data_error_frame() -> None:
    chunk = b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
    events, tail = relayed([chunk], "chat")

    joined, _ = buffered_stream(events, tail.error_event)

    assert sse(joined)[-1] == (None, {"error": {"message": "Behest's stream broke off (ConnectionResetError)",
                                                "type": "server_error", "code": "upstream_error"}})


def test_a_responses_stream_that_breaks_before_any_numbered_event_starts_its_error_event_at_zero() -> None:
    events, tail = relayed([], "responses")
    body = AnswerBody(events, sse=True, error_event=tail.error_event)

    assert sse(b"".join(body)) == [("error", {"type": "error", "code": "upstream_error", "param": None,
                                              "sequence_number": 0,
                                              "message": "Behest's stream broke off (ConnectionResetError)"})]

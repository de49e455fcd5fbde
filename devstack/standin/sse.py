"""Server-sent events as Behest sends them: chat chunks as `data:` lines ending with `[DONE]`, and the
Responses API's named events (`event:` + `data:` with a `sequence_number`), which have no `[DONE]`."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from .answers import output_message, output_text_part, pieces, response_object

DONE = b"data: [DONE]\n\n"


def data_frame(payload: Any) -> bytes:
    """One unnamed event."""
    return b"data: " + json.dumps(payload).encode("utf-8") + b"\n\n"


def named_frame(payload: dict[str, Any]) -> bytes:
    """One named event: its `type` is also its `event:` line."""
    return f"event: {payload['type']}\n".encode() + data_frame(payload)


@dataclass(frozen=True)
class Stream:
    """The frames of one streamed answer, what ends it, and how it would go on forever (the endless fault)."""

    frames: list[bytes]
    end: Optional[bytes]
    endless: Iterator[bytes]


def chat_stream(chunks: list[dict[str, Any]], content: str) -> Stream:
    """A chat completion's chunks, then `[DONE]`; endlessly, the content's words over and over."""
    def endless() -> Iterator[bytes]:
        first = chunks[0]
        yield data_frame(first)
        for piece in itertools.cycle(pieces(content + " ")):
            yield data_frame({**first, "choices": [{"index": 0, "delta": {"content": piece}, "logprobs": None,
                                                    "finish_reason": None}]})

    return Stream([data_frame(chunk) for chunk in chunks], DONE, endless())


def responses_events(response_id: str, message_id: str, created: int, body: dict[str, Any], content: str,
                     usage: dict[str, Any]) -> list[dict[str, Any]]:
    """The Responses API's stream for one text answer, in order, numbered from 0."""
    in_progress = response_object(response_id, created, body, [], None, status="in_progress")
    where = {"item_id": message_id, "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": in_progress},
        {"type": "response.in_progress", "response": in_progress},
        {"type": "response.output_item.added", "output_index": 0, "item": output_message(message_id, None)},
        {"type": "response.content_part.added", **where, "part": output_text_part("")},
    ]
    events += [{"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []} for piece in pieces(content)]
    done = output_message(message_id, content)
    events += [
        {"type": "response.output_text.done", **where, "text": content, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": output_text_part(content)},
        {"type": "response.output_item.done", "output_index": 0, "item": done},
        {"type": "response.completed", "response": response_object(response_id, created, body, [done], usage)},
    ]
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


def responses_stream(events: list[dict[str, Any]], content: str) -> Stream:
    """The named events; endlessly, the opening events then deltas that never stop."""
    def endless() -> Iterator[bytes]:
        opening = [event for event in events if event["type"] != "response.output_text.delta"][:4]
        yield from (named_frame(event) for event in opening)
        delta = next(event for event in events if event["type"] == "response.output_text.delta")
        for number, piece in enumerate(itertools.cycle(pieces(content + " ")), start=len(opening)):
            yield named_frame({**delta, "delta": piece, "sequence_number": number})

    return Stream([named_frame(event) for event in events], None, endless())

"""Server-sent events as Behest sends them: chat chunks as `data:` lines ending with `[DONE]`, and the
Responses API's named events (`event:` + `data:` with a `sequence_number`), which have no `[DONE]`."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from .answers import pieces
from .responses_events import first_delta

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


def responses_stream(events: list[dict[str, Any]], content: str) -> Stream:
    """The named events; endlessly, the events before the first delta, then deltas like it that never stop."""
    def endless() -> Iterator[bytes]:
        start = first_delta(events) or 0
        opening = events[:start]
        yield from (named_frame(event) for event in opening)
        delta = events[start]
        for number, piece in enumerate(itertools.cycle(pieces(content + " ")), start=len(opening)):
            yield named_frame({**delta, "delta": piece, "sequence_number": number})

    return Stream([named_frame(event) for event in events], None, endless())

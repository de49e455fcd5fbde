"""The Responses API's output items and their stream events: an assistant message, or function calls.

A stream opens with `response.created` and `response.in_progress`; each output item is announced
(`response.output_item.added`), filled by deltas (`response.output_text.delta` with its content
part events, or `response.function_call_arguments.delta` then `.done`) and closed
(`response.output_item.done`); `response.completed` carries the whole response and its usage.
Every event has a `sequence_number`, counted from 0.
"""

from __future__ import annotations

import uuid
from typing import Any, Optional

from .answers import output_message, output_text_part, pieces, response_object
from .tool_calls import Call, fragments
from .turns import Turn


def function_call_item(item_id: str, call: Call, done: bool) -> dict[str, Any]:
    """A `function_call` output item; as first announced (not `done`) its arguments are still empty."""
    return {"id": item_id, "type": "function_call", "status": "completed" if done else "in_progress",
            "arguments": call.arguments if done else "", "call_id": call.call_id, "name": call.name}


def output_items(turn: Turn, message_id: str) -> list[dict[str, Any]]:
    """The finished output items of a turn."""
    if turn.calls:
        return [function_call_item(_item_id(message_id, index), call, done=True) for index, call in enumerate(turn.calls)]
    return [output_message(message_id, turn.content or "")]


def responses_events(response_id: str, message_id: str, created: int, body: dict[str, Any], turn: Turn,
                     usage: dict[str, Any]) -> list[dict[str, Any]]:
    """The Responses API's stream for one turn, in order, numbered from 0."""
    in_progress = response_object(response_id, created, body, [], None, status="in_progress")
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": in_progress},
        {"type": "response.in_progress", "response": in_progress},
    ]
    if turn.calls:
        for index, call in enumerate(turn.calls):
            events += _function_call_events(_item_id(message_id, index), index, call)
    else:
        events += _message_events(message_id, turn.content or "")
    done = output_items(turn, message_id)
    events.append({"type": "response.completed", "response": response_object(response_id, created, body, done, usage)})
    return [{**event, "sequence_number": number} for number, event in enumerate(events)]


def _message_events(message_id: str, content: str) -> list[dict[str, Any]]:
    where = {"item_id": message_id, "output_index": 0, "content_index": 0}
    events: list[dict[str, Any]] = [
        {"type": "response.output_item.added", "output_index": 0, "item": output_message(message_id, None)},
        {"type": "response.content_part.added", **where, "part": output_text_part("")},
    ]
    events += [{"type": "response.output_text.delta", **where, "delta": piece, "logprobs": []} for piece in pieces(content)]
    return events + [
        {"type": "response.output_text.done", **where, "text": content, "logprobs": []},
        {"type": "response.content_part.done", **where, "part": output_text_part(content)},
        {"type": "response.output_item.done", "output_index": 0, "item": output_message(message_id, content)},
    ]


def _function_call_events(item_id: str, index: int, call: Call) -> list[dict[str, Any]]:
    where = {"item_id": item_id, "output_index": index}
    events: list[dict[str, Any]] = [
        {"type": "response.output_item.added", "output_index": index, "item": function_call_item(item_id, call, False)},
    ]
    events += [{"type": "response.function_call_arguments.delta", **where, "delta": piece}
               for piece in fragments(call.arguments)]
    return events + [
        {"type": "response.function_call_arguments.done", **where, "name": call.name, "arguments": call.arguments},
        {"type": "response.output_item.done", "output_index": index, "item": function_call_item(item_id, call, True)},
    ]


def _item_id(message_id: str, index: int) -> str:
    """The id of the `index`th function call item, derived from the response's message id."""
    return "fc_" + uuid.uuid5(uuid.NAMESPACE_OID, f"{message_id}:{index}").hex


def first_delta(events: list[dict[str, Any]]) -> Optional[int]:
    """Where the first delta event is (None when there is none)."""
    return next((at for at, event in enumerate(events) if event["type"].endswith(".delta")), None)

"""What the assistant does with a request: answer text (plain, or JSON in the asked format), or call tools.

A turn is a function of the request and the caller: `chat_turn` / `responses_turn` decide it,
`usage_for` counts it, and the server only shapes it. Text is `Hello <uid>! You said: <last user
text>`; after tool results it is `Hello <uid>! The tools said: <results>`; a `json_schema` format
gets `schema_instance` of its schema, `json_object` `{"reply": <text>}`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple, Optional

from .answers import (
    chat_usage,
    embeddings_request,
    embeddings_usage,
    last_user_text,
    pieces,
    reply_text,
    responses_input_text,
    responses_usage,
)
from .errors import Refusal
from .faults import CHAT_PATH, EMBEDDINGS_PATH, RESPONSES_PATH
from .schema_instance import schema_instance
from .tool_calls import (
    Call,
    calls_for,
    chat_history,
    chat_tool_call_deltas,
    chat_tool_calls,
    chat_tools,
    responses_history,
    responses_tools,
)


class Turn(NamedTuple):
    """The assistant's turn: text (None when it calls tools) and the calls it makes."""

    content: Optional[str]
    calls: list[Call]

    @property
    def said(self) -> str:
        """What the usage counts as output: the text, or each call's name and arguments."""
        if self.content is not None:
            return self.content
        return " ".join(f"{call.name} {call.arguments}" for call in self.calls)


def tools_reply_text(uid: str, results: list[str]) -> str:
    """What the stand-in answers `uid` once the tools have answered."""
    return f"Hello {uid}! The tools said: {' | '.join(results)}"


def chat_turn(body: dict[str, Any], uid: str) -> Turn:
    """The turn answering a valid chat request."""
    messages = body["messages"]
    called, results = chat_history(messages)
    calls = calls_for(chat_tools(body), called, bool(results), _seed(messages))
    if calls:
        return Turn(None, calls)
    text = tools_reply_text(uid, results) if results else reply_text(uid, last_user_text(messages))
    form = body.get("response_format")
    if form is not None and not isinstance(form, dict):
        raise Refusal(400, "validation_error", "response_format must be an object")
    spec = (form or {}).get("json_schema")
    return Turn(_formatted(form or {}, spec if isinstance(spec, dict) else {}, text), [])


def responses_turn(body: dict[str, Any], uid: str) -> Turn:
    """The turn answering a valid Responses request."""
    items = body["input"] if isinstance(body["input"], list) else []
    called, results = responses_history(items)
    calls = calls_for(responses_tools(body), called, bool(results), _seed(body["input"]))
    if calls:
        return Turn(None, calls)
    text = tools_reply_text(uid, results) if results else reply_text(uid, responses_input_text(body))
    text_options = body.get("text")
    form = text_options.get("format") if isinstance(text_options, dict) else None
    if form is not None and not isinstance(form, dict):
        raise Refusal(400, "validation_error", "text.format must be an object")
    return Turn(_formatted(form or {}, form or {}, text), [])


def chat_message(turn: Turn) -> tuple[dict[str, Any], str]:
    """The whole assistant message and its finish reason."""
    if turn.calls:
        return {"role": "assistant", "content": None,
                "tool_calls": chat_tool_calls(turn.calls)}, "tool_calls"
    return {"role": "assistant", "content": turn.content}, "stop"


def chat_deltas(turn: Turn) -> tuple[list[dict[str, Any]], str]:
    """The streamed deltas of the message (the role first) and its finish reason."""
    if turn.calls:
        return [{"role": "assistant", "content": None}, *chat_tool_call_deltas(turn.calls)], "tool_calls"
    content = turn.content or ""
    return [{"role": "assistant", "content": ""}, *({"content": piece} for piece in pieces(content))], "stop"


def usage_for(path: str, body: dict[str, Any], uid: str) -> dict[str, Any]:
    """The usage the stand-in answers for a valid request `body` on `path` from user `uid`."""
    if path == CHAT_PATH:
        return chat_usage(body["messages"], chat_turn(body, uid).said)
    if path == RESPONSES_PATH:
        return responses_usage(body, responses_turn(body, uid).said)
    if path == EMBEDDINGS_PATH:
        return embeddings_usage(embeddings_request(body)[1])
    raise ValueError(f"no usage on {path}")


def _formatted(form: dict[str, Any], spec: dict[str, Any], text: str) -> str:
    """The text in the asked format: `spec` holds the schema (chat nests it under `json_schema`)."""
    kind = form.get("type", "text")
    if kind == "json_schema":
        if not isinstance(spec.get("schema"), dict):
            raise Refusal(400, "validation_error", "a json_schema format needs a schema object")
        return json.dumps(schema_instance(spec["schema"]))
    if kind == "json_object":
        return json.dumps({"reply": text})
    if kind == "text":
        return text
    raise Refusal(400, "validation_error", f"unknown format type {str(kind)[:40]!r}")


def _seed(conversation: Any) -> str:
    """A digest of the conversation: call ids differ from turn to turn and repeat for a repeated request."""
    return hashlib.sha256(json.dumps(conversation, sort_keys=True, default=str).encode()).hexdigest()

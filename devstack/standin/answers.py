"""OpenAI-compatible answers, deterministic functions of the request: chat, Responses, embeddings, models.

Every usage figure counts words, so a test can compute what the stand-in answers (`turns.usage_for`)
without reading it back; `turns` decides what the assistant says, these functions shape it.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
import uuid
from typing import Any, Optional

from .errors import Refusal
from .faults import is_int

DEFAULT_MODEL = "behest-default"
DEFAULT_EMBEDDING_MODEL = "behest-embed"
MODELS_CREATED = 1767225600  # 2026-01-01, fixed so that answers compare equal
MODELS = ("behest-default", "behest-mini", "behest-embed")
EMBEDDING_DIMENSIONS = 16
MAX_EMBEDDING_DIMENSIONS = 3072
MAX_EMBEDDING_INPUTS = 2048


def reply_text(uid: str, said: str) -> str:
    """What the stand-in answers `uid`."""
    return f"Hello {uid}! You said: {said}"


# --- chat completions -------------------------------------------------------------------------------------------

def chat_request(body: Any, raw: bytes) -> dict[str, Any]:
    """A chat-completions request, or Refusal(400)."""
    if not raw:
        raise Refusal(400, "validation_error", "the body must be a chat-completions JSON object")
    if not isinstance(body, dict):
        raise Refusal(400, "validation_error", "the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Refusal(400, "validation_error", "messages must be a non-empty array")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise Refusal(400, "validation_error", f"messages[{index}] must be an object with a role")
    _optional(body, "model", str, "a string")
    _optional(body, "stream", bool, "true or false")
    return body


def chat_usage(messages: list[dict[str, Any]], content: str) -> dict[str, int]:
    """Words of every message in, words of the answer out."""
    prompt = sum(words(text_of(message.get("content"))) for message in messages)
    completion = words(content)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(completion_id: str, created: int, model: str, message: dict[str, Any], finish_reason: str,
                    usage: dict[str, int]) -> dict[str, Any]:
    """A whole `chat.completion` carrying one assistant message."""
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage,
    }


def chat_chunks(completion_id: str, created: int, model: str, deltas: list[dict[str, Any]], finish_reason: str,
                usage: Optional[dict[str, int]]) -> list[dict[str, Any]]:
    """The `chat.completion.chunk`s of a stream; a last usage chunk (no choices) only when `usage` is given."""
    def chunk(delta: dict[str, Any], finish: Optional[str] = None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    chunks = [chunk(delta) for delta in deltas]
    chunks.append(chunk({}, finish_reason))
    if usage is not None:
        chunks.append({**chunk({}), "choices": [], "usage": usage})
    return chunks


def last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return text_of(message.get("content"))
    return ""


# --- Responses API ----------------------------------------------------------------------------------------------

def responses_request(body: Any) -> dict[str, Any]:
    """A Responses API request, or Refusal(400)."""
    if not isinstance(body, dict):
        raise Refusal(400, "validation_error", "the body must be a JSON object")
    value = body.get("input")
    if isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise Refusal(400, "validation_error", f"input[{index}] must be an object")
    elif not isinstance(value, str):
        raise Refusal(400, "validation_error", "input must be a string or an array of input items")
    _optional(body, "model", str, "a string")
    _optional(body, "instructions", str, "a string")
    _optional(body, "stream", bool, "true or false")
    _optional(body, "user", str, "a string")
    _optional(body, "safety_identifier", str, "a string")
    _optional(body, "text", dict, "an object")
    tokens = body.get("max_output_tokens")
    if tokens is not None and (not is_int(tokens) or tokens < 1):
        raise Refusal(400, "validation_error", "max_output_tokens must be a positive whole number")
    return body


def responses_input_text(body: dict[str, Any]) -> str:
    """The text of the last user input (the whole input when it is a string)."""
    value = body["input"]
    if isinstance(value, str):
        return value
    for item in reversed(value):
        if item.get("role", "user") == "user" and item.get("type", "message") == "message":
            return text_of(item.get("content"))
    return ""


def responses_usage(body: dict[str, Any], content: str) -> dict[str, Any]:
    """Words of the instructions and every input item (messages, calls' arguments, outputs) in, of the answer out."""
    value = body["input"]
    said = [value] if isinstance(value, str) else [text_of(item.get("content", item.get("output", item.get("arguments"))))
                                                  for item in value]
    input_tokens = words(body.get("instructions") or "") + sum(words(text) for text in said)
    output_tokens = words(content)
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": input_tokens + output_tokens,
    }


def output_message(message_id: str, content: Optional[str]) -> dict[str, Any]:
    """The assistant message item; `content` None for the item as first announced (in progress, no parts)."""
    parts = [] if content is None else [output_text_part(content)]
    return {"id": message_id, "type": "message", "status": "in_progress" if content is None else "completed",
            "role": "assistant", "content": parts}


def output_text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def response_object(response_id: str, created: int, body: dict[str, Any], output: list[dict[str, Any]],
                    usage: Optional[dict[str, Any]], status: str = "completed") -> dict[str, Any]:
    """A `response` as the Responses API returns it."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": created,
        "status": status,
        "completed_at": created if status == "completed" else None,
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "max_tool_calls": None,
        "model": body.get("model") or DEFAULT_MODEL,
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls") is not False,
        "previous_response_id": None,
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": body.get("safety_identifier"),
        "service_tier": "default",
        "store": False,
        "temperature": 1.0,
        "text": {"format": {"type": "text"}, "verbosity": "medium", **(body.get("text") or {})},
        "tool_choice": body.get("tool_choice") or "auto",
        "tools": body.get("tools") or [],
        "top_logprobs": 0,
        "top_p": 1.0,
        "truncation": "disabled",
        "usage": usage,
        "user": body.get("user"),
        "metadata": {},
    }


def response_ids() -> tuple[str, str, int]:
    """A fresh response id, message id and creation time."""
    return "resp_" + uuid.uuid4().hex, "msg_" + uuid.uuid4().hex, int(time.time())


# --- embeddings -------------------------------------------------------------------------------------------------

def embeddings_request(body: Any) -> tuple[dict[str, Any], list[Any]]:
    """An embeddings request and its inputs as a list (each a string or a token array), or Refusal(400)."""
    if not isinstance(body, dict):
        raise Refusal(400, "validation_error", "the body must be a JSON object")
    value = body.get("input")
    if isinstance(value, str) or (isinstance(value, list) and value and all(is_int(t) for t in value)):
        inputs: list[Any] = [value]
    elif isinstance(value, list) and value and all(
            isinstance(item, str) or (isinstance(item, list) and item and all(is_int(t) for t in item)) for item in value):
        inputs = list(value)
    else:
        raise Refusal(400, "validation_error",
                      "input must be a string, an array of strings, a token array or an array of token arrays")
    if len(inputs) > MAX_EMBEDDING_INPUTS:
        raise Refusal(400, "validation_error", f"input may hold at most {MAX_EMBEDDING_INPUTS} items")
    if any(item == "" for item in inputs):
        raise Refusal(400, "validation_error", "input cannot be an empty string")
    _optional(body, "model", str, "a string")
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise Refusal(400, "validation_error", 'encoding_format must be "float" or "base64"')
    dimensions = body.get("dimensions")
    if dimensions is not None and (not is_int(dimensions) or not 1 <= dimensions <= MAX_EMBEDDING_DIMENSIONS):
        raise Refusal(400, "validation_error", f"dimensions must be a whole number from 1 to {MAX_EMBEDDING_DIMENSIONS}")
    return body, inputs


def embedding_vector(item: Any, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A unit vector derived from the input alone, each value exactly a float32 (so both encodings agree)."""
    seed = (item if isinstance(item, str) else ",".join(map(str, item))).encode("utf-8")
    raw: list[float] = []
    counter = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(seed + counter.to_bytes(4, "big")).digest()
        raw += [(byte - 127.5) / 127.5 for byte in digest]
        counter += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return list(struct.unpack(f"<{dimensions}f", struct.pack(f"<{dimensions}f", *(v / norm for v in raw))))


def embeddings_usage(inputs: list[Any]) -> dict[str, int]:
    """Words of each string, length of each token array."""
    tokens = sum(words(item) if isinstance(item, str) else len(item) for item in inputs)
    return {"prompt_tokens": tokens, "total_tokens": tokens}


def embeddings_answer(body: dict[str, Any], inputs: list[Any]) -> dict[str, Any]:
    """The `list` of embeddings; base64 is little-endian float32, as OpenAI sends and its SDK decodes."""
    dimensions = body.get("dimensions") or EMBEDDING_DIMENSIONS
    data = []
    for index, item in enumerate(inputs):
        vector = embedding_vector(item, dimensions)
        encoded: Any = vector
        if body.get("encoding_format") == "base64":
            encoded = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    return {"object": "list", "data": data, "model": body.get("model") or DEFAULT_EMBEDDING_MODEL,
            "usage": embeddings_usage(inputs)}


# --- models -----------------------------------------------------------------------------------------------------

def model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": MODELS_CREATED, "owned_by": "behest"}


def models_list() -> dict[str, Any]:
    return {"object": "list", "data": [model_object(model_id) for model_id in MODELS]}


def model_or_404(model_id: str) -> dict[str, Any]:
    if model_id not in MODELS:
        raise Refusal(404, "model_not_found", f"The model '{model_id[:100]}' does not exist")
    return model_object(model_id)


# --- shared -----------------------------------------------------------------------------------------------------

def pieces(content: str) -> list[str]:
    """Words with their following space, so that joining the pieces gives the content back."""
    split = content.split(" ")
    return [word + " " for word in split[:-1]] + ([split[-1]] if split[-1] else [])


def text_of(content: Any) -> str:
    """The text of a message's content: a string, or the text of its parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def words(text: str) -> int:
    return len(text.split())


def _optional(body: dict[str, Any], name: str, kind: type, described: str) -> None:
    if body.get(name) is not None and not isinstance(body[name], kind):
        raise Refusal(400, "validation_error", f"{name} must be {described}")

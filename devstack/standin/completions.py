"""Legacy completions (`POST /v1/completions`) as OpenAI answers them: a `text_completion`, whole or as chunks.

Each prompt (a string, strings, a token array or token arrays) gets `n` choices of the stand-in's
usual text, `Hello <uid>! You said: <prompt>`, and usage counts words (a token array counts its
tokens), so a test can tell what it will answer.
"""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any, Iterator, Optional

from .answers import _optional, pieces, reply_text, words
from .errors import Refusal
from .faults import is_int
from .sse import DONE, Stream, data_frame

COMPLETIONS_PATH = "/v1/completions"
DEFAULT_MODEL = "behest-default"
MAX_CHOICES = 128


def completions_request(body: Any) -> tuple[dict[str, Any], list[str]]:
    """A completions request and the text of each prompt, or Refusal(400)."""
    if not isinstance(body, dict):
        raise Refusal(400, "validation_error", "the body must be a completions JSON object")
    prompt = body.get("prompt")
    if isinstance(prompt, str) or _tokens(prompt):
        prompts: list[Any] = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) or _tokens(p) for p in prompt):
        prompts = list(prompt)
    else:
        raise Refusal(400, "validation_error",
                      "prompt must be a string, an array of strings, a token array or an array of token arrays")
    _optional(body, "model", str, "a string")
    _optional(body, "stream", bool, "true or false")
    n = body.get("n", 1)
    if not is_int(n) or not 1 <= n <= MAX_CHOICES:
        raise Refusal(400, "validation_error", f"n must be a whole number from 1 to {MAX_CHOICES}")
    return body, [p if isinstance(p, str) else " ".join(map(str, p)) for p in prompts]


def completion_texts(uid: str, prompts: list[str], n: int) -> list[str]:
    """The text of every choice, prompt by prompt, `n` each (OpenAI's order: index = prompt × n + choice)."""
    return [reply_text(uid, prompt) for prompt in prompts for _ in range(n)]


def completions_usage(body: dict[str, Any], texts: list[str]) -> dict[str, int]:
    """Words (or tokens, for a token array) of every prompt in, words of every choice out."""
    prompt = body["prompt"]
    prompts = [prompt] if isinstance(prompt, str) or _tokens(prompt) else prompt
    prompt_tokens = sum(words(p) if isinstance(p, str) else len(p) for p in prompts)
    completion_tokens = sum(words(text) for text in texts)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def text_completion(completion_id: str, created: int, model: str, texts: list[str],
                    usage: dict[str, int]) -> dict[str, Any]:
    """A whole `text_completion`."""
    choices = [{"text": text, "index": index, "logprobs": None, "finish_reason": "stop"}
               for index, text in enumerate(texts)]
    return {"id": completion_id, "object": "text_completion", "created": created, "model": model,
            "system_fingerprint": None, "choices": choices, "usage": usage}


def completion_chunks(completion_id: str, created: int, model: str, texts: list[str],
                      usage: Optional[dict[str, int]]) -> list[dict[str, Any]]:
    """The chunks of a stream, choice by choice; a last usage chunk (no choices) only when `usage` is given."""
    def chunk(index: int, text: str, finish_reason: Optional[str] = None) -> dict[str, Any]:
        return {"id": completion_id, "object": "text_completion", "created": created, "model": model,
                "system_fingerprint": None,
                "choices": [{"text": text, "index": index, "logprobs": None, "finish_reason": finish_reason}]}

    chunks = []
    for index, text in enumerate(texts):
        chunks += [chunk(index, piece) for piece in pieces(text)]
        chunks.append(chunk(index, "", "stop"))
    if usage is not None:
        chunks.append({**chunk(0, ""), "choices": [], "usage": usage})
    return chunks


def completions_stream(chunks: list[dict[str, Any]], text: str) -> Stream:
    """The chunks as data events, then `[DONE]`; endlessly, the text's words over and over."""
    def endless() -> Iterator[bytes]:
        first = chunks[0]
        for piece in itertools.cycle(pieces(text + " ")):
            yield data_frame({**first, "choices": [{**first["choices"][0], "text": piece}]})

    return Stream([data_frame(chunk) for chunk in chunks], DONE, endless())


def answer(body: Any, uid: str) -> tuple[dict[str, Any], Optional[Stream], dict[str, int]]:
    """The whole answer, or the stream when one was asked for, and its usage."""
    request, prompts = completions_request(body)
    texts = completion_texts(uid, prompts, request.get("n", 1))
    usage = completions_usage(request, texts)
    completion_id, created = "cmpl-" + uuid.uuid4().hex[:24], int(time.time())
    model = request.get("model") or DEFAULT_MODEL
    whole = text_completion(completion_id, created, model, texts, usage)
    if request.get("stream") is not True:
        return whole, None, usage
    options = request.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    chunks = completion_chunks(completion_id, created, model, texts, usage if include_usage else None)
    return whole, completions_stream(chunks, texts[0]), usage


def _tokens(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(is_int(t) for t in value)

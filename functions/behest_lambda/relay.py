"""The chat relay core: validate an OpenAI chat-completions body, mint for the verified user, forward.

One path serves the buffered HTTP API route and the streaming route: `Relay.open` returns the
upstream answer's status, headers and a chunk iterator; the caller either joins or streams it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional

from .credentials import API_KEY
from .errors import BehestLambdaError, InvalidRequestError, UpstreamError, UpstreamStatusError, UpstreamTimeoutError
from .identity import Identity
from .mint import Minter, MintRequest, MintResult, valid_session_id
from .settings import Settings
from .upstream import MAX_RESPONSE_BYTES, lower_headers, open_post, read_within, stream_chunks

MAX_MESSAGES = 2048
# API-key mode only: a minted token is reused while it has this long left to live (a mint there
# is an HTTP round trip to Behest; in sign mode it is ~0.3 ms and never reused).
REUSE_MIN_REMAINING = 120
REUSE_MAX_ENTRIES = 1024


@dataclass(frozen=True)
class ChatRequest:
    """A validated chat-completions body, already rewritten by server-side policy."""

    body: dict[str, Any]
    stream: bool
    session_id: Optional[str]


@dataclass
class RelayAnswer:
    """Behest's answer on its way back: status, headers for the client, and the body as chunks."""

    status: int
    headers: dict[str, str]
    chunks: Iterator[bytes]
    stream: bool


def chat_request(body: Optional[Mapping[str, Any]], identity: Identity, settings: Settings,
                 session_header: Optional[str]) -> ChatRequest:
    """Check what the relay relies on, apply policy, and set `user` to the verified user id."""
    if body is None:
        raise InvalidRequestError("the request body must be a chat-completions JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty array")
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequestError(f"messages may hold at most {MAX_MESSAGES} entries")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or not message["role"]:
            raise InvalidRequestError(f"messages[{index}] must be an object with a role")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("stream must be true or false")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise InvalidRequestError("model must be a string")
    if model is not None and settings.allowed_models and model not in settings.allowed_models:
        raise InvalidRequestError(f"model {model[:100]!r} is not allowed here", code="model_not_allowed")

    rewritten = dict(body)
    rewritten["user"] = identity.user_id
    if settings.max_tokens is not None:
        _cap_max_tokens(rewritten, settings.max_tokens)
    try:
        session_id = valid_session_id(session_header)
    except InvalidRequestError:
        raise InvalidRequestError("the X-Session-Id header must be 1-128 safe characters") from None
    return ChatRequest(body=rewritten, stream=stream, session_id=session_id)


def _cap_max_tokens(body: dict[str, Any], ceiling: int) -> None:
    present = [name for name in ("max_tokens", "max_completion_tokens") if body.get(name) is not None]
    for name in present:
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequestError(f"{name} must be a positive whole number")
        body[name] = min(value, ceiling)
    if not present:
        body["max_tokens"] = ceiling


class Relay:
    """Forwards validated chat requests to Behest with a per-user token."""

    def __init__(self, settings: Settings, minter: Minter, *, post: Callable[..., Any] = open_post,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._minter = minter
        self._post = post
        self._clock = clock
        self._wall_clock = wall_clock
        self._reusable: dict[tuple[str, Optional[int], Optional[str]], MintResult] = {}

    def token_for(self, identity: Identity, session_id: Optional[str], within: Optional[float] = None) -> MintResult:
        """A fresh token, or in API-key mode one still good for REUSE_MIN_REMAINING seconds."""
        if self._minter.mode() != API_KEY:
            return self._minter.mint(identity, MintRequest(session_id=session_id))
        key = (identity.user_id, identity.tier, session_id)
        cached = self._reusable.get(key)
        if cached is not None and cached.expires_at - self._wall_clock() >= REUSE_MIN_REMAINING:
            return cached
        minted = self._minter.mint(identity, MintRequest(session_id=session_id), within=within)
        self._reusable.pop(key, None)
        if len(self._reusable) >= REUSE_MAX_ENTRIES:
            del self._reusable[next(iter(self._reusable))]
        self._reusable[key] = minted
        return minted

    def open(self, identity: Identity, request: ChatRequest) -> RelayAnswer:
        """Mint, send, and return Behest's answer; a failure before any byte raises our error."""
        # One deadline for the whole call, mint included, so an API-key mint round trip cannot push
        # the answer past the function's timeout.
        deadline = self._clock() + self._settings.upstream_timeout
        minted = self.token_for(identity, request.session_id, within=self._settings.upstream_timeout)
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise UpstreamTimeoutError("minting the Behest token used up the relay's upstream timeout")
        headers = {
            "Authorization": f"Bearer {minted.token}",
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if request.stream else "application/json",
            "X-Session-Id": minted.session_id,
        }
        payload = json.dumps(request.body, separators=(",", ":")).encode("utf-8")
        response = self._post(self._settings.base_url + "/v1/chat/completions", payload, headers, remaining)
        upstream_headers = lower_headers(response.headers)
        client_headers = {"x-session-id": minted.session_id}
        if "x-trace-id" in upstream_headers:
            client_headers["x-trace-id"] = upstream_headers["x-trace-id"][:128]
        if response.status >= 300:
            raise upstream_failure(response.status, upstream_headers, read_within(response, deadline, self._clock))
        is_sse = upstream_headers.get("content-type", "").startswith("text/event-stream")
        if request.stream and is_sse:
            client_headers.update({"content-type": "text/event-stream", "cache-control": "no-cache"})
            return RelayAnswer(200, client_headers, stream_chunks(response, deadline, self._clock), stream=True)
        body = read_within(response, deadline, self._clock)
        if not _is_json_object(body):
            raise UpstreamError("Behest answered with something that is not a chat completion")
        client_headers.update({"content-type": "application/json", "cache-control": "no-store"})
        return RelayAnswer(200, client_headers, iter((body,)), stream=False)


def upstream_failure(status: int, headers: Mapping[str, str], body: bytes) -> BehestLambdaError:
    """Behest's error answer as ours: 4xx keep their status (and Retry-After), 5xx become 502."""
    code, message = _behest_error(body)
    if 400 <= status < 500:
        retry_after = headers.get("retry-after", "").strip()
        return UpstreamStatusError(
            status,
            message or f"Behest refused the request ({status})",
            code=code or f"http_{status}",
            retry_after=int(retry_after) if retry_after.isdigit() else None,
        )
    detail = f" ({code})" if code else ""
    return UpstreamError(f"Behest failed to answer: upstream status {status}{detail}")


def _behest_error(body: bytes) -> tuple[Optional[str], Optional[str]]:
    try:
        document = json.loads(body)
    except ValueError:
        return None, None
    error = document.get("error") if isinstance(document, dict) else None
    if not isinstance(error, dict):
        return None, None
    code, message = error.get("code"), error.get("message")
    return (
        code[:64] if isinstance(code, str) else None,
        message[:500] if isinstance(message, str) else None,
    )


def _is_json_object(body: bytes) -> bool:
    try:
        return isinstance(json.loads(body), dict)
    except ValueError:
        return False


def sse_error_event(error: BehestLambdaError) -> bytes:
    """An SSE event OpenAI SDKs raise as an APIError: how a stream that broke mid-way ends."""
    document = {"error": {"message": error.message, "type": error.type, "code": error.code}}
    return b"data: " + json.dumps(document, separators=(",", ":")).encode("utf-8") + b"\n\n"


def whole_events(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Regroup a byte stream into blocks of complete SSE events, each checked as OpenAI SDKs will read it.

    Raises UpstreamError for an event that is not UTF-8, a `data:` that is neither JSON nor
    `[DONE]`, or an event too large to be real; upstream failures pass through as they are.
    """
    pending = b""
    for chunk in chunks:
        pending += chunk
        end = max((at + len(mark) for mark in _EVENT_ENDS if (at := pending.rfind(mark)) >= 0), default=0)
        if end:
            complete, pending = pending[:end], pending[end:]
            _check_events(complete)
            yield complete
        elif len(pending) > MAX_EVENT_BYTES:
            raise UpstreamError("Behest sent a stream event larger than the relay accepts")
    if pending.strip():
        _check_events(pending)
        yield pending


MAX_EVENT_BYTES = 1024 * 1024
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")


def _check_events(block: bytes) -> None:
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        raise UpstreamError("Behest sent a stream event that is not UTF-8 text") from None
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.startswith("data:"):
            continue  # blank separators, comments, event:/id:/retry: fields
        data = line[5:].strip()
        if data == "[DONE]":
            continue
        try:
            json.loads(data)
        except ValueError:
            raise UpstreamError("Behest sent a stream event that is not JSON") from None


def buffered_stream(chunks: Iterator[bytes]) -> bytes:
    """Join a stream for a front door that buffers.

    A failure after the first byte (a reset, a stall, the deadline, a garbled event) drops the
    unfinished event and ends the stream with an error event, so the client sees a clean stream
    that says what went wrong.
    """
    parts: list[bytes] = []
    size = 0
    try:
        for block in whole_events(chunks):
            size += len(block)
            if size > MAX_RESPONSE_BYTES - 1024:
                raise UpstreamError("the stream is larger than a buffered Lambda response can carry")
            parts.append(block)
    except UpstreamError as e:
        if not parts:
            raise
        return b"".join(parts) + sse_error_event(e)
    return b"".join(parts)

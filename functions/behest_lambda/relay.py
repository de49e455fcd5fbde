"""The relay core: validate an OpenAI-compatible request, apply policy, mint for the verified user, forward.

One path serves every relayed route (chat, completions, Responses, embeddings, models) on both fronts:
a policy function turns the request into an `UpstreamCall`, `Relay.open` mints and sends it
and returns Behest's answer as status, headers and body chunks that the caller joins (HTTP
API) or streams (Function URL), with a `UsageMeter` watching it pass.
"""

from __future__ import annotations

import json
import re
import time
import urllib.parse
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Optional

from .credentials import ApiKey
from .errors import (
    CHAT_STREAM,
    RESPONSES_STREAM,
    BehestLambdaError,
    InvalidRequestError,
    NotFoundError,
    UpstreamAuthError,
    UpstreamError,
    UpstreamStatusError,
    UpstreamTimeoutError,
    sse_error_event,
)
from .identity import Identity
from .mint import Minter, MintRequest, MintResult, valid_session_id
from .request import Request
from .settings import RelaySettings
from .upstream import lower_headers, open_request, read_within, stream_chunks
from .usage import UsageMeter

if TYPE_CHECKING:
    from .prompt_cache import PromptCacheNamespace

MAX_MESSAGES = 2048
MAX_INPUT_ITEMS = 2048
# API-key mode only: a minted token is reused while it has this long left to live (a mint there
# is an HTTP round trip to Behest; in sign mode it is ~0.3 ms and never reused).
REUSE_MIN_REMAINING = 120
REUSE_MAX_ENTRIES = 1024
# OpenAI's legacy completions API: max_tokens "defaults to 16".
COMPLETIONS_DEFAULT_MAX_TOKENS = 16
MODEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+/-]{0,199}")
MAX_CACHE_KEY_CHARS = 1024


@dataclass(frozen=True)
class UpstreamCall:
    """A validated request, rewritten by server-side policy, ready to forward."""

    route: str
    method: str
    path: str
    body: Optional[dict[str, Any]]
    stream: bool
    session_id: Optional[str]
    model_requested: Optional[str] = None
    # Chat streams: whether the client itself asked for the usage chunk (the relay always asks Behest for it).
    client_wants_usage: bool = True
    # GET /v1/models: keep only these ids (empty = all).
    model_filter: frozenset[str] = frozenset()
    # How a stream of this API ends on an error after its first byte (errors.sse_error_event).
    stream_style: str = CHAT_STREAM
    # The caller's prompt_cache_key, sent to Behest behind the user's tag (prompt_cache.py).
    prompt_cache_key: Optional[str] = None


@dataclass
class RelayAnswer:
    """Behest's answer on its way back: status, headers for the client, the body as chunks, and its meter."""

    status: int
    headers: dict[str, str]
    chunks: Iterator[bytes]
    stream: bool
    meter: UsageMeter
    error_event: Callable[[BehestLambdaError], bytes] = sse_error_event


class StreamTail:
    """Where a relayed stream stands when it breaks off: its error event follows the last event sent."""

    __slots__ = ("style", "sequence_number")

    def __init__(self, style: str) -> None:
        self.style = style
        self.sequence_number: Optional[int] = None

    def observe(self, document: Any) -> None:
        number = document.get("sequence_number") if isinstance(document, dict) else None
        if isinstance(number, int) and not isinstance(number, bool):
            self.sequence_number = number

    def error_event(self, error: BehestLambdaError) -> bytes:
        """The error event in the stream's style; a Responses one numbered after the last event sent."""
        following = 0 if self.sequence_number is None else self.sequence_number + 1
        return sse_error_event(error, self.style, following)


# Policy: one function per route, request → UpstreamCall.

def chat_call(request: Request, identity: Identity, settings: RelaySettings) -> UpstreamCall:
    """Chat completions: messages checked, model allowlist, n and max_tokens ceilings, `user` and `safety_identifier` set."""
    body = _body(request, "chat-completions")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequestError("messages must be a non-empty array")
    if len(messages) > MAX_MESSAGES:
        raise InvalidRequestError(f"messages may hold at most {MAX_MESSAGES} entries")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str) or not message["role"]:
            raise InvalidRequestError(f"messages[{index}] must be an object with a role")
    stream = _stream_flag(body)
    model = _allowed_model(body.get("model"), settings)
    _choices_within(body, ("n",), settings.max_n)
    rewritten = dict(body)
    # `safety_identifier` supersedes `user` in OpenAI's chat API: both are the verified user.
    rewritten["user"] = rewritten["safety_identifier"] = identity.user_id
    _cap(rewritten, ("max_tokens", "max_completion_tokens"), settings.max_tokens)
    client_wants_usage = _usage_asked(body, rewritten) if stream else True
    return UpstreamCall("chat", "POST", "/v1/chat/completions", rewritten, stream, _session(request), model,
                        client_wants_usage=client_wants_usage, prompt_cache_key=_cost_policy(body, settings))


def completions_call(request: Request, identity: Identity, settings: RelaySettings) -> UpstreamCall:
    """Legacy completions (LlamaIndex's OpenAILike, older SDK code): chat's policy on a `prompt`."""
    body = _body(request, "completions")
    if not _text_or_tokens(body.get("prompt")):
        raise InvalidRequestError("prompt must be a string, an array of strings, or token arrays, and not empty")
    stream = _stream_flag(body)
    model = _allowed_model(body.get("model"), settings)
    # best_of makes Behest generate that many completions server-side, each billed: held to the same cap as n.
    _choices_within(body, ("n", "best_of"), settings.max_n)
    rewritten = dict(body)
    rewritten["user"] = identity.user_id
    # The API's own default when max_tokens is absent is 16: a client sending none expects a short answer.
    _cap(rewritten, ("max_tokens",), settings.max_tokens, absent=COMPLETIONS_DEFAULT_MAX_TOKENS)
    client_wants_usage = _usage_asked(body, rewritten) if stream else True
    return UpstreamCall("completions", "POST", "/v1/completions", rewritten, stream, _session(request), model,
                        client_wants_usage=client_wants_usage, prompt_cache_key=_cost_policy(body, settings))


def responses_call(request: Request, identity: Identity, settings: RelaySettings) -> UpstreamCall:
    """The Responses API: input checked, model allowlist, max_output_tokens ceiling, user and safety_identifier set."""
    body = _body(request, "Responses API")
    given = body.get("input")
    if not (isinstance(given, str) and given) and not (isinstance(given, list) and given):
        raise InvalidRequestError("input must be a non-empty string or array")
    if isinstance(given, list):
        if len(given) > MAX_INPUT_ITEMS:
            raise InvalidRequestError(f"input may hold at most {MAX_INPUT_ITEMS} items")
        if not all(isinstance(item, dict) for item in given):
            raise InvalidRequestError("input items must be objects")
    if body.get("background") is True:
        # A background response is fetched later from GET /v1/responses/{id}, which this relay does not serve.
        raise InvalidRequestError("background responses are not supported here", code="unsupported_parameter")
    stream = _stream_flag(body)
    model = _allowed_model(body.get("model"), settings)
    rewritten = dict(body)
    rewritten["user"] = identity.user_id
    rewritten["safety_identifier"] = identity.user_id
    _cap(rewritten, ("max_output_tokens",), settings.max_tokens)
    return UpstreamCall("responses", "POST", "/v1/responses", rewritten, stream, _session(request), model,
                        stream_style=RESPONSES_STREAM, prompt_cache_key=_cost_policy(body, settings))


def embeddings_call(request: Request, identity: Identity, settings: RelaySettings) -> UpstreamCall:
    """Embeddings: input a string, strings, a token array or token arrays; model allowlist; `user` set."""
    body = _body(request, "embeddings")
    if not _text_or_tokens(body.get("input")):
        raise InvalidRequestError("input must be a string, an array of strings, or token arrays, and not empty")
    if body.get("stream") is not None:
        raise InvalidRequestError("embeddings do not stream")
    model = _allowed_model(body.get("model"), settings)
    rewritten = dict(body)
    rewritten["user"] = identity.user_id
    return UpstreamCall("embeddings", "POST", "/v1/embeddings", rewritten, False, _session(request), model)


def models_call(request: Request, identity: Identity, settings: RelaySettings) -> UpstreamCall:
    """The models this user may use: Behest's list, filtered to BEHEST_ALLOWED_MODELS when set."""
    return UpstreamCall("models", "GET", "/v1/models", None, False, _session(request),
                        model_filter=settings.allowed_models)


def model_call(request: Request, identity: Identity, settings: RelaySettings) -> UpstreamCall:
    """One model; a model outside BEHEST_ALLOWED_MODELS does not exist here (404)."""
    model = urllib.parse.unquote(request.params.get("model", ""))
    if not MODEL_ID.fullmatch(model):
        raise NotFoundError("no such model", code="model_not_found")
    if settings.allowed_models and model not in settings.allowed_models:
        raise NotFoundError(f"the model {model!r} does not exist", code="model_not_found")
    return UpstreamCall("model", "GET", "/v1/models/" + urllib.parse.quote(model, safe=""), None, False,
                        _session(request), model)


POLICIES: dict[str, Callable[[Request, Identity, RelaySettings], UpstreamCall]] = {
    "chat": chat_call,
    "responses": responses_call,
    "completions": completions_call,
    "embeddings": embeddings_call,
    "models": models_call,
    "model": model_call,
}


def _body(request: Request, kind: str) -> dict[str, Any]:
    body = request.json_object()
    if body is None:
        raise InvalidRequestError(f"the request body must be a {kind} JSON object")
    return body


def _stream_flag(body: Mapping[str, Any]) -> bool:
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("stream must be true or false")
    return stream


def _allowed_model(model: Any, settings: RelaySettings) -> Optional[str]:
    if model is None:
        return None
    if not isinstance(model, str):
        raise InvalidRequestError("model must be a string")
    if settings.allowed_models and model not in settings.allowed_models:
        raise InvalidRequestError(f"model {model[:100]!r} is not allowed here", code="model_not_allowed")
    return model


def _cost_policy(body: Mapping[str, Any], settings: RelaySettings) -> Optional[str]:
    """`service_tier` among BEHEST_ALLOWED_SERVICE_TIERS; the caller's `prompt_cache_key`, checked, to be namespaced."""
    tier = body.get("service_tier")
    if tier is not None and (not isinstance(tier, str) or tier not in settings.allowed_service_tiers):
        allowed = ", ".join(sorted(settings.allowed_service_tiers))
        raise InvalidRequestError(f"service_tier must be one of: {allowed}", code="service_tier_not_allowed")
    cache_key = body.get("prompt_cache_key")
    if cache_key is not None and (not isinstance(cache_key, str) or not 0 < len(cache_key) <= MAX_CACHE_KEY_CHARS):
        raise InvalidRequestError(f"prompt_cache_key must be a string of 1 to {MAX_CACHE_KEY_CHARS} characters")
    return cache_key


def _choices_within(body: Mapping[str, Any], names: tuple[str, ...], most: int) -> None:
    """Each given choice count (`n`, `best_of`) a whole number from 1 to `most`."""
    for name in names:
        value = body.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most):
            raise InvalidRequestError(f"{name} must be a whole number from 1 to {most}", code="n_too_large")


def _usage_asked(body: Mapping[str, Any], rewritten: dict[str, Any]) -> bool:
    """Ask Behest for a stream's usage chunk, always (its cost must be known); whether the client asked too.

    The usage-only chunk is dropped on the way back unless the client asked for it.
    """
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequestError("stream_options must be an object")
    rewritten["stream_options"] = {**(options or {}), "include_usage": True}
    return bool(options and options.get("include_usage") is True)


def _cap(body: dict[str, Any], names: tuple[str, ...], ceiling: int, absent: Optional[int] = None) -> None:
    """Hold every given limit to `ceiling`; when none is given, set the first name to `absent` (held too) or the ceiling."""
    present = [name for name in names if body.get(name) is not None]
    for name in present:
        value = body[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidRequestError(f"{name} must be a positive whole number")
        body[name] = min(value, ceiling)
    if not present:
        body[names[0]] = ceiling if absent is None else min(absent, ceiling)


def _text_or_tokens(value: Any) -> bool:
    def tokens(item: Any) -> bool:
        return isinstance(item, list) and bool(item) and all(isinstance(t, int) and not isinstance(t, bool) for t in item)

    if isinstance(value, str):
        return bool(value)
    if not isinstance(value, list) or not value or len(value) > MAX_INPUT_ITEMS:
        return False
    return all(isinstance(v, str) and v for v in value) or tokens(value) or all(tokens(v) for v in value)


def _session(request: Request) -> Optional[str]:
    try:
        return valid_session_id(request.header("x-session-id"))
    except InvalidRequestError:
        raise InvalidRequestError("the X-Session-Id header must be 1-128 safe characters") from None


class Relay:
    """Forwards validated requests to Behest with a per-user token."""

    def __init__(self, settings: RelaySettings, minter: Minter, *, send: Callable[..., Any] = open_request,
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time) -> None:
        self._settings = settings
        self._minter = minter
        self._send = send
        self._clock = clock
        self._wall_clock = wall_clock
        self._reusable: dict[tuple[str, Optional[int], Optional[str]], MintResult] = {}
        self._prompt_cache: Optional[PromptCacheNamespace] = None

    def token_for(self, identity: Identity, session_id: Optional[str], within: Optional[float] = None) -> MintResult:
        """A fresh token, or in API-key mode one still good for REUSE_MIN_REMAINING seconds."""
        if not isinstance(self._minter.credentials(), ApiKey):
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

    def open(self, identity: Identity, call: UpstreamCall, meter: Optional[UsageMeter] = None, *,
             deadline: Optional[float] = None) -> RelayAnswer:
        """Mint, send, and return Behest's answer; a failure before any byte raises our error.

        One deadline covers the whole call, mint included (an API-key mint is a round trip), and
        never runs past `deadline` (the invocation's own, on the streaming route).
        """
        own = self._clock() + self._settings.timeout
        deadline = own if deadline is None else min(own, deadline)
        minted = self.token_for(identity, call.session_id, within=max(0.0, deadline - self._clock()))
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise UpstreamTimeoutError("minting the Behest token used up the relay's upstream timeout")
        headers = {
            "Authorization": f"Bearer {minted.token}",
            "Accept": "text/event-stream" if call.stream else "application/json",
            "X-Session-Id": minted.session_id,
        }
        payload = None
        if call.body is not None:
            sent = call.body
            if call.prompt_cache_key is not None:
                sent = {**sent, "prompt_cache_key": self._namespaced(identity, call.prompt_cache_key)}
            headers["Content-Type"] = "application/json"
            payload = json.dumps(sent, separators=(",", ":")).encode("utf-8")
        meter = meter or meter_for(identity, call)
        meter.session_id = minted.session_id
        response = self._send(call.method, self._settings.base_url + call.path, payload, headers, remaining)
        upstream_headers = lower_headers(response.headers)
        client_headers = {"x-session-id": minted.session_id}
        if "x-trace-id" in upstream_headers:
            client_headers["x-trace-id"] = upstream_headers["x-trace-id"][:128]
        meter.status = response.status
        if response.status >= 300:
            failure = upstream_failure(response.status, upstream_headers,
                                       read_within(response, deadline, self._clock), kid=minted.kid)
            if isinstance(failure, UpstreamAuthError):  # API-key mode: a refused token is not reused
                self._reusable.pop((identity.user_id, identity.tier, call.session_id), None)
            raise failure
        is_sse = upstream_headers.get("content-type", "").startswith("text/event-stream")
        if call.stream and is_sse:
            client_headers.update({"content-type": "text/event-stream", "cache-control": "no-cache"})
            tail = StreamTail(call.stream_style)
            events = relayed_events(stream_chunks(response, deadline, self._clock), meter,
                                    drop_usage_chunk=not call.client_wants_usage, tail=tail)
            return RelayAnswer(200, client_headers, events, stream=True, meter=meter, error_event=tail.error_event)
        meter.first_byte()
        body = read_within(response, deadline, self._clock)
        document = _json_object(body)
        if document is None:
            raise UpstreamError(f"Behest answered {call.route} with something that is not a JSON object")
        meter.observe(document)
        if call.model_filter:
            body = _filtered_models(document, call.model_filter)
        client_headers.update({"content-type": "application/json", "cache-control": "no-store"})
        return RelayAnswer(200, client_headers, iter((body,)), stream=False, meter=meter)

    def _namespaced(self, identity: Identity, caller_key: str) -> str:
        """The caller's prompt_cache_key in the user's own namespace (imported on first use: few requests carry one)."""
        if self._prompt_cache is None:
            from .prompt_cache import PromptCacheNamespace

            self._prompt_cache = PromptCacheNamespace()
        return self._prompt_cache.key_for(self._minter.credentials(), identity.user_id, caller_key)


def meter_for(identity: Identity, call: UpstreamCall) -> UsageMeter:
    """A meter for one relayed call."""
    return UsageMeter(call.route, identity.user_id, call.session_id, identity.tier, call.model_requested,
                      streamed=call.stream)


# Behest's 403 codes that refuse the token itself (as a 401 does), not what the user asked for.
TOKEN_REFUSALS = frozenset({"invalid_token", "token_expired"})
# Why Behest refuses a token, most likely first (README, "The key secret"): one this deployment signed (sign
# mode), or one Behest minted for its API key (API-key mode, where a token is reused while it lives).
SIGNED_TOKEN_CAUSES = (
    "the kid is not registered at Behest for this tenant and project (or was removed)",
    "clock skew between this function and Behest (iat, nbf, exp)",
    "the key was rotated in the secret without registering its public key at Behest under the new kid",
)
MINTED_TOKEN_CAUSES = (
    "the API key was revoked or rotated at Behest after the token was minted",
    "clock skew between this function and Behest (iat, nbf, exp)",
)


def upstream_failure(status: int, headers: Mapping[str, str], body: bytes, *,
                     kid: Optional[str] = None) -> BehestLambdaError:
    """Behest's error answer as ours: 4xx (and a 503 with Retry-After) keep status and Retry-After; other 5xx → 502.

    Behest refusing the token we minted (401, or 403 invalid_token / token_expired) is ours to fix: 502.
    """
    code, message = _behest_error(body)
    if status == 401 or (status == 403 and code in TOKEN_REFUSALS):
        refused, causes = ("a token this deployment signed", SIGNED_TOKEN_CAUSES) if kid is not None else \
            ("a token Behest minted for this deployment's API key", MINTED_TOKEN_CAUSES)
        return UpstreamAuthError(refused, causes, upstream_status=status, upstream_code=code, kid=kid)
    retry_after = _retry_after(headers)
    if 400 <= status < 500 or (status == 503 and retry_after is not None):
        return UpstreamStatusError(
            status,
            message or f"Behest refused the request ({status})",
            code=code or f"http_{status}",
            retry_after=retry_after,
        )
    detail = f" ({code})" if code else ""
    return UpstreamError(f"Behest failed to answer: upstream status {status}{detail}")


def _retry_after(headers: Mapping[str, str]) -> Optional[int]:
    value = headers.get("retry-after", "").strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 6 else None


def _behest_error(body: bytes) -> tuple[Optional[str], Optional[str]]:
    error = (_json_object(body) or {}).get("error")
    if not isinstance(error, dict):
        return None, None
    code, message = error.get("code"), error.get("message")
    return (
        code[:64] if isinstance(code, str) else None,
        message[:500] if isinstance(message, str) else None,
    )


def _json_object(body: bytes) -> Optional[dict[str, Any]]:
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None


def _filtered_models(document: dict[str, Any], allowed: frozenset[str]) -> bytes:
    data = document.get("data")
    if isinstance(data, list):
        document = {**document, "data": [m for m in data if isinstance(m, dict) and m.get("id") in allowed]}
    return json.dumps(document, separators=(",", ":")).encode("utf-8")


MAX_EVENT_BYTES = 1024 * 1024
_EVENT_END = re.compile(rb"\r\n\r\n|\n\n|\r\r")


def sse_events(chunks: Iterator[bytes]) -> Iterator[tuple[bytes, list[Any]]]:
    """Split a byte stream into whole SSE events, each with its parsed `data:` documents.

    Raises UpstreamError for an event that is not UTF-8, a `data:` that is neither JSON nor
    `[DONE]`, or an event too large to be real; upstream failures pass through as they are.
    """
    pending = b""
    try:
        for chunk in chunks:
            pending += chunk
            while True:
                end = _EVENT_END.search(pending)
                if end is None:
                    break
                event, pending = pending[:end.end()], pending[end.end():]
                yield event, _documents(event)
            if len(pending) > MAX_EVENT_BYTES:
                raise UpstreamError("Behest sent a stream event larger than the relay accepts")
        if pending.strip():
            yield pending, _documents(pending)
    finally:
        # However the events end (a garbled one, the client gone), Behest's connection closes now, not at GC.
        close = getattr(chunks, "close", None)
        if close is not None:
            close()


def _documents(event: bytes) -> list[Any]:
    try:
        text = event.decode("utf-8")
    except UnicodeDecodeError:
        raise UpstreamError("Behest sent a stream event that is not UTF-8 text") from None
    documents = []
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        if not line.startswith("data:"):
            continue  # blank separators, comments, event:/id:/retry: fields
        data = line[5:].strip()
        if data == "[DONE]":
            continue
        try:
            documents.append(json.loads(data))
        except (ValueError, RecursionError):
            raise UpstreamError("Behest sent a stream event that is not JSON") from None
    return documents


def relayed_events(chunks: Iterator[bytes], meter: UsageMeter, *, drop_usage_chunk: bool,
                   tail: Optional[StreamTail] = None) -> Iterator[bytes]:
    """Behest's events as they come, each metered; the usage-only chat chunk is dropped when the client did not ask."""
    for event, documents in sse_events(chunks):
        meter.first_byte()
        for document in documents:
            meter.observe(document)
        if drop_usage_chunk and any(_is_usage_only_chunk(d) for d in documents):
            continue
        if tail is not None:
            for document in documents:
                tail.observe(document)
        yield event


def _is_usage_only_chunk(document: Any) -> bool:
    return isinstance(document, dict) and document.get("choices") == [] and isinstance(document.get("usage"), dict)


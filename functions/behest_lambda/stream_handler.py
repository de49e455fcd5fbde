"""The streaming chat route: `POST /v1/chat/completions` behind a Lambda Function URL (RESPONSE_STREAM).

Tokens reach the client as Behest produces them. The managed Python runtime cannot stream, so
`stream_runtime` speaks the Runtime API itself and calls `StreamFunction.respond` once per
invocation; the local dev stack serves the same `respond` over plain HTTP (devstack/stream_url.py).
A Function URL has no JWT authorizer: the caller's identity token is verified here
(`caller_token`), then the request takes the buffered route's path — `chat_request`, one mint,
`Relay.open` — and Behest's answer is passed on event by event.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Generator, Iterator, Mapping, Optional

from . import apigw
from . import settings as names
from .caller_token import CallerTokenVerifier, bearer_token
from .errors import BehestLambdaError, ConfigurationError, NotFoundError, UnauthenticatedError
from .identity import Identity, identity_from_claims
from .key_source import key_source_for
from .mint import Minter
from .relay import ChatRequest, Relay, RelayAnswer, chat_request, sse_error_event, whole_events
from .settings import Settings
from .telemetry import Telemetry

SERVICE = "behest-chat-stream"
CHAT_PATH = "/v1/chat/completions"
# An SSE event is held back until its blank line arrives (so an error event never lands inside a
# half-sent one); a "stream" that never sends one is cut here.

Prelude = dict[str, Any]


class AnswerBody:
    """The answer's body as it comes; once it is exhausted, `failure` says whether it broke off."""

    def __init__(self, parts: Iterator[bytes], *, sse: bool = False,
                 on_end: Optional[Callable[[AnswerBody], None]] = None) -> None:
        self.failure: Optional[BehestLambdaError] = None
        self.bytes_sent = 0
        self.first_byte_at: Optional[float] = None
        self._upstream = parts
        self._on_end = on_end
        self._parts = self._events(parts) if sse else self._passed_on(parts)

    def __iter__(self) -> AnswerBody:
        return self

    def __next__(self) -> bytes:
        return next(self._parts)

    def close(self) -> None:
        """Stop early (the client left): closes Behest's connection too."""
        self._parts.close()

    def _passed_on(self, parts: Iterator[bytes]) -> Generator[bytes, None, None]:
        try:
            for part in parts:
                yield self._sent(part)
        finally:
            self._end()

    def _events(self, parts: Iterator[bytes]) -> Generator[bytes, None, None]:
        """Whole SSE events as they complete; a failure ends the stream with an error event."""
        try:
            for block in whole_events(parts):
                yield self._sent(block)
        except BehestLambdaError as e:  # raised by the upstream reader: a reset, a stall, the deadline
            self.failure = e
            yield self._sent(sse_error_event(e))
        finally:
            self._end()

    def _sent(self, part: bytes) -> bytes:
        if self.first_byte_at is None:
            self.first_byte_at = time.monotonic()
        self.bytes_sent += len(part)
        return part

    def _end(self) -> None:
        close = getattr(self._upstream, "close", None)
        if close is not None:
            close()
        if self._on_end is not None:
            on_end, self._on_end = self._on_end, None
            on_end(self)


class StreamFunction:
    """The streaming chat route, built once per container."""

    def __init__(self, settings: Settings, relay: Relay, verifier: CallerTokenVerifier, telemetry: Telemetry) -> None:
        self.settings = settings
        self.relay = relay
        self.verifier = verifier
        self.telemetry = telemetry

    @classmethod
    def from_env(cls, telemetry: Telemetry, environ: Optional[Mapping[str, str]] = None) -> StreamFunction:
        """Read the environment once; a ConfigurationError names the variables at fault (the caller settings included)."""
        settings = Settings.from_env(environ)
        telemetry.configure(settings.log_level, settings.metrics_namespace)
        verifier = CallerTokenVerifier.from_settings(settings, telemetry)
        minter = Minter(settings, key_source_for(settings, telemetry))
        return cls(settings, Relay(settings, minter), verifier, telemetry)

    def respond(self, event: Mapping[str, Any], context: Any = None) -> tuple[Prelude, AnswerBody]:
        """Answer one Function URL event: the HTTP prelude, then the body as it comes.

        Refusals and upstream errors before the first byte are whole answers with their status
        and OpenAI's error shape (a 429 keeps Retry-After, a 5xx becomes 502). A stream that breaks
        later ends with an SSE error event, and the body's `failure` tells the runtime so.
        """
        if context is not None:
            self.telemetry.start_invocation(context)
        started = time.monotonic()
        try:
            require_chat_route(event)
            identity = self.caller(event)
            body = apigw.json_object_body(event, self.settings.max_body_bytes)
            request = chat_request(body, identity, self.settings, apigw.header(event, "x-session-id"))
            answer = self.relay.open(identity, request)
        except BehestLambdaError as e:
            # A whole answer rather than the Runtime API's /error: through a Function URL, /error
            # reaches the client as a bare 502, while OpenAI SDKs need the real status, Retry-After
            # and error shape to raise RateLimitError, AuthenticationError and the rest.
            return refusal(self.telemetry, e)

        def relayed(body: AnswerBody) -> None:
            self._log_relayed(identity, request, answer, body, started)

        prelude = {"statusCode": answer.status, "headers": dict(answer.headers), "cookies": []}
        return prelude, AnswerBody(answer.chunks, sse=answer.stream, on_end=relayed)

    def caller(self, event: Mapping[str, Any]) -> Identity:
        """The identity of the verified caller: the Authorization bearer, checked against the issuer's JWKS."""
        claims = self.verifier.claims(bearer_token(apigw.header(event, "authorization")))
        return identity_from_claims(claims, self.settings)

    def _log_relayed(self, identity: Identity, request: ChatRequest, answer: RelayAnswer, body: AnswerBody,
                     started: float) -> None:
        first_byte_ms = None if body.first_byte_at is None else round((body.first_byte_at - started) * 1000, 1)
        fields = {"uid": identity.user_id, "sid": answer.headers.get("x-session-id"), "stream": answer.stream,
                  "model": request.body.get("model"), "bytes": body.bytes_sent, "first_byte_ms": first_byte_ms,
                  "ms": round((time.monotonic() - started) * 1000, 1)}
        if body.failure is not None:
            self.telemetry.warning("stream broke off", code=body.failure.code, detail=body.failure.message, **fields)
            self.telemetry.metric("StreamBrokeOff", code=body.failure.code)
        else:
            self.telemetry.info("chat relayed", **fields)
            self.telemetry.metric("ChatRelayed")


def require_chat_route(event: Mapping[str, Any]) -> None:
    """A Function URL takes every path: only POST /v1/chat/completions is ours."""
    path = event.get("rawPath")
    if path != CHAT_PATH:
        raise NotFoundError(f"no route for {str(path)[:100]}; POST {CHAT_PATH}")
    apigw.require_post(event)


def refusal(telemetry: Telemetry, error: BehestLambdaError) -> tuple[Prelude, AnswerBody]:
    """A refused request as a whole answer: its status, headers and OpenAI-shaped JSON body."""
    answer = apigw.refusal(telemetry, error)
    headers = dict(answer["headers"])
    if isinstance(error, UnauthenticatedError):
        headers["www-authenticate"] = "Bearer"
    prelude = {"statusCode": answer["statusCode"], "headers": headers, "cookies": []}
    return prelude, AnswerBody(iter((answer["body"].encode("utf-8"),)))


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """What the managed runtime would call without the wrapper: a loud configuration error, not a silent buffer."""
    telemetry = Telemetry(SERVICE)
    telemetry.start_invocation(context)
    return apigw.refusal(telemetry, ConfigurationError(
        f"the streaming function runs through its own Runtime API loop: set {names.AWS_LAMBDA_EXEC_WRAPPER}"
        " to /var/task/stream-bootstrap"
    ))

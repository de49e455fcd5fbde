"""The bundle's errors: one root, one subclass per failure, each with its one HTTP status.

`answer_for` is the one place an error becomes status + headers + body: OpenAI's error shape
as JSON, or as an SSE error event once a stream has started (`sse_error_event`).
"""

from __future__ import annotations

import json
from typing import NamedTuple, Optional


class BehestLambdaError(Exception):
    """Root of every error the functions turn into an HTTP answer."""

    status = 500
    code = "internal_error"
    type = "server_error"  # OpenAI's error `type`, so OpenAI SDKs raise the matching class

    def __init__(self, message: str, *, retry_after: Optional[int] = None, code: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        if code is not None:
            self.code = code

    def headers(self) -> dict[str, str]:
        """Headers the answer carries beside the body."""
        return {"retry-after": str(self.retry_after)} if self.retry_after is not None else {}


class ConfigurationError(BehestLambdaError):
    """The deployment is misconfigured; the message names the variables."""

    status = 500
    code = "configuration_error"


class InvalidRequestError(BehestLambdaError):
    """The caller sent a malformed body or field."""

    status = 400
    code = "invalid_request"
    type = "invalid_request_error"


class UnauthenticatedError(BehestLambdaError):
    """No verified identity reached the function."""

    status = 401
    code = "unauthenticated"
    type = "authentication_error"

    def __init__(self, message: str, *, challenge: bool = False) -> None:
        super().__init__(message)
        self.challenge = challenge

    def headers(self) -> dict[str, str]:
        return {"www-authenticate": "Bearer"} if self.challenge else {}


class ForbiddenError(BehestLambdaError):
    """The verified caller may not do this (server-side policy)."""

    status = 403
    code = "forbidden"
    type = "permission_error"


class NotFoundError(BehestLambdaError):
    """No route for this path, or (models) a model this deployment does not offer."""

    status = 404
    code = "not_found"
    type = "invalid_request_error"


class MethodNotAllowedError(BehestLambdaError):
    """The route exists, the method does not."""

    status = 405
    code = "method_not_allowed"
    type = "invalid_request_error"

    def __init__(self, message: str, *, allow: tuple[str, ...] = ("POST",)) -> None:
        super().__init__(message)
        self.allow = allow

    def headers(self) -> dict[str, str]:
        return {"allow": ", ".join(self.allow)}


class PayloadTooLargeError(BehestLambdaError):
    """The body is over the configured size cap."""

    status = 413
    code = "payload_too_large"
    type = "invalid_request_error"


class SigningKeyUnavailableError(BehestLambdaError):
    """The tenant key cannot be had (Secrets Manager down, denied or malformed) and no usable cached key."""

    status = 503
    code = "signing_key_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message, retry_after=retry_after)


class IdentityKeysUnavailableError(BehestLambdaError):
    """The identity provider's keys (JWKS) cannot be fetched and none are held: not the caller's fault."""

    status = 503
    code = "identity_keys_unavailable"

    def __init__(self, message: str, *, retry_after: int = 5) -> None:
        super().__init__(message, retry_after=retry_after)


class UpstreamError(BehestLambdaError):
    """Behest answered with a failure or could not be reached."""

    status = 502
    code = "upstream_error"


class UpstreamTimeoutError(UpstreamError):
    """Behest did not answer within the configured timeout."""

    status = 504
    code = "upstream_timeout"


class UpstreamAuthError(UpstreamError):
    """Behest refused this deployment's credentials (a token it minted, or its API key): never the caller's fault.

    Passed on as Behest's 401, OpenAI SDKs would raise AuthenticationError and apps would sign a
    user out whose identity token is fine. The message says nothing about keys; `report` (the
    operator's ERROR line) says the rest.
    """

    status = 502
    code = "upstream_auth_failed"
    MESSAGE = ("the model gateway did not accept this service's request; this is a problem with the service's setup,"
               " not with your sign-in")

    def __init__(self, refused: str, causes: tuple[str, ...], *, upstream_status: int,
                 upstream_code: Optional[str], kid: Optional[str] = None) -> None:
        super().__init__(self.MESSAGE)
        self.refused = refused
        self.causes = causes
        self.kid = kid
        self.upstream_status = upstream_status
        self.upstream_code = upstream_code

    def report(self) -> dict[str, object]:
        """What the operator's log line says: what was refused, the kid (never a token or key), the likely causes."""
        return {"refused": self.refused, "kid": self.kid, "upstream_status": self.upstream_status,
                "upstream_code": self.upstream_code, "likely_causes": list(self.causes)}


class UpstreamStatusError(UpstreamError):
    """Behest answered 4xx (or 503 with Retry-After): the status, code and Retry-After pass through to the caller."""

    def __init__(self, status: int, message: str, *, code: str, retry_after: Optional[int] = None) -> None:
        super().__init__(message, retry_after=retry_after, code=code)
        self.status = status
        self.type = _OPENAI_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")


class FetchError(Exception):
    """One fetch of a cached value failed; `reason` is a structured cause (throttled, timeout, …)."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "insufficient_quota",
    403: "permission_error",
    404: "not_found_error",
    409: "conflict_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    451: "content_policy_violation",
}

JSON_HEADERS = {"content-type": "application/json", "cache-control": "no-store"}


class ErrorAnswer(NamedTuple):
    """An error as an HTTP answer: status, headers, JSON body."""

    status: int
    headers: dict[str, str]
    body: bytes


def error_document(error: BehestLambdaError) -> dict[str, dict[str, str]]:
    """One error shape everywhere: Behest's `code`/`message` plus OpenAI's `type`."""
    return {"error": {"message": error.message, "type": error.type, "code": error.code}}


def answer_for(error: BehestLambdaError) -> ErrorAnswer:
    """The HTTP answer for one of our errors, before any byte of a body was sent."""
    body = json.dumps(error_document(error), separators=(",", ":")).encode("utf-8")
    return ErrorAnswer(error.status, {**JSON_HEADERS, **error.headers()}, body)


# How a stream that has started ends on an error: in its own API's way.
CHAT_STREAM = "chat"
RESPONSES_STREAM = "responses"


def sse_error_event(error: BehestLambdaError, style: str = CHAT_STREAM, sequence_number: int = 0) -> bytes:
    """The same error once a stream has started, as the stream's own API ends on one.

    A chat stream: `data: {"error": {…}}`, which OpenAI SDKs raise as an APIError. A Responses
    stream: its `error` event, numbered after the last event sent, which clients that check
    every Responses event against its schema (the Vercel AI SDK) read as the error it is.
    """
    if style == RESPONSES_STREAM:
        event = {"type": "error", "code": error.code, "message": error.message, "param": None,
                 "sequence_number": sequence_number}
        return b"event: error\ndata: " + json.dumps(event, separators=(",", ":")).encode("utf-8") + b"\n\n"
    return b"data: " + json.dumps(error_document(error), separators=(",", ":")).encode("utf-8") + b"\n\n"

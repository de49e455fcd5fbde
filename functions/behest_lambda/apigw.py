"""API Gateway HTTP API (payload 2.0) at the edge: read the request, shape the answer."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Callable, Mapping, Optional, Protocol

from .errors import (
    BehestLambdaError,
    ConfigurationError,
    InvalidRequestError,
    MethodNotAllowedError,
    PayloadTooLargeError,
)
from .telemetry import Telemetry

JSON_HEADERS = {"content-type": "application/json", "cache-control": "no-store"}


def method(event: Mapping[str, Any]) -> str:
    """The HTTP method, upper-cased ('' when the event has none)."""
    context = event.get("requestContext")
    http = context.get("http") if isinstance(context, Mapping) else None
    value = http.get("method") if isinstance(http, Mapping) else None
    return value.upper() if isinstance(value, str) else ""


def require_post(event: Mapping[str, Any]) -> None:
    """Only POST reaches the cores."""
    if method(event) != "POST":
        raise MethodNotAllowedError("use POST")


def header(event: Mapping[str, Any], name: str) -> Optional[str]:
    """A request header by lower-case name (HTTP APIs lower-case them)."""
    headers = event.get("headers")
    if not isinstance(headers, Mapping):
        return None
    value = headers.get(name)
    return value if isinstance(value, str) else None


def raw_body(event: Mapping[str, Any], max_bytes: int) -> bytes:
    """The body bytes, base64-decoded when API Gateway encoded them, capped at `max_bytes`."""
    body = event.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise InvalidRequestError("the request body must be text")
    if event.get("isBase64Encoded") is True:
        if len(body) > (max_bytes + 2) // 3 * 4 + 4:
            raise PayloadTooLargeError(f"the request body is over {max_bytes} bytes")
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError("the request body is not valid base64") from None
    else:
        if len(body) > max_bytes:  # characters ≤ bytes: a cheap early refusal
            raise PayloadTooLargeError(f"the request body is over {max_bytes} bytes")
        try:
            data = body.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequestError("the request body is not valid UTF-8") from None
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"the request body is over {max_bytes} bytes")
    return data


def json_object_body(event: Mapping[str, Any], max_bytes: int) -> Optional[dict[str, Any]]:
    """The body as a JSON object; None when empty. Duplicate keys and non-objects are refused."""
    data = raw_body(event, max_bytes)
    if not data.strip():
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError("the request body is not valid UTF-8") from None
    try:
        document = json.loads(text, object_pairs_hook=_refuse_duplicates, parse_constant=_refuse_constant,
                              parse_float=_finite_float)
    except _DuplicateKeyError as e:
        raise InvalidRequestError(f"the request body repeats the key {e.args[0]!r}") from None
    except RecursionError:
        raise InvalidRequestError("the request body is nested too deeply") from None
    except ValueError as e:
        raise InvalidRequestError(f"the request body is not valid JSON ({_json_error(e)})") from None
    if not isinstance(document, dict):
        raise InvalidRequestError("the request body must be a JSON object")
    return document


def json_response(status: int, body: Any, headers: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """A payload 2.0 answer with a JSON body, never cached."""
    return {
        "statusCode": status,
        "headers": {**JSON_HEADERS, **(headers or {})},
        "body": json.dumps(body, separators=(",", ":")),
    }


def error_body(error: BehestLambdaError) -> dict[str, Any]:
    """One error shape for both routes: Behest's `code`/`message` plus OpenAI's `type`."""
    return {"error": {"message": error.message, "type": error.type, "code": error.code}}


def error_headers(error: BehestLambdaError) -> dict[str, str]:
    """Retry-After where a retry makes sense; Allow on 405."""
    headers: dict[str, str] = {}
    if error.retry_after is not None:
        headers["retry-after"] = str(error.retry_after)
    if isinstance(error, MethodNotAllowedError):
        headers["allow"] = "POST"
    return headers


def error_response(error: BehestLambdaError) -> dict[str, Any]:
    """The HTTP answer for one of our errors."""
    return json_response(error.status, error_body(error), error_headers(error))


def refusal(telemetry: Telemetry, error: BehestLambdaError) -> dict[str, Any]:
    """Log and count a refused request, then answer it."""
    level = telemetry.error if error.status >= 500 else telemetry.info
    level("request refused", status=error.status, code=error.code, detail=error.message)
    telemetry.metric("RequestRefused", code=error.code)
    return error_response(error)


class Route(Protocol):
    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]: ...


Handler = Callable[[Mapping[str, Any], Any], dict[str, Any]]


def entry_point(build: Callable[[Telemetry], Route], telemetry: Telemetry) -> Handler:
    """A Lambda handler that builds its route on first use (so a configuration error is answered, not crashed on).

    Nothing is built at import, so a SnapStart snapshot holds no key, id or connection; after a
    restore the route is dropped anyway, in case an invocation ran before the snapshot.
    """
    route: Optional[Route] = None

    def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        nonlocal route
        telemetry.start_invocation(context)
        if route is None:
            try:
                route = build(telemetry)
            except ConfigurationError as e:
                return refusal(telemetry, e)
        return route.handle(event)

    def forget() -> None:
        nonlocal route
        route = None
        telemetry.request_id = None
        telemetry.cold_start = True

    after_snapstart_restore(forget)
    return handler


def after_snapstart_restore(hook: Callable[[], None]) -> None:
    """Run `hook` after a SnapStart restore, where the managed runtime (Python 3.12+) offers restore hooks."""
    try:
        from snapshot_restore_py import register_after_restore  # bundled in Lambda's managed runtime
    except ImportError:
        return
    register_after_restore(hook)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("a number too large for JSON")
    return value


class _DuplicateKeyError(ValueError):
    pass


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise _DuplicateKeyError(key[:64])
        document[key] = value
    return document


def _json_error(error: ValueError) -> str:
    if isinstance(error, json.JSONDecodeError):
        return f"{error.msg} at line {error.lineno} column {error.colno}"
    return str(error)[:100] or "unreadable"

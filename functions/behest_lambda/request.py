"""The event, read once at the edge into a typed request: HTTP API payload 2.0 and Function URL events alike."""

from __future__ import annotations

import base64
import binascii
import json
from collections import abc
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple, Optional

from .errors import InvalidRequestError, PayloadTooLargeError

MAX_PATH_CHARS = 2048


class Request(NamedTuple):
    """What the cores see of a request; `claims` are the authorizer's verified claims (HTTP API only)."""

    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str]
    body: bytes
    request_id: Optional[str]
    claims: Optional[Mapping[str, Any]] = None
    params: Mapping[str, str] = MappingProxyType({})
    # Monotonic time by which the answer must be done (the streaming route: the invocation's own deadline).
    deadline: Optional[float] = None
    # The caller Lambda authenticated by its SigV4 signature (a Function URL with AuthType AWS_IAM only).
    iam: Optional[Mapping[str, Any]] = None
    # Payload 2.0's `cookies`: API Gateway and Function URLs move the Cookie header here, one pair per entry.
    cookies: tuple[str, ...] = ()

    @classmethod
    def from_event(cls, event: Mapping[str, Any], max_body_bytes: int) -> Request:
        """Read a payload 2.0 event; a body that is not what it claims to be, or too large, is the caller's error."""
        context = _mapping(event.get("requestContext"))
        http = _mapping(context.get("http"))
        method = http.get("method")
        path = event.get("rawPath")
        if not isinstance(path, str):
            path = http.get("path")
        headers = {str(k).lower(): v for k, v in _mapping(event.get("headers")).items() if isinstance(v, str)}
        query = {str(k): v for k, v in _mapping(event.get("queryStringParameters")).items() if isinstance(v, str)}
        authorizer = _mapping(context.get("authorizer"))
        claims = _mapping(_mapping(authorizer.get("jwt")).get("claims")) or None
        request_id = context.get("requestId")
        cookies = event.get("cookies")
        return cls(
            method=method.upper() if isinstance(method, str) else "",
            path=path[:MAX_PATH_CHARS] if isinstance(path, str) else "",
            headers=headers,
            query=query,
            body=_body(event, max_body_bytes),
            request_id=request_id if isinstance(request_id, str) else None,
            claims=claims,
            iam=_mapping(authorizer.get("iam")) or None,
            cookies=tuple(c for c in cookies if isinstance(c, str)) if isinstance(cookies, list) else (),
        )

    def header(self, name: str) -> Optional[str]:
        """A request header by lower-case name."""
        return self.headers.get(name)

    def json_object(self) -> Optional[dict[str, Any]]:
        """The body as a JSON object; None when empty. Duplicate keys, NaN and non-objects are refused."""
        if not self.body.strip():
            return None
        try:
            text = self.body.decode("utf-8")
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


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, abc.Mapping) else {}


def _body(event: Mapping[str, Any], max_bytes: int) -> bytes:
    """The body bytes, base64-decoded when the front encoded them, capped at `max_bytes`."""
    body = event.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise InvalidRequestError("the request body must be text")
    too_large = PayloadTooLargeError(f"the request body is over {max_bytes} bytes")
    if event.get("isBase64Encoded") is True:
        if len(body) > (max_bytes + 2) // 3 * 4 + 4:
            raise too_large
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidRequestError("the request body is not valid base64") from None
    else:
        if len(body) > max_bytes:  # characters ≤ bytes: a cheap early refusal
            raise too_large
        try:
            data = body.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequestError("the request body is not valid UTF-8") from None
    if len(data) > max_bytes:
        raise too_large
    return data


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

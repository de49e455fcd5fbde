"""Calls to Behest over stdlib urllib: explicit timeouts, no redirects, failures as our own errors."""

from __future__ import annotations

import http.client
import json
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional

from .errors import UpstreamError, UpstreamTimeoutError

# Lambda's synchronous response cap; a larger upstream answer could not be returned anyway.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024
USER_AGENT = "behest-lambda/1.0"


class _RefuseRedirects(urllib.request.HTTPRedirectHandler):
    """A redirect would replay the bearer token to another URL: treat it as the answer instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener: Optional[urllib.request.OpenerDirector] = None


def _get_opener() -> urllib.request.OpenerDirector:
    global _opener
    if _opener is None:
        _opener = build_opener()
    return _opener


def build_opener(*handlers: urllib.request.BaseHandler) -> urllib.request.OpenerDirector:
    """A urllib opener that follows no redirect, with `handlers` added."""
    return urllib.request.build_opener(_RefuseRedirects, *handlers)


@dataclass(frozen=True)
class UpstreamResponse:
    """A whole upstream answer: status, lower-cased headers, body bytes."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def open_request(method: str, url: str, body: Optional[bytes], headers: Mapping[str, str], timeout: float,
                 opener: Optional[urllib.request.OpenerDirector] = None) -> Any:
    """Send a request and return the open response (any status); the caller reads and closes it.

    `timeout` bounds the connect and every later read, so a stalled stream fails too.
    """
    # Base URLs are checked to be http(s) in settings, so no file: or custom scheme reaches here.
    request = urllib.request.Request(  # noqa: S310
        url, data=body, method=method, headers={"User-Agent": USER_AGENT, **headers}
    )
    try:
        return (opener or _get_opener()).open(request, timeout=timeout)  # noqa: S310
    except urllib.error.HTTPError as e:
        return e  # an HTTPError is also the response: status, headers and body
    except urllib.error.URLError as e:
        if isinstance(e.reason, (socket.timeout, TimeoutError)):
            raise UpstreamTimeoutError(f"Behest did not answer within {timeout:g} s") from e
        raise UpstreamError(f"Behest is unreachable ({_reason(e.reason)})") from e
    except TimeoutError as e:
        raise UpstreamTimeoutError(f"Behest did not answer within {timeout:g} s") from e
    except (OSError, http.client.HTTPException) as e:  # reset or refused after the URL was accepted
        raise UpstreamError(f"Behest connection failed ({_reason(e)})") from e


def open_post(url: str, body: bytes, headers: Mapping[str, str], timeout: float) -> Any:
    """POST and return the open response (any status)."""
    return open_request("POST", url, body, headers, timeout)


def post_json(url: str, payload: Any, headers: Mapping[str, str], timeout: float) -> UpstreamResponse:
    """POST a JSON payload and read the whole answer, body included, within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    body = json.dumps(payload, separators=(",", ":")).encode("utf-8")
    response = open_post(url, body, {"Content-Type": "application/json", "Accept": "application/json", **headers}, timeout)
    return UpstreamResponse(response.status, lower_headers(response.headers), read_within(response, deadline))


def read_within(response: Any, deadline: float, clock: Callable[[], float] = time.monotonic, *,
                limit: int = MAX_RESPONSE_BYTES) -> bytes:
    """The whole body by `deadline` on `clock`, at most `limit` bytes; then the response is closed."""
    parts: list[bytes] = []
    size = 0
    for chunk in stream_chunks(response, deadline, clock):
        size += len(chunk)
        if size > limit:
            raise UpstreamError("the answer is larger than the relay accepts")
        parts.append(chunk)
    return b"".join(parts)


def stream_chunks(response: Any, deadline: float, clock: Callable[[], float]) -> Iterator[bytes]:
    """Yield body bytes as they arrive until the end, or until `deadline` on `clock` passes.

    A per-read socket timeout alone would let a body that trickles in forever hold the function
    until Lambda kills it: every read gets only the time left.
    """
    with response:
        while True:
            remaining = deadline - clock()
            if remaining <= 0:
                raise UpstreamTimeoutError("Behest's answer ran past the timeout")
            _set_read_timeout(response, remaining)
            try:
                chunk = response.read1(65536)
            except TimeoutError as e:
                raise UpstreamTimeoutError("Behest's answer stalled past the timeout") from e
            except (OSError, http.client.HTTPException) as e:
                raise UpstreamError(f"Behest's stream broke off ({_reason(e)})") from e
            if not chunk:
                return
            yield chunk


def _set_read_timeout(response: Any, seconds: float) -> None:
    # urllib gives no handle on the socket; without one the open-time timeout still bounds each read.
    # An HTTPError (a 4xx/5xx answer) wraps the HTTPResponse one level further down.
    fp = getattr(response, "fp", None)
    if isinstance(fp, http.client.HTTPResponse):
        fp = fp.fp
    sock = getattr(getattr(fp, "raw", None), "_sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def lower_headers(headers: Any) -> dict[str, str]:
    """Header names lower-cased (last value wins)."""
    return {name.lower(): value for name, value in headers.items()}


def _reason(reason: object) -> str:
    return type(reason).__name__ if not isinstance(reason, str) else reason

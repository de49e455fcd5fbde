"""What a core answers, before a front renders it: the shapes the route base and the cores share.

The cores import these from here and the route base (`app`) renders them, so neither imports the other's
module for its types (PyJWT's `api_jws` / `api_jwt` split: shared shapes below, each layer importing down).
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Optional

from .errors import BehestLambdaError, sse_error_event
from .identity import Identity
from .request import Request

Ender = Callable[[Optional[BehestLambdaError], bool], None]
# How a stream that broke off after its first byte says so: the error event in the stream's own style.
ErrorEvent = Callable[[BehestLambdaError], bytes]


class Reply(NamedTuple):
    """An answer before it is rendered for a front: status, headers, body chunks, and what to do at its end."""

    status: int
    headers: dict[str, str]
    chunks: Iterator[bytes]
    stream: bool = False
    on_end: Optional[Ender] = None
    error_event: ErrorEvent = sse_error_event


Core = Callable[[Request, Identity], Reply]
# How a front learns who is calling: the verified identity of a request, or an error that is its answer.
Identify = Callable[[Request], Identity]


def json_reply(status: int, body: Any, headers: Optional[Mapping[str, str]] = None) -> Reply:
    """A whole JSON reply, never cached."""
    data = json.dumps(body, separators=(",", ":")).encode("utf-8")
    return Reply(status, {"content-type": "application/json", "cache-control": "no-store", **(headers or {})},
                 iter((data,)))

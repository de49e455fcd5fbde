"""The route table: which (method, path) goes to which core, on which front.

Read by the Lambda entry points, by `make dev`'s local API and local Function URL, and by the
template test (a route here and not in `template.yaml`, or the reverse, fails it). Importing
it costs nothing: the cores are named, not imported.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

from .errors import MethodNotAllowedError, NotFoundError

HTTP_API = "http_api"
FUNCTION_URL = "function_url"
# The server-to-server front: a Function URL with AuthType AWS_IAM, for trusted backends acting for a named user.
SERVICE_URL = "service_url"

# Logical ids in template.yaml of the functions behind the HTTP API.
TOKEN_FUNCTION = "TokenFunction"
RELAY_FUNCTION = "RelayFunction"
# The streaming function behind the Function URL serves every route marked `function_url`.
STREAM_FUNCTION = "StreamFunction"
# The function behind the IAM Function URL serves every route of the table (deployed only for listed roles).
SERVICE_FUNCTION = "ServiceFunction"


class RouteSpec(NamedTuple):
    """One route: its method and path template, the core that answers it, and where it is served."""

    method: str
    path: str
    core: str
    function: str
    function_url: bool = False

    def fronts(self) -> tuple[str, ...]:
        return (HTTP_API, FUNCTION_URL, SERVICE_URL) if self.function_url else (HTTP_API, SERVICE_URL)

    def pattern(self) -> re.Pattern[str]:
        """The path template as a regex: `{name}` matches one path segment."""
        parts = re.split(r"\{(\w+)\}", self.path)
        regex = "".join(re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts))
        return re.compile(regex)


ROUTES: tuple[RouteSpec, ...] = (
    RouteSpec("POST", "/api/behest/token", "token", TOKEN_FUNCTION),
    RouteSpec("POST", "/v1/chat/completions", "chat", RELAY_FUNCTION, function_url=True),
    RouteSpec("POST", "/v1/responses", "responses", RELAY_FUNCTION, function_url=True),
    RouteSpec("POST", "/v1/completions", "completions", RELAY_FUNCTION, function_url=True),
    RouteSpec("POST", "/v1/embeddings", "embeddings", RELAY_FUNCTION, function_url=True),
    RouteSpec("GET", "/v1/models", "models", RELAY_FUNCTION, function_url=True),
    RouteSpec("GET", "/v1/models/{model}", "model", RELAY_FUNCTION, function_url=True),
)

# Templates with a parameter, compiled when a function first matches against them (most paths are literal).
_PATTERNS: dict[RouteSpec, re.Pattern[str]] = {}


class Match(NamedTuple):
    """A route and the values of its path parameters."""

    route: RouteSpec
    params: dict[str, str]


def routes_for(front: str, function: Optional[str] = None) -> tuple[RouteSpec, ...]:
    """The routes one front serves (and, for the HTTP API, one function)."""
    return tuple(r for r in ROUTES if front in r.fronts() and (function is None or r.function == function))


def match(method: str, path: str, routes: tuple[RouteSpec, ...] = ROUTES) -> Match:
    """The route for (method, path); NotFoundError or MethodNotAllowedError (with the methods allowed) otherwise."""
    allowed: list[str] = []
    for route in routes:
        params = _params(route, path)
        if params is None:
            continue
        if route.method == method:
            return Match(route, params)
        allowed.append(route.method)
    if allowed:
        raise MethodNotAllowedError(f"use {' or '.join(sorted(set(allowed)))} for {path[:100]}",
                                    allow=tuple(sorted(set(allowed))))
    raise NotFoundError(f"no route for {method[:10]} {path[:100]}")


def _params(route: RouteSpec, path: str) -> Optional[dict[str, str]]:
    """The path parameters if `path` fits the route's template, else None."""
    if "{" not in route.path:
        return {} if path == route.path else None
    pattern = _PATTERNS.get(route)
    if pattern is None:
        pattern = _PATTERNS[route] = route.pattern()
    found = pattern.fullmatch(path)
    return None if found is None else found.groupdict()

"""A local stand-in for the deployed API Gateway HTTP API: route table, JWT authorizer, CORS, payload 2.0 events.

It does for the handlers what API Gateway does in AWS: a (method, path) in the route table
(`behest_lambda.routes`, HTTP API front) is authorized — the caller's identity token verified
against the issuer's JWKS (RS256 signature, iss, aud, exp, nbf, iat), else API Gateway's own
`401 {"message":"Unauthorized"}` — and handed to the handler of the route's function with the
verified claims (as strings) and the path parameters. Anything the table does not route goes,
like the deployed `$default` route, to the relay function with no authorizer and no claims: it
answers OpenAI-shaped 404/405 itself. CORS preflights are answered for the configured origins.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import urllib.request
import uuid
from typing import Any, Callable, Iterable, Mapping, Optional

import jwt

from behest_lambda.errors import MethodNotAllowedError, NotFoundError
from behest_lambda.routes import HTTP_API, RELAY_FUNCTION, Match, RouteSpec, match, routes_for
from devstack.loopback import LoopbackServer, LoopbackService, NoDelayHandler, cors_headers, split_cookies

Handler = Callable[[Mapping[str, Any], Any], Mapping[str, Any]]

# API Gateway's JWT authorizer has no configurable leeway: its documentation says exp "must be after
# the current time", nbf and iat "must be before the current time"
# (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-jwt-authorizer.html).
# So none here either: a token the deployed API would refuse is refused locally too. The streaming
# function, which verifies callers itself, applies the same value.
CLOCK_LEEWAY_SECONDS = 0
# What API Gateway answers itself, before any function runs.
UNAUTHORIZED = b'{"message":"Unauthorized"}'
INTERNAL_ERROR = b'{"message":"Internal Server Error"}'
PREFLIGHT_METHODS = "GET, POST, OPTIONS"
# The HTTP API's JWT authorizer verifies RSA signatures only.
RSA_ALGORITHMS = ["RS256", "RS384", "RS512"]


class JwtAuthorizer:
    """API Gateway's JWT authorizer: an RSA signature by a key of the issuer's discovery document, iss, aud
    (or, in a token without aud, client_id), exp, nbf, iat; the token from the Authorization header only.

    API Gateway finds the keys through `issuer + /.well-known/openid-configuration` → `jwks_uri`
    (https://docs.aws.amazon.com/apigateway/latest/developerguide/http-api-jwt-authorizer.html); a
    `jwks_url` given here skips that look-up.
    """

    def __init__(self, issuer: str, audiences: Iterable[str], jwks_url: Optional[str] = None,
                 leeway: float = CLOCK_LEEWAY_SECONDS) -> None:
        self.issuer = issuer
        self.audiences = list(audiences)
        self.leeway = leeway
        self._jwks_url = jwks_url
        self._jwks: Optional[jwt.PyJWKClient] = None

    def _keys(self) -> jwt.PyJWKClient:
        if self._jwks is None:
            url = self._jwks_url or _discovered_jwks_uri(self.issuer)
            self._jwks = jwt.PyJWKClient(url, cache_keys=True, lifespan=300, timeout=5)
        return self._jwks

    def claims(self, authorization: Optional[str]) -> Optional[dict[str, str]]:
        """The verified claims, stringified as API Gateway does, or None."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        token = authorization[7:].strip()
        try:
            key = self._keys().get_signing_key_from_jwt(token)
            # PyJWT refuses an iat later than now + leeway, as API Gateway refuses an iat in the future.
            verified = jwt.decode(token, key.key, algorithms=RSA_ALGORITHMS, issuer=self.issuer, leeway=self.leeway,
                                  options={"require": ["exp", "iss", "sub"], "verify_aud": False})
        except (jwt.PyJWTError, ValueError, TypeError, OverflowError, OSError):
            return None
        # aud when the token has one; only without it, client_id (Cognito's access tokens).
        audience = verified["aud"] if "aud" in verified else verified.get("client_id")
        values = audience if isinstance(audience, list) else [audience]
        if not any(isinstance(value, str) and value in self.audiences for value in values):
            return None
        return {name: _as_claim_string(value) for name, value in verified.items()}


def _discovered_jwks_uri(issuer: str) -> str:
    """The `jwks_uri` of the issuer's OIDC discovery document."""
    url = issuer.rstrip("/") + "/.well-known/openid-configuration"
    with urllib.request.urlopen(url, timeout=5) as response:
        document = json.loads(response.read(1024 * 1024))
    jwks_uri = document.get("jwks_uri") if isinstance(document, dict) else None
    if not isinstance(jwks_uri, str):
        raise ValueError(f"{url} names no jwks_uri")
    return jwks_uri


def _as_claim_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + " ".join(str(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, dict) else str(value)


class _Context:
    """The slice of the Lambda context object the handlers read."""

    def __init__(self, function_name: str) -> None:
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = function_name

    def get_remaining_time_in_millis(self) -> int:
        return 29_000


class LocalHttpApi(LoopbackService):
    """Routes each request by the route table to a function's handler, behind a JWT authorizer and CORS, on loopback.

    `functions` maps the template's function ids ("TokenFunction", "RelayFunction") to Lambda handlers.
    """

    def __init__(
        self,
        functions: Mapping[str, Handler],
        authorizer: Optional[JwtAuthorizer],
        *,
        routes: tuple[RouteSpec, ...] = routes_for(HTTP_API),
        default_function: str = RELAY_FUNCTION,
        allowed_origins: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        public_paths: Mapping[str, tuple[str, bytes]] | None = None,
        credentials: bool = False,
    ) -> None:
        missing = {route.function for route in routes} | {default_function}
        missing -= set(functions)
        if missing:
            raise ValueError(f"no handler for {sorted(missing)}")
        self.functions = dict(functions)
        self.routes = routes
        self.default_function = default_function
        # None: no JWT authorizer on the routes (the template attaches none where API Gateway cannot verify the
        # provider's tokens), and the functions verify callers themselves.
        self.authorizer = authorizer
        self.allowed_origins = set(allowed_origins)
        # CORS `allowCredentials`: browsers then send (and read answers to) cookie-carrying requests.
        self.credentials = credentials
        self.public_paths = dict(public_paths or {})
        self._server = LoopbackServer((host, port), self._handler_class())
        self.url = f"http://{host}:{self._server.server_address[1]}"

    def route(self, method: str, path: str) -> Optional[Match]:
        """The table's route for (method, path); None when the `$default` route takes it."""
        try:
            return match(method, path, self.routes)
        except (NotFoundError, MethodNotAllowedError):
            return None

    def event_for(self, method: str, target: str, headers: Iterable[tuple[str, str]] | Mapping[str, str], body: bytes,
                  claims: Optional[Mapping[str, str]], source_ip: str,
                  found: Optional[Match] = None) -> dict[str, Any]:
        """The payload 2.0 event API Gateway would build; no `authorizer` on the `$default` route."""
        url = urllib.parse.urlsplit(target)
        headers, cookies = split_cookies(headers.items() if isinstance(headers, Mapping) else headers)
        try:
            text, encoded = body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode("ascii"), True
        query = urllib.parse.parse_qs(url.query)
        route_key = f"{found.route.method} {found.route.path}" if found else "$default"
        context: dict[str, Any] = {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": "localhost",
            "http": {"method": method, "path": url.path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                     "userAgent": headers.get("user-agent", "")},
            "requestId": str(uuid.uuid4()),
            "routeKey": route_key,
            "stage": "$default",
            "timeEpoch": int(time.time() * 1000),
        }
        if claims is not None:
            context["authorizer"] = {"jwt": {"claims": dict(claims), "scopes": None}}
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route_key,
            "rawPath": url.path,
            "rawQueryString": url.query,
            "headers": dict(headers),
            "requestContext": context,
            "body": text if body else None,
            "isBase64Encoded": encoded,
        }
        if cookies:
            event["cookies"] = cookies
        if found and found.params:
            event["pathParameters"] = dict(found.params)
        if query:
            event["queryStringParameters"] = {k: ",".join(v) for k, v in query.items()}
        return event

    def _handler_class(self) -> type[NoDelayHandler]:
        api = self

        class Handler(NoDelayHandler):
            def do_OPTIONS(self) -> None:  # noqa: N802
                if self.headers.get("Access-Control-Request-Method") is None:
                    self.dispatch()
                    return
                origin = self.headers.get("Origin")
                self.answer_preflight(origin if origin in api.allowed_origins else None, PREFLIGHT_METHODS,
                                      credentials=api.credentials)

            def dispatch(self) -> None:
                body = self.body_or_refuse()
                if body is None:
                    return
                path = urllib.parse.urlsplit(self.path).path
                if self.command in ("GET", "HEAD") and path in api.public_paths:
                    content_type, data = api.public_paths[path]
                    self.send_whole(200, {"Content-Type": content_type}, data)
                    return
                found = api.route(self.command, path)
                claims = None
                if found is not None and api.authorizer is not None:
                    claims = api.authorizer.claims(self.headers.get("Authorization"))
                    if claims is None:
                        self.send_whole(401, {"Content-Type": "application/json", "WWW-Authenticate": "Bearer"},
                                        UNAUTHORIZED)
                        return
                function = found.route.function if found else api.default_function
                event = api.event_for(self.command, self.path, self.headers.items(), body, claims,
                                      self.client_address[0], found)
                try:
                    response = api.functions[function](event, _Context(function))
                except Exception:  # API Gateway's answer to a function error; the traceback goes to the console
                    self.send_whole(500, {"Content-Type": "application/json"}, INTERNAL_ERROR)
                    raise
                text = response.get("body") or ""
                payload = base64.b64decode(text) if response.get("isBase64Encoded") else str(text).encode("utf-8")
                self.send_whole(int(response.get("statusCode", 200)), dict(response.get("headers") or {}), payload)

            def error_body(self, status: int, message: str) -> bytes:
                # API Gateway's own errors are {"message": ...}.
                return json.dumps({"message": message}).encode()

            def extra_headers(self) -> dict[str, str]:
                headers = getattr(self, "headers", None)  # absent when the request line itself was garbled
                origin = headers.get("Origin") if headers else None
                if origin not in api.allowed_origins:
                    return {}
                return cors_headers(str(origin), api.credentials)

        return Handler

"""A local stand-in for the deployed API Gateway HTTP API: JWT authorizer, CORS, payload 2.0 events.

It does for the handlers what API Gateway does in AWS: verifies the caller's identity token
against the issuer's JWKS (signature, iss, aud, exp, nbf), refuses with 401 otherwise, answers
CORS preflights for the configured origins, and hands the handler a payload 2.0 event whose
`requestContext.authorizer.jwt.claims` carry the verified claims as strings.
"""

from __future__ import annotations

import base64
import json
import socket
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Mapping, Optional, Self

import jwt

Handler = Callable[[Mapping[str, Any], Any], Mapping[str, Any]]

CORS_ALLOW_HEADERS = "authorization, content-type, x-session-id"
CORS_EXPOSE_HEADERS = "x-session-id, retry-after, x-trace-id"


class LoopbackServer(ThreadingHTTPServer):
    """The dev servers' HTTP server: a thread per connection, and a backlog that survives a burst of clients."""

    daemon_threads = True
    request_queue_size = 128  # the default 5 overflows under a few concurrent clients (a 1 s SYN retry each time)


class NoDelayHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, each write sent at once."""

    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle holds the body ~40 ms on kept-alive connections.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def answer_preflight(self, origin: Optional[str], methods: str) -> None:
        """204 to a CORS preflight; the allow headers only for an allowed `origin` (else the browser refuses)."""
        self.send_response(204)
        if origin:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Methods", methods)
            self.send_header("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS)
            self.send_header("Access-Control-Max-Age", "600")
            self.send_header("Vary", "Origin")
        self.send_header("Content-Length", "0")
        self.end_headers()


class LoopbackService:
    """Start/stop for a dev server that serves `_server` on a daemon thread; usable as a context manager."""

    _server: LoopbackServer
    url: str

    def start(self) -> Self:
        threading.Thread(target=self._server.serve_forever, name=type(self).__name__, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class JwtAuthorizer:
    """API Gateway's JWT authorizer: RS256 signature by a JWKS key, iss, aud, exp, nbf."""

    def __init__(self, issuer: str, audiences: Iterable[str], jwks_url: str) -> None:
        self.issuer = issuer
        self.audiences = list(audiences)
        self._jwks = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300, timeout=5)

    def claims(self, authorization: Optional[str]) -> Optional[dict[str, str]]:
        """The verified claims, stringified as API Gateway does, or None."""
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        token = authorization[7:].strip()
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            verified = jwt.decode(token, key.key, algorithms=["RS256"], issuer=self.issuer, audience=self.audiences,
                                  options={"require": ["exp", "iss", "sub"]})
        except jwt.PyJWTError:
            return None
        return {name: _as_claim_string(value) for name, value in verified.items()}


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
    """Routes `(METHOD, path)` to Lambda handlers behind a JWT authorizer and CORS, on loopback."""

    def __init__(
        self,
        routes: Mapping[tuple[str, str], Handler],
        authorizer: JwtAuthorizer,
        *,
        allowed_origins: Iterable[str] = (),
        host: str = "127.0.0.1",
        port: int = 0,
        public_paths: Mapping[str, tuple[str, bytes]] | None = None,
    ) -> None:
        self.routes = dict(routes)
        self.authorizer = authorizer
        self.allowed_origins = set(allowed_origins)
        self.public_paths = dict(public_paths or {})
        self._server = LoopbackServer((host, port), self._handler_class())
        self.url = f"http://{host}:{self._server.server_address[1]}"

    def event_for(self, method: str, target: str, headers: Mapping[str, str], body: bytes,
                  claims: Mapping[str, str], source_ip: str) -> dict[str, Any]:
        """The payload 2.0 event API Gateway would build for this request."""
        url = urllib.parse.urlsplit(target)
        try:
            text, encoded = body.decode("utf-8"), False
        except UnicodeDecodeError:
            text, encoded = base64.b64encode(body).decode("ascii"), True
        query = urllib.parse.parse_qs(url.query)
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": f"{method} {url.path}",
            "rawPath": url.path,
            "rawQueryString": url.query,
            "headers": dict(headers),
            "requestContext": {
                "accountId": "000000000000",
                "apiId": "local",
                "authorizer": {"jwt": {"claims": dict(claims), "scopes": None}},
                "domainName": "localhost",
                "http": {"method": method, "path": url.path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                         "userAgent": headers.get("user-agent", "")},
                "requestId": str(uuid.uuid4()),
                "routeKey": f"{method} {url.path}",
                "stage": "$default",
                "timeEpoch": int(time.time() * 1000),
            },
            "body": text if body else None,
            "isBase64Encoded": encoded,
        }
        if query:
            event["queryStringParameters"] = {k: ",".join(v) for k, v in query.items()}
        return event

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        api = self

        class Handler(NoDelayHandler):
            def do_OPTIONS(self) -> None:  # noqa: N802
                origin = self.headers.get("Origin")
                self.answer_preflight(origin if origin in api.allowed_origins else None, "POST, OPTIONS")

            def do_GET(self) -> None:  # noqa: N802
                path = urllib.parse.urlsplit(self.path).path
                if path in api.public_paths:
                    content_type, data = api.public_paths[path]
                    self._send(200, {"content-type": content_type}, data)
                else:
                    self._dispatch("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._dispatch("POST")

            def _dispatch(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                path = urllib.parse.urlsplit(self.path).path
                handler = api.routes.get((method, path))
                if handler is None:
                    self._send(404, {"content-type": "application/json"}, b'{"message":"Not Found"}')
                    return
                claims = api.authorizer.claims(self.headers.get("Authorization"))
                if claims is None:
                    self._send(401, {"content-type": "application/json", "www-authenticate": "Bearer"},
                               b'{"message":"Unauthorized"}')
                    return
                headers = {name.lower(): value for name, value in self.headers.items()}
                event = api.event_for(method, self.path, headers, body, claims, self.client_address[0])
                try:
                    response = handler(event, _Context(path))
                except Exception:  # API Gateway's answer to a function error
                    self._send(500, {"content-type": "application/json"}, b'{"message":"Internal Server Error"}')
                    raise
                data = response.get("body") or ""
                payload = base64.b64decode(data) if response.get("isBase64Encoded") else str(data).encode("utf-8")
                self._send(int(response.get("statusCode", 200)), dict(response.get("headers") or {}), payload)

            def _send(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                origin = self.headers.get("Origin")
                if origin in api.allowed_origins:
                    self.send_header("Access-Control-Allow-Origin", origin)
                    self.send_header("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)
                    self.send_header("Vary", "Origin")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

"""A local Lambda Function URL (InvokeMode RESPONSE_STREAM) for the streaming function, on loopback.

Each HTTP request becomes the Function URL event (payload 2.0, no authorizer: the function
verifies the caller itself), `respond` answers it, and the prelude's status and headers go out
first, then each body part as its own HTTP chunk the moment it is produced. Like a Function URL
with a `Cors` setting, it answers preflights itself for the allowed origins. Every other method
and path reaches the function, as on a real Function URL; malformed HTTP gets a JSON error.

    function = StreamFunction.from_env(telemetry, env)
    with StreamFunctionUrl(function) as url:
        client = openai.OpenAI(base_url=url.url + "/v1", api_key=identity_token)
"""

from __future__ import annotations

import base64
import json
import time
import urllib.parse
import uuid
from email.message import Message
from typing import Any, Iterable, Mapping, Optional

from behest_lambda.stream_runtime import Responder, pump
from devstack.loopback import LoopbackServer, LoopbackService, NoDelayHandler, cors_headers, split_cookies

MAX_BODY_BYTES = 6 * 1024 * 1024  # a Function URL's request payload cap
PREFLIGHT_METHODS = "GET, POST"


class _Context:
    """The slice of the Lambda context the function reads."""

    def __init__(self) -> None:
        self.aws_request_id = str(uuid.uuid4())


class StreamFunctionUrl(LoopbackService):
    """Serves `function.respond` over HTTP/1.1 with chunked, unbuffered answers."""

    def __init__(self, function: Responder, *, host: str = "127.0.0.1", port: int = 0,
                 allowed_origins: Iterable[str] = (), credentials: bool = False) -> None:
        self.function = function
        self.allowed_origins = set(allowed_origins)
        # The Function URL's Cors.AllowCredentials: set when a session cookie may carry the caller's token.
        self.credentials = credentials
        self._server = LoopbackServer((host, port), self._handler_class())
        self.url = f"http://{host}:{self._server.server_address[1]}"

    @staticmethod
    def event_for(method: str, target: str, headers: Iterable[tuple[str, str]] | Mapping[str, str], body: bytes,
                  source_ip: str,
                  host: str) -> dict[str, Any]:
        """The event a Function URL hands the function for this request."""
        url = urllib.parse.urlsplit(target)
        lowered, cookies = split_cookies(headers.items() if isinstance(headers, Mapping) else headers)
        now = time.time()
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": url.path,
            "rawQueryString": url.query,
            "headers": lowered,
            "requestContext": {
                "accountId": "anonymous",
                "apiId": "local",
                "domainName": host,
                "domainPrefix": "local",
                "http": {"method": method, "path": url.path, "protocol": "HTTP/1.1", "sourceIp": source_ip,
                         "userAgent": lowered.get("user-agent", "")},
                "requestId": str(uuid.uuid4()),
                "routeKey": "$default",
                "stage": "$default",
                "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
                "timeEpoch": int(now * 1000),
            },
            "isBase64Encoded": False,
        }
        if cookies:
            event["cookies"] = cookies
        query = urllib.parse.parse_qs(url.query)
        if query:
            event["queryStringParameters"] = {name: ",".join(values) for name, values in query.items()}
        if body:
            try:
                event["body"] = body.decode("utf-8")
            except UnicodeDecodeError:
                event["body"], event["isBase64Encoded"] = base64.b64encode(body).decode("ascii"), True
        return event

    def authorize(self, method: str, target: str, headers: Message, body: bytes,
                  event: dict[str, Any]) -> Optional[tuple[int, dict[str, str], bytes]]:
        """What the URL's AuthType does before the function runs: with NONE, nothing (a refusal otherwise)."""
        return None

    def _handler_class(self) -> type[NoDelayHandler]:
        url = self

        class Handler(NoDelayHandler):
            max_body_bytes = MAX_BODY_BYTES

            def do_OPTIONS(self) -> None:  # noqa: N802
                if self.headers.get("Access-Control-Request-Method") is None:
                    self.dispatch()
                    return
                self.answer_preflight(self._allowed_origin(), PREFLIGHT_METHODS, credentials=url.credentials)

            def dispatch(self) -> None:
                # Every method and path reaches the function, as on a real Function URL: it answers 404/405 itself.
                body = self.body_or_refuse()
                if body is None:
                    return
                event = url.event_for(self.command, self.path, self.headers.items(), body,
                                      self.client_address[0], self.headers.get("Host", "localhost"))
                refusal = url.authorize(self.command, self.path, self.headers, body, event)
                if refusal is not None:
                    self.send_whole(*refusal)
                    return
                try:
                    prelude, answer = url.function.respond(event, _Context())
                except Exception:  # a function error: what a Function URL answers, then the traceback
                    self.send_whole(502, {"Content-Type": "application/json"}, b'{"Message":"Internal Server Error"}')
                    raise
                self.send_response(int(prelude.get("statusCode", 200)))
                for name, value in dict(prelude.get("headers") or {}).items():
                    self.send_header(name, str(value))
                for cookie in prelude.get("cookies") or []:
                    self.send_header("Set-Cookie", cookie)
                for name, value in self.extra_headers().items():
                    self.send_header(name, value)
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                self.wfile.flush()
                write = self._chunk if self.command != "HEAD" else _discard
                try:
                    pump(answer, write)
                    if self.command != "HEAD":
                        self.wfile.write(b"0\r\n\r\n")
                        self.wfile.flush()
                except OSError:  # the client left: pump has closed the answer, and Behest's stream with it
                    self.close_connection = True

            def _chunk(self, data: bytes) -> None:
                self.wfile.write(b"%X\r\n" % len(data) + data + b"\r\n")
                self.wfile.flush()

            def error_body(self, status: int, message: str) -> bytes:
                # A Function URL's own errors are {"Message": ...}.
                return json.dumps({"Message": message}).encode()

            def extra_headers(self) -> dict[str, str]:
                origin = self._allowed_origin()
                if not origin:
                    return {}
                return cors_headers(origin, url.credentials)

            def _allowed_origin(self) -> Optional[str]:
                headers = getattr(self, "headers", None)  # absent when the request line itself was garbled
                origin = headers.get("Origin") if headers else None
                return origin if origin and origin in url.allowed_origins else None

        return Handler


def _discard(data: bytes) -> None:
    """A HEAD answer has no body: the function's parts are produced and dropped."""

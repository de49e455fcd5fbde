"""The dev servers' one HTTP base: a threaded loopback server and a hardened HTTP/1.1 handler.

Every local front (the local API, the local Function URL, the identity provider, the Behest
stand-in) stands in for something deployed that never answers with a Python traceback or an
HTML page. So here, whatever the client sends:

- a malformed `Content-Length` (not digits, negative, two different values) gets a JSON 400;
- a `Transfer-Encoding: chunked` body is decoded, up to the server's cap (413 above it);
  malformed chunking gets a JSON 400;
- every method reaches `dispatch` (the server decides: route, 404 or 405), and every error page
  the standard library would write (bad request line, header too long...) is JSON;
- a client that resets or drops a kept-alive connection leaves nothing in the console.
"""

from __future__ import annotations

import http
import json
import re
import socket
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable, Mapping, Optional, Self

CORS_ALLOW_HEADERS = "authorization, content-type, x-session-id"
CORS_EXPOSE_HEADERS = "x-session-id, retry-after, x-trace-id"
# API Gateway's HTTP API takes request payloads up to 10 MB.
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
MAX_CHUNK_LINE = 1024
MAX_TRAILER_LINES = 64
_DIGITS = re.compile(r"[0-9]+")
_HEX = re.compile(rb"[0-9A-Fa-f]+")


class RequestRefused(Exception):
    """The request cannot be read as HTTP says it should be: answered `status` with a JSON error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def error_code(status: int) -> str:
    """A machine-readable code from the status, e.g. 413 → `request_entity_too_large`."""
    try:
        return http.HTTPStatus(status).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        return "error"


class LoopbackServer(ThreadingHTTPServer):
    """The dev servers' HTTP server: a thread per connection, and a backlog that survives a burst of clients."""

    daemon_threads = True
    request_queue_size = 128  # the default 5 overflows under a few concurrent clients (a 1 s SYN retry each time)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a machine with slow DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client leaving (reset, broken pipe, idle keep-alive dropped) is ordinary; anything else is a bug to show.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class NoDelayHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, each write sent at once; every method goes to `dispatch`; every error is JSON."""

    protocol_version = "HTTP/1.1"
    max_body_bytes = DEFAULT_MAX_BODY_BYTES

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle holds the body ~40 ms on kept-alive connections.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def __getattr__(self, name: str) -> Callable[[], None]:
        # The stdlib looks up `do_<METHOD>` and writes an HTML 501 when it is missing: every method is ours to answer.
        if name.startswith("do_"):
            return self.dispatch
        raise AttributeError(name)

    def dispatch(self) -> None:
        """Answer the request (any method); servers override this."""
        self.read_body()
        self.send_json_error(405, f"{self.command} is not served here")

    def read_body(self) -> bytes:
        """The request body, from `Content-Length` or chunked; RequestRefused when it cannot be read."""
        codings = [c.strip().lower() for v in self.headers.get_all("Transfer-Encoding") or [] for c in v.split(",")]
        if codings:
            if codings != ["chunked"]:
                self.close_connection = True
                raise RequestRefused(501, "only the chunked transfer coding is understood")
            if self.headers.get("Content-Length") is not None:
                # RFC 9112 §6.3: chunked wins, and the connection cannot be trusted for another request.
                self.close_connection = True
            return self._read_chunked()
        declared = [part.strip() for v in self.headers.get_all("Content-Length") or [] for part in v.split(",")]
        if not declared:
            return b""
        if not all(_DIGITS.fullmatch(value) for value in declared) or len(set(map(int, declared))) != 1:
            self.close_connection = True  # where this body ends is unknown, so nothing after it can be read
            raise RequestRefused(400, "Content-Length must be one non-negative whole number")
        length = int(declared[0])
        if length > self.max_body_bytes:
            self.close_connection = True
            raise RequestRefused(413, f"the body must be at most {self.max_body_bytes} bytes")
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise RequestRefused(400, "the body ended before its Content-Length")
        return body

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(MAX_CHUNK_LINE)
            size_text = line.split(b";", 1)[0].strip()
            if not line.endswith(b"\n") or not _HEX.fullmatch(size_text):
                self.close_connection = True
                raise RequestRefused(400, "malformed chunked body")
            size = int(size_text, 16)
            if size == 0:
                break
            total += size
            if total > self.max_body_bytes:
                self.close_connection = True
                raise RequestRefused(413, f"the body must be at most {self.max_body_bytes} bytes")
            data = self.rfile.read(size)
            if len(data) < size or self.rfile.readline(MAX_CHUNK_LINE) not in (b"\r\n", b"\n"):
                self.close_connection = True
                raise RequestRefused(400, "malformed chunked body")
            parts.append(data)
        for _ in range(MAX_TRAILER_LINES):
            if self.rfile.readline(MAX_CHUNK_LINE) in (b"\r\n", b"\n", b""):
                return b"".join(parts)
        self.close_connection = True
        raise RequestRefused(400, "too many trailer lines")

    def error_body(self, status: int, message: str) -> bytes:
        """The JSON of an error this server answers itself (OpenAI's shape unless a server speaks another)."""
        kind = "server_error" if status >= 500 else "invalid_request_error"
        return json.dumps({"error": {"message": message, "type": kind, "code": error_code(status)}}).encode()

    def send_json_error(self, status: int, message: str, headers: Optional[Mapping[str, str]] = None) -> None:
        """A JSON error answer; the connection closes after it when the request could not be read whole."""
        extra = {"Connection": "close"} if self.close_connection else {}
        self.send_whole(status, {"Content-Type": "application/json", **extra, **(headers or {})},
                        self.error_body(status, message))

    def refuse(self, refused: RequestRefused) -> None:
        """Answer a request whose body could not be read."""
        self.close_connection = True
        self.send_json_error(refused.status, refused.message)

    def body_or_refuse(self) -> Optional[bytes]:
        """The request body; None once a body that could not be read has been answered."""
        try:
            return self.read_body()
        except RequestRefused as refused:
            self.refuse(refused)
            return None

    def send_error(self, code: int, message: Optional[str] = None, explain: Optional[str] = None) -> None:
        # The stdlib's own error pages (bad request line, header too long...) are HTML: ours are JSON.
        self.close_connection = True
        # A request line too garbled to name its version leaves the stdlib assuming HTTP/0.9, which has no status
        # line: the deployed fronts answer HTTP/1.1 whatever arrives.
        if getattr(self, "request_version", "HTTP/0.9") == "HTTP/0.9":
            self.request_version = "HTTP/1.1"
        phrase = message or (self.responses[code][0] if code in self.responses else "error")
        self.send_json_error(code, phrase)

    def send_whole(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        """A whole answer with its Content-Length; no body for HEAD, as HTTP says."""
        self.send_response(status)
        for name, value in {**headers, **self.extra_headers()}.items():
            self.send_header(name, str(value))
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if getattr(self, "command", None) != "HEAD":
            self.wfile.write(data)

    def extra_headers(self) -> dict[str, str]:
        """Headers every answer of this server carries (CORS, trace ids); servers override this."""
        return {}

    def answer_preflight(self, origin: Optional[str], methods: str, *, credentials: bool = False) -> None:
        """204 to a CORS preflight; the allow headers only for an allowed `origin` (else the browser refuses)."""
        self.send_response(204)
        if origin:
            self.send_header("Access-Control-Allow-Origin", origin)
            if credentials:
                self.send_header("Access-Control-Allow-Credentials", "true")
            self.send_header("Access-Control-Allow-Methods", methods)
            self.send_header("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS)
            self.send_header("Access-Control-Max-Age", "600")
            self.send_header("Vary", "Origin")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


def cors_headers(origin: str, credentials: bool) -> dict[str, str]:
    """The CORS headers of an answer to an allowed `origin`; with credentials, browsers let the page read
    answers to cookie-carrying requests (for that exact origin only, never `*`)."""
    headers = {"Access-Control-Allow-Origin": origin, "Access-Control-Expose-Headers": CORS_EXPOSE_HEADERS,
               "Vary": "Origin"}
    if credentials:
        headers["Access-Control-Allow-Credentials"] = "true"
    return headers


def split_cookies(headers: Iterable[tuple[str, str]]) -> tuple[dict[str, str], list[str]]:
    """Payload 2.0's split: the headers without `cookie`, and each `name=value` of the Cookie headers in order.

    API Gateway (HTTP API) and Function URLs hand cookies over in the event's `cookies` array rather
    than the Cookie header (https://docs.aws.amazon.com/apigateway/latest/developerguide/
    http-api-develop-integrations-lambda.html); a repeated name stays repeated.
    """
    pairs = list(headers)
    rest = {name.lower(): value for name, value in pairs if name.lower() != "cookie"}
    cookies = [part.strip() for name, value in pairs if name.lower() == "cookie" for part in value.split(";")
               if part.strip()]
    return rest, cookies


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

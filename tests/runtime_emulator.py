"""A Lambda Runtime API emulator on loopback (stdlib only), for driving a runtime loop in tests.

GET  /2018-06-01/runtime/invocation/next          serves queued events, blocking until one is queued
POST /2018-06-01/runtime/invocation/{id}/response buffered or streamed (chunked, trailers decoded here);
                                                  each chunk is recorded with its arrival time, in order;
                                                  per invocation, read slowly (a slow client) or cut
                                                  (a client that leaves)
POST /2018-06-01/runtime/invocation/{id}/error    recorded
POST /2018-06-01/runtime/init/error               recorded

    with RuntimeEmulator() as emulator:
        request_id = emulator.queue({"rawPath": "/v1/chat/completions", ...}, timeout_ms=5_000, traced=False)
        ...  # start the runtime with AWS_LAMBDA_RUNTIME_API=emulator.address
        response = emulator.response(request_id)
"""

from __future__ import annotations

import json
import re
import select
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional, TypeVar, Union

from tests.json_server import JsonHandler

PREFIX = "/2018-06-01/runtime"
DELIMITER = b"\0" * 8
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:chat-stream"
_INVOCATION_PATH = re.compile(PREFIX + r"/invocation/([^/]+)/(response|error)")
T = TypeVar("T")


@dataclass(frozen=True)
class Chunk:
    """One HTTP chunk of a streamed response and when it arrived (time.monotonic)."""

    at: float
    data: bytes


@dataclass
class RecordedResponse:
    """What the runtime posted for one invocation."""

    request_id: str
    headers: dict[str, str]
    chunks: list[Chunk] = field(default_factory=list)
    trailers: dict[str, str] = field(default_factory=dict)
    complete: bool = False
    cut: bool = False  # the emulator hung up mid-way, as Lambda does when the client leaves

    @property
    def body(self) -> bytes:
        return b"".join(chunk.data for chunk in self.chunks)

    def prelude(self) -> dict[str, Any]:
        """The JSON prelude of an HTTP integration response (before the 8 NUL bytes)."""
        head, delimiter, _ = self.body.partition(DELIMITER)
        assert delimiter, "no 8-NUL delimiter after the prelude"
        document = json.loads(head)
        assert isinstance(document, dict)
        return document

    def payload(self) -> bytes:
        """The HTTP body after the prelude and its delimiter."""
        return self.body.partition(DELIMITER)[2]


@dataclass(frozen=True)
class RecordedError:
    """An /error or /init/error call: the error-type header and the JSON body."""

    request_id: Optional[str]
    error_type: Optional[str]
    body: Any


@dataclass(frozen=True)
class Queued:
    """One invocation waiting for /next, and how Lambda's side behaves for it."""

    request_id: str
    event: bytes
    trace_id: Optional[str]
    timeout_ms: int
    read_pause: float = 0.0
    cut_after: Optional[int] = None


class RuntimeEmulator:
    """Lambda's side of the Runtime API, in this process, one queue of invocations.

    `receive_buffer` shrinks the kernel's receive buffer of the response connections, so that a
    paused reader pushes back on the runtime's writes at once (as a slow client does through Lambda).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, timeout_ms: int = 30_000,
                 receive_buffer: Optional[int] = None) -> None:
        self.timeout_ms = timeout_ms
        self._changed = threading.Condition()
        self._queue: deque[Queued] = deque()
        self._invocations: dict[str, Queued] = {}
        self._deadlines: dict[str, int] = {}
        self._handed_out: dict[str, float] = {}
        self._responses: dict[str, RecordedResponse] = {}
        self._errors: dict[str, RecordedError] = {}
        self._init_errors: list[RecordedError] = []
        self._stopping = False
        self._server = _QuietServer((host, port), self._handler_class())
        if receive_buffer is not None:  # inherited by every accepted connection
            self._server.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        self._thread: Optional[threading.Thread] = None
        self.address = f"{host}:{self._server.server_address[1]}"

    def start(self) -> RuntimeEmulator:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="runtime-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; a runtime blocked on /next sees its connection closed."""
        with self._changed:
            self._stopping = True
            self._changed.notify_all()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> RuntimeEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def queue(self, event: Union[bytes, Any], *, request_id: Optional[str] = None, trace_id: Optional[str] = None,
              traced: bool = True, timeout_ms: Optional[int] = None, read_pause: float = 0.0,
              cut_after: Optional[int] = None) -> str:
        """Queue an event (JSON-encoded unless bytes); its request id.

        `trace_id`: the Lambda-Runtime-Trace-Id sent (a fresh one unless given; none if not `traced`);
        `timeout_ms`: the function's timeout, from which Lambda-Runtime-Deadline-Ms is computed at /next;
        `read_pause`: seconds the response is left unread after its first chunk (a slow client);
        `cut_after`: the response connection is closed after that many chunks (the client left).
        """
        request_id = request_id or str(uuid.uuid4())
        data = event if isinstance(event, bytes) else json.dumps(event).encode("utf-8")
        if traced and trace_id is None:
            trace_id = f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]};Sampled=1"
        queued = Queued(request_id, data, trace_id if traced else None,
                        self.timeout_ms if timeout_ms is None else timeout_ms, read_pause, cut_after)
        with self._changed:
            self._queue.append(queued)
            self._invocations[request_id] = queued
            self._changed.notify_all()
        return request_id

    def handed_out_at(self, request_id: str) -> Optional[float]:
        """When /next handed this invocation over (time.monotonic), if it has."""
        with self._changed:
            return self._handed_out.get(request_id)

    def deadline_ms(self, request_id: str) -> Optional[int]:
        """The Lambda-Runtime-Deadline-Ms sent with this invocation (epoch ms), once handed out."""
        with self._changed:
            return self._deadlines.get(request_id)

    def trace_id(self, request_id: str) -> Optional[str]:
        """The Lambda-Runtime-Trace-Id this invocation carries, if any."""
        with self._changed:
            return self._invocations[request_id].trace_id

    def response(self, request_id: str, timeout: float = 10.0, *, complete: bool = True) -> RecordedResponse:
        """The response posted for `request_id`, once complete (or once started, with complete=False)."""
        return self._wait(lambda: self._finished_response(request_id, complete), timeout, f"a response to {request_id}")

    def error(self, request_id: str, timeout: float = 10.0) -> RecordedError:
        """The /error posted for `request_id`."""
        return self._wait(lambda: self._errors.get(request_id), timeout, f"an error for {request_id}")

    def init_error(self, timeout: float = 10.0) -> RecordedError:
        """The first /init/error posted."""
        return self._wait(lambda: self._init_errors[0] if self._init_errors else None, timeout, "an init error")

    def outcome(self, request_id: str) -> Optional[str]:
        """"response", "error", or None: what the runtime has posted so far for `request_id`."""
        with self._changed:
            if request_id in self._responses:
                return "response"
            return "error" if request_id in self._errors else None

    def _finished_response(self, request_id: str, complete: bool) -> Optional[RecordedResponse]:
        response = self._responses.get(request_id)
        if response is None or (complete and not response.complete):
            return None
        return response

    def _wait(self, find: Callable[[], Optional[T]], timeout: float, what: str) -> T:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = find()
                if found is not None:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {what} within {timeout:g} s")
                self._changed.wait(remaining)

    def _next(self, connection: socket.socket) -> Optional[tuple[Queued, int]]:
        """The next queued invocation and its deadline, for a runtime still connected (a killed one must not take it)."""
        with self._changed:
            while True:
                if self._stopping or _gone(connection):
                    return None
                if self._queue:
                    invocation = self._queue.popleft()
                    deadline = int(time.time() * 1000) + invocation.timeout_ms
                    self._handed_out[invocation.request_id] = time.monotonic()
                    self._deadlines[invocation.request_id] = deadline
                    return invocation, deadline
                self._changed.wait(0.1)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        emulator = self

        class Handler(JsonHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                if self.path != PREFIX + "/invocation/next":
                    self.send_json(404, {"errorMessage": "no such route"})
                    return
                handed_out = emulator._next(self.connection)
                if handed_out is None:
                    self.close_connection = True
                    return
                invocation, deadline = handed_out
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Lambda-Runtime-Aws-Request-Id", invocation.request_id)
                self.send_header("Lambda-Runtime-Deadline-Ms", str(deadline))
                self.send_header("Lambda-Runtime-Invoked-Function-Arn", FUNCTION_ARN)
                if invocation.trace_id is not None:
                    self.send_header("Lambda-Runtime-Trace-Id", invocation.trace_id)
                self.send_header("Content-Length", str(len(invocation.event)))
                self.end_headers()
                self.wfile.write(invocation.event)

            def do_POST(self) -> None:  # noqa: N802
                headers = {name.lower(): value for name, value in self.headers.items()}
                if self.path == PREFIX + "/init/error":
                    error = RecordedError(None, headers.get("lambda-runtime-function-error-type"), self._json_body())
                    with emulator._changed:
                        emulator._init_errors.append(error)
                        emulator._changed.notify_all()
                    self.send_json(202, {"status": "OK"})
                    return
                match = _INVOCATION_PATH.fullmatch(self.path)
                if match is None:
                    self.send_json(404, {"errorMessage": "no such route"})
                    return
                request_id, kind = match.groups()
                with emulator._changed:
                    known = request_id in emulator._handed_out
                    answered = request_id in emulator._responses or request_id in emulator._errors
                if not known or answered:
                    self.close_connection = True  # the body is left unread
                    self.send_json(400, {"errorMessage": "unknown or already answered request id"})
                    return
                if kind == "error":
                    error = RecordedError(request_id, headers.get("lambda-runtime-function-error-type"), self._json_body())
                    with emulator._changed:
                        emulator._errors[request_id] = error
                        emulator._changed.notify_all()
                    self.send_json(202, {"status": "OK"})
                    return
                response = self._record_response(request_id, headers)
                if response.cut:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    with emulator._changed:
                        emulator._changed.notify_all()
                    return
                self.send_json(202, {"status": "OK"})
                with emulator._changed:  # complete once the runtime has been told so
                    response.complete = True
                    emulator._changed.notify_all()

            def _record_response(self, request_id: str, headers: dict[str, str]) -> RecordedResponse:
                response = RecordedResponse(request_id, headers)
                with emulator._changed:
                    emulator._responses[request_id] = response
                    invocation = emulator._invocations[request_id]
                    emulator._changed.notify_all()
                if "chunked" not in headers.get("transfer-encoding", "").lower():
                    self._add(response, self.rfile.read(int(headers.get("content-length") or 0)))
                else:
                    while True:
                        if invocation.cut_after is not None and len(response.chunks) >= invocation.cut_after:
                            response.cut = True
                            return response
                        size = int(self.rfile.readline(1024).split(b";")[0].strip(), 16)
                        if size == 0:
                            break
                        data = self.rfile.read(size)
                        self.rfile.readline(16)  # the chunk's CRLF
                        self._add(response, data)
                        if len(response.chunks) == 1 and invocation.read_pause:
                            time.sleep(invocation.read_pause)  # the client stops reading; Lambda pushes back
                    while (line := self.rfile.readline(65536)) not in (b"\r\n", b"\n", b""):
                        name, _, value = line.decode("latin-1").partition(":")
                        response.trailers[name.strip().lower()] = value.strip()
                return response

            @staticmethod
            def _add(response: RecordedResponse, data: bytes) -> None:
                with emulator._changed:
                    response.chunks.append(Chunk(time.monotonic(), data))
                    emulator._changed.notify_all()

            def _json_body(self) -> Any:
                raw = self._drain()
                try:
                    return json.loads(raw)
                except ValueError:
                    return raw

            def _drain(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))


        return Handler


class _QuietServer(ThreadingHTTPServer):
    """A runtime killed by its test drops its connections; that is no error here."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


def _gone(connection: socket.socket) -> bool:
    """Whether the peer has closed `connection` (readable with nothing to read)."""
    try:
        readable, _, _ = select.select([connection], [], [], 0)
        return bool(readable) and not connection.recv(1, socket.MSG_PEEK)
    except (OSError, ValueError):
        return True

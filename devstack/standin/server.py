"""The stand-in gateway's server: routes, token checks, answers, recording, faults and SSE pacing."""

from __future__ import annotations

import json
import logging
import re
import select
import selectors
import socket
import struct
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, NamedTuple, Optional, Sequence, cast
from urllib.parse import unquote, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.loopback import LoopbackServer, NoDelayHandler, RequestRefused

from . import answers, completions, tokens, turns
from .errors import Refusal
from .faults import (
    CHAT_PATH,
    EMBEDDINGS_PATH,
    GARBAGE,
    MINT_PATH,
    MODELS_PATH,
    RESPONSES_PATH,
    Fault,
    faults_from_json,
    is_int,
)
from .responses_events import output_items, responses_events
from .sse import Stream, chat_stream, responses_stream
from .tokens import API_KEY_PREFIX, DEFAULT_TTL, MAX_TTL, MIN_TTL, PublicKeyInput

# Named for the package, not this module: tests and operators raise its level to see dropped connections.
logger = logging.getLogger("devstack.standin")

FAULTS_PATH = "/_standin/faults"
REQUESTS_PATH = "/_standin/requests"
HEALTH_PATH = "/_standin/health"
CONTROL_PREFIX = "/_standin/"
DEFAULT_ISSUER = "https://api.behest.ai"
DEFAULT_AUDIENCE = "behest"
DEFAULT_PORT = 8787
MAX_BODY_BYTES = 16 * 1024 * 1024
# An endless stream with no pacing would spin a core and fill the socket buffer at once.
MIN_ENDLESS_INTERVAL = 0.01
STOP_JOIN_SECONDS = 2.0
PREFLIGHT_METHODS = "GET, POST, OPTIONS"


@dataclass(frozen=True)
class GatewayRoute:
    """One route of the gateway: method, path (a `{name}` matches one segment), and whether it takes a user JWT."""

    method: str
    path: str
    answer: str
    needs_token: bool = True

    def matches(self, path: str) -> Optional[dict[str, str]]:
        found = re.fullmatch(re.sub(r"\\{(\w+)\\}", r"(?P<\1>[^/]+)", re.escape(self.path)), path)
        return {name: unquote(value) for name, value in found.groupdict().items()} if found else None


ROUTES = (
    GatewayRoute("POST", CHAT_PATH, "_chat"),
    GatewayRoute("POST", RESPONSES_PATH, "_responses"),
    GatewayRoute("POST", completions.COMPLETIONS_PATH, "_completions"),
    GatewayRoute("POST", EMBEDDINGS_PATH, "_embeddings"),
    GatewayRoute("GET", MODELS_PATH, "_models"),
    GatewayRoute("GET", MODELS_PATH + "/{model}", "_model"),
    GatewayRoute("POST", MINT_PATH, "_mint", needs_token=False),
)



@dataclass(frozen=True)
class RecordedRequest:
    """A request as the stand-in received it; `claims` are the verified JWT claims, else None."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any
    raw_body: bytes
    claims: Optional[dict[str, Any]]
    received_at: float
    monotonic: float
    trace_id: str

    def header(self, name: str) -> Optional[str]:
        """A header by case-insensitive name."""
        return self.headers.get(name.lower())

    def to_json(self) -> dict[str, Any]:
        """The JSON form (without the raw body)."""
        return {
            "method": self.method,
            "path": self.path,
            "headers": self.headers,
            "body": self.body,
            "claims": self.claims,
            "received_at": self.received_at,
            "trace_id": self.trace_id,
        }


class StreamEvent(NamedTuple):
    """Progress of an answer being sent: chunk_sent (chunk = its index), then how it ended (chunk = chunks sent).

    Endings: stream_done, stream_reset (a reset fault), stream_aborted (client left), stream_stopped (stop()).
    """

    kind: str
    chunk: int
    at: float
    trace_id: str


class StandinGateway:
    """Behest's gateway in miniature on loopback: JWT checks, mint, chat completions, recording, faults.

    Tokens are accepted when signed RS256 by a key registered under their `kid` (`register_key`),
    with the configured issuer and audience, inside exp/nbf, carrying tid pid uid sid jti iat exp nbf.
    The stand-in signs the tokens it mints with its own key, registered under `signing_kid`.
    Requests are kept in `requests`, streaming progress in `events`; `inject` queues faults.
    Control endpoints under /_standin/ (faults, requests, health) are neither recorded nor faulted.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = DEFAULT_AUDIENCE,
        chunk_delay: float = 0.0,
        signing_key: Optional[rsa.RSAPrivateKey] = None,
        signing_kid: Optional[str] = None,
        allowed_origins: Sequence[str] = (),
    ) -> None:
        self.issuer = issuer
        # Behest's gateway lets browsers in only from the project's allowed origins (CORS).
        self.allowed_origins: set[str] = set(allowed_origins)
        self.audience = audience
        self.chunk_delay = chunk_delay
        self._signing_key = signing_key or rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.signing_kid = signing_kid or f"sk_standin_{uuid.uuid4().hex[:12]}"
        self._lock = threading.Lock()
        self._events_changed = threading.Condition(self._lock)
        self._keys: dict[str, rsa.RSAPublicKey] = {self.signing_kid: self._signing_key.public_key()}
        self._api_keys: dict[str, tuple[str, str]] = {}
        self._requests: list[RecordedRequest] = []
        self._events: list[StreamEvent] = []
        self._faults: deque[Fault] = deque()
        self._last_usage: Optional[dict[str, Any]] = None
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._stopping = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._server = _GatewayServer((host, port), self)
        # Wakes the accept loop at once on stop(); serve_forever would only notice at its next poll.
        self._wake_reader, self._wake_writer = socket.socketpair()
        self.host = host
        self.port = int(self._server.server_address[1])
        self.url = f"http://{host}:{self.port}"

    def start(self) -> StandinGateway:
        """Serve on a background thread."""
        if self._thread is not None or self.stopping:
            raise RuntimeError("a stand-in starts once")
        self._thread = threading.Thread(target=self._serve, name="behest-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting, cut every open connection (endless streams included) and close the sockets."""
        with self._lock:
            if self._stopping.is_set():
                return
            self._stopping.set()
            self._events_changed.notify_all()
        self._wake_writer.send(b"x")
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            connections = list(self._connections.items())
        for connection, _ in connections:
            _shut(connection)
        self._server.server_close()
        self._wake_reader.close()
        self._wake_writer.close()
        deadline = time.monotonic() + STOP_JOIN_SECONDS
        for _, thread in connections:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _serve(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._server.socket, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select():
                    if key.fileobj is self._server.socket and not self._stopping.is_set():
                        self._server.handle_request()

    def __enter__(self) -> StandinGateway:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def stopping(self) -> bool:
        """Whether stop() has been called."""
        return self._stopping.is_set()

    def register_key(self, kid: str, public_key: PublicKeyInput) -> None:
        """Accept RS256 tokens whose header names `kid`, verified with this key (PEM text/bytes or a key object)."""
        if not isinstance(kid, str) or not kid:
            raise ValueError("kid must be a non-empty string")
        key = tokens.rsa_public_key(public_key)
        with self._lock:
            self._keys[kid] = key

    def unregister_key(self, kid: str) -> None:
        """Stop accepting tokens signed under `kid`."""
        with self._lock:
            self._keys.pop(kid, None)

    def register_api_key(self, api_key: str, tenant_id: str, project_id: str) -> None:
        """Let `api_key` mint tokens for this tenant and project at /v1/auth/mint."""
        if not isinstance(api_key, str) or not api_key.startswith(API_KEY_PREFIX):
            raise ValueError(f"an API key starts with {API_KEY_PREFIX}")
        with self._lock:
            self._api_keys[api_key] = (tenant_id, project_id)

    @property
    def public_key_pem(self) -> str:
        """The public half of the stand-in's own signing key."""
        return self._signing_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")

    def mint(
        self,
        tenant_id: str,
        project_id: str,
        user_id: str,
        *,
        role: str = "user",
        ttl: int = DEFAULT_TTL,
        session_id: Optional[str] = None,
        tier: Optional[int] = None,
    ) -> str:
        """A token signed by the stand-in's own key, claims in Behest's order."""
        return tokens.mint(self._signing_key, self.signing_kid, self.issuer, self.audience, tenant_id, project_id,
                           user_id, role=role, ttl=ttl, session_id=session_id, tier=tier)

    def verify(self, authorization: Optional[str]) -> dict[str, Any]:
        """The claims of the bearer JWT in an Authorization header, checked as the gateway checks them."""
        with self._lock:
            keys = dict(self._keys)
        return tokens.verify(authorization, keys, self.issuer, self.audience)

    @property
    def last_usage(self) -> Optional[dict[str, Any]]:
        """The usage of the last chat, Responses or embeddings answer (see `turns.usage_for` to predict it)."""
        with self._lock:
            return self._last_usage

    def inject(self, *faults: Fault) -> None:
        """Queue faults; each is used up by the next request it applies to."""
        for fault in faults:
            if not isinstance(fault, Fault):
                raise TypeError("inject takes Fault objects")
        with self._lock:
            self._faults.extend(faults)

    def clear_faults(self) -> int:
        """Drop every queued fault; how many there were."""
        with self._lock:
            count = len(self._faults)
            self._faults.clear()
        return count

    @property
    def pending_faults(self) -> list[Fault]:
        """Faults not used yet, in order."""
        with self._lock:
            return list(self._faults)

    @property
    def requests(self) -> list[RecordedRequest]:
        """A snapshot of the requests received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    @property
    def events(self) -> list[StreamEvent]:
        """A snapshot of streaming progress so far."""
        with self._lock:
            return list(self._events)

    def clear_records(self) -> None:
        """Forget recorded requests and events."""
        with self._lock:
            self._requests.clear()
            self._events.clear()

    def wait_for_event(self, kind: str, timeout: float = 5.0) -> StreamEvent:
        """The first recorded event of `kind`, waiting up to `timeout` seconds for it."""
        deadline = time.monotonic() + timeout
        with self._events_changed:
            while True:
                for event in self._events:
                    if event.kind == kind:
                        return event
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no {kind} event within {timeout:g} s")
                self._events_changed.wait(remaining)

    def _take_fault(self, path: str) -> Optional[Fault]:
        with self._lock:
            for fault in self._faults:
                if fault.applies_to(path):
                    self._faults.remove(fault)
                    return fault
        return None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _event(self, kind: str, index: int, trace_id: str) -> None:
        with self._events_changed:
            self._events.append(StreamEvent(kind, index, time.monotonic(), trace_id))
            self._events_changed.notify_all()

    def _answered_usage(self, usage: dict[str, Any]) -> None:
        with self._lock:
            self._last_usage = usage

    def _api_key_owner(self, api_key: str) -> Optional[tuple[str, str]]:
        with self._lock:
            return self._api_keys.get(api_key)

    def _track(self, connection: socket.socket) -> bool:
        with self._lock:
            if self._stopping.is_set():
                return False
            self._connections[connection] = threading.current_thread()
            return True

    def _untrack(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.pop(connection, None)


class _GatewayServer(LoopbackServer):
    """The loopback server, knowing its gateway and keeping quiet about dropped connections."""

    # handle_request() is only called once the socket is readable; this bounds a vanished connection.
    timeout = 1.0

    def __init__(self, address: tuple[str, int], gateway: StandinGateway) -> None:
        self.gateway = gateway
        super().__init__(address, _GatewayHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class _GatewayHandler(NoDelayHandler):
    """One connection: routes, auth, answers and faults."""

    server_version = "behest-standin/1.0"
    max_body_bytes = MAX_BODY_BYTES
    trace_id = ""

    @property
    def gateway(self) -> StandinGateway:
        return cast(_GatewayServer, self.server).gateway

    def setup(self) -> None:
        super().setup()
        if not self.gateway._track(self.connection):
            _shut(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.gateway._untrack(self.connection)

    def do_OPTIONS(self) -> None:  # noqa: N802
        if urlsplit(self.path).path.startswith(CONTROL_PREFIX):
            self.dispatch()
            return
        # A preflight from an origin the project does not allow gets no CORS headers: the browser refuses.
        self.trace_id = uuid.uuid4().hex
        extra = {"Content-Length": "0"}
        if self._allowed_origin():
            extra.update({"Access-Control-Allow-Methods": PREFLIGHT_METHODS,
                          "Access-Control-Allow-Headers": "authorization, content-type, x-session-id",
                          "Access-Control-Max-Age": "600"})
        self._send_head(204, "text/plain", extra)

    def _allowed_origin(self) -> Optional[str]:
        headers = getattr(self, "headers", None)  # absent when the request line itself was garbled
        origin = headers.get("Origin") if headers else None
        return origin if origin and origin in self.gateway.allowed_origins else None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.info("%s %s", self.address_string(), format % args)

    def error_body(self, status: int, message: str) -> bytes:
        code = {400: "validation_error", 413: "validation_error", 404: "not_found", 405: "method_not_allowed"}
        return json.dumps(Refusal(status, code.get(status, "request_failed"), message).body()).encode("utf-8")

    def extra_headers(self) -> dict[str, str]:
        headers = {"X-Trace-Id": self.trace_id or uuid.uuid4().hex}
        origin = self._allowed_origin()
        if origin:
            headers.update({"Access-Control-Allow-Origin": origin,
                            "Access-Control-Expose-Headers": "x-trace-id, retry-after", "Vary": "Origin"})
        return headers

    def dispatch(self) -> None:
        self.trace_id = uuid.uuid4().hex
        path = urlsplit(self.path).path
        try:
            try:
                raw = self.read_body()
            except RequestRefused as refused:
                self.close_connection = True
                self._send_error(Refusal.for_status(refused.status, refused.message))
                return
            if path.startswith(CONTROL_PREFIX):
                self._control(path, raw)
            else:
                self._gateway_request(path, raw)
        except OSError:
            self.close_connection = True
        if self.gateway.stopping:
            self.close_connection = True

    def _gateway_request(self, path: str, raw: bytes) -> None:
        gateway = self.gateway
        body = _parse_json(raw)
        route, params, allowed = _route(self.command, path)
        claims: Optional[dict[str, Any]] = None
        auth_refusal: Optional[Refusal] = None
        if route is not None and route.needs_token:
            try:
                claims = gateway.verify(self.headers.get("Authorization"))
            except Refusal as refusal:
                auth_refusal = refusal
        gateway._record(
            RecordedRequest(
                method=self.command,
                path=path,
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body,
                raw_body=raw,
                claims=claims,
                received_at=time.time(),
                monotonic=time.monotonic(),
                trace_id=self.trace_id,
            )
        )
        fault = gateway._take_fault(path)
        try:
            if fault is not None and fault.kind == "delay" and not self._pause(fault.seconds):
                self.close_connection = True
                return
            if fault is not None and fault.kind == "status":
                raise fault.refusal()
            if route is None and not allowed:
                raise Refusal(404, "not_found", f"no route for {path[:100]}")
            if route is None:
                methods = ", ".join(allowed)
                raise Refusal(405, "method_not_allowed", f"{path[:100]} takes {methods}", {"Allow": methods})
            if auth_refusal is not None:
                raise auth_refusal
            answer: Callable[..., None] = getattr(self, route.answer)
            answer(body, raw, claims, params, fault)
        except Refusal as refusal:
            self._send_error(refusal)

    def _chat(self, body: Any, raw: bytes, claims: dict[str, Any], params: dict[str, str],
              fault: Optional[Fault]) -> None:
        request = answers.chat_request(body, raw)
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = request.get("model") or answers.DEFAULT_MODEL
        turn = turns.chat_turn(request, claims["uid"])
        usage = answers.chat_usage(request["messages"], turn.said)
        self.gateway._answered_usage(usage)
        if request.get("stream") is True:
            options = request.get("stream_options")
            include_usage = isinstance(options, dict) and options.get("include_usage") is True
            deltas, finish_reason = turns.chat_deltas(turn)
            chunks = answers.chat_chunks(completion_id, created, model, deltas, finish_reason,
                                         usage if include_usage else None)
            self._stream(chat_stream(chunks, turn.said), fault)
            return
        message, finish_reason = turns.chat_message(turn)
        self._answer(answers.chat_completion(completion_id, created, model, message, finish_reason, usage), fault)

    def _responses(self, body: Any, raw: bytes, claims: dict[str, Any], params: dict[str, str],
                   fault: Optional[Fault]) -> None:
        request = answers.responses_request(body)
        response_id, message_id, created = answers.response_ids()
        turn = turns.responses_turn(request, claims["uid"])
        usage = answers.responses_usage(request, turn.said)
        self.gateway._answered_usage(usage)
        if request.get("stream") is True:
            events = responses_events(response_id, message_id, created, request, turn, usage)
            self._stream(responses_stream(events, turn.said), fault)
            return
        output = output_items(turn, message_id)
        self._answer(answers.response_object(response_id, created, request, output, usage), fault)

    def _completions(self, body: Any, raw: bytes, claims: dict[str, Any], params: dict[str, str],
                     fault: Optional[Fault]) -> None:
        whole, stream, usage = completions.answer(body, claims["uid"])
        self.gateway._answered_usage(usage)
        if stream is not None:
            self._stream(stream, fault)
            return
        self._answer(whole, fault)

    def _embeddings(self, body: Any, raw: bytes, claims: dict[str, Any], params: dict[str, str],
                    fault: Optional[Fault]) -> None:
        request, inputs = answers.embeddings_request(body)
        answer = answers.embeddings_answer(request, inputs)
        self.gateway._answered_usage(answer["usage"])
        self._answer(answer, fault)

    def _models(self, body: Any, raw: bytes, claims: dict[str, Any], params: dict[str, str],
                fault: Optional[Fault]) -> None:
        self._answer(answers.models_list(), fault)

    def _model(self, body: Any, raw: bytes, claims: dict[str, Any], params: dict[str, str],
               fault: Optional[Fault]) -> None:
        self._answer(answers.model_or_404(params["model"]), fault)

    def _mint(self, body: Any, raw: bytes, claims: Optional[dict[str, Any]], params: dict[str, str],
              fault: Optional[Fault]) -> None:
        api_key = tokens.bearer(self.headers.get("Authorization"))
        owner = self.gateway._api_key_owner(api_key) if api_key else None
        if owner is None:
            raise Refusal(401, "invalid_api_key", "a registered API key is required to mint")
        if not isinstance(body, dict):
            raise Refusal(400, "validation_error", "the body must be a JSON object")
        user_id = body.get("user_id")
        role = body.get("role", "user")
        ttl = body.get("ttl", DEFAULT_TTL)
        session_id = body.get("session_id")
        tier = body.get("tier")
        if not isinstance(user_id, str) or not user_id:
            raise Refusal(400, "validation_error", "user_id must be a non-empty string")
        if not isinstance(role, str) or not role:
            raise Refusal(400, "validation_error", "role must be a non-empty string")
        if not is_int(ttl) or not MIN_TTL <= ttl <= MAX_TTL:
            raise Refusal(400, "validation_error", f"ttl must be a whole number from {MIN_TTL} to {MAX_TTL}")
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise Refusal(400, "validation_error", "session_id must be a non-empty string")
        if tier is not None and not is_int(tier):
            raise Refusal(400, "validation_error", "tier must be a whole number")
        session_id = session_id or str(uuid.uuid4())
        token = self.gateway.mint(*owner, user_id, role=role, ttl=ttl, session_id=session_id, tier=tier)
        self._answer({"jwt": token, "ttl": ttl, "session_id": session_id}, fault)

    def _control(self, path: str, raw: bytes) -> None:
        gateway = self.gateway
        method = self.command
        if path == FAULTS_PATH and method == "GET":
            self._send_json(200, {"faults": [f.to_json() for f in gateway.pending_faults]})
        elif path == FAULTS_PATH and method == "POST":
            try:
                faults = faults_from_json(json.loads(raw))
            except (ValueError, TypeError) as e:
                self._send_error(Refusal(400, "validation_error", f"not a fault: {e}"))
                return
            gateway.inject(*faults)
            self._send_json(200, {"faults": [f.to_json() for f in gateway.pending_faults]})
        elif path == FAULTS_PATH and method == "DELETE":
            self._send_json(200, {"cleared": gateway.clear_faults()})
        elif path == REQUESTS_PATH and method == "GET":
            self._send_json(200, {"requests": [r.to_json() for r in gateway.requests]})
        elif path == REQUESTS_PATH and method == "DELETE":
            gateway.clear_records()
            self._send_json(200, {"cleared": True})
        elif path == HEALTH_PATH and method == "GET":
            self._send_json(200, {"ok": True, "signing_kid": gateway.signing_kid})
        else:
            self._send_error(Refusal(404, "not_found", f"no control route {method} {path}"))

    def _answer(self, payload: Any, fault: Optional[Fault]) -> None:
        """A 200 JSON answer, bent by an answer fault when one is pending."""
        data = json.dumps(payload).encode("utf-8")
        kind = fault.kind if fault is not None else None
        if kind == "garbage":
            self._send_bytes(200, "application/json", GARBAGE)
        elif kind == "reset_after":
            if cast(Fault, fault).chunks > 0:
                self._send_head(200, "application/json", {"Content-Length": str(len(data))})
                self.wfile.write(data[: len(data) // 2])
            self._reset()
            self.gateway._event("stream_reset", 0, self.trace_id)
        elif kind == "endless":
            self._endless_body(cast(Fault, fault))
        else:
            self._send_bytes(200, "application/json", data)

    def _endless_body(self, fault: Fault) -> None:
        """A JSON answer whose body never ends: an opening brace, then a space every interval."""
        self.close_connection = True
        self._send_head(200, "application/json", {"Transfer-Encoding": "chunked"})
        interval = max(fault.seconds or self.gateway.chunk_delay, MIN_ENDLESS_INTERVAL)
        index = 0
        try:
            self._write_chunk(b"{")
            while self._pause(interval):
                index += 1
                self._write_chunk(b" ")
                self.gateway._event("chunk_sent", index, self.trace_id)
        except OSError:
            pass
        self.gateway._event("stream_stopped" if self.gateway.stopping else "stream_aborted", index, self.trace_id)

    def _stream(self, stream: Stream, fault: Optional[Fault]) -> None:
        """Send the frames as server-sent events over chunked encoding, paced by chunk_delay, bent by a fault."""
        gateway = self.gateway
        kind = fault.kind if fault is not None else None
        interval = gateway.chunk_delay
        frames: Iterable[bytes] = stream.frames
        if kind == "endless":
            interval = max(cast(Fault, fault).seconds or gateway.chunk_delay, MIN_ENDLESS_INTERVAL)
            frames = stream.endless
        elif kind == "garbage":
            frames = stream.frames[:1]
        reset_at = cast(Fault, fault).chunks if kind == "reset_after" else None

        self._send_head(200, "text/event-stream", {"Cache-Control": "no-cache", "Transfer-Encoding": "chunked"})
        sent = 0
        try:
            for index, frame in enumerate(frames):
                if index and not self._pause(interval):
                    break
                if reset_at is not None and index >= reset_at:
                    self._reset()
                    gateway._event("stream_reset", sent, self.trace_id)
                    return
                self._write_chunk(frame)
                sent += 1
                gateway._event("chunk_sent", index, self.trace_id)
            else:
                if reset_at is not None:
                    self._reset()
                    gateway._event("stream_reset", sent, self.trace_id)
                    return
                if kind == "garbage":
                    self._write_chunk(b"data: " + GARBAGE + b"\n\n")
                if stream.end is not None:
                    self._write_chunk(stream.end)
                self._write_chunk(b"")
                gateway._event("stream_done", sent, self.trace_id)
                return
        except OSError:
            pass
        self.close_connection = True
        gateway._event("stream_stopped" if gateway.stopping else "stream_aborted", sent, self.trace_id)

    def _pause(self, seconds: float) -> bool:
        """Wait `seconds`; False as soon as the client goes away or the gateway stops."""
        gateway = self.gateway
        if gateway.stopping:
            return False
        deadline = time.monotonic() + seconds
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return not gateway.stopping
            try:
                # stop() shuts every connection down, so this wakes for a stop as for a client leaving.
                readable, _, _ = select.select([self.connection], [], [], remaining)
            except (OSError, ValueError):
                return False
            if gateway.stopping:
                return False
            if readable:
                try:
                    peeked = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    return False
                if not peeked:
                    return False
                # The client sent more (a pipelined request): sit out the pause without watching the socket.
                return not gateway._stopping.wait(max(0.0, deadline - time.monotonic()))

    def _send_head(self, status: int, content_type: str, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for name, value in self.extra_headers().items():
            self.send_header(name, value)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_bytes(self, status: int, content_type: str, data: bytes, headers: Optional[Mapping[str, str]] = None) -> None:
        self._send_head(status, content_type, {**(headers or {}), "Content-Length": str(len(data))})
        if self.command != "HEAD":
            self.wfile.write(data)

    def _send_json(self, status: int, payload: Any, headers: Optional[Mapping[str, str]] = None) -> None:
        self._send_bytes(status, "application/json", json.dumps(payload).encode("utf-8"), headers)

    def _send_error(self, refusal: Refusal) -> None:
        headers = {**refusal.headers, **({"Connection": "close"} if self.close_connection else {})}
        self._send_json(refusal.status, refusal.body(), headers)

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):X}\r\n".encode("ascii") + data + b"\r\n")

    def _reset(self) -> None:
        """Drop the connection with a TCP RST instead of a FIN, as a crashed upstream would."""
        self.close_connection = True
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            return
        # rfile holds a reference to the socket; until it closes, close() would not release the descriptor.
        self.rfile.close()
        self.connection.close()


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # nesting deeper than the parser goes is as unreadable as bad JSON
        return None


def _shut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass




def _route(method: str, path: str) -> tuple[Optional[GatewayRoute], dict[str, str], list[str]]:
    """The route for (method, path) and its parameters; else the methods the path takes (none: 404)."""
    allowed: list[str] = []
    for route in ROUTES:
        params = route.matches(path)
        if params is None:
            continue
        if route.method == method:
            return route, params, []
        allowed.append(route.method)
    return None, {}, allowed

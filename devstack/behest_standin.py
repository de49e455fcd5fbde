"""A stand-in for Behest's gateway on loopback, for tests and local development (never deployed).

It verifies bearer JWTs as the gateway (Kong) does, mints tokens for registered API keys, answers
OpenAI-compatible chat completions (buffered or streamed as chunked server-sent events), records
every request, and misbehaves on demand: error statuses, slow answers, connection resets
mid-stream, garbage bodies and streams that never end.

    with StandinGateway() as gateway:
        gateway.register_key("sk_test_primary", public_pem)
        gateway.inject(Fault("status", status=429, retry_after=3, path="chat"))
        ...  # point BEHEST_BASE_URL at gateway.url

Run it alone with `python -m devstack.behest_standin --port 8787`.
"""

from __future__ import annotations

import argparse
import json
import logging
import select
import selectors
import signal
import socket
import socketserver
import struct
import sys
import threading
import time
import uuid
from collections import deque
from dataclasses import asdict, dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Mapping, NamedTuple, Optional, Sequence, Union, cast, get_args
from urllib.parse import urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

logger = logging.getLogger(__name__)

CHAT_PATH = "/v1/chat/completions"
MINT_PATH = "/v1/auth/mint"
FAULTS_PATH = "/_standin/faults"
REQUESTS_PATH = "/_standin/requests"
HEALTH_PATH = "/_standin/health"
CONTROL_PREFIX = "/_standin/"

DEFAULT_ISSUER = "https://api.behest.ai"
DEFAULT_AUDIENCE = "behest"
DEFAULT_MODEL = "behest-default"
DEFAULT_PORT = 8787
REQUIRED_CLAIMS = ["tid", "pid", "uid", "sid", "jti", "iat", "exp", "nbf"]
API_KEY_PREFIX = "behest_sk_"
MIN_TTL, MAX_TTL, DEFAULT_TTL = 60, 86400, 3600
MAX_BODY_BYTES = 16 * 1024 * 1024
# An endless stream with no pacing would spin a core and fill the socket buffer at once.
MIN_ENDLESS_INTERVAL = 0.01
STOP_JOIN_SECONDS = 2.0

FaultKind = Literal["status", "delay", "reset_after", "garbage", "endless"]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
PATH_ALIASES = {"chat": CHAT_PATH, "mint": MINT_PATH}
ERROR_CODES = {
    400: "validation_error",
    401: "invalid_token",
    402: "quota_exceeded",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "validation_error",
    422: "validation_error",
    429: "rate_limited",
    451: "content_blocked",
}
GARBAGE = b"\x00\xff<html>502 Bad Gateway</html> {not: json,,, \xfe\xfd"

PublicKeyInput = Union[str, bytes, rsa.RSAPublicKey, rsa.RSAPrivateKey]


class Refusal(Exception):
    """An answer in Behest's error shape, raised to end a request early."""

    def __init__(self, status: int, code: str, message: str, headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})


@dataclass(frozen=True)
class Fault:
    """One misbehaviour, applied to the next request on `path` ("chat", "mint", a full path, or any when None).

    status: answer `status` (with `code`, `message`, `retry_after`) in Behest's error shape.
    delay: wait `seconds`, then answer normally.
    reset_after: send `chunks` stream chunks (for a buffered answer: half the body when `chunks` > 0),
        then reset the connection.
    garbage: answer 200 with bytes that are not JSON (inside the SSE for a stream).
    endless: a stream that never ends, a chunk every `seconds` (else the gateway's chunk_delay).
    """

    kind: FaultKind
    status: int = 500
    code: Optional[str] = None
    message: Optional[str] = None
    retry_after: Optional[int] = None
    seconds: float = 0.0
    chunks: int = 0
    path: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {sorted(FAULT_KINDS)}")
        if not _is_int(self.status) or not 400 <= self.status <= 599:
            raise ValueError("status must be a whole number from 400 to 599")
        if self.retry_after is not None and (not _is_int(self.retry_after) or self.retry_after < 0):
            raise ValueError("retry_after must be a whole number of seconds")
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)) or self.seconds < 0:
            raise ValueError("seconds must be a non-negative number")
        if not _is_int(self.chunks) or self.chunks < 0:
            raise ValueError("chunks must be a non-negative whole number")
        for name in ("code", "message"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string")
        if self.path is not None:
            path = PATH_ALIASES.get(self.path, self.path) if isinstance(self.path, str) else None
            if path is None or not path.startswith("/"):
                raise ValueError('path must be "chat", "mint" or a path starting with /')
            object.__setattr__(self, "path", path)

    @classmethod
    def from_json(cls, value: Any) -> Fault:
        """A fault from its JSON form, e.g. {"kind": "status", "status": 429, "retry_after": 2, "path": "chat"}."""
        if not isinstance(value, dict):
            raise ValueError("a fault must be a JSON object")
        unknown = set(value) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if "kind" not in value:
            raise ValueError("a fault needs a kind")
        return cls(**value)

    def to_json(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)

    def applies_to(self, path: str) -> bool:
        """Whether a request on `path` takes this fault."""
        return self.path is None or self.path == path


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
        key = _rsa_public_key(public_key)
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
        now = int(time.time())
        payload: dict[str, Any] = {
            "tid": tenant_id,
            "pid": project_id,
            "uid": user_id,
            "role": role,
            "scp": [],
            "iss": self.issuer,
            "aud": self.audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": str(uuid.uuid4()),
            "sid": session_id or str(uuid.uuid4()),
        }
        if tier is not None:
            payload["tier"] = tier
        return jwt.encode(payload, self._signing_key, algorithm="RS256", headers={"kid": self.signing_kid, "typ": "JWT"})

    def verify(self, authorization: Optional[str]) -> dict[str, Any]:
        """The claims of the bearer JWT in an Authorization header, checked as the gateway checks them."""
        token = _bearer(authorization)
        if token is None:
            raise Refusal(401, "invalid_token", "a bearer JWT is required")
        if token.startswith(API_KEY_PREFIX):
            raise Refusal(401, "invalid_token", "an API key is not a token: mint a JWT first")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.PyJWTError as e:
            raise Refusal(401, "invalid_token", f"malformed token ({type(e).__name__})") from e
        with self._lock:
            key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise Refusal(401, "invalid_token", "no registered key for this token's kid")
        try:
            return jwt.decode(
                token,
                key,
                algorithms=["RS256"],
                issuer=self.issuer,
                audience=self.audience,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.ExpiredSignatureError as e:
            raise Refusal(401, "token_expired", "the token has expired") from e
        except jwt.PyJWTError as e:
            raise Refusal(401, "invalid_token", f"the token was refused: {e}") from e

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


class _GatewayServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its gateway and keeps quiet about dropped connections."""

    daemon_threads = True
    request_queue_size = 128  # the default 5 overflows under a few concurrent clients
    # handle_request() is only called once the socket is readable; this bounds a vanished connection.
    timeout = 1.0

    def __init__(self, address: tuple[str, int], gateway: StandinGateway) -> None:
        self.gateway = gateway
        super().__init__(address, _GatewayHandler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall on a machine with slow DNS.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.debug("connection from %s ended with an error", client_address, exc_info=True)


class _GatewayHandler(BaseHTTPRequestHandler):
    """One connection: routes, auth, answers and faults."""

    protocol_version = "HTTP/1.1"
    server_version = "behest-standin/1.0"

    @property
    def gateway(self) -> StandinGateway:
        return cast(_GatewayServer, self.server).gateway

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if not self.gateway._track(self.connection):
            _shut(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.gateway._untrack(self.connection)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch()

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch()

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch()

    def do_PATCH(self) -> None:  # noqa: N802
        self._dispatch()

    def do_OPTIONS(self) -> None:  # noqa: N802
        if urlsplit(self.path).path.startswith(CONTROL_PREFIX):
            self._dispatch()
            return
        # A preflight from an origin the project does not allow gets no CORS headers: the browser refuses.
        self.trace_id = uuid.uuid4().hex
        extra = {"Content-Length": "0"}
        if self._allowed_origin():
            extra.update({"Access-Control-Allow-Methods": "POST, OPTIONS",
                          "Access-Control-Allow-Headers": "authorization, content-type, x-session-id",
                          "Access-Control-Max-Age": "600"})
        self._send_head(204, "text/plain", extra)

    def _allowed_origin(self) -> Optional[str]:
        origin = self.headers.get("Origin")
        return origin if origin and origin in self.gateway.allowed_origins else None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        logger.info("%s %s", self.address_string(), format % args)

    def _dispatch(self) -> None:
        self.trace_id = uuid.uuid4().hex
        path = urlsplit(self.path).path
        try:
            try:
                raw = self._read_body()
            except Refusal as refusal:
                self.close_connection = True
                self._send_error(refusal)
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
        claims: Optional[dict[str, Any]] = None
        auth_refusal: Optional[Refusal] = None
        if path == CHAT_PATH and self.command == "POST":
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
                raise _fault_refusal(fault)
            if path not in (CHAT_PATH, MINT_PATH):
                raise Refusal(404, "not_found", f"no route for {path}")
            if self.command != "POST":
                raise Refusal(405, "method_not_allowed", f"{path} takes POST", {"Allow": "POST"})
            if auth_refusal is not None:
                raise auth_refusal
            if path == CHAT_PATH:
                self._chat(body, raw, cast(dict[str, Any], claims), fault)
            else:
                self._mint(body, fault)
        except Refusal as refusal:
            self._send_error(refusal)

    def _chat(self, body: Any, raw: bytes, claims: dict[str, Any], fault: Optional[Fault]) -> None:
        request = _chat_request(body, raw)
        completion_id = "chatcmpl-" + uuid.uuid4().hex[:24]
        created = int(time.time())
        model = request.get("model") or DEFAULT_MODEL
        content = f"Hello {claims['uid']}! You said: {_last_user_text(request['messages'])}"
        usage = _usage(request["messages"], content)
        if request.get("stream") is True:
            include_usage = isinstance(request.get("stream_options"), dict) and request["stream_options"].get(
                "include_usage"
            ) is True
            chunks = _completion_chunks(completion_id, created, model, content, usage if include_usage else None)
            self._stream(chunks, fault, endless_content=content)
            return
        completion = {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "logprobs": None, "finish_reason": "stop"}
            ],
            "usage": usage,
        }
        self._answer(completion, fault)

    def _mint(self, body: Any, fault: Optional[Fault]) -> None:
        api_key = _bearer(self.headers.get("Authorization"))
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
        if not _is_int(ttl) or not MIN_TTL <= ttl <= MAX_TTL:
            raise Refusal(400, "validation_error", f"ttl must be a whole number from {MIN_TTL} to {MAX_TTL}")
        if session_id is not None and (not isinstance(session_id, str) or not session_id):
            raise Refusal(400, "validation_error", "session_id must be a non-empty string")
        if tier is not None and not _is_int(tier):
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
                faults = _faults_from_json(json.loads(raw))
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

    def _stream(self, chunks: list[dict[str, Any]], fault: Optional[Fault], endless_content: str) -> None:
        """Send chunks as server-sent events over chunked encoding, paced by chunk_delay, bent by a fault."""
        gateway = self.gateway
        kind = fault.kind if fault is not None else None
        interval = gateway.chunk_delay
        events: Iterable[dict[str, Any]] = chunks
        if kind == "endless":
            interval = max(cast(Fault, fault).seconds or gateway.chunk_delay, MIN_ENDLESS_INTERVAL)
            events = _endless_chunks(chunks[0], endless_content)
        elif kind == "garbage":
            events = chunks[:1]
        reset_at = cast(Fault, fault).chunks if kind == "reset_after" else None

        self._send_head(200, "text/event-stream", {"Cache-Control": "no-cache", "Transfer-Encoding": "chunked"})
        sent = 0
        try:
            for index, chunk in enumerate(events):
                if index and not self._pause(interval):
                    break
                if reset_at is not None and index >= reset_at:
                    self._reset()
                    gateway._event("stream_reset", sent, self.trace_id)
                    return
                self._write_chunk(b"data: " + json.dumps(chunk).encode("utf-8") + b"\n\n")
                sent += 1
                gateway._event("chunk_sent", index, self.trace_id)
            else:
                if reset_at is not None:
                    self._reset()
                    gateway._event("stream_reset", sent, self.trace_id)
                    return
                if kind == "garbage":
                    self._write_chunk(b"data: " + GARBAGE + b"\n\n")
                self._write_chunk(b"data: [DONE]\n\n")
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

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked_body()
        declared = self.headers.get("Content-Length")
        if declared is None:
            return b""
        try:
            length = int(declared)
        except ValueError:
            raise Refusal(400, "validation_error", "Content-Length is not a number") from None
        if length < 0 or length > MAX_BODY_BYTES:
            raise Refusal(413, "validation_error", f"the body must be at most {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)

    def _read_chunked_body(self) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = self.rfile.readline(1024)
            try:
                size = int(line.split(b";")[0].strip(), 16)
            except ValueError:
                raise Refusal(400, "validation_error", "malformed chunked body") from None
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            total += size
            if total > MAX_BODY_BYTES:
                raise Refusal(413, "validation_error", f"the body must be at most {MAX_BODY_BYTES} bytes")
            parts.append(self.rfile.read(size))
            self.rfile.readline(1024)

    def _send_head(self, status: int, content_type: str, headers: Mapping[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("X-Trace-Id", self.trace_id)
        origin = self._allowed_origin()
        if origin:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Expose-Headers", "x-trace-id, retry-after")
            self.send_header("Vary", "Origin")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_bytes(self, status: int, content_type: str, data: bytes, headers: Optional[Mapping[str, str]] = None) -> None:
        self._send_head(status, content_type, {**(headers or {}), "Content-Length": str(len(data))})
        self.wfile.write(data)

    def _send_json(self, status: int, payload: Any, headers: Optional[Mapping[str, str]] = None) -> None:
        self._send_bytes(status, "application/json", json.dumps(payload).encode("utf-8"), headers)

    def _send_error(self, refusal: Refusal) -> None:
        body = {"error": {"code": refusal.code, "message": refusal.message}}
        self._send_json(refusal.status, body, refusal.headers)

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


def _fault_refusal(fault: Fault) -> Refusal:
    default_code = ERROR_CODES.get(fault.status, "server_error" if fault.status >= 500 else "request_failed")
    headers: dict[str, str] = {}
    retry_after = fault.retry_after if fault.retry_after is not None else (1 if fault.status == 429 else None)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    message = fault.message or f"injected fault: status {fault.status}"
    return Refusal(fault.status, fault.code or default_code, message, headers)


def _faults_from_json(value: Any) -> list[Fault]:
    if isinstance(value, dict) and "faults" in value:
        value = value["faults"]
    items = value if isinstance(value, list) else [value]
    return [Fault.from_json(item) for item in items]


def _chat_request(body: Any, raw: bytes) -> dict[str, Any]:
    if not raw:
        raise Refusal(400, "validation_error", "the body must be a chat-completions JSON object")
    if not isinstance(body, dict):
        raise Refusal(400, "validation_error", "the body must be a JSON object")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise Refusal(400, "validation_error", "messages must be a non-empty array")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise Refusal(400, "validation_error", f"messages[{index}] must be an object with a role")
    if "model" in body and body["model"] is not None and not isinstance(body["model"], str):
        raise Refusal(400, "validation_error", "model must be a string")
    if "stream" in body and body["stream"] is not None and not isinstance(body["stream"], bool):
        raise Refusal(400, "validation_error", "stream must be true or false")
    return body


def _completion_chunks(
    completion_id: str, created: int, model: str, content: str, usage: Optional[dict[str, int]]
) -> list[dict[str, Any]]:
    def chunk(delta: dict[str, Any], finish_reason: Optional[str] = None) -> dict[str, Any]:
        return {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in _pieces(content)]
    chunks.append(chunk({}, "stop"))
    if usage is not None:
        chunks.append({**chunk({}), "choices": [], "usage": usage})
    return chunks


def _endless_chunks(first: dict[str, Any], content: str) -> Iterator[dict[str, Any]]:
    yield first
    pieces = _pieces(content + " ")
    index = 0
    while True:
        yield {**first, "choices": [{"index": 0, "delta": {"content": pieces[index % len(pieces)]},
                                     "logprobs": None, "finish_reason": None}]}
        index += 1


def _pieces(content: str) -> list[str]:
    """Words with their following space, so that joining the pieces gives the content back."""
    words = content.split(" ")
    return [word + " " for word in words[:-1]] + ([words[-1]] if words[-1] else [])


def _last_user_text(messages: list[dict[str, Any]]) -> str:
    for message in reversed(messages):
        if message.get("role") == "user":
            return _text(message.get("content"))
    return ""


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(part["text"] for part in content if isinstance(part, dict) and isinstance(part.get("text"), str))
    return ""


def _usage(messages: list[dict[str, Any]], content: str) -> dict[str, int]:
    prompt = sum(len(_text(message.get("content")).split()) for message in messages)
    completion = len(content.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _bearer(authorization: Optional[str]) -> Optional[str]:
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _parse_json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):  # nesting deeper than the parser goes is as unreadable as bad JSON
        return None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _rsa_public_key(value: PublicKeyInput) -> rsa.RSAPublicKey:
    if isinstance(value, rsa.RSAPrivateKey):
        return value.public_key()
    if isinstance(value, rsa.RSAPublicKey):
        return value
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes):
        raise TypeError("a public key must be PEM text, PEM bytes or an RSA key object")
    try:
        key = serialization.load_pem_public_key(value)
    except ValueError as e:
        raise ValueError("not a PEM public key") from e
    if not isinstance(key, rsa.RSAPublicKey):
        raise TypeError("the gateway verifies RS256: the key must be RSA")
    return key


def _shut(connection: socket.socket) -> None:
    try:
        connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _parse_key_option(value: str) -> tuple[str, Path]:
    kid, sep, path = value.partition("=")
    if not sep or not kid or not path:
        raise argparse.ArgumentTypeError("expected KID=path/to/public.pem")
    return kid, Path(path)


def _parse_api_key_option(value: str) -> tuple[str, str, str]:
    parts = value.split(":", 2)
    if len(parts) != 3 or not all(parts) or not parts[0].startswith(API_KEY_PREFIX):
        raise argparse.ArgumentTypeError(f"expected {API_KEY_PREFIX}...:TENANT:PROJECT")
    return parts[0], parts[1], parts[2]


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the stand-in until SIGINT or SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m devstack.behest_standin", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="0 picks a free port")
    parser.add_argument("--issuer", default=DEFAULT_ISSUER)
    parser.add_argument("--audience", default=DEFAULT_AUDIENCE)
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between streamed chunks")
    parser.add_argument("--register-key", type=_parse_key_option, action="append", default=[], metavar="KID=PEM_PATH",
                        help="accept tokens signed under KID, verified with this public key (repeatable)")
    parser.add_argument("--api-key", type=_parse_api_key_option, action="append", default=[],
                        metavar="KEY:TENANT:PROJECT", help="an API key that may mint (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="a browser origin the project allows (CORS, repeatable)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(asctime)s %(message)s")
    gateway = StandinGateway(args.host, args.port, issuer=args.issuer, audience=args.audience,
                             allowed_origins=args.allow_origin,
                             chunk_delay=args.chunk_delay)
    try:
        for kid, path in args.register_key:
            gateway.register_key(kid, path.read_bytes())
        for api_key, tenant_id, project_id in args.api_key:
            gateway.register_api_key(api_key, tenant_id, project_id)
    except (OSError, ValueError, TypeError) as e:
        gateway.stop()
        parser.error(str(e))

    stop_requested = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_requested.set())
    gateway.start()
    print(f"Behest stand-in listening on {gateway.url}", flush=True)
    print(f"  chat {gateway.url}{CHAT_PATH}  mint {gateway.url}{MINT_PATH}  faults {gateway.url}{FAULTS_PATH}", flush=True)
    print(f"  issuer {gateway.issuer}  audience {gateway.audience}  own signing kid {gateway.signing_kid}", flush=True)
    for kid, path in args.register_key:
        print(f"  accepting kid {kid} ({path})", flush=True)
    for api_key, tenant_id, project_id in args.api_key:
        print(f"  API key {api_key[:len(API_KEY_PREFIX) + 4]}... mints for {tenant_id}/{project_id}", flush=True)
    try:
        while not stop_requested.wait(1.0):
            pass
    finally:
        gateway.stop()
    print("Behest stand-in stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

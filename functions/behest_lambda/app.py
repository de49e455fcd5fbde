"""The route base: one `Service` per function, built once from the environment, turning events into answers.

A route is request → core → reply. The `Service` owns what every route shares: reading the
event into a `Request`, matching the route table, the caller's identity (the authorizer's
claims on the HTTP API, the verified bearer token on the Function URL), mapping any error to
its answer, and telemetry (a log line and a metric per answer, a usage record per relayed
answer, metrics flushed once per invocation).
"""

from __future__ import annotations

import time
from typing import Any, Callable, Generator, Iterator, Mapping, Optional

from . import settings as names
from .errors import (
    BehestLambdaError,
    ConfigurationError,
    UpstreamAuthError,
    UpstreamError,
    answer_for,
    sse_error_event,
)
from .identity import identity_from_claims
from .reply import Core, Ender, ErrorEvent, Identify, Reply
from .request import Request
from .routes import FUNCTION_URL, HTTP_API, SERVICE_FUNCTION, SERVICE_URL, STREAM_FUNCTION, RouteSpec, match, routes_for
from .settings import Settings
from .telemetry import Telemetry

# The front each function serves (the HTTP API's functions are those not named here).
FRONTS = {STREAM_FUNCTION: FUNCTION_URL, SERVICE_FUNCTION: SERVICE_URL}

# On the streaming route the relay's deadline ends this long before the invocation's, so that
# the stream ends with an error event and a clean end rather than a timeout.
DEADLINE_MARGIN_S = 1.5

class AnswerBody:
    """A reply's body as it comes; once it is exhausted, `failure` says whether it broke off.

    On a stream, a failure mid-way (a reset, a stall, the deadline, a garbled event) ends the
    body with an SSE error event. `on_end(failure, completed)` runs exactly once, however it ends.
    """

    def __init__(self, parts: Iterator[bytes], *, sse: bool = False, on_end: Optional[Ender] = None,
                 error_event: ErrorEvent = sse_error_event) -> None:
        self.failure: Optional[BehestLambdaError] = None
        self.error_event = error_event
        self.bytes_sent = 0
        self._upstream = parts
        self._on_end = on_end
        self._completed = False
        self._parts = self._events(parts) if sse else self._passed_on(parts)

    def __iter__(self) -> AnswerBody:
        return self

    def __next__(self) -> bytes:
        return next(self._parts)

    def close(self) -> None:
        """Stop early (the client left): closes Behest's connection too."""
        self._parts.close()
        self._end()

    def _passed_on(self, parts: Iterator[bytes]) -> Generator[bytes, None, None]:
        try:
            for part in parts:
                yield self._sent(part)
            self._completed = True
        finally:
            self._end()

    def _events(self, parts: Iterator[bytes]) -> Generator[bytes, None, None]:
        try:
            for event in parts:
                yield self._sent(event)
            self._completed = True
        except BehestLambdaError as e:  # raised by the upstream reader: a reset, a stall, the deadline
            self.failure = e
            yield self._sent(self.error_event(e))
        finally:
            self._end()

    def _sent(self, part: bytes) -> bytes:
        self.bytes_sent += len(part)
        return part

    def _end(self) -> None:
        if self._on_end is None:
            return
        on_end, self._on_end = self._on_end, None
        close = getattr(self._upstream, "close", None)
        if close is not None:
            close()
        on_end(self.failure, self._completed)


class Service:
    """One function's routes and everything they share, built once per container."""

    def __init__(self, settings: Settings, telemetry: Telemetry, routes: tuple[RouteSpec, ...], front: str,
                 cores: Mapping[str, Core], *, identify: Optional[Identify] = None) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.routes = routes
        self.front = front
        self.cores = dict(cores)
        telemetry.front = front
        # Who is calling: by default the claims API Gateway's authorizer verified; a front that verifies
        # its callers itself (the Function URL) passes its own.
        self._identify: Identify = identify or (lambda request: identity_from_claims(request.claims,
                                                                                     settings.identity))

    @classmethod
    def from_env(cls, function: str, telemetry: Telemetry, environ: Optional[Mapping[str, str]] = None) -> Service:
        """Read the environment once; a ConfigurationError names every variable at fault."""
        return cls.build(function, Settings.from_env(environ), telemetry)

    @classmethod
    def build(cls, function: str, settings: Settings, telemetry: Telemetry, *, key_source: Any = None) -> Service:
        """The service of one function (Token, Relay, Stream or ServiceFunction); parts may be swapped in tests."""
        from .cores import build_cores

        front = FRONTS.get(function, HTTP_API)
        routes = routes_for(front) if front != HTTP_API else routes_for(HTTP_API, function)
        if front == SERVICE_URL and not settings.service.trusted_roles:
            raise ConfigurationError(f"invalid configuration: set {names.BEHEST_TRUSTED_ROLE_ARNS}")
        cores, identify = build_cores({r.core for r in routes}, settings, telemetry,
                                      verify_callers=front == FUNCTION_URL or (front == HTTP_API and settings.caller.verify),
                                      key_source=key_source)
        if front == SERVICE_URL:
            from .service_caller import ServiceCaller  # the server-to-server function's alone

            identify = ServiceCaller(settings.service, settings.identity)
        return cls(settings, telemetry, routes, front, cores, identify=identify)

    def reply(self, event: Mapping[str, Any], *, deadline: Optional[float] = None) -> Reply:
        """Read, route, identify and answer one event; every known failure is its answer."""
        try:
            request = Request.from_event(event, self.settings.max_body_bytes)
            self.telemetry.set_correlation_id(request.request_id)
            found = match(request.method, request.path, self.routes)
            request = request._replace(params=found.params, deadline=deadline)
            return self.cores[found.route.core](request, self._identify(request))
        except BehestLambdaError as e:
            return self.refusal(e)

    def refusal(self, error: BehestLambdaError) -> Reply:
        """Log and count a refused request, then answer it."""
        level = self.telemetry.error if error.status >= 500 else self.telemetry.info
        level("request refused", status=error.status, code=error.code, detail=error.message)
        self.telemetry.metric("RequestRefused", code=error.code)
        if isinstance(error, UpstreamAuthError):  # the operator's to fix, and alarmed (UpstreamAuthFailedAlarm)
            self.telemetry.error("Behest refused this deployment's credentials", **error.report())
            self.telemetry.metric("UpstreamAuthFailed")
        answer = answer_for(error)
        return Reply(answer.status, answer.headers, iter((answer.body,)))

    def end(self, reply: Reply, failure: Optional[BehestLambdaError], completed: bool) -> None:
        """A reply has been sent (or given up on): its usage record, then this invocation's metrics."""
        if reply.on_end is not None:
            reply.on_end(failure, completed)
        self.telemetry.flush()

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """The HTTP API's answer (payload 2.0): the whole body; a stream is joined (an HTTP API buffers anyway)."""
        reply = self.reply(event)
        failure: Optional[BehestLambdaError] = None
        try:
            if reply.stream:
                payload, failure = buffered_stream(reply.chunks, reply.error_event)
            else:
                payload = b"".join(reply.chunks)
        except BehestLambdaError as e:  # before the first byte: a whole error answer
            refused = self.refusal(e)
            self.end(reply, e, False)
            return http_api_payload(refused)
        self.end(reply, failure, failure is None)
        return http_api_payload(reply._replace(chunks=iter((payload,))))

    def respond(self, event: Mapping[str, Any], context: Any = None) -> tuple[dict[str, Any], AnswerBody]:
        """The Function URL's answer: the HTTP prelude, then the body as it comes (Behest's events, live)."""
        remaining = getattr(context, "get_remaining_time_in_millis", None)
        deadline = time.monotonic() + remaining() / 1000 - DEADLINE_MARGIN_S if callable(remaining) else None
        reply = self.reply(event, deadline=deadline)
        prelude = {"statusCode": reply.status, "headers": dict(reply.headers), "cookies": []}
        return prelude, AnswerBody(reply.chunks, sse=reply.stream, error_event=reply.error_event,
                                   on_end=lambda failure, completed: self.end(reply, failure, completed))


def http_api_payload(reply: Reply) -> dict[str, Any]:
    """A payload 2.0 answer; bytes that are not UTF-8 travel base64-encoded."""
    payload = b"".join(reply.chunks)
    try:
        return {"statusCode": reply.status, "headers": dict(reply.headers), "body": payload.decode("utf-8"),
                "isBase64Encoded": False}
    except UnicodeDecodeError:
        import base64

        return {"statusCode": reply.status, "headers": dict(reply.headers),
                "body": base64.b64encode(payload).decode("ascii"), "isBase64Encoded": True}


def buffered_stream(events: Iterator[bytes], error_event: ErrorEvent = sse_error_event,
                    ) -> tuple[bytes, Optional[BehestLambdaError]]:
    """Join a stream for a front that buffers; a failure after the first event ends it with an error event."""
    from .upstream import MAX_RESPONSE_BYTES

    parts: list[bytes] = []
    size = 0
    try:
        for event in events:
            size += len(event)
            if size > MAX_RESPONSE_BYTES - 1024:
                raise UpstreamError("the stream is larger than a buffered Lambda response can carry")
            parts.append(event)
    except UpstreamError as e:
        if not parts:
            raise
        return b"".join(parts) + error_event(e), e
    return b"".join(parts), None


Handler = Callable[[Mapping[str, Any], Any], dict[str, Any]]


Builder = Callable[[str, Telemetry], Service]


def entry_point(function: str, service_name: str, *, telemetry: Optional[Telemetry] = None,
                build: Optional[Builder] = None) -> Handler:
    """A Lambda handler (HTTP API) that builds its Service on first use, so a configuration error is answered.

    Nothing is built at import, so a SnapStart snapshot holds no key, id or connection; after a
    restore the service is dropped anyway, in case an invocation ran before the snapshot.
    """
    service: Optional[Service] = None

    def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        nonlocal telemetry, service
        if telemetry is None:
            telemetry = Telemetry(service_name)
        telemetry.start_invocation(context)
        if service is None:
            try:
                service = (build or Service.from_env)(function, telemetry)
            except ConfigurationError as e:
                return refuse_unconfigured(telemetry, e)
        return service.handle(event)

    def forget() -> None:
        nonlocal service
        service = None
        if telemetry is not None:
            telemetry.after_restore()

    after_snapstart_restore(forget)
    return handler


def refuse_unconfigured(telemetry: Telemetry, error: ConfigurationError) -> dict[str, Any]:
    """The answer while the function cannot be built: 500 configuration_error, logged and counted."""
    telemetry.error("request refused", status=error.status, code=error.code, detail=error.message)
    telemetry.metric("RequestRefused", code=error.code)
    telemetry.flush()
    answer = answer_for(error)
    return {"statusCode": answer.status, "headers": answer.headers, "body": answer.body.decode("utf-8"),
            "isBase64Encoded": False}


def after_snapstart_restore(hook: Callable[[], None]) -> None:
    """Run `hook` after a SnapStart restore, where the managed runtime (Python 3.12+) offers restore hooks."""
    try:
        from snapshot_restore_py import register_after_restore  # bundled in Lambda's managed runtime
    except ImportError:
        return
    register_after_restore(hook)


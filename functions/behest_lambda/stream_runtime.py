"""The streaming function's own Lambda Runtime API loop: one invocation at a time, each answer streamed.

The managed Python runtime posts a handler's answer only once it is whole. `functions/stream-bootstrap`
(set as AWS_LAMBDA_EXEC_WRAPPER) starts this module in its place; it fetches each invocation,
calls `StreamFunction.respond`, and streams the answer back as Lambda's "HTTP integration
response": a JSON prelude (status, headers, cookies), eight NUL bytes, then the body, each part
its own HTTP chunk, written as soon as Behest sends it. Only the stdlib is used, and
`stream_handler` (with its relay and cryptography) is imported after the loop has started, so that
an import or configuration failure is reported to Lambda's init/error endpoint.

    AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001 python -m behest_lambda.stream_runtime
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import sys
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol

from . import settings as names
from .errors import BehestLambdaError
from .telemetry import Telemetry

API_VERSION = "2018-06-01"
SERVICE = "behest-chat-stream"
HTTP_INTEGRATION_RESPONSE = "application/vnd.awslambda.http-integration-response"
PRELUDE_DELIMITER = b"\0" * 8
ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY = "Lambda-Runtime-Function-Error-Body"
# Posting a result is quick; only /next waits (for as long as the container sits idle) and has no timeout.
POST_TIMEOUT = 60.0


class RuntimeApiError(Exception):
    """Lambda's Runtime API could not be reached or refused a call: the container cannot go on."""


class _WriteFailed(RuntimeApiError):
    """Writing the streamed answer to the Runtime API failed mid-way."""


@dataclass(frozen=True)
class Invocation:
    """One event from /invocation/next and the context Lambda sends beside it."""

    aws_request_id: str
    deadline_ms: int
    invoked_function_arn: str
    trace_id: Optional[str]
    event: bytes


class Answer(Protocol):
    failure: Any

    def __iter__(self) -> Any: ...

    def __next__(self) -> bytes: ...

    def close(self) -> None: ...


class Responder(Protocol):
    def respond(self, event: Mapping[str, Any], context: Any = None) -> tuple[dict[str, Any], Answer]: ...


class RuntimeApi:
    """The Runtime API at AWS_LAMBDA_RUNTIME_API (host:port), over stdlib http.client."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._base = f"/{API_VERSION}/runtime"

    def next_invocation(self) -> Invocation:
        """Block until Lambda hands over the next event."""
        connection = http.client.HTTPConnection(self.address, timeout=None)
        try:
            connection.request("GET", self._base + "/invocation/next")
            response = connection.getresponse()
            body = response.read()
        except (OSError, http.client.HTTPException) as e:
            raise RuntimeApiError(f"GET /invocation/next failed ({type(e).__name__})") from e
        finally:
            connection.close()
        request_id = response.getheader("Lambda-Runtime-Aws-Request-Id")
        if response.status != 200 or not request_id:
            raise RuntimeApiError(f"GET /invocation/next answered {response.status}")
        deadline = response.getheader("Lambda-Runtime-Deadline-Ms", "0")
        return Invocation(
            aws_request_id=request_id,
            deadline_ms=int(deadline) if deadline.isdigit() else 0,
            invoked_function_arn=response.getheader("Lambda-Runtime-Invoked-Function-Arn", ""),
            trace_id=response.getheader("Lambda-Runtime-Trace-Id"),
            event=body,
        )

    def stream_response(self, request_id: str, prelude: Mapping[str, Any], body: Answer) -> Optional[BaseException]:
        """Stream one answer: prelude, delimiter, then each body part as its own chunk.

        A failure after the first byte can no longer change the status: the client gets an SSE
        error event, and Lambda the error in the trailers the streaming protocol defines (the
        /error endpoint is only open before a response starts). Returns what broke, if anything.
        """
        connection = self._connection()
        try:
            connection.putrequest("POST", f"{self._base}/invocation/{request_id}/response", skip_accept_encoding=True)
            connection.putheader("Lambda-Runtime-Function-Response-Mode", "streaming")
            connection.putheader("Transfer-Encoding", "chunked")
            connection.putheader("Content-Type", HTTP_INTEGRATION_RESPONSE)
            # Trailers must be announced before the body (HTTP/1.1 chunked encoding).
            connection.putheader("Trailer", f"{ERROR_TYPE}, {ERROR_BODY}")
            connection.endheaders()
            connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _write_chunk(connection, json.dumps(prelude, separators=(",", ":")).encode("utf-8") + PRELUDE_DELIMITER)
            failure = pump(body, lambda data: _write_chunk(connection, data))
            trailers = b""
            if failure is not None:
                document = {"errorMessage": str(failure)[:1000], "errorType": type(failure).__name__}
                # AWS: the error body trailer is base64; the type is free text, "<category.reason>" advised.
                encoded = base64.b64encode(json.dumps(document).encode("utf-8")).decode("ascii")
                trailers = f"{ERROR_TYPE}: Function.{type(failure).__name__}\r\n{ERROR_BODY}: {encoded}\r\n".encode()
            # The last chunk is written by hand: http.client has no way to send trailers.
            connection.send(b"0\r\n" + trailers + b"\r\n")
            self._accepted(connection, "response")
            return failure
        except (OSError, http.client.HTTPException) as e:
            raise RuntimeApiError(f"streaming the response failed ({type(e).__name__})") from e
        finally:
            # AWS: close the connection once the streamed response is written.
            connection.close()

    def invocation_error(self, request_id: str, error_type: str, message: str, stack: Iterable[str] = ()) -> None:
        """Report an invocation that failed before its first byte."""
        self._post_error(f"/invocation/{request_id}/error", error_type, message, stack)

    def init_error(self, error_type: str, message: str, stack: Iterable[str] = ()) -> None:
        """Report that the function could not start; Lambda then ends the container."""
        self._post_error("/init/error", error_type, message, stack)

    def _post_error(self, path: str, error_type: str, message: str, stack: Iterable[str]) -> None:
        document = {"errorMessage": message[:4000], "errorType": error_type, "stackTrace": list(stack)}
        connection = self._connection()
        try:
            connection.request("POST", self._base + path, body=json.dumps(document).encode("utf-8"),
                               headers={ERROR_TYPE: error_type, "Content-Type": "application/json"})
            self._accepted(connection, path)
        except (OSError, http.client.HTTPException) as e:
            raise RuntimeApiError(f"POST {path} failed ({type(e).__name__})") from e
        finally:
            connection.close()

    def _connection(self) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(self.address, timeout=POST_TIMEOUT)
        connection.connect()
        return connection

    @staticmethod
    def _accepted(connection: http.client.HTTPConnection, what: str) -> None:
        response = connection.getresponse()
        response.read()
        if response.status != 202:
            raise RuntimeApiError(f"the Runtime API answered {response.status} to the {what}")


def _write_chunk(connection: http.client.HTTPConnection, data: bytes) -> None:
    try:
        # One send per chunk: with TCP_NODELAY each part leaves at once.
        connection.send(b"%X\r\n" % len(data) + data + b"\r\n")
    except OSError as e:
        raise _WriteFailed(f"the Runtime API connection broke ({type(e).__name__})") from e


def pump(body: Answer, write: Callable[[bytes], None]) -> Optional[BaseException]:
    """Write every part of `body` as it comes; what broke the stream, if something did.

    The body's own failures (Behest reset, stalled, ran past the deadline) already end it with an
    SSE error event; a bug in producing it ends it with a generic one here. Failures of `write`
    (the reader went away) propagate. The body is closed either way, and Behest's connection with it.
    """
    parts = iter(body)
    try:
        while True:
            try:
                part = next(parts)
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001 - after the first byte only an error event and trailers can say it
                from .relay import sse_error_event

                write(sse_error_event(BehestLambdaError("the relay failed mid-stream")))
                return e
            if part:
                write(part)
    finally:
        body.close()
    failure = getattr(body, "failure", None)
    return failure if isinstance(failure, BaseException) else None


def handle(api: RuntimeApi, function: Responder, telemetry: Telemetry, invocation: Invocation) -> None:
    """Serve one invocation. Whatever goes wrong in it is reported to Lambda, and the loop goes on."""
    telemetry.start_invocation(invocation)
    try:
        event = json.loads(invocation.event)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        telemetry.error("unreadable event", bytes=len(invocation.event))
        api.invocation_error(invocation.aws_request_id, "Runtime.InvalidEvent", "the event is not a JSON object")
        return
    try:
        prelude, body = function.respond(event)
    except Exception as e:  # noqa: BLE001 - a bug must not end the container; Lambda counts it as a function error
        stack = traceback.format_exception(e)
        telemetry.error("unhandled error", error=type(e).__name__, detail=str(e)[:500], stack="".join(stack)[-4000:])
        # Our own failures were answered by `respond` with their status and OpenAI's error shape; a
        # bug goes to /error, so that Lambda's Errors metric and alarms count it (clients get a 502).
        api.invocation_error(invocation.aws_request_id, f"Function.{type(e).__name__}", str(e), stack)
        return
    try:
        failure = api.stream_response(invocation.aws_request_id, prelude, body)
    except _WriteFailed as e:
        # Lambda cut this response (the client left, or the invocation timed out); the next /next
        # call shows whether the Runtime API itself is gone.
        telemetry.warning("the response stream was cut", detail=str(e))
        return
    if failure is not None and not isinstance(failure, BehestLambdaError):  # ours are logged where they happen
        telemetry.error("unhandled error mid-stream", error=type(failure).__name__, detail=str(failure)[:500],
                        stack="".join(traceback.format_exception(failure))[-4000:])


def serve(api: RuntimeApi, function: Responder, telemetry: Telemetry, *, invocations: Optional[int] = None) -> None:
    """Fetch and answer invocations, forever (or `invocations` of them)."""
    served = 0
    while invocations is None or served < invocations:
        invocation = api.next_invocation()
        served += 1
        if invocation.trace_id:
            os.environ[names.X_AMZN_TRACE_ID] = invocation.trace_id
        handle(api, function, telemetry, invocation)


def main() -> int:
    """Start the function, report an init failure to Lambda, then serve until the container goes."""
    address = os.environ.get(names.AWS_LAMBDA_RUNTIME_API, "")
    if not address:
        sys.stderr.write(f"{names.AWS_LAMBDA_RUNTIME_API} is not set: this process is started by Lambda\n")
        return 2
    api = RuntimeApi(address)
    telemetry = Telemetry(SERVICE)
    try:
        from .stream_handler import StreamFunction

        function = StreamFunction.from_env(telemetry)
    except Exception as e:  # noqa: BLE001 - any init failure goes to Lambda's init/error, which ends the container
        message = getattr(e, "message", None) or str(e)
        telemetry.error("the function could not start", error=type(e).__name__, detail=message)
        api.init_error(f"Runtime.{type(e).__name__}", message, traceback.format_exception(e))
        return 1
    try:
        serve(api, function, telemetry)
    except RuntimeApiError as e:
        telemetry.error("the Runtime API went away", detail=str(e))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

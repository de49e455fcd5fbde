"""The streaming function's own Lambda Runtime API loop: one invocation at a time, each answer streamed.

The managed Python runtime posts a handler's answer only once it is whole. `functions/stream-bootstrap`
(set as AWS_LAMBDA_EXEC_WRAPPER) starts this module in its place; it fetches each invocation,
calls `StreamFunction.respond`, and streams the answer back as Lambda's "HTTP integration
response": a JSON prelude (status, headers, cookies), eight NUL bytes, then the body, each part
its own HTTP chunk, written as soon as Behest sends it. Only the stdlib is used, and
`stream_handler` and `telemetry` (with their dependencies) are imported after the loop has
started, on Lambda's Python path, so that an import or configuration failure is reported to
Lambda's init/error endpoint.

What AWS's own runtime clients do per invocation, this loop does too: a `context` like
awslambdaric's LambdaContext (remaining time from Lambda-Runtime-Deadline-Ms), `_X_AMZN_TRACE_ID`
set or cleared, one telemetry flush at the end whatever happened.

    AWS_LAMBDA_RUNTIME_API=127.0.0.1:9001 python -m behest_lambda.stream_runtime
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import site
import socket
import sys
import sysconfig
import time
import traceback
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, MutableMapping, Optional, Protocol

from . import settings as names
from .errors import BehestLambdaError, sse_error_event

if TYPE_CHECKING:  # imported by main(), once the Python path is Lambda's: it may come from a layer
    from .telemetry import Telemetry

API_VERSION = "2018-06-01"
SERVICE = "behest-stream"  # POWERTOOLS_SERVICE_NAME in the template wins
HTTP_INTEGRATION_RESPONSE = "application/vnd.awslambda.http-integration-response"
PRELUDE_DELIMITER = b"\0" * 8
ERROR_TYPE = "Lambda-Runtime-Function-Error-Type"
ERROR_BODY = "Lambda-Runtime-Function-Error-Body"
# Posting an error is quick; only /next waits (for as long as the container sits idle) and has no timeout.
POST_TIMEOUT = 60.0
# A streamed response lasts as long as the client reads, up to the invocation's deadline: its connection is
# bounded by the time left plus this margin (Lambda itself ends the invocation at the deadline).
DEADLINE_MARGIN = 10.0
# Lambda's longest timeout: the deadline assumed should Lambda ever send none (awslambdaric would report 0 ms left).
MAX_INVOCATION_MS = 900_000
# Lambda's own variables, read as awslambdaric's LambdaContext reads them.
AWS_LAMBDA_FUNCTION_NAME = "AWS_LAMBDA_FUNCTION_NAME"
AWS_LAMBDA_FUNCTION_VERSION = "AWS_LAMBDA_FUNCTION_VERSION"
AWS_LAMBDA_FUNCTION_MEMORY_SIZE = "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"
AWS_LAMBDA_LOG_GROUP_NAME = "AWS_LAMBDA_LOG_GROUP_NAME"
AWS_LAMBDA_LOG_STREAM_NAME = "AWS_LAMBDA_LOG_STREAM_NAME"
LAMBDA_TASK_ROOT = "LAMBDA_TASK_ROOT"
LAMBDA_RUNTIME_DIR = "LAMBDA_RUNTIME_DIR"
PYTHONPATH = "PYTHONPATH"
LAYERS_ROOT = "/opt/python"
HANDLER = "_HANDLER"  # the function's Handler, as Lambda sets it for the runtime


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


class InvocationContext:
    """The handler's `context`, built from the invocation and Lambda's variables as awslambdaric's LambdaContext is."""

    def __init__(self, invocation: Invocation, environ: Optional[Mapping[str, str]] = None,
                 clock: Callable[[], float] = time.time) -> None:
        env = os.environ if environ is None else environ
        self.aws_request_id = invocation.aws_request_id
        self.invoked_function_arn = invocation.invoked_function_arn
        self.function_name = env.get(AWS_LAMBDA_FUNCTION_NAME)
        self.function_version = env.get(AWS_LAMBDA_FUNCTION_VERSION)
        # A string, as awslambdaric gives it.
        self.memory_limit_in_mb = env.get(AWS_LAMBDA_FUNCTION_MEMORY_SIZE)
        self.log_group_name = env.get(AWS_LAMBDA_LOG_GROUP_NAME)
        self.log_stream_name = env.get(AWS_LAMBDA_LOG_STREAM_NAME)
        self.client_context: Any = None  # only for AWS Mobile SDK invocations, never through a Function URL
        self.identity: Any = None
        self._deadline_ms = invocation.deadline_ms
        self._clock = clock

    def get_remaining_time_in_millis(self) -> int:
        """Milliseconds until Lambda ends this invocation (0 once it is past)."""
        return max(self._deadline_ms - int(self._clock() * 1000), 0)

    def __repr__(self) -> str:
        return f"InvocationContext(aws_request_id={self.aws_request_id!r}, function_name={self.function_name!r})"


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
        deadline = response.getheader("Lambda-Runtime-Deadline-Ms", "")
        return Invocation(
            aws_request_id=request_id,
            deadline_ms=int(deadline) if deadline.isdigit() else int(time.time() * 1000) + MAX_INVOCATION_MS,
            invoked_function_arn=response.getheader("Lambda-Runtime-Invoked-Function-Arn", ""),
            trace_id=response.getheader("Lambda-Runtime-Trace-Id"),
            event=body,
        )

    def stream_response(self, request_id: str, prelude: Mapping[str, Any], body: Answer,
                        timeout: float = POST_TIMEOUT) -> Optional[BaseException]:
        """Stream one answer: prelude, delimiter, then each body part as its own chunk.

        A failure after the first byte can no longer change the status: the client gets an SSE
        error event. An ordinary one (a BehestLambdaError: Behest reset or stalled, the deadline
        came) then ends the stream cleanly; only a bug also goes to Lambda, in the trailers the
        streaming protocol defines (the /error endpoint is only open before a response starts), so
        that it counts as a function error. Returns what broke, if anything. `timeout` bounds each
        write: a client may read slowly for as long as the invocation has time.
        """
        connection = self._connection(timeout)
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
            if failure is not None and not isinstance(failure, BehestLambdaError):
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

    def _connection(self, timeout: float = POST_TIMEOUT) -> http.client.HTTPConnection:
        connection = http.client.HTTPConnection(self.address, timeout=timeout)
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
    SSE error event; one it raises instead gets its event here, and a bug a generic one. Failures
    of `write` (the reader went away) propagate. The body is closed either way, and Behest's
    connection with it.
    """
    parts = iter(body)
    try:
        while True:
            try:
                part = next(parts)
            except StopIteration:
                break
            except Exception as e:  # noqa: BLE001 - after the first byte only an error event and trailers can say it
                shown = e if isinstance(e, BehestLambdaError) else BehestLambdaError("the relay failed mid-stream")
                write(getattr(body, "error_event", sse_error_event)(shown))
                return e
            if part:
                write(part)
    finally:
        body.close()
    failure = getattr(body, "failure", None)
    return failure if isinstance(failure, BaseException) else None


def response_timeout(context: InvocationContext) -> float:
    """How long the response connection may wait on one write: the invocation's time left, plus a margin."""
    return context.get_remaining_time_in_millis() / 1000 + DEADLINE_MARGIN


def handle(api: RuntimeApi, function: Responder, telemetry: Telemetry, invocation: Invocation) -> None:
    """Serve one invocation. Whatever goes wrong in it is reported to Lambda, and the loop goes on.

    Telemetry is flushed once at the end, on every path: no Powertools decorator does it here.
    """
    context = InvocationContext(invocation)
    telemetry.start_invocation(context)
    try:
        _answer(api, function, telemetry, invocation, context)
    finally:
        _flush(telemetry)


def _flush(telemetry: Telemetry) -> None:
    flush = getattr(telemetry, "flush", None)  # the EMF buffer, where Telemetry keeps one
    if flush is not None:
        flush()


def _answer(api: RuntimeApi, function: Responder, telemetry: Telemetry, invocation: Invocation,
            context: InvocationContext) -> None:
    try:
        event = json.loads(invocation.event)
    except ValueError:
        event = None
    if not isinstance(event, dict):
        telemetry.error("unreadable event", bytes=len(invocation.event))
        api.invocation_error(invocation.aws_request_id, "Runtime.InvalidEvent", "the event is not a JSON object")
        return
    try:
        prelude, body = function.respond(event, context)
    except Exception as e:  # noqa: BLE001 - a bug must not end the container; Lambda counts it as a function error
        stack = traceback.format_exception(e)
        telemetry.error("unhandled error", error=type(e).__name__, detail=str(e)[:500], stack="".join(stack)[-4000:])
        # Our own failures were answered by `respond` with their status and OpenAI's error shape; a
        # bug goes to /error, so that Lambda's Errors metric and alarms count it (clients get a 502).
        api.invocation_error(invocation.aws_request_id, f"Function.{type(e).__name__}", str(e), stack)
        return
    try:
        failure = api.stream_response(invocation.aws_request_id, prelude, body, response_timeout(context))
    except _WriteFailed as e:
        # Lambda cut this response (the client left, or the invocation timed out); the next /next
        # call shows whether the Runtime API itself is gone.
        telemetry.warning("the response stream was cut", detail=str(e))
        return
    if isinstance(failure, BehestLambdaError):
        # Behest reset or stalled, or the deadline came: the client has its error event, and this is
        # no function error (nothing in the trailers), so Lambda's Errors metric stays for bugs.
        telemetry.warning("stream ended with an error event", error=type(failure).__name__, code=failure.code,
                          detail=failure.message)
    elif failure is not None:
        telemetry.error("unhandled error mid-stream", error=type(failure).__name__, detail=str(failure)[:500],
                        stack="".join(traceback.format_exception(failure))[-4000:])


def serve(api: RuntimeApi, function: Responder, telemetry: Telemetry, *, invocations: Optional[int] = None) -> None:
    """Fetch and answer invocations, forever (or `invocations` of them)."""
    served = 0
    while invocations is None or served < invocations:
        invocation = api.next_invocation()
        served += 1
        # As every AWS runtime client does: an invocation without a trace id must not run under the last one's.
        if invocation.trace_id:
            os.environ[names.X_AMZN_TRACE_ID] = invocation.trace_id
        else:
            os.environ.pop(names.X_AMZN_TRACE_ID, None)
        handle(api, function, telemetry, invocation)


def use_lambda_python_path(task_root: str, runtime_dir: Optional[str],
                           environ: Optional[MutableMapping[str, str]] = None) -> None:
    """Order sys.path as the managed runtime's /var/runtime/bootstrap.py does before it imports a handler.

    First the task root, then the layers' site-packages and `/opt/python`, then the interpreter's
    own site-packages, then the runtime's directory (in place of this process's entry directory,
    as bootstrap.py's own directory is the first entry there). The task root and the layers are
    site directories: their `.pth` files are processed. A PYTHONPATH the function sets leaves the
    layers out, as in the managed runtime; otherwise PYTHONPATH becomes the runtime directory, for
    child processes.
    """
    env = os.environ if environ is None else environ
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    layers = [] if PYTHONPATH in env else [f"{LAYERS_ROOT}/lib/{version}/site-packages", LAYERS_ROOT]
    own = [sysconfig.get_paths()["purelib"]] if layers else []
    sys.path[:1] = [task_root, *layers, *own, *([runtime_dir] if runtime_dir else [])]
    for directory in (task_root, *layers):
        site.addsitedir(directory)
    runtime_home = env.get(LAMBDA_RUNTIME_DIR) or runtime_dir
    if not layers or not runtime_home:
        return
    env[PYTHONPATH] = runtime_home


def start(task_root: str, runtime_dir: Optional[str] = None) -> int:
    """What `stream-bootstrap` runs: Lambda's Python path, then the loop."""
    use_lambda_python_path(task_root, runtime_dir)
    return main()


def main() -> int:
    """Start the function, report an init failure to Lambda, then serve until the container goes."""
    address = os.environ.get(names.AWS_LAMBDA_RUNTIME_API, "")
    if not address:
        sys.stderr.write(f"{names.AWS_LAMBDA_RUNTIME_API} is not set: this process is started by Lambda\n")
        return 2
    api = RuntimeApi(address)
    telemetry: Optional[Telemetry] = None
    try:
        from .routes import STREAM_FUNCTION
        from .stream_handler import FUNCTIONS, StreamFunction
        from .telemetry import Telemetry

        telemetry = Telemetry(SERVICE)
        # Which function this container runs: its Handler says (the same code serves both streaming URLs).
        function = StreamFunction.from_env(telemetry, function=FUNCTIONS.get(os.environ.get(HANDLER, ""),
                                                                             STREAM_FUNCTION))
    except Exception as e:  # noqa: BLE001 - any init failure goes to Lambda's init/error, which ends the container
        message = getattr(e, "message", None) or str(e)
        if telemetry is None:
            sys.stderr.write(f"the function could not start: {type(e).__name__}: {message}\n")
        else:
            telemetry.error("the function could not start", error=type(e).__name__, detail=message)
            _flush(telemetry)
        api.init_error(f"Runtime.{type(e).__name__}", message, traceback.format_exception(e))
        return 1
    telemetry.debug("the streaming loop started", python=sys.executable, python_path=list(sys.path))
    try:
        serve(api, function, telemetry)
    except RuntimeApiError as e:
        telemetry.error("the Runtime API went away", detail=str(e))
        _flush(telemetry)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

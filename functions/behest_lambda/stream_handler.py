"""The StreamFunction behind a Lambda Function URL (RESPONSE_STREAM): Behest's answers passed on as they come.

The managed Python runtime cannot stream, so `stream_runtime` speaks the Runtime API itself and
calls `StreamFunction.respond` once per invocation; `make dev` serves the same `respond` over
plain HTTP (devstack/stream_url.py). A Function URL has no JWT authorizer: the caller's identity
token is verified here (`caller_token`), then the request takes the same route table and cores
as the HTTP API, and each SSE event goes out as Behest sends it.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

from . import settings as names
from .app import AnswerBody, Service, refuse_unconfigured
from .errors import ConfigurationError
from .routes import SERVICE_FUNCTION, STREAM_FUNCTION
from .telemetry import Telemetry

SERVICE = "behest-stream"
# The Handler each function behind a streaming Function URL declares in template.yaml (Lambda's `_HANDLER`)
# → the function the Runtime API loop serves: the public URL's, or the server-to-server (AWS_IAM) URL's.
FUNCTIONS = {
    "behest_lambda.stream_handler.handler": STREAM_FUNCTION,
    "behest_lambda.stream_handler.service_handler": SERVICE_FUNCTION,
}

Prelude = dict[str, Any]


class StreamFunction:
    """The streaming function's service, built once per container."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.telemetry = service.telemetry

    @classmethod
    def from_env(cls, telemetry: Telemetry, environ: Optional[Mapping[str, str]] = None, *,
                 function: str = STREAM_FUNCTION) -> StreamFunction:
        """Read the environment once; a ConfigurationError names the variables at fault (the caller settings included)."""
        return cls(Service.from_env(function, telemetry, environ))

    def respond(self, event: Mapping[str, Any], context: Any = None) -> tuple[Prelude, AnswerBody]:
        """Answer one Function URL event: the HTTP prelude, then the body as it comes.

        Refusals and upstream errors before the first byte are whole answers with their status
        and OpenAI's error shape (a 429 keeps Retry-After, a 5xx becomes 502). A stream that breaks
        later ends with an SSE error event, and the body's `failure` tells the runtime so. The relay
        ends before the invocation's deadline (`context.get_remaining_time_in_millis()`).
        """
        return self.service.respond(event, context)


def handler(event: Mapping[str, Any], context: Any) -> dict[str, Any]:
    """What the managed runtime would call without the wrapper: a loud configuration error, not a silent buffer."""
    telemetry = Telemetry(SERVICE)
    telemetry.start_invocation(context)
    return refuse_unconfigured(telemetry, ConfigurationError(
        f"the streaming function runs through its own Runtime API loop: set {names.AWS_LAMBDA_EXEC_WRAPPER}"
        " to /var/task/stream-bootstrap"
    ))


# The server-to-server function's Handler: never called either, for the same reason.
service_handler = handler

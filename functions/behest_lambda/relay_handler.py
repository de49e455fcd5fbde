"""Lambda entry point for `POST /v1/chat/completions` behind the HTTP API (buffered).

Any OpenAI SDK works against it: base URL = this API + `/v1`, API key = the user's identity
token (API Gateway's JWT authorizer verifies it). Each request is forwarded to Behest with a
per-user Behest JWT; `user` is always the verified user id. HTTP APIs buffer the answer, so a
`stream: true` request gets the whole SSE stream at once; the streaming route delivers it live.
"""

from __future__ import annotations

import base64
import time
from typing import Any, Mapping, Optional

from . import apigw
from .errors import BehestLambdaError
from .identity import identity_from_event
from .key_source import key_source_for
from .mint import Minter
from .relay import Relay, buffered_stream, chat_request
from .settings import Settings
from .telemetry import Telemetry

SERVICE = "behest-chat-relay"


class RelayFunction:
    """The buffered chat route, built once per container."""

    def __init__(self, settings: Settings, relay: Relay, telemetry: Telemetry) -> None:
        self.settings = settings
        self.relay = relay
        self.telemetry = telemetry

    @classmethod
    def from_env(cls, telemetry: Telemetry, environ: Optional[Mapping[str, str]] = None) -> RelayFunction:
        """Read the environment once; a configuration error names the variables at fault."""
        settings = Settings.from_env(environ)
        telemetry.configure(settings.log_level, settings.metrics_namespace)
        minter = Minter(settings, key_source_for(settings, telemetry))
        return cls(settings, Relay(settings, minter), telemetry)

    def handle(self, event: Mapping[str, Any]) -> dict[str, Any]:
        """Validate, relay, and return Behest's answer whole; known failures in OpenAI's error shape."""
        started = time.monotonic()
        try:
            apigw.require_post(event)
            identity = identity_from_event(event, self.settings)
            body = apigw.json_object_body(event, self.settings.max_body_bytes)
            request = chat_request(body, identity, self.settings, apigw.header(event, "x-session-id"))
            answer = self.relay.open(identity, request)
            payload = buffered_stream(answer.chunks) if answer.stream else b"".join(answer.chunks)
        except BehestLambdaError as e:
            return apigw.refusal(self.telemetry, e)
        self.telemetry.info(
            "chat relayed", uid=identity.user_id, sid=answer.headers["x-session-id"], stream=request.stream,
            model=request.body.get("model"), bytes=len(payload), ms=round((time.monotonic() - started) * 1000, 1),
        )
        self.telemetry.metric("ChatRelayed")
        return http_answer(answer.status, answer.headers, payload)


def http_answer(status: int, headers: Mapping[str, str], payload: bytes) -> dict[str, Any]:
    """A payload 2.0 answer; bytes that are not UTF-8 travel base64-encoded."""
    try:
        return {"statusCode": status, "headers": dict(headers), "body": payload.decode("utf-8"),
                "isBase64Encoded": False}
    except UnicodeDecodeError:
        return {"statusCode": status, "headers": dict(headers), "body": base64.b64encode(payload).decode("ascii"),
                "isBase64Encoded": True}


handler = apigw.entry_point(RelayFunction.from_env, Telemetry(SERVICE))

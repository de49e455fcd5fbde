"""A stand-in for Behest's gateway on loopback, for tests and local development (never deployed).

It verifies bearer JWTs as the gateway (Kong) does, mints tokens for registered API keys, and
answers OpenAI-compatible routes deterministically: chat completions, legacy completions and the
Responses API (buffered or streamed as server-sent events; text, structured output or function
calls), embeddings (float or base64) and models. It records every request and misbehaves on demand
on any path: error statuses, slow answers, connection resets mid-stream, garbage bodies and
streams that never end.

    with StandinGateway() as gateway:
        gateway.register_key("sk_test_primary", public_pem)
        gateway.inject(Fault("status", status=429, retry_after=3, path="responses"))
        ...  # point BEHEST_BASE_URL at gateway.url

Modules: `server` (routes, recording, pacing), `tokens` (JWT checks and minting), `faults`,
`turns` (what the assistant says: text, JSON in the asked format, or tool calls), `tool_calls`,
`schema_instance`, `answers` (the OpenAI-shaped bodies and their usage), `responses_events`,
`completions` (legacy completions), `sse`. Run it alone with `python -m devstack.standin --port 8787`.
"""

from .answers import MODELS, reply_text
from .errors import Refusal
from .faults import (
    CHAT_PATH,
    EMBEDDINGS_PATH,
    FAULT_KINDS,
    MINT_PATH,
    MODELS_PATH,
    PATH_ALIASES,
    RESPONSES_PATH,
    Fault,
    FaultKind,
)
from .schema_instance import schema_instance
from .server import (
    DEFAULT_AUDIENCE,
    DEFAULT_ISSUER,
    DEFAULT_PORT,
    FAULTS_PATH,
    HEALTH_PATH,
    REQUESTS_PATH,
    RecordedRequest,
    StandinGateway,
    StreamEvent,
)
from .tokens import API_KEY_PREFIX, REQUIRED_CLAIMS
from .tool_calls import Call, call_id
from .turns import Turn, chat_turn, responses_turn, tools_reply_text, usage_for

__all__ = [
    "API_KEY_PREFIX", "CHAT_PATH", "DEFAULT_AUDIENCE", "DEFAULT_ISSUER", "DEFAULT_PORT", "EMBEDDINGS_PATH",
    "FAULTS_PATH", "FAULT_KINDS", "HEALTH_PATH", "MINT_PATH", "MODELS", "MODELS_PATH", "PATH_ALIASES",
    "REQUESTS_PATH", "REQUIRED_CLAIMS", "RESPONSES_PATH", "Fault", "FaultKind", "RecordedRequest", "Refusal",
    "StandinGateway", "StreamEvent", "Call", "Turn", "call_id", "chat_turn", "reply_text", "responses_turn",
    "schema_instance", "tools_reply_text", "usage_for",
]

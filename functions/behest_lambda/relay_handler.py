"""Lambda entry point of the RelayFunction: the OpenAI-compatible routes behind the HTTP API (buffered).

Any OpenAI SDK works against it: base URL = this API + `/v1`, API key = the user's identity
token (API Gateway's JWT authorizer verifies it). It serves every `/v1/...` route of the route
table (chat completions, the Responses API, embeddings, models) and, through the API's
catch-all route, answers OpenAI-shaped 404/405 for anything else. Each request is forwarded
to Behest with a per-user Behest JWT; `user` is always the verified user id. HTTP APIs buffer
the answer, so a `stream: true` request gets the whole SSE stream at once; the streaming
function's Function URL delivers it live.
"""

from __future__ import annotations

from .app import entry_point
from .routes import RELAY_FUNCTION

SERVICE = "behest-relay"

handler = entry_point(RELAY_FUNCTION, SERVICE)

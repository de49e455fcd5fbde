"""Lambda entry point of the TokenFunction: `POST /api/behest/token` behind the HTTP API's JWT authorizer.

Answers `{token, ttl, sessionId, expiresAt}`: a per-user Behest JWT for the caller whose
identity API Gateway's JWT authorizer verified. The body may ask for a `ttl` and a
`sessionId` to continue; nothing in the request can choose who the token is for.
"""

from __future__ import annotations

from .app import entry_point
from .routes import TOKEN_FUNCTION

SERVICE = "behest-token"

handler = entry_point(TOKEN_FUNCTION, SERVICE)

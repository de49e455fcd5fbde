"""Session cookies as the providers' browser SDKs write them.

- Clerk keeps the session token itself in `__session` for same-origin requests
  (https://clerk.com/docs/guides/sessions/manual-jwt-verification).
- @supabase/ssr keeps the whole session (a JSON object holding `access_token`) in
  `sb-<project ref>-auth-token`: written as `base64-` + base64url (no padding), and split into
  `<name>.0`, `<name>.1`, … when the URI-encoded value is longer than 3180 characters
  (https://github.com/supabase/ssr, src/cookies.ts and src/utils/chunker.ts).
"""

from __future__ import annotations

import base64
import json
from typing import Any, Mapping

from devstack.identity.shapes import CookieShape

SUPABASE_PREFIX = "base64-"
# @supabase/ssr's MAX_CHUNK_SIZE; base64url text never needs URI-encoding, so characters are the measure.
SUPABASE_CHUNK_CHARS = 3180


def supabase_session(access_token: str, user: Mapping[str, Any], expires_at: int, expires_in: int) -> dict[str, Any]:
    """The session object supabase-js stores (what @supabase/ssr writes into the cookie)."""
    return {"access_token": access_token, "token_type": "bearer", "expires_in": expires_in, "expires_at": expires_at,
            "refresh_token": "dev" + access_token[-12:].replace("-", "").replace("_", ""), "user": dict(user)}


def supabase_cookie_values(name: str, session: Mapping[str, Any],
                           chunk_chars: int = SUPABASE_CHUNK_CHARS) -> list[tuple[str, str]]:
    """`name` = `base64-…` when it fits, else `name.0`, `name.1`, … of at most `chunk_chars` each."""
    text = json.dumps(session, separators=(",", ":"))
    value = SUPABASE_PREFIX + base64.urlsafe_b64encode(text.encode()).decode("ascii").rstrip("=")
    if len(value) <= chunk_chars:
        return [(name, value)]
    return [(f"{name}.{i}", value[start:start + chunk_chars])
            for i, start in enumerate(range(0, len(value), chunk_chars))]


def cookies_for(shape: CookieShape, token: str, session: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (name, value) pairs the provider's SDK would set for this sign-in."""
    if shape.encoding == "supabase-session":
        return supabase_cookie_values(shape.name, session)
    return [(shape.name, token)]


def cookie_header(pairs: list[tuple[str, str]]) -> str:
    """A Cookie request header carrying `pairs`, as a browser sends them."""
    return "; ".join(f"{name}={value}" for name, value in pairs)

"""The identity token as a session cookie carries it: Clerk's `__session`, Supabase's `sb-<ref>-auth-token`.

API Gateway's HTTP API and Function URLs hand cookies over in payload 2.0's `cookies` array, one
`name=value` per entry. Each pair is read by the standard library's `http.cookies`; the encodings
are a table (`READERS`), one small function per provider's way of writing the cookie.
"""

from __future__ import annotations

import base64
import binascii
import json
from http.cookies import CookieError, SimpleCookie
from typing import Callable, Optional, Sequence
from urllib.parse import unquote

from .errors import UnauthenticatedError
from .providers import RAW_JWT, SUPABASE_SESSION

MAX_COOKIE_CHARS = 4096  # a browser keeps at most 4096 bytes per cookie
# @supabase/ssr splits at 3180 characters; a session needs a few chunks at most. More is refused, not read.
MAX_CHUNKS = 16
MAX_SESSION_CHARS = MAX_CHUNKS * MAX_COOKIE_CHARS
# @supabase/ssr's default encoding: "base64-" followed by base64url of the JSON session.
BASE64_PREFIX = "base64-"


def cookie_jar(entries: Sequence[str]) -> dict[str, list[str]]:
    """Every cookie of the request by name, each with all the values it was sent with."""
    jar: dict[str, list[str]] = {}
    for entry in entries:
        # API Gateway sends one pair per entry; a header-style "a=1; b=2" is read pair by pair, so that a
        # repeated name is seen rather than silently overwritten.
        for pair in entry.split(";"):
            if not pair.strip():
                continue
            cookie: SimpleCookie = SimpleCookie()
            try:
                cookie.load(pair.strip())
            except CookieError:
                continue
            for name, morsel in cookie.items():
                jar.setdefault(name, []).append(morsel.value)
    return jar


def token_from_cookies(entries: Sequence[str], name: str, encoding: str) -> Optional[str]:
    """The token the cookie `name` carries in `encoding`; None when there is no such cookie, 401 when it is bad."""
    return READERS[encoding](cookie_jar(entries), name)


def _single(jar: dict[str, list[str]], name: str) -> Optional[str]:
    values = jar.get(name)
    if not values:
        return None
    if len(values) > 1:
        # Which one the browser meant cannot be known (a sibling domain may have planted one): neither is used.
        raise _refused(f"the request carries {len(values)} cookies named {name[:64]!r}")
    if len(values[0]) > MAX_COOKIE_CHARS:
        raise _refused(f"the cookie {name[:64]!r} is larger than a browser keeps")
    return values[0]


def raw_jwt(jar: dict[str, list[str]], name: str) -> Optional[str]:
    """Clerk: the cookie's value is the session token itself."""
    return _single(jar, name) or None


def supabase_session(jar: dict[str, list[str]], name: str) -> Optional[str]:
    """@supabase/ssr: the whole cookie or its chunks `.0`, `.1`, … joined; `base64-` + base64url JSON, or raw JSON."""
    value = _single(jar, name)
    if not value:
        parts: list[str] = []
        while (part := _single(jar, f"{name}.{len(parts)}")):
            parts.append(part)
            if len(parts) > MAX_CHUNKS:
                raise _refused(f"the {name[:64]!r} cookie is split into more than {MAX_CHUNKS} chunks")
        if not parts:
            return None
        value = "".join(parts)
    if len(value) > MAX_SESSION_CHARS:
        raise _refused(f"the {name[:64]!r} cookie is larger than a session")
    try:
        if value.startswith(BASE64_PREFIX):
            encoded = value[len(BASE64_PREFIX):]
            text = base64.b64decode(encoded + "=" * (-len(encoded) % 4), altchars=b"-_", validate=True).decode("utf-8")
        else:  # cookieEncoding "raw": the JSON itself, URI-encoded by the cookie serializer
            text = unquote(value, errors="strict")
        session = json.loads(text)
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError):
        raise _refused(f"the {name[:64]!r} cookie does not hold a session") from None
    token = session.get("access_token") if isinstance(session, dict) else None
    if not isinstance(token, str) or not token:
        raise _refused(f"the {name[:64]!r} cookie holds no access_token")
    return token


READERS: dict[str, Callable[[dict[str, list[str]], str], Optional[str]]] = {
    RAW_JWT: raw_jwt,
    SUPABASE_SESSION: supabase_session,
}


def _refused(reason: str) -> UnauthenticatedError:
    return UnauthenticatedError(f"the session cookie was refused: {reason}", challenge=True)

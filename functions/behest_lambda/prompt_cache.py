"""Per-user prompt caches: a caller's `prompt_cache_key` goes to Behest behind a keyed hash of the verified user.

OpenAI-compatible providers route requests that share a `prompt_cache_key` to the same cache, within
one project: passed on as written, users of one deployment could pool each other's cache entries,
or probe them by timing. In front of the caller's key goes a tag that is HMAC-SHA256 of the user
id, so two users never send the same key, and a tag cannot be computed, or traced back to a user,
without the HMAC key.

The HMAC key is derived from the tenant key material the function already holds (the RSA private
key in sign mode, the API key in API-key mode): secret, the same in every container with no extra
setting, and never written anywhere. Rotating the tenant key changes every tag once: a cache miss
per user, nothing worse.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from typing import Optional

from .credentials import ApiKey, Credentials

# Providers refuse a longer key (OpenAI: "string too long. Expected a string with maximum length 64").
MAX_KEY_CHARS = 64
TAG_CHARS = 22  # 132 bits of the HMAC, base64url
SEPARATOR = "."
_DERIVATION_LABEL = b"behest-lambda prompt_cache_key namespace v1"


def namespace_key(credentials: Credentials) -> bytes:
    """The HMAC key of the user tags, derived from the tenant key material (HMAC as the extractor, as in HKDF)."""
    if isinstance(credentials, ApiKey):
        material = credentials.value.encode("utf-8")
    else:
        d = credentials.key.private_numbers().d
        material = d.to_bytes((d.bit_length() + 7) // 8, "big")
    return hmac.new(material, _DERIVATION_LABEL, hashlib.sha256).digest()


def user_tag(key: bytes, user_id: str) -> str:
    """The user's tag: 22 base64url characters of HMAC-SHA256(key, user id)."""
    digest = hmac.new(key, user_id.encode("utf-8", "surrogatepass"), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode("ascii")[:TAG_CHARS]


def namespaced(key: bytes, user_id: str, caller_key: str) -> str:
    """`<user tag>.<caller's key>`; a caller's key too long to fit is replaced by a hash of it (still stable)."""
    room = MAX_KEY_CHARS - TAG_CHARS - len(SEPARATOR)
    if len(caller_key) > room:
        digest = hashlib.sha256(caller_key.encode("utf-8", "surrogatepass")).digest()
        caller_key = base64.urlsafe_b64encode(digest).decode("ascii")[:room]
    return user_tag(key, user_id) + SEPARATOR + caller_key


class PromptCacheNamespace:
    """Namespaces prompt cache keys under the credentials in use, deriving the HMAC key once per credentials."""

    def __init__(self) -> None:
        self._for: Optional[Credentials] = None
        self._key = b""

    def key_for(self, credentials: Credentials, user_id: str, caller_key: str) -> str:
        if credentials is not self._for:
            self._key, self._for = namespace_key(credentials), credentials
        return namespaced(self._key, user_id, caller_key)

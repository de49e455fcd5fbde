"""The caller's identity token, verified in code: RS256 against the identity provider's JWKS.

The streaming function sits behind a Lambda Function URL, which has no JWT authorizer, so it
checks what API Gateway's authorizer checks for the HTTP API routes: an RS256 signature by a
key the issuer publishes (looked up by `kid`), `iss` exactly, `aud` (or Cognito's `client_id`)
among the configured audiences, `exp` and `nbf`/`iat` within a small leeway. Written on
`cryptography` alone (PyJWT would add ~75 ms of import to every cold start); the tests forge
their adversarial tokens with PyJWT.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import threading
import time
from typing import Any, Callable, Mapping, Optional, Sequence, TypeGuard

from . import settings as names
from .errors import BehestLambdaError, ConfigurationError, UnauthenticatedError
from .jws import rs256_verify
from .settings import Settings
from .telemetry import Telemetry

ALGORITHM = "RS256"
CLOCK_LEEWAY = 30  # seconds of clock skew tolerated on exp, nbf and iat
MAX_TOKEN_CHARS = 16384
MAX_KID_CHARS = 256
MIN_RSA_BITS = 2048
JWKS_FETCH_TIMEOUT = 3.0
MAX_JWKS_BYTES = 512 * 1024
# A token naming an unknown kid refetches the JWKS (the provider may have rotated), but only when
# the keys held are at least this old: made-up kids must not turn every request into a fetch.
UNKNOWN_KID_REFETCH_INTERVAL = 10.0
# After a failed fetch no new attempt is made for RETRY_INTERVAL; keys already held keep
# verifying for GRACE_PERIOD past their TTL, so a blip at the provider locks nobody out.
RETRY_INTERVAL = 5.0
GRACE_PERIOD = 300.0

_B64URL = re.compile(r"[A-Za-z0-9_-]*")

JwksFetcher = Callable[[str, float], Any]


class JwksUnavailableError(BehestLambdaError):
    """The identity provider's keys cannot be fetched and none are held: not the caller's fault."""

    status = 503
    code = "identity_keys_unavailable"

    def __init__(self, message: str, *, retry_after: int = int(RETRY_INTERVAL)) -> None:
        super().__init__(message, retry_after=retry_after)


class JwksFetchError(Exception):
    """One fetch of the JWKS failed (network, status, or not a key set)."""


def bearer_token(authorization: Optional[str]) -> str:
    """The token of an `Authorization: Bearer <token>` header, or 401."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError("no identity token: send Authorization: Bearer <your identity token>")
    return token.strip()


def fetch_jwks(url: str, timeout: float) -> Any:
    """GET the JWKS document as JSON, within `timeout` seconds."""
    import http.client
    import urllib.error
    import urllib.request

    # BEHEST_CALLER_JWKS_URL is checked to be http(s) in settings; a JWKS carries no secret.
    request = urllib.request.Request(  # noqa: S310
        url, headers={"Accept": "application/json", "User-Agent": "behest-lambda/1.0"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read(MAX_JWKS_BYTES + 1)
    except urllib.error.HTTPError as e:
        raise JwksFetchError(f"the JWKS URL answered {e.code}") from e
    except urllib.error.URLError as e:
        reason = "timeout" if isinstance(e.reason, TimeoutError) else type(e.reason).__name__
        raise JwksFetchError(f"the JWKS URL is unreachable ({reason})") from e
    except TimeoutError as e:
        raise JwksFetchError(f"the JWKS URL did not answer within {timeout:g} s") from e
    except (OSError, http.client.HTTPException) as e:
        raise JwksFetchError(f"the JWKS fetch failed ({type(e).__name__})") from e
    if len(body) > MAX_JWKS_BYTES:
        raise JwksFetchError("the JWKS document is too large")
    try:
        return json.loads(body)
    except ValueError as e:
        raise JwksFetchError("the JWKS document is not JSON") from e


class JwksCache:
    """The issuer's RS256 keys by kid, trusted for `ttl` seconds, then for GRACE_PERIOD more if refreshes fail."""

    def __init__(
        self,
        url: str,
        ttl: float,
        *,
        timeout: float = JWKS_FETCH_TIMEOUT,
        fetch: JwksFetcher = fetch_jwks,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Optional[Telemetry] = None,
    ) -> None:
        self.url = url
        self._ttl = ttl
        self._timeout = timeout
        self._fetch = fetch
        self._clock = clock
        self._telemetry = telemetry
        self._lock = threading.Lock()
        self._keys: Optional[dict[str, Any]] = None
        self._fetched_at = 0.0
        self._next_attempt = 0.0

    def key(self, kid: str) -> Any:
        """The public key published under `kid`, or None; JwksUnavailableError when no keys can be had."""
        with self._lock:
            now = self._clock()
            age = now - self._fetched_at
            if self._keys is not None and age < self._ttl:
                if kid in self._keys or age < UNKNOWN_KID_REFETCH_INTERVAL or now < self._next_attempt:
                    return self._keys.get(kid)
                self._refresh(now)  # a rotation at the provider; on failure the fresh keys stay
                return self._keys.get(kid)
            if now >= self._next_attempt and self._refresh(now):
                return self._keys.get(kid) if self._keys is not None else None
            if self._keys is not None and age < self._ttl + GRACE_PERIOD:
                return self._keys.get(kid)
            raise JwksUnavailableError(
                "the identity provider's signing keys are unavailable; try again shortly",
                retry_after=max(1, math.ceil(self._next_attempt - now)),
            )

    def _refresh(self, now: float) -> bool:
        try:
            keys = rsa_keys(self._fetch(self.url, self._timeout))
        except JwksFetchError as e:
            self._next_attempt = now + RETRY_INTERVAL
            if self._telemetry is not None:
                self._telemetry.warning("JWKS refresh failed", url=self.url, detail=str(e), held=self._keys is not None)
                self._telemetry.metric("JwksRefreshFailed")
            return False
        self._keys, self._fetched_at, self._next_attempt = keys, now, 0.0
        return True


def rsa_keys(document: Any) -> dict[str, Any]:
    """The usable RS256 signing keys of a JWKS document, by kid (others are skipped)."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise JwksFetchError("the JWKS document has no keys array")
    keys: dict[str, Any] = {}
    for jwk in entries:
        if not isinstance(jwk, dict) or jwk.get("kty") != "RSA":
            continue
        kid = jwk.get("kid")
        if not isinstance(kid, str) or not kid or jwk.get("use", "sig") != "sig" or jwk.get("alg", ALGORITHM) != ALGORITHM:
            continue
        try:
            numbers = rsa.RSAPublicNumbers(_b64url_int(jwk["e"]), _b64url_int(jwk["n"]))
            key = numbers.public_key()
        except (KeyError, TypeError, ValueError):
            continue
        if key.key_size >= MIN_RSA_BITS:
            keys[kid] = key
    return keys


class CallerTokenVerifier:
    """Verifies identity tokens as API Gateway's JWT authorizer does, with the algorithm pinned to RS256."""

    def __init__(
        self,
        issuer: str,
        audiences: Sequence[str],
        keys: JwksCache,
        *,
        leeway: float = CLOCK_LEEWAY,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.audiences = frozenset(audiences)
        self._keys = keys
        self._leeway = leeway
        self._clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, telemetry: Optional[Telemetry] = None) -> CallerTokenVerifier:
        """The verifier the settings describe; a ConfigurationError names what is missing."""
        missing = [name for name, value in ((names.BEHEST_CALLER_ISSUER, settings.caller_issuer),
                                            (names.BEHEST_CALLER_AUDIENCE, settings.caller_audiences)) if not value]
        if missing:
            raise ConfigurationError(f"the streaming function verifies callers itself and needs {', '.join(missing)}")
        assert settings.caller_issuer is not None and settings.caller_jwks_url is not None
        keys = JwksCache(settings.caller_jwks_url, settings.jwks_cache_ttl, telemetry=telemetry)
        return cls(settings.caller_issuer, settings.caller_audiences, keys)

    def claims(self, token: Any) -> dict[str, Any]:
        """The claims of a token that passes every check; UnauthenticatedError saying which one failed."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise _refused("it is not a compact JWS")
        parts = token.split(".")
        if len(parts) != 3:
            raise _refused("it is not a compact JWS")
        header_part, payload_part, signature_part = parts
        header = _json_segment(header_part)
        # Pinned: "none", HS256 (with any secret, the public key included) and every other alg are refused.
        if header.get("alg") != ALGORITHM:
            raise _refused("only RS256 tokens are accepted")
        if "crit" in header:
            raise _refused("it carries critical header extensions")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
            raise _refused("its header names no key id")
        signature = _b64url_decode(signature_part)
        key = self._keys.key(kid)
        if key is None:
            raise _refused("it is not signed by a key of the identity provider")
        from cryptography.exceptions import InvalidSignature

        try:
            rs256_verify(key, f"{header_part}.{payload_part}".encode("ascii"), signature)
        except InvalidSignature:
            raise _refused("its signature does not verify") from None
        claims = _json_segment(payload_part)
        self._check_claims(claims)
        return claims

    def _check_claims(self, claims: Mapping[str, Any]) -> None:
        if claims.get("iss") != self.issuer:
            raise _refused("it was issued by another issuer")
        # Cognito access tokens carry the app client in client_id and no aud.
        audience = claims["aud"] if "aud" in claims else claims.get("client_id")
        values = [audience] if isinstance(audience, str) else audience
        if not isinstance(values, list) or not any(isinstance(v, str) and v in self.audiences for v in values):
            raise _refused("it is meant for another audience")
        now = self._clock()
        expires = claims.get("exp")
        if not _is_number(expires):
            raise _refused("it has no expiry")
        if now >= expires + self._leeway:
            raise _refused("it has expired")
        for name in ("nbf", "iat"):
            if name in claims:
                value = claims[name]
                if not _is_number(value):
                    raise _refused(f"its {name} is not a number")
                if value > now + self._leeway:
                    raise _refused("it is not valid yet")


def _refused(reason: str) -> UnauthenticatedError:
    return UnauthenticatedError(f"the identity token was refused: {reason}")


def _b64url_decode(segment: str) -> bytes:
    if not _B64URL.fullmatch(segment) or len(segment) % 4 == 1:
        raise _refused("it is not base64url")
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def _b64url_int(value: Any) -> int:
    if not isinstance(value, str) or not value:
        raise ValueError("not a base64url integer")
    try:
        return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")
    except binascii.Error as e:
        raise ValueError("not a base64url integer") from e


def _json_segment(segment: str) -> dict[str, Any]:
    try:
        document = json.loads(_b64url_decode(segment).decode("utf-8"), object_pairs_hook=_refuse_duplicates)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise _refused("a segment is not a JSON object") from None
    if not isinstance(document, dict):
        raise _refused("a segment is not a JSON object")
    return document


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # Two parsers could disagree on which duplicate wins; a signed token has no reason to repeat a key.
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise ValueError("duplicate key")
        document[key] = value
    return document


def _is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

"""The caller's identity token, verified in code with PyJWT against the identity provider's JWKS.

The streaming function sits behind a Lambda Function URL, which has no JWT authorizer, so it
checks what API Gateway's authorizer checks for the HTTP API routes: an RS256 signature by a
key the issuer publishes (looked up by `kid`), `iss` exactly, `aud` (or Cognito's `client_id`)
among the configured audiences, `exp`, `nbf` and `iat` within CLOCK_LEEWAY_SECONDS. Every byte
of the token and of the JWKS is parsed by PyJWT; this module only chooses keys and compares values.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Optional, Sequence

from .cache import ExpiringValue
from .errors import ConfigurationError, FetchError, IdentityKeysUnavailableError, UnauthenticatedError
from .libraries import jwt
from .settings import CallerSettings
from .telemetry import Telemetry

ALGORITHM = "RS256"
# One leeway for exp, nbf and iat, the same as `make dev`'s local JWT authorizer applies: none, as API
# Gateway's JWT authorizer documents (exp after, nbf and iat before the current time).
CLOCK_LEEWAY_SECONDS = 0
MAX_TOKEN_CHARS = 16384
MAX_KID_CHARS = 256
MIN_RSA_BITS = 2048
JWKS_FETCH_TIMEOUT = 3.0  # one deadline for the whole fetch: connect, headers and body
MAX_JWKS_BYTES = 512 * 1024
# Whatever BEHEST_JWKS_CACHE_TTL says, keys are trusted at least this long (a TTL of 0 would fetch on every request).
MIN_JWKS_CACHE_TTL = 60.0
# A token naming an unknown kid refetches the JWKS (the provider may have rotated), but only when
# the keys held are at least this old: made-up kids must not turn every request into a fetch.
UNKNOWN_KID_REFETCH_INTERVAL = 10.0
# After a failed fetch no new attempt is made for RETRY_INTERVAL; keys already held keep
# verifying for GRACE_PERIOD past their TTL, so a blip at the provider locks nobody out.
RETRY_INTERVAL = 5.0
GRACE_PERIOD = 300.0
# PyJWT's checks; anything else a malformed token can raise while being read is caught as a refusal too.
_MALFORMED = (jwt.PyJWTError, ValueError, TypeError, OverflowError, RecursionError, KeyError)

JwksFetcher = Callable[[str, float], Any]
Keys = dict[str, "jwt.PyJWK"]


def bearer_token(authorization: Optional[str]) -> str:
    """The token of an `Authorization: Bearer <token>` header, or 401."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError("no identity token: send Authorization: Bearer <your identity token>", challenge=True)
    return token.strip()


def fetch_jwks(url: str, timeout: float) -> Any:
    """GET the JWKS document as JSON: no redirects, one deadline for the whole fetch."""
    import json

    from .errors import UpstreamError
    from .upstream import open_request, read_within

    deadline = time.monotonic() + timeout
    try:
        response = open_request("GET", url, None, {"Accept": "application/json"}, timeout)
        status = response.status
        body = read_within(response, deadline, limit=MAX_JWKS_BYTES)
    except UpstreamError as e:
        raise FetchError(f"the JWKS fetch failed ({e.message})", reason="unreachable") from e
    if status != 200:
        raise FetchError(f"the JWKS URL answered {status}", reason=f"http_{status}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:
        raise FetchError("the JWKS document is not JSON", reason="malformed") from e


def signing_keys(document: Any) -> Keys:
    """The keys of a JWKS document that may verify RS256 signatures, by kid; every other key is skipped."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise FetchError("the JWKS document has no keys array", reason="malformed")
    keys: Keys = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        kid = entry.get("kid")
        use, ops, alg = entry.get("use", "sig"), entry.get("key_ops"), entry.get("alg", ALGORITHM)
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS or use != "sig" or alg != ALGORITHM:
            continue
        if ops is not None and not (isinstance(ops, list) and "verify" in ops):
            continue
        try:
            key = jwt.PyJWK(entry, algorithm=ALGORITHM)
        except _MALFORMED:
            continue
        if getattr(key.key, "key_size", 0) >= MIN_RSA_BITS:
            keys[kid] = key
    return keys


class JwksCache:
    """The issuer's verifying keys by kid, through the shared expiring-value cache."""

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
        self._timeout = timeout
        self._fetch = fetch
        self._telemetry = telemetry
        self._cache: ExpiringValue[Keys] = ExpiringValue(
            self._load, ttl=max(ttl, MIN_JWKS_CACHE_TTL), grace=GRACE_PERIOD, retry_interval=RETRY_INTERVAL,
            unavailable=lambda retry_after: IdentityKeysUnavailableError(
                "the identity provider's signing keys are unavailable; try again shortly", retry_after=retry_after),
            events=self, clock=clock,
        )

    def key(self, kid: str) -> Optional[jwt.PyJWK]:
        """The key published under `kid`, or None; IdentityKeysUnavailableError when no keys can be had."""
        keys = self._cache.get()
        if kid in keys:
            return keys[kid]
        # Perhaps a rotation at the provider: refetch, at most every UNKNOWN_KID_REFETCH_INTERVAL.
        return self._cache.get(refresh_if_older_than=UNKNOWN_KID_REFETCH_INTERVAL).get(kid)

    def _load(self) -> Keys:
        return signing_keys(self._fetch(self.url, self._timeout))

    def replaced(self, old: Optional[Keys], new: Keys) -> None:
        pass

    def fetch_failed(self, failure: FetchError, *, serving_cached: bool, age: float, grace_left: float) -> None:
        if self._telemetry is not None:
            self._telemetry.warning("JWKS refresh failed", url=self.url, reason=failure.reason, detail=failure.message,
                                    held=serving_cached)
            self._telemetry.metric("JwksRefreshFailed", reason=failure.reason)


class CallerTokenVerifier:
    """Verifies identity tokens as API Gateway's JWT authorizer does, with the algorithm pinned to RS256."""

    def __init__(
        self,
        issuer: str,
        audiences: Sequence[str],
        keys: JwksCache,
        *,
        leeway: float = CLOCK_LEEWAY_SECONDS,
    ) -> None:
        self.issuer = issuer
        self.audiences = frozenset(audiences)
        self._keys = keys
        self._leeway = leeway

    @classmethod
    def from_settings(cls, settings: CallerSettings, telemetry: Optional[Telemetry] = None) -> CallerTokenVerifier:
        """The verifier the settings describe; a ConfigurationError names what is missing."""
        missing = settings.missing()
        if missing:
            raise ConfigurationError(f"the streaming function verifies callers itself and needs {', '.join(missing)}")
        assert settings.issuer is not None and settings.jwks_url is not None
        keys = JwksCache(settings.jwks_url, settings.jwks_cache_ttl, telemetry=telemetry)
        return cls(settings.issuer, settings.audiences, keys)

    def claims(self, token: Any) -> dict[str, Any]:
        """The claims of a token that passes every check; UnauthenticatedError saying which one failed."""
        if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
            raise _refused("it is not a compact JWS")
        try:
            header = jwt.get_unverified_header(token)
        except _MALFORMED:
            raise _refused("it is not a compact JWS") from None
        # Pinned: "none", HS256 (with any secret, the public key included) and every other alg are refused.
        if header.get("alg") != ALGORITHM:
            raise _refused("only RS256 tokens are accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
            raise _refused("its header names no key id")
        key = self._keys.key(kid)
        if key is None:
            raise _refused("it is not signed by a key of the identity provider")
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key, algorithms=[ALGORITHM], issuer=self.issuer, leeway=self._leeway,
                options={"require": ["exp", "iss"], "verify_aud": False, "verify_iat": True},
            )
        except jwt.MissingRequiredClaimError as e:
            raise _refused("it has no expiry" if e.claim == "exp" else "it was issued by another issuer") from None
        except jwt.ExpiredSignatureError:
            raise _refused("it has expired") from None
        except jwt.ImmatureSignatureError:
            raise _refused("it is not valid yet") from None
        except jwt.InvalidIssuerError:
            raise _refused("it was issued by another issuer") from None
        except jwt.InvalidSignatureError:
            raise _refused("its signature does not verify") from None
        except _MALFORMED as e:
            raise _refused(f"its claims are malformed ({type(e).__name__})") from None
        _check_times(claims)
        self._check_audience(claims)
        return claims

    def _check_audience(self, claims: dict[str, Any]) -> None:
        # Cognito access tokens carry the app client in client_id and no aud.
        audience = claims["aud"] if "aud" in claims else claims.get("client_id")
        values = [audience] if isinstance(audience, str) else audience
        if not isinstance(values, list) or not any(isinstance(v, str) and v in self.audiences for v in values):
            raise _refused("it is meant for another audience")


def _check_times(claims: dict[str, Any]) -> None:
    # PyJWT reads "exp": "1900000000" as a number; a signed token that writes its times as text is refused anyway.
    for name in ("exp", "nbf", "iat"):
        value = claims.get(name)
        if (name == "exp" or value is not None) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _refused("it has no expiry" if name == "exp" else f"its {name} is not a number")


def _refused(reason: str) -> UnauthenticatedError:
    return UnauthenticatedError(f"the identity token was refused: {reason}", challenge=True)

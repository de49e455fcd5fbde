"""The caller's identity token, verified in code with PyJWT: the Function URL's check, and the HTTP API's where
API Gateway's JWT authorizer cannot verify the provider's tokens.

It checks what API Gateway's authorizer checks: a signature by a key the issuer publishes (looked
up by `kid`; keys found through the issuer's OIDC discovery document, as API Gateway finds them),
`iss` exactly, the audience as the provider preset says (`aud`, Cognito's `client_id`, Clerk's
`azp`), `exp`, `nbf` and `iat` within CLOCK_LEEWAY_SECONDS. The algorithm follows the key: RSA,
RSA-PSS, ECDSA and EdDSA by the JWK's type and curve, never `none`, never HMAC with a published
key; HS256 only with Supabase's legacy secret from the key secret. Every byte of the token, the
discovery document and the JWKS is parsed by PyJWT or json; this module only chooses keys and
compares values.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
import urllib.request
from typing import Any, Callable, Optional, Sequence

from .cache import ExpiringValue
from .errors import (
    ConfigurationError,
    FetchError,
    ForbiddenError,
    IdentityKeysUnavailableError,
    UnauthenticatedError,
)
from .libraries import jwt
from .providers import AUD_OR_AZP, PROVIDERS, Provider, is_allowed_url
from .request import Request
from .settings import DISCOVERY_PATH, CallerSettings
from .telemetry import Telemetry

# One leeway for exp, nbf and iat, the same as `make dev`'s local JWT authorizer applies: none, as API
# Gateway's JWT authorizer documents (exp after, nbf and iat before the current time).
CLOCK_LEEWAY_SECONDS = 0
MAX_TOKEN_CHARS = 16384
MAX_KID_CHARS = 256
MIN_RSA_BITS = 2048
JWKS_FETCH_TIMEOUT = 3.0  # one deadline for the whole fetch: connect, headers and body
MAX_JWKS_BYTES = 512 * 1024
MAX_DISCOVERY_BYTES = 64 * 1024
# Providers publish a handful of keys (Entra about ten); only this many JWKS entries are read, so a stuffed
# JWKS costs one JSON parse rather than thousands of key loads on every refetch.
MAX_JWKS_KEYS = 100
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

_RSA = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
# The algorithms a published key may verify, by JWK type and (EC, OKP) curve: PyJWT's families. "oct"
# (a shared secret) is absent: a key from a JWKS never verifies an HMAC.
ALGORITHMS_BY_KEY: dict[tuple[str, Optional[str]], tuple[str, ...]] = {
    ("RSA", None): _RSA,
    ("EC", "P-256"): ("ES256",),
    ("EC", "P-384"): ("ES384",),
    ("EC", "P-521"): ("ES512",),
    ("OKP", "Ed25519"): ("EdDSA",),
    ("OKP", "Ed448"): ("EdDSA",),
}
# Supabase's legacy shared secret signs with this, and only this.
LEGACY_HMAC = "HS256"
# A compact JWS is three base64url segments (RFC 7515 7.1). PyJWT's base64 decoding skips other characters,
# so "<token>," (two Authorization headers joined by API Gateway) would otherwise verify as the token.
COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")

JsonFetcher = Callable[[str, float], Any]
SecretSource = Callable[[], Optional[bytes]]


def bearer_token(authorization: Optional[str]) -> str:
    """The token of an `Authorization: Bearer <token>` header, or 401."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise UnauthenticatedError("no identity token: send Authorization: Bearer <your identity token>", challenge=True)
    return token.strip()


def caller_token(request: Request, settings: CallerSettings) -> str:
    """The identity token of a request: the bearer header, else the session cookie the preset names.

    The header wins when both come: a page's script sends it on purpose, while a browser attaches
    cookies to any request, even one a foreign site made it send. So a cookie is taken only from a
    request whose Origin is one of the allowed origins (no Origin, no cookie): cross-site request
    forgery cannot spend it.
    """
    authorization = request.header("authorization")
    if authorization is not None or settings.cookie is None:
        return bearer_token(authorization)
    from .session_cookie import token_from_cookies

    token = token_from_cookies(request.cookies, settings.cookie, settings.provider.cookie_format)
    if token is None:
        raise UnauthenticatedError(f"no identity token: send Authorization: Bearer <your identity token> or the "
                                   f"{settings.cookie} cookie", challenge=True)
    origin = request.header("origin")
    if origin is None or origin not in settings.allowed_origins:
        raise ForbiddenError("a session cookie is accepted only from an allowed origin: the request's Origin "
                             + ("is missing" if origin is None else "is not one of them"), code="origin_not_allowed")
    return token


class _Watchdog:
    """Shuts the fetch's sockets when its deadline passes.

    A socket timeout bounds each read, not the whole: a server sending its headers a byte at a time
    would hold the function until Lambda kills it. urllib reads the headers out of reach, so the
    connection is cut from a timer thread instead.
    """

    local = threading.local()

    def __init__(self, seconds: float) -> None:
        self.fired = False
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        _Watchdog.local.current = self
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()
        _Watchdog.local.current = None

    @classmethod
    def watch(cls, sock: socket.socket) -> None:
        """Called by the connection once connected: the current fetch's watchdog may cut `sock`."""
        watchdog: Optional[_Watchdog] = getattr(cls.local, "current", None)
        if watchdog is not None:
            watchdog._sockets.append(sock)

    def _fire(self) -> None:
        self.fired = True
        for sock in self._sockets:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # on the raw socket: a TLS one is not unwrapped
            except OSError:
                pass


class _WatchedHTTP(http.client.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        _Watchdog.watch(self.sock)


class _WatchedHTTPS(http.client.HTTPSConnection):
    def connect(self) -> None:
        super().connect()
        _Watchdog.watch(self.sock)


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_WatchedHTTP, req)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_WatchedHTTPS, req, context=self._context)  # type: ignore[attr-defined]


_watched_opener: Optional[urllib.request.OpenerDirector] = None


def fetch_json(url: str, timeout: float, *, limit: int = MAX_JWKS_BYTES, what: str = "JWKS") -> Any:
    """GET a JSON document: https (plain http to loopback only), no redirects, one deadline, at most `limit` bytes."""
    import json

    from .errors import UpstreamError
    from .upstream import build_opener, open_request, read_within

    global _watched_opener
    if not is_allowed_url(url):
        raise FetchError(f"the {what} URL must be https (got {url[:100]!r})", reason="insecure_url")
    if _watched_opener is None:
        _watched_opener = build_opener(_WatchedHTTPHandler(), _WatchedHTTPSHandler())
    deadline = time.monotonic() + timeout
    with _Watchdog(timeout) as watchdog:
        try:
            response = open_request("GET", url, None, {"Accept": "application/json"}, timeout, _watched_opener)
            status = response.status
            body = read_within(response, deadline, limit=limit)
        except UpstreamError as e:
            failure: Optional[UpstreamError] = e
        else:
            failure = None
    if watchdog.fired:
        raise FetchError(f"the {what} fetch ran past its {timeout:g} s deadline", reason="unreachable")
    if failure is not None:
        raise FetchError(f"the {what} fetch failed ({failure.message})", reason="unreachable") from failure
    if status != 200:  # a redirect too: it is not followed
        raise FetchError(f"the {what} URL answered {status}", reason=f"http_{status}")
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as e:
        raise FetchError(f"the {what} document is not JSON", reason="malformed") from e


def fetch_jwks(url: str, timeout: float) -> Any:
    """GET the JWKS document as JSON."""
    return fetch_json(url, timeout)


def fetch_discovery(url: str, timeout: float) -> Any:
    """GET the OIDC discovery document as JSON."""
    return fetch_json(url, timeout, limit=MAX_DISCOVERY_BYTES, what="discovery")


def discovery_url(issuer: str) -> str:
    """Where an issuer publishes its OpenID configuration (OIDC Discovery 1.0, section 4)."""
    return issuer.rstrip("/") + DISCOVERY_PATH


def jwks_uri_of(document: Any, issuer: str) -> str:
    """The `jwks_uri` of the issuer's discovery document, which must name that issuer exactly.

    Plain http to loopback is for `make dev` and tests: an https issuer's keys stay on https, so its
    discovery document cannot send the function to a service on its own loopback (the Lambda runtime
    API, the secrets extension).
    """
    if not isinstance(document, dict):
        raise FetchError("the discovery document is not a JSON object", reason="malformed")
    if document.get("issuer") != issuer:
        raise FetchError("the discovery document names another issuer", reason="issuer_mismatch")
    uri = document.get("jwks_uri")
    if not isinstance(uri, str) or not uri:
        raise FetchError("the discovery document has no jwks_uri", reason="malformed")
    if not is_allowed_url(uri) or (issuer.startswith("https:") and not uri.startswith("https:")):
        raise FetchError("the discovery document's jwks_uri is not https", reason="insecure_url")
    return uri


class VerifyingKey:
    """One published key and the algorithms it may verify; a PyJWK per algorithm, built when first asked for."""

    def __init__(self, entry: dict[str, Any], algorithms: tuple[str, ...], first: jwt.PyJWK) -> None:
        self._entry = entry
        self.algorithms = algorithms
        self._bound: dict[str, jwt.PyJWK] = {algorithms[0]: first}

    def for_algorithm(self, algorithm: str) -> Optional[jwt.PyJWK]:
        """The key bound to `algorithm` (PyJWT verifies with a PyJWK's own algorithm only); None if it may not."""
        if algorithm not in self.algorithms:
            return None
        if algorithm not in self._bound:
            self._bound[algorithm] = jwt.PyJWK(self._entry, algorithm=algorithm)
        return self._bound[algorithm]


# By kid, in the JWKS's order: keys of different types may share a kid as alternatives (RFC 7517 4.5).
Keys = dict[str, tuple[VerifyingKey, ...]]


def key_algorithms(entry: dict[str, Any]) -> tuple[str, ...]:
    """What a JWK may verify: its type's (and curve's) algorithms, narrowed to its `alg`; () when nothing."""
    kty, crv = entry.get("kty"), entry.get("crv")
    if not isinstance(kty, str) or not isinstance(crv, (str, type(None))):
        return ()  # a JSON list or object where a name belongs: no key (and no unhashable lookup)
    family = ALGORITHMS_BY_KEY.get((kty, None) if kty == "RSA" else (kty, crv), ())
    alg = entry.get("alg")
    if alg is None:
        return family
    return (alg,) if alg in family else ()


def signing_keys(document: Any) -> Keys:
    """The keys of a JWKS document that may verify signatures, by kid; every other key is skipped."""
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise FetchError("the JWKS document has no keys array", reason="malformed")
    keys: dict[str, list[VerifyingKey]] = {}
    for entry in entries[:MAX_JWKS_KEYS]:
        if not isinstance(entry, dict):
            continue
        kid, use, ops = entry.get("kid"), entry.get("use", "sig"), entry.get("key_ops")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS or use != "sig":
            continue  # an encryption key (Keycloak lists one) never verifies
        if ops is not None and not (isinstance(ops, list) and "verify" in ops):
            continue
        algorithms = key_algorithms(entry)
        if not algorithms:
            continue
        try:
            key = jwt.PyJWK(entry, algorithm=algorithms[0])
        except _MALFORMED:
            continue
        if entry["kty"] != "RSA" or getattr(key.key, "key_size", 0) >= MIN_RSA_BITS:
            keys.setdefault(kid, []).append(VerifyingKey(entry, algorithms, key))
    return {kid: tuple(published) for kid, published in keys.items()}


class JwksCache:
    """The issuer's verifying keys by kid, through the shared expiring-value cache.

    The keys come from `url` when one is configured (AuthJwksUrl), else from the `jwks_uri` of the
    issuer's discovery document, itself held in an expiring-value cache of its own.
    """

    def __init__(
        self,
        url: Optional[str],
        ttl: float,
        *,
        issuer: Optional[str] = None,
        timeout: float = JWKS_FETCH_TIMEOUT,
        fetch: JsonFetcher = fetch_jwks,
        discover: JsonFetcher = fetch_discovery,
        clock: Callable[[], float] = time.monotonic,
        telemetry: Optional[Telemetry] = None,
    ) -> None:
        if url is None and issuer is None:
            raise ConfigurationError("the identity provider's keys need a JWKS URL or an issuer to discover it from")
        self.url = url
        self._issuer = issuer
        self._timeout = timeout
        self._fetch = fetch
        self._discover = discover
        self._telemetry = telemetry
        ttl = max(ttl, MIN_JWKS_CACHE_TTL)
        self._discovery: Optional[ExpiringValue[str]] = None
        if url is None:
            self._discovery = ExpiringValue(
                self._load_discovery, ttl=ttl, grace=GRACE_PERIOD, retry_interval=RETRY_INTERVAL,
                unavailable=_keys_unavailable, events=self, clock=clock,
            )
        self._cache: ExpiringValue[Keys] = ExpiringValue(
            self._load, ttl=ttl, grace=GRACE_PERIOD, retry_interval=RETRY_INTERVAL,
            unavailable=_keys_unavailable, events=self, clock=clock,
        )

    def keys(self, kid: str) -> tuple[VerifyingKey, ...]:
        """The keys published under `kid`, maybe none; IdentityKeysUnavailableError when no keys can be had."""
        keys = self._cache.get()
        if kid in keys:
            return keys[kid]
        # Perhaps a rotation at the provider: refetch, at most every UNKNOWN_KID_REFETCH_INTERVAL.
        return self._cache.get(refresh_if_older_than=UNKNOWN_KID_REFETCH_INTERVAL).get(kid, ())

    def jwks_url(self) -> str:
        """Where the keys are fetched from: the configured URL, or the discovered `jwks_uri`."""
        if self._discovery is None:
            assert self.url is not None
            return self.url
        try:
            return self._discovery.get()
        except IdentityKeysUnavailableError as e:
            raise FetchError("the discovery document is unavailable", reason="discovery_unavailable") from e

    def _load(self) -> Keys:
        return signing_keys(self._fetch(self.jwks_url(), self._timeout))

    def _load_discovery(self) -> str:
        assert self._issuer is not None
        return jwks_uri_of(self._discover(discovery_url(self._issuer), self._timeout), self._issuer)

    def replaced(self, old: Optional[object], new: object) -> None:
        pass

    def fetch_failed(self, failure: FetchError, *, serving_cached: bool, age: float, grace_left: float) -> None:
        if self._telemetry is not None:
            self._telemetry.warning("JWKS refresh failed", url=self.url, issuer=self._issuer, reason=failure.reason,
                                    detail=failure.message, held=serving_cached)
            self._telemetry.metric("JwksRefreshFailed", reason=failure.reason)


def _keys_unavailable(retry_after: int) -> IdentityKeysUnavailableError:
    return IdentityKeysUnavailableError("the identity provider's signing keys are unavailable; try again shortly",
                                        retry_after=retry_after)


class CallerTokenVerifier:
    """Verifies identity tokens as API Gateway's JWT authorizer does, with the algorithm following the key."""

    def __init__(
        self,
        issuer: str,
        audiences: Sequence[str],
        keys: JwksCache,
        *,
        provider: Provider = PROVIDERS["oidc"],
        authorized_parties: Sequence[str] = (),
        hmac_secret: Optional[SecretSource] = None,
        leeway: float = CLOCK_LEEWAY_SECONDS,
    ) -> None:
        self.issuer = issuer
        self.audiences = frozenset(audiences)
        self.provider = provider
        self.authorized_parties = frozenset(authorized_parties)
        self._keys = keys
        # Supabase's legacy JWT secret, read from the key secret when a token asks for HS256; never otherwise.
        self._hmac_secret = hmac_secret if provider.legacy_hmac else None
        self._leeway = leeway

    @classmethod
    def from_settings(cls, settings: CallerSettings, telemetry: Optional[Telemetry] = None, *,
                      hmac_secret: Optional[SecretSource] = None) -> CallerTokenVerifier:
        """The verifier the settings describe; a ConfigurationError names what is missing or malformed."""
        problems = settings.problems()
        if problems:
            raise ConfigurationError("a function that verifies callers itself needs: " + "; ".join(problems))
        assert settings.issuer is not None
        keys = JwksCache(settings.jwks_url, settings.jwks_cache_ttl, issuer=settings.issuer, telemetry=telemetry)
        return cls(settings.issuer, settings.audiences, keys, provider=settings.provider,
                   authorized_parties=settings.authorized_parties, hmac_secret=hmac_secret)

    def claims(self, token: Any) -> dict[str, Any]:
        """The claims of a token that passes every check; UnauthenticatedError saying which one failed."""
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS or not COMPACT_JWS.fullmatch(token):
            raise _refused("it is not a compact JWS")
        try:
            header = jwt.get_unverified_header(token)
        except _MALFORMED:
            raise _refused("it is not a compact JWS") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str) or not algorithm:
            raise _refused("its header names no algorithm")
        keys: list[Any]
        if algorithm == LEGACY_HMAC and self._hmac_secret is not None:
            secret = self._hmac_secret()
            if not secret:
                raise _refused("HS256 needs the legacy JWT secret (AUTH_JWT_SECRET in the key secret)")
            keys = [secret]
        else:
            keys = self._published_keys(header, algorithm)
        claims = self._decode(token, algorithm, keys)
        _check_times(claims)
        self._check_audience(claims)
        return claims

    def _decode(self, token: str, algorithm: str, keys: list[Any]) -> dict[str, Any]:
        """The claims, verified with the first of `keys` whose signature holds (a kid may name more than one)."""
        try:
            for key in keys[:-1]:
                try:
                    return self._decode_with(token, algorithm, key)
                except jwt.InvalidSignatureError:
                    continue
            return self._decode_with(token, algorithm, keys[-1])
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

    def _decode_with(self, token: str, algorithm: str, key: Any) -> dict[str, Any]:
        claims: dict[str, Any] = jwt.decode(
            token, key, algorithms=[algorithm], issuer=self.issuer, leeway=self._leeway,
            options={"require": ["exp", "iss"], "verify_aud": False, "verify_iat": True},
        )
        return claims

    def _published_keys(self, header: dict[str, Any], algorithm: str) -> list[jwt.PyJWK]:
        # "none", and HMAC keyed with anything (a published key's bytes included), match no published key.
        if not any(algorithm in family for family in ALGORITHMS_BY_KEY.values()):
            raise _refused(f"its algorithm {algorithm[:20]!r} is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
            raise _refused("its header names no key id")
        published = self._keys.keys(kid)
        if not published:
            raise _refused("it is not signed by a key of the identity provider")
        keys = [key for key in (one.for_algorithm(algorithm) for one in published) if key is not None]
        if not keys:
            raise _refused(f"its algorithm {algorithm!r} does not match the identity provider's key")
        return keys

    def _check_audience(self, claims: dict[str, Any]) -> None:
        if self.provider.audience == AUD_OR_AZP:
            # Clerk: `azp` is the origin the session token was made for; checked whenever present, as Clerk does.
            azp = claims.get("azp")
            if azp is not None and not (isinstance(azp, str) and azp in self.authorized_parties):
                raise _refused("it was made for another party (azp)")
            if "aud" not in claims:
                if azp is None:
                    raise _refused("it names neither an audience nor an authorized party (azp)")
                return
        # API Gateway's rule: `aud`; Cognito access tokens carry the app client in client_id and no aud.
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

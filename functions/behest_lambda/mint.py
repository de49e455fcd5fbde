"""The mint core: a per-user Behest JWT, signed locally (RS256) or minted by Behest over HTTP."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Callable, Mapping, NamedTuple, Optional

from .credentials import ApiKey, Credentials, SigningKey
from .errors import InvalidRequestError, UpstreamAuthError, UpstreamError, UpstreamStatusError
from .identity import Identity
from .key_source import KeySource
from .settings import MIN_TTL, MintSettings

SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
# Why Behest's mint endpoint refuses the deployment's API key, most likely first.
API_KEY_CAUSES = (
    "the API key in the secret is not a live key of this Behest project (revoked, rotated, or a typo)",
    "BEHEST_BASE_URL points at another project's Behest endpoint than the API key's",
)


class MintResult(NamedTuple):
    """A minted token and what the browser needs beside it."""

    token: str
    ttl: int
    session_id: str
    expires_at: int
    kid: Optional[str] = None

    def as_body(self) -> dict[str, Any]:
        """The token endpoint's answer, in the SDK's names."""
        return {"token": self.token, "ttl": self.ttl, "sessionId": self.session_id, "expiresAt": self.expires_at}

    def __repr__(self) -> str:
        return f"MintResult(ttl={self.ttl}, session_id={self.session_id!r}, expires_at={self.expires_at})"


class MintRequest(NamedTuple):
    """What a caller may ask for: a lifetime and a session to continue. Never who they are."""

    ttl: Optional[int] = None
    session_id: Optional[str] = None

    @classmethod
    def from_body(cls, body: Optional[Mapping[str, Any]]) -> MintRequest:
        """Read `ttl` and `sessionId` from a JSON body; every other field is ignored."""
        if body is None:
            return cls()
        ttl = body.get("ttl")
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int)):
            raise InvalidRequestError("ttl must be a whole number of seconds")
        return cls(ttl=ttl, session_id=valid_session_id(body.get("sessionId")))


NO_REQUEST = MintRequest()  # a mint that asks for nothing: the default lifetime, a new session


def valid_session_id(value: Any) -> Optional[str]:
    """A caller-supplied session id, if it is safe to put in a token and a header."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or not SESSION_ID_PATTERN.fullmatch(value):
        raise InvalidRequestError(
            "sessionId must be 1-128 characters of letters, digits, '.', '_', ':' or '-', starting alphanumeric"
        )
    return value


def new_id() -> str:
    """A fresh UUIDv4 string (never created at import, so a SnapStart snapshot holds none)."""
    return str(uuid.uuid4())


class Minter:
    """Mints tokens for verified identities with whatever credentials the key source holds now."""

    def __init__(
        self,
        settings: MintSettings,
        key_source: KeySource,
        *,
        clock: Callable[[], float] = time.time,
        make_id: Callable[[], str] = new_id,
    ) -> None:
        self._settings = settings
        self._key_source = key_source
        self._clock = clock
        self._make_id = make_id

    def credentials(self) -> Credentials:
        """The credentials held now: a signing key or an API key."""
        return self._key_source.get()

    def clamp_ttl(self, requested: Optional[int]) -> int:
        """The requested lifetime, held to [60 s, BEHEST_MAX_TTL]; the default when none is asked."""
        ttl = self._settings.default_ttl if requested is None else requested
        return max(MIN_TTL, min(ttl, self._settings.max_ttl))

    def mint(self, identity: Identity, request: MintRequest = NO_REQUEST, *,
             within: Optional[float] = None) -> MintResult:
        """Mint a token for `identity`; the session is continued if asked, else new.

        `within` caps an API-key mint's round trip below BEHEST_MINT_TIMEOUT when a caller has less time left.
        """
        credentials = self._key_source.get()
        ttl = self.clamp_ttl(request.ttl)
        session_id = request.session_id or self._make_id()
        if isinstance(credentials, SigningKey):
            return self._sign(credentials, identity, ttl, session_id)
        timeout = self._settings.timeout if within is None else min(self._settings.timeout, within)
        return self._mint_over_http(credentials, identity, ttl, session_id, timeout)

    def _sign(self, credentials: SigningKey, identity: Identity, ttl: int, session_id: str) -> MintResult:
        now = int(self._clock())
        # Claim order as the official SDK and Behest's own minter write it.
        claims: dict[str, Any] = {
            "tid": credentials.tenant_id,
            "pid": credentials.project_id,
            "uid": identity.user_id,
            "role": "user",
            "scp": [],
            "iss": self._settings.issuer,
            "aud": self._settings.audience,
            "iat": now,
            "nbf": now,
            "exp": now + ttl,
            "jti": self._make_id(),
            "sid": session_id,
        }
        if identity.tier is not None:
            claims["tier"] = identity.tier
        from .libraries import jwt  # imported here so that API-key mode never pays for it

        # PyJWT writes the header {"alg": "RS256", "kid": …, "typ": "JWT"} (sorted) and keeps the claims' order.
        token = jwt.encode(claims, credentials.key, algorithm="RS256", headers={"kid": credentials.kid, "typ": "JWT"})
        return MintResult(token=token, ttl=ttl, session_id=session_id, expires_at=now + ttl, kid=credentials.kid)

    def _mint_over_http(self, credentials: ApiKey, identity: Identity, ttl: int, session_id: str,
                        timeout: float) -> MintResult:
        from .upstream import post_json

        body: dict[str, Any] = {"user_id": identity.user_id, "role": "user", "ttl": ttl, "session_id": session_id}
        if identity.tier is not None:
            body["tier"] = identity.tier
        response = post_json(
            self._settings.base_url + "/v1/auth/mint",
            body,
            {"Authorization": f"Bearer {credentials.value}"},
            timeout,
        )
        answer = response.json()
        if response.status == 429:
            raise UpstreamStatusError(
                429, "Behest is rate limiting token mints", code="rate_limited",
                retry_after=_retry_after(response.headers),
            )
        if response.status in (401, 403):
            raise UpstreamAuthError("this deployment's API key, at Behest's mint endpoint", API_KEY_CAUSES,
                                    upstream_status=response.status, upstream_code=_error_code(answer))
        if response.status >= 300:
            code = _error_code(answer) or f"http_{response.status}"
            raise UpstreamError(f"Behest's mint endpoint answered {response.status} ({code})")
        token = (answer.get("jwt") or answer.get("access_token")) if isinstance(answer, dict) else None
        if not isinstance(token, str) or token.count(".") != 2:
            raise UpstreamError("Behest's mint endpoint answered without a token")
        granted = answer.get("ttl")
        ttl = granted if isinstance(granted, int) and not isinstance(granted, bool) and granted > 0 else ttl
        sid = answer.get("session_id")
        session_id = sid if isinstance(sid, str) and SESSION_ID_PATTERN.fullmatch(sid) else session_id
        return MintResult(token=token, ttl=ttl, session_id=session_id, expires_at=int(self._clock()) + ttl)


def _error_code(answer: Any) -> Optional[str]:
    error = answer.get("error") if isinstance(answer, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, str) and len(code) <= 64 else None


def _retry_after(headers: Mapping[str, str]) -> Optional[int]:
    value = headers.get("retry-after", "").strip()
    return int(value) if value.isdigit() else None

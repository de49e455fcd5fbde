"""A development identity provider: one provider's issuer, discovery document, keys and sign-in, on loopback.

It stands where Cognito, Auth0, Clerk, Supabase, Firebase, Okta, Entra ID, Google or Keycloak
stand in production (the `shape`, see `shapes.py`), so the local fronts verify what they would
verify in AWS. It serves

- the OIDC discovery document at issuer + `/.well-known/openid-configuration`, whose `jwks_uri`
  points where that provider keeps its keys (for Firebase and Google, on a second loopback host);
- the JWKS there;
- `POST /token {"user": "ada", "plan": "pro"}`: a token for a named dev user, shaped and signed as
  the provider's, plus the session cookies its browser SDK would write (Clerk, Supabase).

Its keys are generated at start and never leave the process. Browser pages may call it only
from the configured origins (CORS), so no other site can mint dev tokens.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from typing import Any, Iterable, Mapping, Optional

from devstack.identity.cookies import cookies_for, supabase_session
from devstack.identity.keys import ProviderKeys
from devstack.identity.shapes import ProviderShape, TokenContext, shape_for
from devstack.loopback import LoopbackServer, LoopbackService, NoDelayHandler

DISCOVERY_SUFFIX = "/.well-known/openid-configuration"
TOKEN_PATH = "/token"
MAX_BODY_BYTES = 64 * 1024
DEFAULT_TTL = 3600
# Misbehaviours a test can switch on, each one a discovery document a verifier must refuse.
DISCOVERY_FAULTS = ("redirect", "huge", "plain_http_jwks_uri")
HUGE_DOCUMENT_BYTES = 2 * 1024 * 1024
# A documentation address (RFC 5737): never fetched by a verifier that refuses plain http off loopback.
PLAIN_HTTP_JWKS_URI = "http://198.51.100.7/jwks"


class _KeyHost(LoopbackService):
    """A second loopback host that serves only the keys (googleapis.com for Firebase and Google)."""

    def __init__(self, host: str, port: int, provider: LocalIdentityProvider) -> None:
        self._server = LoopbackServer((host, port), provider.handler_class(keys_only=True))
        self.url = f"http://{host}:{self._server.server_address[1]}"


class LocalIdentityProvider(LoopbackService):
    """Serves one provider's discovery document, JWKS and a dev sign-in (`POST /token`) on loopback."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, shape: str | ProviderShape = "oidc",
                 audience: Optional[str] = None, allowed_origins: Iterable[str] = (), keys_port: int = 0,
                 legacy_secret: bool = False, latency: float = 0.0) -> None:
        self.shape = shape_for(shape) if isinstance(shape, str) else shape
        self.audience = audience if audience is not None else self.shape.audience
        # Browser pages allowed to mint dev tokens (CORS); the stack passes the API's origins.
        self.allowed_origins: set[str] = set(allowed_origins)
        self.keys = ProviderKeys(self.shape, legacy_secret=legacy_secret)
        # Seconds added before every answer: a provider across the internet rather than on loopback.
        self.latency = latency
        # One of DISCOVERY_FAULTS, or None: what the discovery document does wrong.
        self.discovery_fault: Optional[str] = None
        self.discovery_requests = 0
        self.jwks_requests = 0
        self._server = LoopbackServer((host, port), self.handler_class(keys_only=False))
        self.url = f"http://{host}:{self._server.server_address[1]}"
        self._key_host = _KeyHost(host, keys_port, self) if self.shape.keys_elsewhere else None

    @property
    def kid(self) -> str:
        return self.keys.kid

    @property
    def algorithm(self) -> str:
        return self.keys.algorithm

    @property
    def issuer(self) -> str:
        return self.url + self.shape.issuer_path

    @property
    def discovery_url(self) -> str:
        return self.issuer.rstrip("/") + DISCOVERY_SUFFIX

    @property
    def keys_url(self) -> str:
        """Where the keys host lives: this server, or the second host for Firebase and Google."""
        return self._key_host.url if self._key_host is not None else self.url

    @property
    def jwks_url(self) -> str:
        return self.keys_url + self.shape.jwks_path

    @property
    def legacy_secret(self) -> Optional[str]:
        """Supabase's legacy HS256 JWT secret, when this provider signs with one."""
        return self.keys.secret

    def start(self) -> LocalIdentityProvider:
        if self._key_host is not None:
            self._key_host.start()
        super().start()
        return self

    def stop(self) -> None:
        super().stop()
        if self._key_host is not None:
            self._key_host.stop()

    @property
    def cookie_name(self) -> Optional[str]:
        """The session cookie the provider's browser SDK writes, if it has one.

        supabase-js names it `sb-<first label of the project URL's host>-auth-token`: `sb-<ref>-…` for
        `<ref>.supabase.co`, `sb-127-…` for a project on 127.0.0.1 (as the Supabase CLI's local stack).
        """
        if self.shape.cookie is None:
            return None
        host = urllib.parse.urlsplit(self.url).hostname or ""
        return self.shape.cookie.name.replace("{ref}", host.split(".")[0])

    def jwks(self) -> dict[str, Any]:
        return self.keys.jwks()

    def user_id(self, user: str) -> str:
        """The id this provider gives the dev user `user` (what a deployment should key usage to)."""
        return self.shape.user_id(user)

    def discovery(self) -> dict[str, Any]:
        """The OIDC discovery document, as the provider serves it."""
        return {"issuer": self.issuer, "jwks_uri": self.jwks_url,
                "authorization_endpoint": self.issuer.rstrip("/") + "/authorize",
                "token_endpoint": self.url + TOKEN_PATH, "response_types_supported": ["code", "id_token"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [self.shape.algorithm]}

    def issue(self, sub: str, *, plan: Optional[str] = None, ttl: int = DEFAULT_TTL, audience: Optional[str] = None,
              issuer: Optional[str] = None, not_before: Optional[int] = None, origin: Optional[str] = None,
              user_metadata: Optional[Mapping[str, Any]] = None, headers: Optional[dict[str, Any]] = None,
              **claims: Any) -> str:
        """A token for the dev user `sub`, as the provider would sign it; tests may bend any claim (None drops it)."""
        return self.keys.sign(self.payload(sub, plan=plan, ttl=ttl, audience=audience, issuer=issuer,
                                           not_before=not_before, origin=origin, user_metadata=user_metadata,
                                           **claims), headers)

    def payload(self, user: str, *, plan: Optional[str] = None, ttl: int = DEFAULT_TTL,
                audience: Optional[str] = None, issuer: Optional[str] = None, not_before: Optional[int] = None,
                origin: Optional[str] = None, user_metadata: Optional[Mapping[str, Any]] = None,
                **claims: Any) -> dict[str, Any]:
        """The claims `issue` signs."""
        now = int(time.time())
        context = TokenContext(issuer or self.issuer, now, origin, plan, user_metadata or {})
        payload: dict[str, Any] = {"iss": context.issuer, "iat": now,
                                   "nbf": now if not_before is None else not_before, "exp": now + ttl,
                                   **self.shape.claims(user, context)}
        if audience is not None:
            payload["aud"] = audience
        payload.update(claims)
        return {name: value for name, value in payload.items() if value is not None}

    def sign_in(self, user: str, plan: Optional[str], origin: Optional[str],
                user_metadata: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
        """What `POST /token` answers: the token, and the cookies the provider's browser SDK would write."""
        claims = self.payload(user, plan=plan, origin=origin, user_metadata=user_metadata)
        token = self.keys.sign(claims)
        answer: dict[str, Any] = {"id_token": token, "access_token": token, "token_type": "Bearer",
                                  "expires_in": DEFAULT_TTL, "user_id": self.user_id(user)}
        if self.shape.cookie is not None:
            profile = {"id": self.user_id(user), "aud": claims.get("aud"), "role": claims.get("role"),
                       "email": f"{user}@example.com", "app_metadata": claims.get("app_metadata", {}),
                       "user_metadata": claims.get("user_metadata", {}),
                       "identities": [{"identity_id": str(uuid.uuid4()), "provider": "email",
                                       "identity_data": {"email": f"{user}@example.com", "sub": self.user_id(user)}}]}
            session = supabase_session(token, profile, claims["exp"], DEFAULT_TTL)
            cookie = self.shape.cookie._replace(name=self.cookie_name or self.shape.cookie.name)
            answer["cookies"] = [{"name": name, "value": value} for name, value in cookies_for(cookie, token, session)]
        return answer

    def handler_class(self, *, keys_only: bool) -> type[NoDelayHandler]:
        provider = self

        class Handler(NoDelayHandler):
            max_body_bytes = MAX_BODY_BYTES

            def dispatch(self) -> None:
                body = self.body_or_refuse()
                if body is None:
                    return
                path, method = urllib.parse.urlsplit(self.path).path, self.command
                if provider.latency:
                    time.sleep(provider.latency)
                jwks_path = provider.shape.jwks_path if keys_only == provider.shape.keys_elsewhere else None
                discovery_path = None if keys_only else urllib.parse.urlsplit(provider.discovery_url).path
                if method == "OPTIONS" and self.headers.get("Access-Control-Request-Method") is not None:
                    self.answer_preflight(self._allowed_origin(), "GET, POST, OPTIONS")
                elif path in (jwks_path, discovery_path) and method not in ("GET", "HEAD"):
                    self.send_json_error(405, f"use GET for {path}", {"Allow": "GET"})
                elif path == jwks_path:
                    provider.jwks_requests += 1
                    self._json(200, provider.jwks())
                elif path == discovery_path:
                    provider.discovery_requests += 1
                    self._discovery()
                elif path == TOKEN_PATH and not keys_only:
                    if method != "POST":
                        self.send_json_error(405, f"use POST for {TOKEN_PATH}", {"Allow": "POST"})
                    else:
                        self._token(body)
                else:
                    self.send_json_error(404, f"no route for {path[:100]}")

            def _discovery(self) -> None:
                fault, document = provider.discovery_fault, provider.discovery()
                if fault == "redirect":
                    self.send_whole(302, {"Location": provider.jwks_url, "Content-Type": "application/json"}, b"{}")
                    return
                if fault == "plain_http_jwks_uri":
                    document["jwks_uri"] = PLAIN_HTTP_JWKS_URI
                if fault == "huge":
                    document["padding"] = "x" * HUGE_DOCUMENT_BYTES
                self._json(200, document)

            def _token(self, body: bytes) -> None:
                try:
                    request = json.loads(body or b"{}")
                    user = request["user"]
                    if not isinstance(user, str) or not user or len(user) > 128:
                        raise ValueError
                    metadata = request.get("user_metadata") or {}
                    if not isinstance(metadata, dict):
                        raise ValueError
                except (ValueError, KeyError, TypeError, RecursionError):
                    self._json(400, {"error": "send {\"user\": \"name\", \"plan\": \"free|pro\"}"})
                    return
                plan = request.get("plan") if isinstance(request.get("plan"), str) else None
                origin = self.headers.get("Origin") or next(iter(sorted(provider.allowed_origins)), None)
                self._json(200, provider.sign_in(user, plan, origin, metadata))

            def _json(self, status: int, body: Any) -> None:
                self.send_whole(status, {"Content-Type": "application/json"}, json.dumps(body).encode())

            def extra_headers(self) -> dict[str, str]:
                origin = self._allowed_origin()
                return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"} if origin else {}

            def _allowed_origin(self) -> Optional[str]:
                # Only the configured pages may mint dev tokens: reflecting any Origin would let every site do it.
                headers = getattr(self, "headers", None)  # absent when the request line itself was garbled
                origin = headers.get("Origin") if headers else None
                return origin if origin and origin in provider.allowed_origins else None

        return Handler

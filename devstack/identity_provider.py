"""A development identity provider: an OIDC-style issuer with a JWKS, minting identity tokens for named dev users.

It stands where Cognito, Auth0 or Clerk stand in production, so the local API gateway's JWT
authorizer runs for real. Its key is generated at start and never leaves the process. Browser
pages may call it only from the configured origins (CORS), so no other site can mint dev tokens.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import uuid
from typing import Any, Iterable, Optional

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from devstack.loopback import LoopbackServer, LoopbackService, NoDelayHandler

DEFAULT_AUDIENCE = "behest-lambda-dev"
JWKS_PATH = "/.well-known/jwks.json"
DISCOVERY_PATH = "/.well-known/openid-configuration"
TOKEN_PATH = "/token"
_METHODS = {JWKS_PATH: "GET", DISCOVERY_PATH: "GET", TOKEN_PATH: "POST"}
MAX_BODY_BYTES = 64 * 1024


class LocalIdentityProvider(LoopbackService):
    """Serves /.well-known/openid-configuration, /.well-known/jwks.json and POST /token on loopback."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, audience: str = DEFAULT_AUDIENCE,
                 allowed_origins: Iterable[str] = ()) -> None:
        self.audience = audience
        # Browser pages allowed to mint dev tokens (CORS); the stack passes the API's origins.
        self.allowed_origins: set[str] = set(allowed_origins)
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "dev-" + uuid.uuid4().hex[:8]
        self._server = LoopbackServer((host, port), self._handler_class())
        self.url = f"http://{host}:{self._server.server_address[1]}"

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    def jwks(self) -> dict[str, Any]:
        jwk = json.loads(RSAAlgorithm.to_jwk(self._key.public_key()))
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        return {"keys": [jwk]}

    def issue(self, sub: str, *, plan: Optional[str] = None, ttl: int = 3600, audience: Optional[str] = None,
              issuer: Optional[str] = None, not_before: Optional[int] = None, **claims: Any) -> str:
        """An identity token for `sub`, as a real provider would sign it (tests may bend any claim)."""
        now = int(time.time())
        payload: dict[str, Any] = {
            "iss": issuer or self.issuer,
            "aud": audience or self.audience,
            "sub": sub,
            "iat": now,
            "nbf": now if not_before is None else not_before,
            "exp": now + ttl,
            **claims,
        }
        if plan is not None:
            payload["plan"] = plan
        return jwt.encode(payload, self._key, algorithm="RS256", headers={"kid": self.kid})

    def _handler_class(self) -> type[NoDelayHandler]:
        provider = self

        class Handler(NoDelayHandler):
            max_body_bytes = MAX_BODY_BYTES

            def dispatch(self) -> None:
                body = self.body_or_refuse()
                if body is None:
                    return
                path, method = urllib.parse.urlsplit(self.path).path, self.command
                if method == "OPTIONS" and self.headers.get("Access-Control-Request-Method") is not None:
                    self.answer_preflight(self._allowed_origin(), "GET, POST, OPTIONS")
                elif path in (JWKS_PATH, DISCOVERY_PATH, TOKEN_PATH) and method not in _METHODS[path]:
                    self.send_json_error(405, f"use {_METHODS[path]} for {path}", {"Allow": _METHODS[path]})
                elif path == JWKS_PATH:
                    self._json(200, provider.jwks())
                elif path == DISCOVERY_PATH:
                    self._json(200, {"issuer": provider.issuer, "jwks_uri": provider.jwks_url,
                                     "id_token_signing_alg_values_supported": ["RS256"]})
                elif path == TOKEN_PATH:
                    self._token(body)
                else:
                    self.send_json_error(404, f"no route for {path[:100]}")

            def _token(self, body: bytes) -> None:
                try:
                    request = json.loads(body or b"{}")
                    user = request["user"]
                    if not isinstance(user, str) or not user or len(user) > 128:
                        raise ValueError
                except (ValueError, KeyError, TypeError, RecursionError):
                    self._json(400, {"error": "send {\"user\": \"name\", \"plan\": \"free|pro\"}"})
                    return
                plan = request.get("plan") if isinstance(request.get("plan"), str) else None
                token = provider.issue(user, plan=plan)
                self._json(200, {"id_token": token, "token_type": "Bearer", "expires_in": 3600})

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

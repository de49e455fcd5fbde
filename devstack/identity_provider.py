"""A development identity provider: an OIDC-style issuer with a JWKS, minting identity tokens for named dev users.

It stands where Cognito, Auth0 or Clerk stand in production, so the local API gateway's JWT
authorizer runs for real. Its key is generated at start and never leaves the process.
"""

from __future__ import annotations

import json
import time
import uuid
from http.server import BaseHTTPRequestHandler
from typing import Any, Optional

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from devstack.local_api import LoopbackServer, LoopbackService

DEFAULT_AUDIENCE = "behest-lambda-dev"


class LocalIdentityProvider(LoopbackService):
    """Serves /.well-known/openid-configuration, /.well-known/jwks.json and POST /token on loopback."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, audience: str = DEFAULT_AUDIENCE) -> None:
        self.audience = audience
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = "dev-" + uuid.uuid4().hex[:8]
        self._server = LoopbackServer((host, port), self._handler_class())
        self.url = f"http://{host}:{self._server.server_address[1]}"

    @property
    def issuer(self) -> str:
        return self.url

    @property
    def jwks_url(self) -> str:
        return self.url + "/.well-known/jwks.json"

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

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                if self.path == "/.well-known/jwks.json":
                    self._json(200, provider.jwks())
                elif self.path == "/.well-known/openid-configuration":
                    self._json(200, {"issuer": provider.issuer, "jwks_uri": provider.jwks_url,
                                     "id_token_signing_alg_values_supported": ["RS256"]})
                else:
                    self._json(404, {"error": "not_found"})

            def do_POST(self) -> None:  # noqa: N802
                if self.path != "/token":
                    self._json(404, {"error": "not_found"})
                    return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    request = json.loads(self.rfile.read(length) or b"{}")
                    user = request["user"]
                    if not isinstance(user, str) or not user or len(user) > 128:
                        raise ValueError
                except (ValueError, KeyError, TypeError):
                    self._json(400, {"error": "send {\"user\": \"name\", \"plan\": \"free|pro\"}"})
                    return
                plan = request.get("plan") if isinstance(request.get("plan"), str) else None
                token = provider.issue(user, plan=plan)
                self._json(200, {"id_token": token, "token_type": "Bearer", "expires_in": 3600})

            def do_OPTIONS(self) -> None:  # noqa: N802
                self.send_response(204)
                self._cors()
                self.end_headers()

            def _cors(self) -> None:
                self.send_header("Access-Control-Allow-Origin", self.headers.get("Origin") or "*")
                self.send_header("Access-Control-Allow-Headers", "content-type")
                self.send_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS")

            def _json(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self._cors()
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

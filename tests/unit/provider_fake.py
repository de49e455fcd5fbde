"""A loopback identity provider for the unit tests: an OIDC discovery document and a JWKS, each bendable.

The discovery document sits at issuer + /.well-known/openid-configuration on 127.0.0.1; its
`jwks_uri` names `localhost`, another host name for the same loopback server, as Firebase's and
Google's name googleapis.com. Fetches are counted per path, so caching is observed, not assumed.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any, Iterator, Optional

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from behest_lambda.caller_token import CallerTokenVerifier, JwksCache
from behest_lambda.errors import UnauthenticatedError
from behest_lambda.providers import PROVIDERS
from tests.json_server import JsonHandler
from tests.support import private_key

DISCOVERY = "/.well-known/openid-configuration"
KEYS_PATH = "/keys"
AUDIENCE = "app-client-1"

# One private key per kind, made once per test session (EC and Ed keys are cheap; RSA keys are committed).
SIGNING_KEYS: dict[str, Any] = {
    "rsa": private_key("tenant"),
    "p256": ec.generate_private_key(ec.SECP256R1()),
    "p384": ec.generate_private_key(ec.SECP384R1()),
    "p521": ec.generate_private_key(ec.SECP521R1()),
    "ed25519": ed25519.Ed25519PrivateKey.generate(),
    "ed448": ed448.Ed448PrivateKey.generate(),
}
_TO_JWK = {"rsa": RSAAlgorithm.to_jwk, "p256": ECAlgorithm.to_jwk, "p384": ECAlgorithm.to_jwk,
           "p521": ECAlgorithm.to_jwk, "ed25519": OKPAlgorithm.to_jwk, "ed448": OKPAlgorithm.to_jwk}


def jwk(kind: str, kid: Optional[str] = None, **fields: Any) -> dict[str, Any]:
    """The public JWK of SIGNING_KEYS[kind], kid = kind unless given, with `fields` added (None removes one)."""
    entry: dict[str, Any] = json.loads(_TO_JWK[kind](SIGNING_KEYS[kind].public_key()))
    entry.update({"kid": kid or kind, "use": "sig", **fields})
    return {k: v for k, v in entry.items() if v is not None}


class ProviderServer:
    """Serves one issuer's discovery document and JWKS on loopback."""

    def __init__(self, issuer_path: str = "/auth/v1") -> None:
        self.keys: list[dict[str, Any]] = [jwk("rsa", alg="RS256")]
        self.discovery_status = 200
        self.redirect_to: Optional[str] = None
        self.discovery_extra: dict[str, Any] = {}
        self.padding = 0  # bytes of filler in the discovery document
        self.fetches: dict[str, int] = {}
        self._stop = threading.Event()
        server = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:  # noqa: N802
                path = self.path.split("?")[0]
                server.fetches[path] = server.fetches.get(path, 0) + 1
                if path == server.issuer_path.rstrip("/") + DISCOVERY and server.redirect_to is not None:
                    self.send_response(302)
                    self.send_header("Location", server.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if path == server.issuer_path.rstrip("/") + DISCOVERY:
                    status, document = server.discovery_status, server.discovery()
                elif path == KEYS_PATH:
                    status, document = 200, {"keys": server.keys}
                else:
                    status, document = 404, {"error": "not found"}
                self.send_json(status, document)

        self.issuer_path = issuer_path
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.issuer = f"http://127.0.0.1:{self.port}{issuer_path}"
        self.jwks_uri = f"http://localhost:{self.port}{KEYS_PATH}"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def discovery(self) -> dict[str, Any]:
        document = {"issuer": self.issuer, "jwks_uri": self.jwks_uri, **self.discovery_extra}
        if self.padding:
            document["filler"] = "x" * self.padding
        return document

    @property
    def discovery_fetches(self) -> int:
        return self.fetches.get(self.issuer_path.rstrip("/") + DISCOVERY, 0)

    @property
    def jwks_fetches(self) -> int:
        return self.fetches.get(KEYS_PATH, 0)

    def token(self, kind: str = "rsa", algorithm: str = "RS256", kid: Optional[str] = None,
              **claims: Any) -> str:
        """A token signed by SIGNING_KEYS[kind] under `kid` (default: the kind), claims bendable (None removes)."""
        return jwt.encode(self.claims(**claims), SIGNING_KEYS[kind], algorithm=algorithm,
                          headers={"kid": kid or kind})

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        document: dict[str, Any] = {"iss": self.issuer, "aud": AUDIENCE, "sub": "user-42", "iat": now, "nbf": now,
                                    "exp": now + 600}
        document.update(overrides)
        return {k: v for k, v in document.items() if v is not None}

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


def serve(issuer_path: str = "/auth/v1") -> Iterator[ProviderServer]:
    """A fixture body: one provider for the test, stopped after it."""
    server = ProviderServer(issuer_path)
    yield server
    server.stop()


def verifier_for(provider: ProviderServer, name: str = "oidc", audience: str = AUDIENCE,
                 **extra: Any) -> CallerTokenVerifier:
    """The verifier a function builds for `provider` under the preset `name`, keys through its discovery document."""
    keys = JwksCache(None, 3600, issuer=provider.issuer, timeout=2.0)
    return CallerTokenVerifier(provider.issuer, (audience,), keys, provider=PROVIDERS[name], **extra)


def refused(verifier: CallerTokenVerifier, token: Any, reason: str = "") -> str:
    """The message of the 401 `verifier` answers `token` with; it must contain `reason`."""
    with pytest.raises(UnauthenticatedError) as caught:
        verifier.claims(token)
    assert caught.value.status == 401
    assert reason in caught.value.message, caught.value.message
    return caught.value.message

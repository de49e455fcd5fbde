"""The imitated provider's keys: generated at start, never leaving the process, published as its JWKS."""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any, Optional, Union

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from devstack.identity.shapes import ProviderShape

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey]


class ProviderKeys:
    """One signing key of the shape's algorithm (and, for Supabase's legacy mode, an HS256 secret instead)."""

    def __init__(self, shape: ProviderShape, *, legacy_secret: bool = False) -> None:
        self.shape = shape
        self.algorithm = "HS256" if legacy_secret else shape.algorithm
        self.private: PrivateKey = (ec.generate_private_key(ec.SECP256R1()) if shape.algorithm.startswith("ES")
                                    else rsa.generate_private_key(public_exponent=65537, key_size=2048))
        # Supabase's legacy JWT secret: a shared secret of at least 32 characters, and no JWKS entry at all.
        self.secret: Optional[str] = secrets.token_urlsafe(48) if legacy_secret else None
        self.kid = shape.kid_prefix + (str(uuid.uuid4()) if shape.name == "supabase" else uuid.uuid4().hex[:8])
        self._encryption = (rsa.generate_private_key(public_exponent=65537, key_size=2048)
                            if shape.encryption_key else None)

    def sign(self, payload: dict[str, Any], headers: Optional[dict[str, Any]] = None) -> str:
        """The token as the provider signs it (tests may add header fields)."""
        if self.secret is not None:
            return jwt.encode(payload, self.secret, algorithm="HS256", headers={"typ": "JWT", **(headers or {})})
        return jwt.encode(payload, self.private, algorithm=self.algorithm,
                          headers={"kid": self.kid, "typ": "JWT", **(headers or {})})

    def jwks(self) -> dict[str, Any]:
        """The JWKS the provider publishes (empty for a legacy-secret Supabase project)."""
        if self.secret is not None:
            return {"keys": []}
        keys = [self._public_jwk(self.private, self.kid, "sig", self.algorithm)]
        if self._encryption is not None:
            keys.append(self._public_jwk(self._encryption, self.kid + "-enc", "enc", "RSA-OAEP"))
        return {"keys": keys}

    def _public_jwk(self, key: PrivateKey, kid: str, use: str, alg: str) -> dict[str, Any]:
        if isinstance(key, ec.EllipticCurvePrivateKey):
            jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(key.public_key()))
        else:
            jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
        jwk.update(kid=kid, use=use)
        if self.shape.key_alg or use != "sig":
            jwk["alg"] = alg
        if self.shape.key_ops:
            jwk.update(key_ops=["verify"], ext=True)
        return jwk

    def public_pem_bytes(self) -> bytes:
        """The signing key's public half, as bytes an attacker could read from the JWKS (for HMAC-confusion tests)."""
        from cryptography.hazmat.primitives import serialization

        return self.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)

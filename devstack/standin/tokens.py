"""JWT checks as Behest's gateway (Kong) makes them, and tokens signed the way Behest mints them."""

from __future__ import annotations

import time
import uuid
from typing import Any, Mapping, Optional, Union

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .errors import Refusal

REQUIRED_CLAIMS = ["tid", "pid", "uid", "sid", "jti", "iat", "exp", "nbf"]
API_KEY_PREFIX = "behest_sk_"
MIN_TTL, MAX_TTL, DEFAULT_TTL = 60, 86400, 3600

PublicKeyInput = Union[str, bytes, rsa.RSAPublicKey, rsa.RSAPrivateKey]


def verify(authorization: Optional[str], keys: Mapping[str, rsa.RSAPublicKey], issuer: str,
           audience: str) -> dict[str, Any]:
    """The claims of the bearer JWT in an Authorization header: RS256 by the key registered for its kid,
    iss, aud, exp, nbf and the claims Behest requires; Refusal(401) otherwise."""
    token = bearer(authorization)
    if token is None:
        raise Refusal(401, "invalid_token", "a bearer JWT is required")
    if token.startswith(API_KEY_PREFIX):
        raise Refusal(401, "invalid_token", "an API key is not a token: mint a JWT first")
    try:
        kid = jwt.get_unverified_header(token).get("kid")
    except jwt.PyJWTError as e:
        raise Refusal(401, "invalid_token", f"malformed token ({type(e).__name__})") from e
    key = keys.get(kid) if isinstance(kid, str) else None
    if key is None:
        raise Refusal(401, "invalid_token", "no registered key for this token's kid")
    try:
        return jwt.decode(token, key, algorithms=["RS256"], issuer=issuer, audience=audience,
                          options={"require": REQUIRED_CLAIMS})
    except jwt.ExpiredSignatureError as e:
        raise Refusal(401, "token_expired", "the token has expired") from e
    except jwt.PyJWTError as e:
        raise Refusal(401, "invalid_token", f"the token was refused: {e}") from e


def mint(signing_key: rsa.RSAPrivateKey, kid: str, issuer: str, audience: str, tenant_id: str, project_id: str,
         user_id: str, *, role: str = "user", ttl: int = DEFAULT_TTL, session_id: Optional[str] = None,
         tier: Optional[int] = None) -> str:
    """A token signed with `signing_key`, claims in Behest's order."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "tid": tenant_id,
        "pid": project_id,
        "uid": user_id,
        "role": role,
        "scp": [],
        "iss": issuer,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": str(uuid.uuid4()),
        "sid": session_id or str(uuid.uuid4()),
    }
    if tier is not None:
        payload["tier"] = tier
    return jwt.encode(payload, signing_key, algorithm="RS256", headers={"kid": kid, "typ": "JWT"})


def bearer(authorization: Optional[str]) -> Optional[str]:
    """The credentials of a `Bearer` Authorization header, else None."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def rsa_public_key(value: PublicKeyInput) -> rsa.RSAPublicKey:
    """An RSA public key from PEM text or bytes, or from a key object."""
    if isinstance(value, rsa.RSAPrivateKey):
        return value.public_key()
    if isinstance(value, rsa.RSAPublicKey):
        return value
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes):
        raise TypeError("a public key must be PEM text, PEM bytes or an RSA key object")
    try:
        key = serialization.load_pem_public_key(value)
    except ValueError as e:
        raise ValueError("not a PEM public key") from e
    if not isinstance(key, rsa.RSAPublicKey):
        raise TypeError("the gateway verifies RS256: the key must be RSA")
    return key

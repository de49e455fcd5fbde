"""Tenant credentials: either a signing key (local-sign mode) or an API key (API-key mode), ready to use."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Mapping, NamedTuple, Optional, Union

from . import settings as names
from .errors import ConfigurationError

API_KEY_PREFIX = "behest_sk_live_"
PEM_PREFIX = "behest_pk_"
_PEM_MARKERS = ("BEGIN PRIVATE KEY", "BEGIN RSA PRIVATE KEY")
MIN_RSA_BITS = 2048
MIN_HMAC_SECRET_BYTES = 32  # RFC 7518 3.2: an HS256 key at least as long as its hash

SIGN = "sign"
API_KEY = "api_key"


class SigningKey(NamedTuple):
    """Local-sign mode: a loaded RSA private key with its kid, tenant and project."""

    key: Any  # cryptography RSAPrivateKey; typed loosely so that API-key mode never imports cryptography
    kid: str
    tenant_id: str
    project_id: str
    # Supabase's legacy JWT secret (the secret's AUTH_JWT_SECRET), for verifying its HS256 tokens; None if absent.
    caller_secret: Optional[bytes] = None

    @property
    def mode(self) -> str:
        return SIGN

    def __repr__(self) -> str:
        return f"SigningKey(kid={self.kid!r})"


class ApiKey(NamedTuple):
    """API-key mode: Behest mints the tokens over HTTP."""

    value: str
    caller_secret: Optional[bytes] = None

    @property
    def mode(self) -> str:
        return API_KEY

    def __repr__(self) -> str:
        return "ApiKey(…)"


Credentials = Union[SigningKey, ApiKey]


def detect_mode(raw_key: str) -> tuple[str, str]:
    """Return (mode, material) exactly as the official SDK decides it; the material is an API key or a PEM."""
    key = raw_key.strip()
    if key.startswith(API_KEY_PREFIX):
        return API_KEY, key
    if key.startswith(PEM_PREFIX):
        pem = key[len(PEM_PREFIX):].strip()
        if any(marker in pem for marker in _PEM_MARKERS):
            return SIGN, pem
        raise ConfigurationError(f"{names.BEHEST_KEY} starts with {PEM_PREFIX} but no PEM private key follows")
    try:
        decoded = base64.b64decode(key, validate=False).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        decoded = ""
    if any(marker in decoded for marker in _PEM_MARKERS):
        return SIGN, decoded
    hint = " (a raw PEM needs the behest_pk_ prefix)" if "-----BEGIN" in key else ""
    raise ConfigurationError(
        f"{names.BEHEST_KEY} must be an API key ({API_KEY_PREFIX}…), {PEM_PREFIX}<PEM>, "
        f"or a base64-encoded RSA private key{hint}"
    )


def credentials_from(key_value: str, fallback: Mapping[str, Optional[str]]) -> Credentials:
    """Build credentials from a BEHEST_KEY string or a JSON secret object, with fallback ids from settings.

    A JSON secret may carry BEHEST_KEY with BEHEST_KID, BEHEST_TENANT_ID and BEHEST_PROJECT_ID
    so that a rotation swaps key and kid in one write; values in it win over the fallback.
    """
    fields = dict(fallback)
    caller_secret: Optional[bytes] = None
    stripped = key_value.strip()
    if stripped.startswith("{"):
        try:
            document = json.loads(stripped)
        except (ValueError, RecursionError) as e:
            raise ConfigurationError("the key secret is not valid JSON") from e
        if not isinstance(document, dict) or not isinstance(document.get(names.BEHEST_KEY), str):
            raise ConfigurationError(f"the key secret's JSON object needs a string {names.BEHEST_KEY}")
        for name in (names.BEHEST_KID, names.BEHEST_TENANT_ID, names.BEHEST_PROJECT_ID):
            value = document.get(name)
            if value is not None and not isinstance(value, str):
                raise ConfigurationError(f"the key secret's {name} must be a string")
            if value:
                fields[name] = value
        stripped = document[names.BEHEST_KEY]
        caller_secret = _caller_secret(document.get(names.AUTH_JWT_SECRET))

    mode, material = detect_mode(stripped)
    if mode == API_KEY:
        return ApiKey(material, caller_secret)
    kid, tenant_id, project_id = (fields.get(n) for n in (names.BEHEST_KID, names.BEHEST_TENANT_ID,
                                                            names.BEHEST_PROJECT_ID))
    if not (kid and tenant_id and project_id):
        missing = [n for n in (names.BEHEST_KID, names.BEHEST_TENANT_ID, names.BEHEST_PROJECT_ID) if not fields.get(n)]
        raise ConfigurationError(f"sign mode requires {', '.join(missing)}")
    return SigningKey(load_signing_key(material), kid, tenant_id, project_id, caller_secret)


def _caller_secret(value: Any) -> Optional[bytes]:
    """AUTH_JWT_SECRET of the key secret: Supabase's legacy JWT secret, as the bytes HS256 is keyed with."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value.encode("utf-8")) < MIN_HMAC_SECRET_BYTES:
        raise ConfigurationError(f"the key secret's {names.AUTH_JWT_SECRET} must be a string of at least "
                                 f"{MIN_HMAC_SECRET_BYTES} bytes (Supabase's legacy JWT secret)")
    return value.encode("utf-8")


def load_signing_key(pem: str) -> Any:
    """Parse an RSA private key PEM once, then prove it signs correctly."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        # OpenSSL 3's full RSA validation costs ~35 ms per load; a sign-then-verify with the
        # derived public key below catches a corrupt key for ~0.3 ms instead.
        key = load_pem_private_key(pem.encode("ascii"), password=None, unsafe_skip_rsa_key_validation=True)
    except (ValueError, TypeError, UnicodeEncodeError) as e:
        raise ConfigurationError("the tenant private key is not a readable unencrypted PEM") from e
    if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < MIN_RSA_BITS:
        raise ConfigurationError(f"the tenant private key must be an RSA key of at least {MIN_RSA_BITS} bits")
    probe = b"behest-lambda key check"
    try:
        signature = key.sign(probe, padding.PKCS1v15(), hashes.SHA256())
        key.public_key().verify(signature, probe, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        raise ConfigurationError("the tenant private key is corrupt: its signatures do not verify") from None
    return key

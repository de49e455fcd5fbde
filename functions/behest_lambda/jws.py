"""RS256 compact JWS, written on cryptography alone.

PyJWT costs ~75 ms more at import (it loads x509 eagerly) to do these few lines; every token
this module signs is verified by PyJWT in the test suite.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Mapping


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 7515 §2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _compact_json(value: Mapping[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def rs256_sign(private_key: Any, message: bytes) -> bytes:
    """RSASSA-PKCS1-v1_5 with SHA-256."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    return private_key.sign(message, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[no-any-return]


def rs256_verify(public_key: Any, message: bytes, signature: bytes) -> None:
    """Raise cryptography's InvalidSignature unless the signature is good."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding

    public_key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())


def encode_rs256(header: Mapping[str, Any], payload: Mapping[str, Any], private_key: Any) -> str:
    """Return `header.payload.signature` for the given JOSE header and claims, in their given order."""
    signing_input = f"{b64url(_compact_json(header))}.{b64url(_compact_json(payload))}"
    signature = rs256_sign(private_key, signing_input.encode("ascii"))
    return f"{signing_input}.{b64url(signature)}"

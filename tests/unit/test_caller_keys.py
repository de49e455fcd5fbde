"""Keys through OIDC discovery, and algorithms that follow the key: what each provider's tokens need, and attacks.

Each token is signed as the provider's documentation describes its keys; the discovery document and
the JWKS are served by a loopback provider (provider_fake.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any, Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from behest_lambda import caller_token
from behest_lambda.caller_token import CallerTokenVerifier, JwksCache
from behest_lambda.errors import ConfigurationError, IdentityKeysUnavailableError
from behest_lambda.settings import Settings
from tests.support import sign_env
from tests.unit.provider_fake import AUDIENCE, SIGNING_KEYS, ProviderServer, jwk, refused, serve, verifier_for


@pytest.fixture
def provider() -> Iterator[ProviderServer]:
    yield from serve()


def segment(document: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_an_es256_token_verifies_with_the_key_the_discovery_document_points_to(provider: ProviderServer) -> None:
    """Supabase signs with ES256 by default and publishes its keys, with key_ops ["verify"], behind discovery.

    https://supabase.com/docs/guides/auth/signing-keys
    """
    provider.keys = [jwk("p256", alg="ES256", key_ops=["verify"], use=None)]

    verifier = verifier_for(provider, "supabase", audience="authenticated")
    verified = verifier.claims(provider.token("p256", "ES256", aud="authenticated", role="authenticated"))

    assert verified["sub"] == "user-42"
    assert (provider.discovery_fetches, provider.jwks_fetches) == (1, 1)


def test_keys_on_another_host_named_by_jwks_uri_are_fetched_there(provider: ProviderServer) -> None:
    """Firebase's and Google's discovery documents name keys on googleapis.com, not under the issuer.

    https://firebase.google.com/docs/auth/admin/verify-id-tokens#verify_id_tokens_using_a_third-party_jwt_library
    """
    assert provider.jwks_uri.startswith("http://localhost:") and provider.issuer.startswith("http://127.0.0.1:")

    assert verifier_for(provider, "firebase").claims(provider.token())["sub"] == "user-42"


@pytest.mark.parametrize(("kind", "algorithm"), [
    ("rsa", "RS256"), ("rsa", "RS384"), ("rsa", "RS512"), ("rsa", "PS256"), ("rsa", "PS384"), ("rsa", "PS512"),
    ("p256", "ES256"), ("p384", "ES384"), ("p521", "ES512"), ("ed25519", "EdDSA"), ("ed448", "EdDSA"),
])
def test_the_algorithm_follows_the_keys_type_and_curve(provider: ProviderServer, kind: str, algorithm: str) -> None:
    """Entra ID's keys carry no alg: the key's type says what it may verify.

    https://learn.microsoft.com/en-us/entra/identity-platform/access-tokens#validate-the-signature
    """
    provider.keys = [jwk(kind)]

    assert verifier_for(provider).claims(provider.token(kind, algorithm))["sub"] == "user-42"


def test_a_keys_alg_narrows_it_to_that_algorithm(provider: ProviderServer) -> None:
    provider.keys = [jwk("rsa", alg="RS256")]
    verifier = verifier_for(provider)

    assert verifier.claims(provider.token("rsa", "RS256"))["sub"] == "user-42"
    refused(verifier, provider.token("rsa", "PS256"), "does not match the identity provider's key")


@pytest.mark.parametrize(("kind", "algorithm"), [("rsa", "ES256"), ("p256", "RS256"), ("p256", "ES384"),
                                                 ("p384", "ES256"), ("ed25519", "ES256"), ("p256", "EdDSA")])
def test_an_alg_that_does_not_match_the_key_type_is_refused(provider: ProviderServer, kind: str,
                                                           algorithm: str) -> None:
    provider.keys = [jwk(name) for name in ("rsa", "p256", "p384", "ed25519")]
    header = {"alg": algorithm, "kid": kind, "typ": "JWT"}
    # Signed for real with whatever key the header's alg would need, under the kid of another type.
    signer = {"ES256": "p256", "ES384": "p384", "RS256": "rsa", "EdDSA": "ed25519"}[algorithm]
    token = jwt.encode(provider.claims(), SIGNING_KEYS[signer], algorithm=algorithm, headers=header)

    refused(verifier_for(provider), token, "does not match the identity provider's key")


@pytest.mark.parametrize("kind", ["rsa", "p256", "ed25519"])
def test_an_hmac_token_keyed_with_a_published_keys_bytes_is_refused(provider: ProviderServer, kind: str) -> None:
    provider.keys = [jwk(kind)]
    for secret in (json.dumps(jwk(kind)).encode(),
                   SIGNING_KEYS[kind].public_key().public_bytes(serialization.Encoding.PEM,
                                                                serialization.PublicFormat.SubjectPublicKeyInfo)):
        signing_input = f"{segment({'alg': 'HS256', 'kid': kind})}.{segment(provider.claims())}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()

        refused(verifier_for(provider), f"{signing_input}.{b64(mac)}", "algorithm 'HS256' is not accepted")


def test_a_shared_secret_in_the_jwks_is_never_used(provider: ProviderServer) -> None:
    secret = b"a shared secret published by mistake, 32+ bytes"
    provider.keys = [{"kty": "oct", "k": b64(secret), "kid": "oct", "alg": "HS256", "use": "sig"}]
    token = jwt.encode(provider.claims(), secret, algorithm="HS256", headers={"kid": "oct"})

    refused(verifier_for(provider), token, "algorithm 'HS256' is not accepted")
    assert caller_token.signing_keys({"keys": provider.keys}) == {}


def test_an_es256_signature_in_der_form_is_refused_and_the_same_signature_as_r_s_verifies(
    provider: ProviderServer,
) -> None:
    """JWS (RFC 7518 3.4) writes an ECDSA signature as r‖s, 64 bytes for P-256; DER is not JWS."""
    provider.keys = [jwk("p256", alg="ES256")]
    signing_input = f"{segment({'alg': 'ES256', 'kid': 'p256'})}.{segment(provider.claims())}"
    der = SIGNING_KEYS["p256"].sign(signing_input.encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    verifier = verifier_for(provider)

    refused(verifier, f"{signing_input}.{b64(der)}", "signature does not verify")
    assert verifier.claims(f"{signing_input}.{b64(raw)}")["sub"] == "user-42"


@pytest.mark.parametrize("fields", [{"use": "enc"}, {"key_ops": ["encrypt"]}, {"key_ops": "verify"},
                                    {"alg": "RSA-OAEP"}, {"alg": "HS256"}, {"alg": "none"}])
def test_a_key_not_meant_for_verifying_signatures_is_skipped(provider: ProviderServer, fields: dict[str, Any]) -> None:
    """Keycloak lists its encryption key (use "enc", alg RSA-OAEP) beside the signing key.

    https://www.keycloak.org/docs/latest/server_admin/index.html#_realm_keys
    """
    provider.keys = [jwk("rsa", **fields)]

    refused(verifier_for(provider), provider.token(), "not signed by a key of the identity provider")


def test_the_discovery_document_and_the_keys_are_each_fetched_once_per_ttl(provider: ProviderServer) -> None:
    verifier = verifier_for(provider)
    for _ in range(3):
        verifier.claims(provider.token())

    assert (provider.discovery_fetches, provider.jwks_fetches) == (1, 1)


def test_a_configured_jwks_url_skips_discovery(provider: ProviderServer) -> None:
    keys = JwksCache(provider.jwks_uri, 3600, issuer=provider.issuer)
    verifier = CallerTokenVerifier(provider.issuer, (AUDIENCE,), keys)

    assert verifier.claims(provider.token())["sub"] == "user-42"
    assert (provider.discovery_fetches, provider.jwks_fetches) == (0, 1)


def unavailable(verifier: CallerTokenVerifier, token: str) -> IdentityKeysUnavailableError:
    with pytest.raises(IdentityKeysUnavailableError) as caught:
        verifier.claims(token)
    assert caught.value.status == 503 and caught.value.retry_after is not None
    return caught.value


def test_a_discovery_document_that_redirects_is_not_followed(provider: ProviderServer) -> None:
    provider.redirect_to = provider.jwks_uri  # even to a harmless place: a redirect is refused, not followed

    unavailable(verifier_for(provider), provider.token())
    assert provider.jwks_fetches == 0


def test_a_huge_discovery_document_is_refused(provider: ProviderServer) -> None:
    provider.padding = caller_token.MAX_DISCOVERY_BYTES

    unavailable(verifier_for(provider), provider.token())
    assert provider.jwks_fetches == 0


@pytest.mark.parametrize("jwks_uri", ["http://203.0.113.7/keys", "ftp://127.0.0.1/keys", "file:///etc/passwd",
                                      "//127.0.0.1/keys", "https://user:pw@example.com/keys", 42, None])
def test_a_discovery_document_naming_a_jwks_uri_that_is_not_https_is_refused(provider: ProviderServer,
                                                                           jwks_uri: Any) -> None:
    provider.discovery_extra = {"jwks_uri": jwks_uri}

    unavailable(verifier_for(provider), provider.token())
    assert provider.jwks_fetches == 0


def test_a_discovery_document_naming_another_issuer_is_refused(provider: ProviderServer) -> None:
    provider.discovery_extra = {"issuer": "https://evil.example.com/auth/v1"}

    unavailable(verifier_for(provider), provider.token())


def test_an_answer_from_the_discovery_url_that_is_not_200_leaves_the_keys_unavailable(provider: ProviderServer) -> None:
    provider.discovery_status = 404

    unavailable(verifier_for(provider), provider.token())


def test_held_keys_keep_verifying_while_discovery_fails_within_the_grace_period(provider: ProviderServer) -> None:
    now = [1000.0]
    keys = JwksCache(None, 600, issuer=provider.issuer, clock=lambda: now[0])
    verifier = CallerTokenVerifier(provider.issuer, (AUDIENCE,), keys)
    verifier.claims(provider.token())
    provider.discovery_status = 500

    now[0] += 601
    assert verifier.claims(provider.token())["sub"] == "user-42"  # the held jwks_uri and keys still serve


def test_a_plain_http_issuer_is_a_configuration_error_unless_loopback() -> None:
    with pytest.raises(ConfigurationError) as caught:
        CallerTokenVerifier.from_settings(Settings.from_env(sign_env(
            BEHEST_CALLER_ISSUER="http://issuer.example.com", BEHEST_CALLER_AUDIENCE="app")).caller)

    assert "BEHEST_CALLER_ISSUER" in caught.value.message
    loopback = Settings.from_env(sign_env(BEHEST_CALLER_ISSUER="http://127.0.0.1:9", BEHEST_CALLER_AUDIENCE="app"))
    assert CallerTokenVerifier.from_settings(loopback.caller).issuer == "http://127.0.0.1:9"


def test_a_plain_http_jwks_url_is_a_configuration_error_unless_loopback() -> None:
    with pytest.raises(ConfigurationError) as caught:
        CallerTokenVerifier.from_settings(Settings.from_env(sign_env(
            BEHEST_CALLER_ISSUER="https://issuer.example.com", BEHEST_CALLER_AUDIENCE="app",
            BEHEST_CALLER_JWKS_URL="http://keys.example.com/jwks")).caller)

    assert "BEHEST_CALLER_JWKS_URL must be an https URL" in caught.value.message

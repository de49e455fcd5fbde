"""BEHEST_KEY mode detection (as the official SDK), the key secret's format, and settings validation."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from behest_lambda.credentials import API_KEY, SIGN, ApiKey, credentials_from, detect_mode
from behest_lambda.errors import ConfigurationError
from behest_lambda.settings import Settings
from tests.support import KID, PROJECT_ID, TENANT_ID, key_pem, private_key

IDS = {"BEHEST_KID": KID, "BEHEST_TENANT_ID": TENANT_ID, "BEHEST_PROJECT_ID": PROJECT_ID}


def test_an_sk_live_key_selects_api_key_mode() -> None:
    assert detect_mode("  behest_sk_live_abc123 \n") == (API_KEY, "behest_sk_live_abc123")


def test_a_pk_prefixed_pem_selects_sign_mode() -> None:
    mode, pem = detect_mode("behest_pk_" + key_pem("tenant"))

    assert mode == SIGN
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")


def test_a_base64_encoded_pem_selects_sign_mode_for_pkcs8_and_pkcs1() -> None:
    pkcs1 = private_key("tenant").private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    for pem in (key_pem("tenant").encode(), pkcs1):
        mode, decoded = detect_mode(base64.b64encode(pem).decode())
        assert mode == SIGN
        assert decoded == pem.decode()


@pytest.mark.parametrize("value", ["sk_live_abc", "behest_sk_test_abc", "hello", base64.b64encode(b"not a pem").decode()])
def test_anything_else_is_a_configuration_error(value: str) -> None:
    with pytest.raises(ConfigurationError, match="BEHEST_KEY must be"):
        detect_mode(value)


def test_a_raw_pem_without_prefix_is_refused_with_a_hint_and_without_echoing_it() -> None:
    with pytest.raises(ConfigurationError) as caught:
        detect_mode(key_pem("tenant"))

    assert "behest_pk_ prefix" in caught.value.message
    assert key_pem("tenant").splitlines()[1] not in caught.value.message


def test_a_json_secret_wins_over_environment_ids() -> None:
    secret = json.dumps({"BEHEST_KEY": "behest_pk_" + key_pem("tenant"), "BEHEST_KID": "sk_new", "BEHEST_TENANT_ID": "t2"})

    credentials = credentials_from(secret, IDS)

    assert (credentials.kid, credentials.tenant_id, credentials.project_id) == ("sk_new", "t2", PROJECT_ID)


def test_a_json_secret_may_carry_an_api_key() -> None:
    credentials = credentials_from(json.dumps({"BEHEST_KEY": "behest_sk_live_x"}), {})

    assert isinstance(credentials, ApiKey)
    assert (credentials.mode, credentials.value) == (API_KEY, "behest_sk_live_x")


def test_sign_mode_names_all_missing_ids_at_once() -> None:
    with pytest.raises(ConfigurationError) as caught:
        credentials_from("behest_pk_" + key_pem("tenant"), {})

    assert "BEHEST_KID, BEHEST_TENANT_ID, BEHEST_PROJECT_ID" in caught.value.message


def test_credentials_repr_never_shows_key_material() -> None:
    credentials = credentials_from(json.dumps({"BEHEST_KEY": "behest_sk_live_secret"}), {})

    assert "secret" not in repr(credentials)


def der_rsa_private_key(*integers: int) -> str:
    """A PKCS#1 RSAPrivateKey PEM from raw integers, consistent or not (cryptography refuses to build bad ones)."""

    def length(n: int) -> bytes:
        if n < 0x80:
            return bytes([n])
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return bytes([0x80 | len(raw)]) + raw

    def integer(value: int) -> bytes:
        raw = value.to_bytes(value.bit_length() // 8 + 1, "big")
        return b"\x02" + length(len(raw)) + raw

    body = b"".join(integer(i) for i in (0, *integers))
    der = b"\x30" + length(len(body)) + body
    lines = [base64.b64encode(der[i:i + 48]).decode() for i in range(0, len(der), 48)]
    return "-----BEGIN RSA PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END RSA PRIVATE KEY-----\n"


def test_a_corrupt_private_key_is_caught_before_it_signs_anything() -> None:
    n = private_key("tenant").private_numbers()
    # Another key's modulus: every signature this key makes fails to verify.
    other_modulus = private_key("other").private_numbers().public_numbers.n
    pem = der_rsa_private_key(other_modulus, n.public_numbers.e, n.d, n.p, n.q, n.dmp1, n.dmq1, n.iqmp)

    with pytest.raises(ConfigurationError, match="corrupt"):
        credentials_from("behest_pk_" + pem, IDS)


def test_the_der_builder_makes_a_loadable_key_from_consistent_numbers() -> None:
    n = private_key("tenant").private_numbers()
    pem = der_rsa_private_key(n.public_numbers.n, n.public_numbers.e, n.d, n.p, n.q, n.dmp1, n.dmq1, n.iqmp)

    assert credentials_from("behest_pk_" + pem, IDS).kid == KID


def test_a_non_rsa_or_short_key_is_refused() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    short = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    for key in (ec_key, short):
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        with pytest.raises(ConfigurationError, match="RSA key of at least 2048"):
            credentials_from("behest_pk_" + pem.decode(), IDS)


def test_settings_defaults_follow_the_sdk_names() -> None:
    settings = Settings.from_env({"BEHEST_KEY": "behest_sk_live_x"})

    assert settings.mint.base_url == settings.relay.base_url == "https://api.behest.ai"
    assert (settings.mint.issuer, settings.mint.audience, settings.identity.user_claim) == (
        "https://api.behest.ai", "behest", "sub")
    assert (settings.mint.default_ttl, settings.mint.max_ttl, settings.identity.default_tier) == (900, 3600, None)
    assert (settings.relay.max_tokens, settings.relay.max_n) == (4096, 4)
    assert (settings.identity.tier_min, settings.identity.tier_max) == (0, 100)


def test_the_deprecated_api_key_alias_still_works() -> None:
    assert Settings.from_env({"BEHEST_API_KEY": "behest_sk_live_x"}).key.behest_key == "behest_sk_live_x"


def test_settings_report_every_bad_variable_by_name_at_once() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(
            {"BEHEST_TTL": "soon", "BEHEST_MAX_TTL": "99999999", "BEHEST_TIER_MAP": "gold", "BEHEST_BASE_URL": "ftp://x",
             "BEHEST_UPSTREAM_TIMEOUT": "-1"}
        )

    message = caught.value.message
    for name in ("BEHEST_KEY or BEHEST_KEY_SECRET_ID", "BEHEST_TTL", "BEHEST_MAX_TTL", "BEHEST_TIER_MAP",
                 "BEHEST_BASE_URL", "BEHEST_UPSTREAM_TIMEOUT"):
        assert name in message


def test_a_default_ttl_above_the_maximum_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="must not exceed BEHEST_MAX_TTL"):
        Settings.from_env({"BEHEST_KEY": "behest_sk_live_x", "BEHEST_TTL": "7200", "BEHEST_MAX_TTL": "3600"})

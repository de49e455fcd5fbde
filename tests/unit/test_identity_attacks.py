"""The identity front door under attack: JOSE header tricks, algorithm confusion, claims, discovery, cookies, fronts.

Every token is signed for real (by PyJWT, or by hand where PyJWT refuses to forge) and verified by
the code the functions run; keys come from the loopback provider (provider_fake.py), whose fetches
are counted, so "never fetched" is observed. Each refusal must be a clean 401/403/503 with a
message, never an exception escaping as a 500.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import json
import socket
import threading
import time
from typing import Any, Iterator, Optional

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from behest_lambda import caller_token
from behest_lambda.app import Service
from behest_lambda.caller_token import CallerTokenVerifier, JwksCache, bearer_token, jwks_uri_of
from behest_lambda.errors import BehestLambdaError, ConfigurationError, FetchError, UnauthenticatedError
from behest_lambda.identity import identity_from_claims, tier_of
from behest_lambda.providers import PROVIDERS
from behest_lambda.routes import STREAM_FUNCTION, TOKEN_FUNCTION
from behest_lambda.settings import IdentitySettings, Settings
from tests.support import CapturedTelemetry, load_event, sign_env
from tests.unit.provider_fake import AUDIENCE, SIGNING_KEYS, ProviderServer, jwk, refused, serve, verifier_for

APP_ORIGIN = "https://app.example.com"


@pytest.fixture
def provider() -> Iterator[ProviderServer]:
    yield from serve()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(document: Any) -> str:
    return b64(json.dumps(document).encode())


def forged(header: dict[str, Any], claims: Any, kind: str = "rsa", algorithm: str = "RS256") -> str:
    """A token whose header and payload are exactly as given, signed by SIGNING_KEYS[kind] (PyJWT's signers)."""
    signing_input = f"{segment(header)}.{segment(claims)}"
    signer = jwt.get_algorithm_by_name(algorithm)
    return f"{signing_input}.{b64(signer.sign(signing_input.encode(), SIGNING_KEYS[kind]))}"


ATTACKER = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def attacker_token(provider: ProviderServer, **header: Any) -> str:
    return jwt.encode(provider.claims(), ATTACKER, algorithm="RS256", headers=header)


def attacker_jwk(kid: str = "rsa") -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(ATTACKER.public_key()))
    return {**entry, "kid": kid}


# -- JOSE header tricks ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["jku", "x5u", "jwk", "x5c"])
def test_a_key_named_or_embedded_in_the_header_is_never_used_or_fetched(provider: ProviderServer,
                                                                        header: str) -> None:
    """RFC 7515 4.1.2-4.1.6: jku, jwk, x5u, x5c; the verifier picks keys by kid from the issuer's JWKS only."""
    where = f"http://127.0.0.1:{provider.port}/attacker-keys"
    value: Any = {"jku": where, "x5u": where, "jwk": attacker_jwk(),
                  "x5c": [b64(ATTACKER.public_key().public_bytes(serialization.Encoding.DER,
                                                                   serialization.PublicFormat.SubjectPublicKeyInfo))]}
    for kid in ("rsa", "attacker"):  # under the provider's kid, and under one the provider never published
        refused(verifier_for(provider), attacker_token(provider, kid=kid, **{header: value[header]}))

    assert provider.fetches.get("/attacker-keys", 0) == 0


@pytest.mark.parametrize("crit", [["exp-unknown"], ["http://example.com/ext"], "b64", [], [1]])
def test_a_crit_header_naming_an_unknown_extension_is_refused(provider: ProviderServer, crit: Any) -> None:
    """RFC 7515 4.1.11: a recipient that does not understand a name in crit must refuse the JWS (PyJWT does)."""
    token = forged({"alg": "RS256", "kid": "rsa", "crit": crit, "exp-unknown": 1}, provider.claims())

    refused(verifier_for(provider), token, "the identity token was refused")


def test_an_unencoded_payload_b64_false_is_refused(provider: ProviderServer) -> None:
    """RFC 7797: b64=false needs a detached payload, which a bearer token never has."""
    claims = json.dumps(provider.claims())
    header = segment({"alg": "RS256", "kid": "rsa", "b64": False, "crit": ["b64"]})
    signing_input = f"{header}.{claims}".encode()
    signature = jwt.get_algorithm_by_name("RS256").sign(signing_input, SIGNING_KEYS["rsa"])
    for token in (f"{header}.{claims}.{b64(signature)}", f"{header}..{b64(signature)}"):
        refused(verifier_for(provider), token)


@pytest.mark.parametrize("typ", ["JWE", "at+jwt", "application/jwt", "", None, 7, {"a": 1}])
def test_the_typ_header_neither_helps_nor_breaks_a_genuine_token(provider: ProviderServer, typ: Any) -> None:
    """API Gateway's authorizer ignores typ; so does the verifier (Okta writes at+jwt, Entra JWT)."""
    token = forged({"alg": "RS256", "kid": "rsa", "typ": typ}, provider.claims())

    assert verifier_for(provider).claims(token)["sub"] == "user-42"


def test_a_five_part_jwe_is_refused(provider: ProviderServer) -> None:
    token = f"{segment({'alg': 'RSA-OAEP', 'enc': 'A256GCM', 'kid': 'rsa'})}.{b64(b'k' * 256)}.{b64(b'i' * 12)}." \
            f"{segment(provider.claims())}.{b64(b't' * 16)}"

    refused(verifier_for(provider), token, "not a compact JWS")


@pytest.mark.parametrize("kid", ["../../etc/passwd", "' OR '1'='1", "rsa\x00", "r\u0455a", "rsa ", "RSA",
                                 "k" * 10_000, 7, ["rsa"], {"kid": "rsa"}, None, ""])
def test_odd_kids_match_nothing_and_are_refused(provider: ProviderServer, kid: Any) -> None:
    token = forged({"alg": "RS256", "kid": kid}, provider.claims())

    refused(verifier_for(provider), token)
    assert provider.jwks_fetches <= 2  # one fetch, one refetch for an unknown kid at most


def test_a_kid_shared_by_an_rsa_and_an_ec_key_verifies_each_with_its_own_algorithm(provider: ProviderServer) -> None:
    """RFC 7517 4.5: keys of different kty may share a kid as equivalent alternatives; alg picks the one."""
    provider.keys = [jwk("rsa", kid="shared"), jwk("p256", kid="shared")]
    verifier = verifier_for(provider)

    assert verifier.claims(provider.token("rsa", "RS256", kid="shared"))["sub"] == "user-42"
    assert verifier.claims(provider.token("p256", "ES256", kid="shared"))["sub"] == "user-42"
    refused(verifier, provider.token("p384", "ES384", kid="shared"))


def test_two_rsa_keys_under_one_kid_each_verify_their_own_tokens_and_nothing_else(provider: ProviderServer) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    second = {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(other.public_key())), "kid": "rsa", "use": "sig"}
    provider.keys = [jwk("rsa"), second]
    verifier = verifier_for(provider)

    assert verifier.claims(provider.token("rsa", "RS256", kid="rsa"))["sub"] == "user-42"
    assert verifier.claims(jwt.encode(provider.claims(), other, algorithm="RS256", headers={"kid": "rsa"}))
    refused(verifier, attacker_token(provider, kid="rsa"), "signature does not verify")


# -- Algorithm confusion --------------------------------------------------------------------------------------------


def test_es256k_and_es512_with_a_p256_key_are_refused(provider: ProviderServer) -> None:
    provider.keys = [jwk("p256")]
    secp256k1 = ec.generate_private_key(ec.SECP256K1())
    es256k = jwt.encode(provider.claims(), secp256k1, algorithm="ES256K", headers={"kid": "p256"})
    es512 = jwt.encode(provider.claims(), SIGNING_KEYS["p521"], algorithm="ES512", headers={"kid": "p256"})

    refused(verifier_for(provider), es256k, "not accepted")
    refused(verifier_for(provider), es512, "does not match the identity provider's key")


def test_a_secp256k1_key_in_the_jwks_is_not_used(provider: ProviderServer) -> None:
    secp256k1 = ec.generate_private_key(ec.SECP256K1())
    entry = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(secp256k1.public_key())), "kid": "k1", "use": "sig"}
    provider.keys = [entry]

    assert caller_token.signing_keys({"keys": provider.keys}) == {}
    refused(verifier_for(provider), jwt.encode(provider.claims(), secp256k1, algorithm="ES256K", headers={"kid": "k1"}))


@pytest.mark.parametrize("kind", ["ed25519", "ed448"])
def test_eddsa_is_accepted_with_either_curve_rfc_8037_names(provider: ProviderServer, kind: str) -> None:
    """RFC 8037 3.1: EdDSA covers Ed25519 and Ed448; the curve comes from the key (crv), never the header."""
    provider.keys = [jwk(kind)]

    assert verifier_for(provider).claims(provider.token(kind, "EdDSA"))["sub"] == "user-42"
    other = "ed448" if kind == "ed25519" else "ed25519"
    refused(verifier_for(provider), provider.token(other, "EdDSA", kid=kind), "signature does not verify")


def test_an_okp_key_of_an_x_curve_is_not_used(provider: ProviderServer) -> None:
    provider.keys = [{"kty": "OKP", "crv": "X25519", "x": b64(b"\x09" * 32), "kid": "x", "use": "sig"}]

    assert caller_token.signing_keys({"keys": provider.keys}) == {}


def test_a_ps256_token_under_a_key_whose_alg_says_rs256_is_refused(provider: ProviderServer) -> None:
    provider.keys = [jwk("rsa", alg="RS256")]

    refused(verifier_for(provider), provider.token("rsa", "PS256"), "does not match the identity provider's key")


@pytest.mark.parametrize("bits", [1024, 2047])
def test_an_rsa_key_under_2048_bits_never_verifies(provider: ProviderServer, bits: int) -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    provider.keys = [{**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(small.public_key())), "kid": "small"}]

    # PyJWT warns about a weak key when signing (warnings are errors here), so the token is signed by hand.
    signing_input = f"{segment({'alg': 'RS256', 'kid': 'small'})}.{segment(provider.claims())}"
    signature = jwt.get_algorithm_by_name("RS256").sign(signing_input.encode(), small)

    refused(verifier_for(provider), f"{signing_input}.{b64(signature)}", "not signed by a key of the identity provider")


def test_an_ec_point_that_is_not_on_its_curve_is_skipped(provider: ProviderServer) -> None:
    entry = jwk("p256")
    entry["y"] = b64((int.from_bytes(base64.urlsafe_b64decode(entry["y"] + "=="), "big") ^ 1).to_bytes(32, "big"))
    provider.keys = [entry]

    assert caller_token.signing_keys({"keys": provider.keys}) == {}
    refused(verifier_for(provider), provider.token("p256", "ES256"), "not signed by a key of the identity provider")


@pytest.mark.parametrize("algorithm", ["none", "None", "NONE", "nOnE", "", None, 0, ["RS256"], "HS256", "HS384",
                                       "HS512", "RS1", "ES256K", "A256GCM", "dir"])
def test_no_signature_or_a_non_signing_alg_is_refused(provider: ProviderServer, algorithm: Any) -> None:
    signing_input = f"{segment({'alg': algorithm, 'kid': 'rsa'})}.{segment(provider.claims())}"
    for signature in ("", b64(b"\x00" * 32)):
        refused(verifier_for(provider), f"{signing_input}.{signature}")


def _published_key_bytes(kind: str) -> list[bytes]:
    public = SIGNING_KEYS[kind].public_key()
    entry = jwk(kind)
    encodings = [
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo),
        json.dumps(entry).encode(), json.dumps(entry, separators=(",", ":"), sort_keys=True).encode(),
    ]
    if kind == "rsa":
        encodings += [public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1),
                      base64.urlsafe_b64decode(entry["n"] + "=="), entry["n"].encode()]
    else:
        encodings += [base64.urlsafe_b64decode(entry["x"] + "=="), entry["x"].encode()]
    return encodings


@pytest.mark.parametrize("preset", ["oidc", "supabase"])
@pytest.mark.parametrize("kind", ["rsa", "p256", "ed25519"])
def test_hs256_keyed_with_a_published_keys_bytes_in_any_encoding_is_refused(provider: ProviderServer, kind: str,
                                                                            preset: str) -> None:
    """Even where HS256 is allowed (Supabase's legacy secret), only the configured secret keys it."""
    provider.keys = [jwk(kind)]
    verifier = verifier_for(provider, preset, hmac_secret=lambda: b"the legacy secret of this project, 32+ bytes")
    for secret in _published_key_bytes(kind):
        signing_input = f"{segment({'alg': 'HS256', 'kid': kind})}.{segment(provider.claims())}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        refused(verifier, f"{signing_input}.{b64(mac)}")


def test_hs256_is_refused_under_every_preset_but_supabase_even_with_a_secret(provider: ProviderServer) -> None:
    secret = b"the legacy secret of this project, 32+ bytes"
    token = jwt.encode(provider.claims(), secret, algorithm="HS256", headers={"kid": "rsa"})
    for name in PROVIDERS:
        verifier = verifier_for(provider, name, hmac_secret=lambda: secret, authorized_parties=(APP_ORIGIN,))
        if name == "supabase":
            assert verifier.claims(token)["sub"] == "user-42"
        else:
            refused(verifier, token, "algorithm 'HS256' is not accepted")


@pytest.mark.parametrize("secret", [b"", None])
def test_hs256_with_no_or_an_empty_legacy_secret_is_refused(provider: ProviderServer, secret: Optional[bytes]) -> None:
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT'})}.{segment(provider.claims())}"
    token = f"{signing_input}.{b64(hmac.new(b'', signing_input.encode(), hashlib.sha256).digest())}"

    refused(verifier_for(provider, "supabase", hmac_secret=lambda: secret), token, "needs the legacy JWT secret")


# -- Claims ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("iss_in_token", ["{issuer}/", "{issuer}//", "{ISSUER}", " {issuer}", "{issuer}?x=1"])
def test_an_issuer_differing_only_by_a_slash_or_case_is_refused(provider: ProviderServer, iss_in_token: str) -> None:
    iss = iss_in_token.format(issuer=provider.issuer.rstrip("/"), ISSUER=provider.issuer.upper())
    if iss == provider.issuer:
        iss = iss + "/"

    refused(verifier_for(provider), provider.token(iss=iss), "issued by another issuer")


@pytest.mark.parametrize("provider_path", ["/"], ids=["auth0"])
def test_auth0_keeps_its_trailing_slash_exactly(provider_path: str) -> None:
    """Auth0's iss ends with '/'; without it the token was not issued by the tenant."""
    for server in serve(provider_path):
        verifier = verifier_for(server, "auth0")
        assert verifier.claims(server.token())["iss"].endswith("/")
        refused(verifier, server.token(iss=server.issuer.rstrip("/")), "issued by another issuer")


@pytest.mark.parametrize("aud", [[AUDIENCE], ["other", AUDIENCE], [AUDIENCE, None, 7]])
def test_an_aud_array_holding_the_audience_is_accepted(provider: ProviderServer, aud: Any) -> None:
    assert verifier_for(provider).claims(provider.token(aud=aud))["sub"] == "user-42"


@pytest.mark.parametrize("aud", [[None], [], [[AUDIENCE]], {"aud": AUDIENCE}, 0, "", f"{AUDIENCE} ", AUDIENCE.upper()])
def test_an_aud_that_is_null_empty_nested_or_almost_ours_is_refused(provider: ProviderServer, aud: Any) -> None:
    refused(verifier_for(provider), provider.token(aud=aud), "meant for another audience")


def test_a_null_aud_is_refused(provider: ProviderServer) -> None:
    token = forged({"alg": "RS256", "kid": "rsa"}, {**provider.claims(), "aud": None})

    refused(verifier_for(provider), token, "meant for another audience")


@pytest.mark.parametrize("azp", [[APP_ORIGIN], {"origin": APP_ORIGIN}, "", 7, f"{APP_ORIGIN}/"])
def test_a_clerk_azp_that_is_not_exactly_an_authorized_party_is_refused(azp: Any) -> None:
    for server in serve(""):
        verifier = verifier_for(server, "clerk", authorized_parties=(APP_ORIGIN,))
        assert verifier.claims(server.token(aud=None, azp=APP_ORIGIN))["sub"] == "user-42"
        refused(verifier, server.token(aud=None, azp=azp), "another party (azp)")
        refused(verifier, server.token(azp=azp), "another party (azp)")  # beside a good aud, too


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["{n}", "1e400", "NaN", "true", "[{n}]", "{{}}", "-1e400", "null"])
def test_times_that_are_not_numbers_are_refused_not_raised(provider: ProviderServer, name: str, value: str) -> None:
    now = int(time.time())
    claims = {**provider.claims(), name: "__time__"}
    literal = value.format(n=now + 600 if name == "exp" else now - 10)
    if value == "{n}":
        literal = json.dumps(str(now + 600 if name == "exp" else now - 10))  # the number as a JSON string
    payload = b64(json.dumps(claims).replace('"__time__"', literal).encode())
    signing_input = f"{segment({'alg': 'RS256', 'kid': 'rsa'})}.{payload}"
    signature = jwt.get_algorithm_by_name("RS256").sign(signing_input.encode(), SIGNING_KEYS["rsa"])
    token = f"{signing_input}.{b64(signature)}"
    refused(verifier_for(provider), token)


@pytest.mark.parametrize("exp", [10**30, 2.0**62])
def test_a_huge_expiry_is_a_number_and_verifies(provider: ProviderServer, exp: Any) -> None:
    """A provider may sign a far expiry; only a number that is not one (inf, NaN, text) is refused."""
    assert verifier_for(provider).claims(provider.token(exp=exp))["sub"] == "user-42"


def test_float_times_are_numbers_and_verify(provider: ProviderServer) -> None:
    now = time.time()
    assert verifier_for(provider).claims(provider.token(exp=now + 600.5, nbf=now - 0.5, iat=now - 0.5))


@pytest.mark.parametrize(("preset", "claim"), [("okta", "uid"), ("entra", "oid")])
def test_the_presets_user_claim_absent_does_not_fall_back_to_sub(preset: str, claim: str) -> None:
    settings = Settings.from_env(sign_env(BEHEST_IDENTITY_PROVIDER=preset)).identity
    assert settings.user_claim == claim

    with pytest.raises(UnauthenticatedError) as caught:
        identity_from_claims({"sub": "ada@example.com", "iss": "x"}, settings)
    assert repr(claim) in caught.value.message


@pytest.mark.parametrize("user_id", [{"id": "u"}, ["u"], "", "   ", "u" * 257, True, 1.5, None])
def test_a_user_id_that_is_not_a_string_of_at_most_256_characters_is_refused(user_id: Any) -> None:
    with pytest.raises(UnauthenticatedError):
        identity_from_claims({"sub": user_id}, IdentitySettings())


@pytest.mark.parametrize("user_id", ["user-42", "auth0|5f7c8ec7c33c6c004bbafe82", "ada@example.com", "Łukasz",
                                     "u" * 256, 1234567890, "eve\x00\x1b[31m\u2028", "eve\ud800"])
def test_a_string_user_id_is_taken_as_the_provider_signed_it(user_id: Any) -> None:
    """The provider is the authority on its ids: control characters are kept and logged safely, not refused."""
    assert identity_from_claims({"sub": user_id}, IdentitySettings()).user_id == str(user_id)


@pytest.mark.parametrize("claims", [{"app_metadata": [{"plan": "pro"}]}, {"app_metadata": {"plan": ["pro"]}},
                                    {"app_metadata": {"plan": {"name": "pro"}}}, {"app_metadata": {"plan": 2.0}},
                                    {"app_metadata": {"plan": True}}, {"app_metadata": "plan"},
                                    {"app_metadata": {"plan": None}}, {"app_metadata.plan": None}])
def test_a_tier_path_through_a_list_or_to_a_non_string_gives_the_default_tier(claims: dict[str, Any]) -> None:
    settings = IdentitySettings(tier_claim="app_metadata.plan", tier_map={"pro": 2}, default_tier=1)

    assert tier_of(claims, settings) == 1


# -- Discovery and JWKS ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("jwks_uri", ["http://127.0.0.1:9001/2018-06-01/runtime/invocation/next",
                                      "http://localhost:2773/secretsmanager/get", "http://[::1]/keys"])
def test_an_https_issuer_cannot_point_its_keys_at_a_loopback_service(jwks_uri: str) -> None:
    """Plain http to loopback is for make dev and tests; an https issuer's keys stay on https (no SSRF to
    the Lambda runtime API or the secrets extension)."""
    issuer = "https://issuer.example.com"
    with pytest.raises(FetchError) as caught:
        jwks_uri_of({"issuer": issuer, "jwks_uri": jwks_uri}, issuer)
    assert caught.value.reason == "insecure_url"


@pytest.mark.parametrize("jwks_uri", ["https://evil@issuer.example.com/keys", "https://issuer.example.com/keys#x",
                                      "https://issuer.example.com/keys?x=1", "http://issuer.example.com/keys",
                                      "https://issuer.example.com /keys", "javascript:alert(1)", ""])
def test_a_jwks_uri_with_userinfo_fragment_query_or_plain_http_is_refused(jwks_uri: str) -> None:
    issuer = "https://issuer.example.com"
    with pytest.raises(FetchError):
        jwks_uri_of({"issuer": issuer, "jwks_uri": jwks_uri}, issuer)


@pytest.mark.parametrize("issuer_in_document", ["https://issuer.example.com/", "https://ISSUER.example.com",
                                                None, ["https://issuer.example.com"]])
def test_a_discovery_document_naming_the_issuer_only_approximately_is_refused(issuer_in_document: Any) -> None:
    with pytest.raises(FetchError) as caught:
        jwks_uri_of({"issuer": issuer_in_document, "jwks_uri": "https://issuer.example.com/keys"},
                    "https://issuer.example.com")
    assert caught.value.reason == "issuer_mismatch"


@pytest.mark.parametrize("document", [[jwk("rsa")], {"keys": {"rsa": jwk("rsa")}}, {"keys": None}, "keys", 7,
                                      {"keys": [None, 7, "x", [], {"kid": "rsa"}, {"kty": "RSA", "kid": "rsa"}]}])
def test_a_jwks_that_is_not_a_keys_array_of_objects_yields_no_key_and_no_crash(provider: ProviderServer,
                                                                              document: Any) -> None:
    if isinstance(document, dict) and isinstance(document.get("keys"), list):
        assert caller_token.signing_keys(document) == {}
    else:
        with pytest.raises(FetchError):
            caller_token.signing_keys(document)


def test_a_jwks_of_ten_thousand_keys_holds_only_the_first_few(provider: ProviderServer) -> None:
    """Providers publish a handful of keys; a JWKS stuffed with thousands costs one parse, not thousands of keys."""
    entry = jwk("p256")
    document = {"keys": [{**entry, "kid": f"k{i}"} for i in range(10_000)]}

    keys = caller_token.signing_keys(document)

    assert 0 < len(keys) <= caller_token.MAX_JWKS_KEYS
    assert "k0" in keys and "k9999" not in keys


def test_a_kid_flood_refetches_the_keys_at_most_once_per_interval(provider: ProviderServer) -> None:
    now = [1000.0]
    keys = JwksCache(None, 3600, issuer=provider.issuer, clock=lambda: now[0])
    verifier = CallerTokenVerifier(provider.issuer, (AUDIENCE,), keys)
    verifier.claims(provider.token())
    for i in range(200):
        refused(verifier, provider.token(kid=f"made-up-{i}"), "not signed by a key of the identity provider")
    assert provider.jwks_fetches == 1  # the keys are fresher than the interval: no refetch at all
    now[0] += caller_token.UNKNOWN_KID_REFETCH_INTERVAL + 1
    for i in range(200):
        refused(verifier, provider.token(kid=f"made-up-again-{i}"))

    assert provider.jwks_fetches == 2  # the first fetch, then one refetch once the interval has passed


class RawServer:
    """A loopback server that answers every request with `answer(connection)`: for what http.server cannot send."""

    def __init__(self, answer: Any) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.requests: list[bytes] = []
        self._answer = answer
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self._socket.settimeout(0.1)
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except OSError:
                continue
            with connection:
                self.requests.append(connection.recv(65536))
                try:
                    self._answer(connection, self._stop)
                except OSError:
                    pass

    def stop(self) -> None:
        self._stop.set()
        self._socket.close()

    def __enter__(self) -> RawServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def test_a_gzip_bomb_is_not_asked_for_nor_decompressed() -> None:
    bomb = gzip.compress(b" " * 5_000_000)

    def answer(connection: socket.socket, stop: threading.Event) -> None:
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                           + f"Content-Length: {len(bomb)}\r\n\r\n".encode() + bomb)

    with RawServer(answer) as server:
        with pytest.raises(FetchError) as caught:
            caller_token.fetch_jwks(f"http://127.0.0.1:{server.port}/keys", 2.0)
    assert caught.value.reason == "malformed"
    assert b"gzip" not in server.requests[0].lower()


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_discovery_url_that_trickles_is_cut_at_the_fetch_deadline(where: str) -> None:
    """Slow-loris: one byte at a time, each well within a socket timeout, must not outlive the one deadline.

    The server trickles for 40 times the deadline; the fetch must hang up before the trickle ends.
    """
    trickled = threading.Event()

    def answer(connection: socket.socket, stop: threading.Event) -> None:
        head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n"
        if where == "body":
            connection.sendall(head + b"\r\n")
        for byte in b"X-Slow: " + b"a" * 100 if where == "headers" else b" " * 100:
            if stop.wait(0.05):
                return
            connection.sendall(bytes([byte]))
        trickled.set()

    with RawServer(answer) as server:
        with pytest.raises(FetchError) as caught:
            caller_token.fetch_json(f"http://127.0.0.1:{server.port}/x", 0.125, what="discovery")
    assert caught.value.reason == "unreachable"
    assert not trickled.is_set()


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_jwks_url_that_redirects_is_not_followed(status: int) -> None:
    def answer(connection: socket.socket, stop: threading.Event) -> None:
        connection.sendall(f"HTTP/1.1 {status} Moved\r\nLocation: http://127.0.0.1:1/keys\r\n"
                           "Content-Length: 0\r\n\r\n".encode())

    with RawServer(answer) as server:
        with pytest.raises(FetchError) as caught:
            caller_token.fetch_jwks(f"http://127.0.0.1:{server.port}/keys", 2.0)
    assert caught.value.reason == f"http_{status}"
    assert len(server.requests) == 1


# -- Cookies and cross-site request forgery -------------------------------------------------------------------------


def cookie_service(provider: ProviderServer, preset: str = "clerk", **extra: str) -> Service:
    env = sign_env(**{"BEHEST_IDENTITY_PROVIDER": preset, "BEHEST_CALLER_ISSUER": provider.issuer,
                      "BEHEST_CALLER_AUDIENCE": AUDIENCE, "BEHEST_ALLOWED_ORIGINS": APP_ORIGIN,
                      "BEHEST_VERIFY_CALLERS": "true", **extra})
    return Service.build(TOKEN_FUNCTION, Settings.from_env(env), CapturedTelemetry())


def mint(service: Service, cookies: list[str], headers: Optional[dict[str, str]] = None,
         **event_fields: Any) -> tuple[int, dict[str, Any]]:
    event = load_event("token_mint_session_cookie")
    event["cookies"] = cookies
    event["headers"].update(headers or {})
    event["headers"] = {k: v for k, v in event["headers"].items() if v is not None}
    event.update(event_fields)
    answer = service.handle(event)
    body = json.loads(answer["body"])
    if answer["statusCode"] != 200:
        assert set(body["error"]) >= {"message", "type", "code"}, body
    return answer["statusCode"], body


@pytest.fixture
def clerk() -> Iterator[ProviderServer]:
    yield from serve("")


@pytest.mark.parametrize("origin", ["null", "https://APP.example.com", "https://app.example.com/",
                                    "https://app.example.com:443", "http://app.example.com",
                                    "https://app.example.com.evil.example", "https://app.example.com, https://x",
                                    " https://app.example.com", ""])
def test_a_cookie_with_an_origin_that_is_not_exactly_allowed_is_refused(clerk: ProviderServer, origin: str) -> None:
    status, body = mint(cookie_service(clerk), [f"__session={clerk.token(aud=None, azp=APP_ORIGIN)}"],
                        {"origin": origin})

    assert status == 403, body
    assert body["error"]["code"] == "origin_not_allowed"


def test_a_cookie_with_a_referer_but_no_origin_is_refused(clerk: ProviderServer) -> None:
    status, body = mint(cookie_service(clerk), [f"__session={clerk.token(aud=None, azp=APP_ORIGIN)}"],
                        {"origin": None, "referer": APP_ORIGIN + "/page"})

    assert status == 403 and "missing" in body["error"]["message"]


@pytest.mark.parametrize("authorization", ["Bearer not-a-token", "Basic dXNlcjpwdw==", "", "Bearer ", "Token x"])
def test_a_bad_authorization_header_beside_a_good_cookie_fails_without_falling_back(clerk: ProviderServer,
                                                                                   authorization: str) -> None:
    good = clerk.token(aud=None, azp=APP_ORIGIN)

    status, body = mint(cookie_service(clerk), [f"__session={good}"], {"authorization": authorization})

    assert status == 401, body


@pytest.mark.parametrize("name", ["__SESSION", "__Session", "__Host-__session", "__Secure-__session", "_session",
                                  "__session.0", "__session_"])
def test_a_cookie_of_a_similar_name_is_not_read(clerk: ProviderServer, name: str) -> None:
    status, body = mint(cookie_service(clerk), [f"{name}={clerk.token(aud=None, azp=APP_ORIGIN)}"])

    assert status == 401 and "no identity token" in body["error"]["message"], body


@pytest.mark.parametrize("value", ['"{token}"', '"{token}\\012"', '"{token}\\"x"', "{token}\\", '"{token}'])
def test_a_quoted_or_escaped_cookie_value_gives_the_token_or_a_clean_refusal(clerk: ProviderServer,
                                                                             value: str) -> None:
    token = clerk.token(aud=None, azp=APP_ORIGIN)

    status, body = mint(cookie_service(clerk), ["__session=" + value.format(token=token)])

    assert status in (200, 401), body
    assert status == 401 or value == '"{token}"'  # only plain quoting (http.cookies unquotes it) keeps the token


def supabase_value(document: Any, *, raw_text: Optional[str] = None) -> str:
    text = raw_text if raw_text is not None else json.dumps(document)
    return "base64-" + b64(text.encode())


@pytest.fixture
def supabase() -> Iterator[ProviderServer]:
    yield from serve("/auth/v1")


def supabase_service(provider: ProviderServer) -> Service:
    return cookie_service(provider, "supabase", BEHEST_CALLER_AUDIENCE="authenticated")


@pytest.mark.parametrize("value", [
    supabase_value(None, raw_text="not json"), supabase_value(["access_token", "x"]), supabase_value({"access_token": 7}),
    supabase_value({"access_token": ["t"]}), supabase_value({"access_token": {"t": 1}}), supabase_value({}),
    supabase_value(None, raw_text="[" * 20_000 + "]" * 20_000), supabase_value(None, raw_text='{"a":' * 5000 + "1"
                                                                                + "}" * 5000),
    "base64-%%%", "base64-" + b64(b"\xff\xfe"), "%7B%22access_token%22%3A", "%E0%A4%A",
])
def test_a_supabase_cookie_that_does_not_hold_a_session_is_a_clean_401(supabase: ProviderServer, value: str) -> None:
    chunks = [value[i:i + 3000] for i in range(0, len(value), 3000)]
    cookies = [f"sb-127-auth-token={value}"] if len(chunks) == 1 else [
        f"sb-127-auth-token.{i}={chunk}" for i, chunk in enumerate(chunks)]

    status, body = mint(supabase_service(supabase), cookies)

    assert status == 401, body


def supabase_chunks(provider: ProviderServer, size: int = 150) -> list[str]:
    token = provider.token(aud="authenticated")
    value = supabase_value({"access_token": token, "refresh_token": "r", "user": {"id": "user-42"}})
    return [f"sb-127-auth-token.{i}={value[j:j + size]}" for i, j in enumerate(range(0, len(value), size))]


def test_a_supabase_chunk_set_with_a_gap_is_refused(supabase: ProviderServer) -> None:
    cookies = supabase_chunks(supabase)
    assert mint(supabase_service(supabase), cookies)[0] == 200
    gapped = cookies + [f"sb-127-auth-token.{len(cookies) + 1}=QUFB"]

    status, body = mint(supabase_service(supabase), gapped)

    assert status == 401 and "chunk" in body["error"]["message"], body


def test_a_whole_supabase_cookie_beside_chunks_is_refused(supabase: ProviderServer) -> None:
    """A sibling subdomain can toss in a whole cookie to shadow the chunked session: which was meant is unknowable."""
    cookies = supabase_chunks(supabase)
    whole = "".join(c.split("=", 1)[1] for c in cookies)

    status, body = mint(supabase_service(supabase), [f"sb-127-auth-token={whole}", *cookies])

    assert status == 401 and "chunk" in body["error"]["message"], body


# -- Fronts ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Bearer  {t}", "bearer {t}", "BEARER {t}", "Bearer {t} ", "  Bearer {t}"])
def test_bearer_spelling_that_rfc_6750_allows_is_accepted(provider: ProviderServer, header: str) -> None:
    token = provider.token()

    assert bearer_token(header.format(t=token)) == token
    assert verifier_for(provider).claims(bearer_token(header.format(t=token)))["sub"] == "user-42"


@pytest.mark.parametrize("header", ["Bearer {t},Bearer {t}", "Bearer {t}, Bearer {o}", "Bearer {t},", "Bearer {t} x",
                                    "Bearer {t}=", "Bearer {t}\x00", "Basic {t}", "Bearer{t}", "Bearer {t}%20"])
def test_two_joined_authorization_headers_or_a_token_with_trailing_junk_is_refused(provider: ProviderServer,
                                                                                  header: str) -> None:
    """API Gateway joins repeated headers with a comma; PyJWT's base64 decoding would skip the junk, so it is refused."""
    token, other = provider.token(), provider.token(sub="someone-else")

    with pytest.raises(UnauthenticatedError):
        verifier_for(provider).claims(bearer_token(header.format(t=token, o=other)))


def stream_service(provider: ProviderServer, **extra: str) -> Service:
    env = sign_env(BEHEST_CALLER_ISSUER=provider.issuer, BEHEST_CALLER_AUDIENCE=AUDIENCE, **extra)
    return Service.build(STREAM_FUNCTION, Settings.from_env(env), CapturedTelemetry())


def test_a_token_in_the_query_string_is_ignored_on_both_fronts(provider: ProviderServer) -> None:
    token = provider.token()
    query = {"access_token": token, "token": token, "id_token": token, "authorization": f"Bearer {token}"}
    fronts = ((stream_service(provider), "stream_chat_completion"), (cookie_service(provider, "oidc"), "token_mint"))
    for service, name in fronts:
        event = load_event(name)
        event["headers"].pop("authorization", None)
        event["queryStringParameters"] = query
        event["rawQueryString"] = "&".join(f"{k}={v}" for k, v in query.items())

        assert service.handle(event)["statusCode"] == 401


def test_verifying_functions_ignore_authorizer_claims_placed_in_the_event(provider: ProviderServer) -> None:
    forged_claims = {"sub": "admin", "iss": provider.issuer, "aud": AUDIENCE, "exp": str(int(time.time()) + 600)}
    for function, name in ((TOKEN_FUNCTION, "token_mint"), (STREAM_FUNCTION, "stream_chat_completion")):
        env = sign_env(BEHEST_CALLER_ISSUER=provider.issuer, BEHEST_CALLER_AUDIENCE=AUDIENCE,
                       BEHEST_VERIFY_CALLERS="true")
        service = Service.build(function, Settings.from_env(env), CapturedTelemetry())
        event = load_event(name)
        event["headers"].pop("authorization", None)
        event["requestContext"]["authorizer"] = {"jwt": {"claims": forged_claims, "scopes": None}}
        answer = service.handle(event)
        assert answer["statusCode"] == 401, answer


def test_without_verify_callers_a_cookie_is_never_read(provider: ProviderServer) -> None:
    env = sign_env(BEHEST_IDENTITY_PROVIDER="oidc", BEHEST_CALLER_ISSUER=provider.issuer,
                   BEHEST_CALLER_AUDIENCE=AUDIENCE, BEHEST_CALLER_COOKIE="__session",
                   BEHEST_ALLOWED_ORIGINS=APP_ORIGIN, BEHEST_VERIFY_CALLERS="false")
    service = Service.build(TOKEN_FUNCTION, Settings.from_env(env), CapturedTelemetry())

    status, body = mint(service, [f"__session={provider.token()}"])

    assert status == 401, body
    assert provider.jwks_fetches == 0 and provider.discovery_fetches == 0


# -- Configuration --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("preset", "issuer"), [
    ("cognito", "https://cognito-idp.us-east-1.amazonaws.com.evil.com/us-east-1_Abc"),
    ("cognito", "https://evil.com/cognito-idp.us-east-1.amazonaws.com/us-east-1_Abc"),
    ("cognito", "https://cognito-idp.us-east-1.amazonaws.com@evil.com/us-east-1_Abc"),
    ("firebase", "https://securetoken.google.com@evil.com/project-1"),
    ("firebase", "https://securetoken.google.com.evil.com/project-1"),
    ("firebase", "http://securetoken.google.com/project-1"),
    ("entra", "https://login.microsoftonline.com.evil/8eaef023-2b34-4da1-9baa-8bc8c9d6a490/v2.0"),
    ("entra", "https://login.microsoftonline.com:8443@evil/8eaef023-2b34-4da1-9baa-8bc8c9d6a490/v2.0"),
    ("google", "https://accounts.google.com.evil.com"),
    ("google", "https://accounts.google.com/"),
    ("google", "https://accounts.google.com#x"),
    ("google", "https://accounts.google.com?x"),
    ("cognito", "https://203.0.113.7/us-east-1_Abc"),
    ("google", "https://[2001:db8::1]"),
    ("oidc", "https://user@issuer.example.com"),
    ("oidc", "http://issuer.example.com"),
    ("oidc", "http://127.0.0.1.nip.io"),
])
def test_look_alike_issuers_are_configuration_errors(preset: str, issuer: str) -> None:
    env = sign_env(BEHEST_IDENTITY_PROVIDER=preset, BEHEST_CALLER_ISSUER=issuer, BEHEST_CALLER_AUDIENCE="app")
    with pytest.raises(ConfigurationError) as caught:
        CallerTokenVerifier.from_settings(Settings.from_env(env).caller)
    assert "BEHEST_CALLER_ISSUER" in caught.value.message


@pytest.mark.parametrize("jwks_url", ["http://keys.example.com/jwks", "http://10.0.0.1/jwks", "http://169.254.169.254/",
                                      "https://user@keys.example.com/jwks", "ftp://127.0.0.1/jwks"])
def test_a_jwks_url_override_that_is_not_https_is_a_configuration_error(jwks_url: str) -> None:
    env = sign_env(BEHEST_CALLER_ISSUER="https://issuer.example.com", BEHEST_CALLER_AUDIENCE="app",
                   BEHEST_CALLER_JWKS_URL=jwks_url)
    with pytest.raises(ConfigurationError):
        CallerTokenVerifier.from_settings(Settings.from_env(env).caller)


@pytest.mark.parametrize("origins", ["null", "https://app.example.com/", "https://App.example.com",
                                     "app.example.com", "https://app.example.com/path", "https://*.example.com",
                                     "https://app.example.com:443", "https://user@app.example.com"])
def test_allowed_origins_that_a_browser_never_sends_are_a_configuration_error_when_a_cookie_is_read(
    origins: str,
) -> None:
    """A browser sends a serialized origin: lower-case scheme://host[:port]. "null" is any sandboxed page's."""
    env = sign_env(BEHEST_IDENTITY_PROVIDER="clerk", BEHEST_CALLER_ISSUER="https://clerk.example.com",
                   BEHEST_ALLOWED_ORIGINS=f"https://ok.example.com,{origins}")
    with pytest.raises(ConfigurationError) as caught:
        CallerTokenVerifier.from_settings(Settings.from_env(env).caller)
    assert "BEHEST_ALLOWED_ORIGINS" in caught.value.message


# -- Logs -----------------------------------------------------------------------------------------------------------


def test_no_token_cookie_or_secret_reaches_a_log_line_on_any_refusal(provider: ProviderServer) -> None:
    secret = "the legacy secret of this project, 32+ bytes"
    token = provider.token(aud="wrong")
    telemetry = CapturedTelemetry()
    env = sign_env(BEHEST_IDENTITY_PROVIDER="oidc", BEHEST_CALLER_ISSUER=provider.issuer,
                   BEHEST_CALLER_AUDIENCE=AUDIENCE, BEHEST_CALLER_COOKIE="__session",
                   BEHEST_ALLOWED_ORIGINS=APP_ORIGIN, BEHEST_VERIFY_CALLERS="true")
    service = Service.build(TOKEN_FUNCTION, Settings.from_env(env), telemetry)
    for cookies, headers in (([f"__session={token}"], {}), ([f"__session={token}"], {"origin": "https://evil"}),
                             ([], {"authorization": f"Bearer {token}"}), ([], {"authorization": f"Bearer {secret}"}),
                             ([f"__session={token}", f"__session={token}"], {}),
                             ([], {"authorization": f"Bearer {token},Bearer {token}"})):
        status, _ = mint(service, cookies, headers)
        assert status in (401, 403)

    logged = telemetry.text()
    assert "request refused" in logged
    for part in (token, *token.split("."), secret):
        assert part not in logged


def test_every_refusal_above_is_an_error_of_the_tree_not_an_escape(provider: ProviderServer) -> None:
    """A quick sweep of garbage through the verifier: only the error tree's refusals come out."""
    verifier = verifier_for(provider)
    garbage = ["a.b.c", "..", "e30.e30.", f"{segment([1])}.{segment({})}.x", f"{segment({'alg': 'RS256'})}.!!.x",
               f"{segment({'alg': 'RS256', 'kid': 'rsa'})}.{b64(b'[1,2]')}.", f"{segment('str')}.e30.e30",
               f"{b64(b'{' * 5000)}.e30.e30", "\u00e9.\u00e9.\u00e9", "x" * (caller_token.MAX_TOKEN_CHARS + 1)]
    for token in garbage:
        with pytest.raises(BehestLambdaError) as caught:
            verifier.claims(token)
        assert caught.value.status == 401


@pytest.mark.parametrize("origin", ["http://localhost:3000", "https://app.example.com:8443", "http://127.0.0.1:5173",
                                    "https://xn--bcher-kva.example"])
def test_origins_as_browsers_send_them_are_accepted_for_a_cookie(origin: str) -> None:
    env = sign_env(BEHEST_IDENTITY_PROVIDER="clerk", BEHEST_CALLER_ISSUER="https://clerk.example.com",
                   BEHEST_ALLOWED_ORIGINS=f"https://ok.example.com,{origin}")

    assert CallerTokenVerifier.from_settings(Settings.from_env(env).caller).authorized_parties >= {origin}


@pytest.mark.parametrize(("preset", "issuer"), [
    ("cognito", "https://COGNITO-IDP.us-east-1.amazonaws.com/us-east-1_Abc"),
    ("auth0", "https://Tenant.auth0.com/"),
    ("google", "HTTPS://accounts.google.com"),
    ("supabase", "https://ABCDEF.supabase.co/auth/v1"),
])
def test_a_preset_issuer_with_upper_case_in_its_scheme_or_host_is_a_configuration_error(preset: str,
                                                                                         issuer: str) -> None:
    """The providers write iss in lower case and iss is compared exactly: such an issuer would refuse everyone."""
    env = sign_env(BEHEST_IDENTITY_PROVIDER=preset, BEHEST_CALLER_ISSUER=issuer, BEHEST_CALLER_AUDIENCE="app")
    with pytest.raises(ConfigurationError) as caught:
        CallerTokenVerifier.from_settings(Settings.from_env(env).caller)
    assert "BEHEST_CALLER_ISSUER" in caught.value.message


@pytest.mark.parametrize("entry", [{"kty": "EC", "crv": ["P-256"]}, {"kty": "OKP", "crv": {"name": "Ed25519"}},
                                   {"kty": ["RSA"]}, {"kty": "RSA", "alg": ["RS256"]}, {"kty": "RSA", "n": 5, "e": []},
                                   {"kty": "EC", "crv": "P-256", "x": None, "y": 7}])
def test_a_jwks_entry_with_fields_of_the_wrong_json_type_is_skipped_not_a_500(provider: ProviderServer,
                                                                              entry: dict[str, Any]) -> None:
    provider.keys = [{**entry, "kid": "odd", "use": "sig"}, jwk("rsa")]
    service = cookie_service(provider, "oidc")

    status, body = mint(service, [], {"authorization": f"Bearer {provider.token()}"})

    assert status == 200, body
    status, body = mint(service, [], {"authorization": f"Bearer {provider.token(kid='odd')}"})
    assert status == 401, body

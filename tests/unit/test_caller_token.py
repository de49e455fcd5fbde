"""The streaming function's own identity-token check: what API Gateway's JWT authorizer does, RS256 pinned.

Adversarial tokens are forged with PyJWT (and by hand where PyJWT refuses to forge). The JWKS is
served by a loopback server that counts its fetches, so caching is observed, not assumed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import ThreadingHTTPServer
from typing import Any, Iterator, Optional

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from behest_lambda import caller_token
from behest_lambda.caller_token import CallerTokenVerifier, JwksCache, bearer_token
from behest_lambda.errors import ConfigurationError, IdentityKeysUnavailableError, UnauthenticatedError
from behest_lambda.settings import Settings
from tests.json_server import JsonHandler
from tests.support import private_key, sign_env

ISSUER = "https://issuer.example.com/pool-1"
AUDIENCE = "app-client-1"
KID = "idp-key-1"
ROTATED_KID = "idp-key-2"


def now() -> int:
    """PyJWT checks exp/nbf/iat against the real clock: tokens are made relative to it."""
    return int(time.time())


class JwksServer:
    """Serves a JWKS on loopback and counts the fetches; can be made slow or failing."""

    def __init__(self) -> None:
        self.keys: dict[str, Any] = {KID: private_key("tenant").public_key()}
        self.fetches = 0
        self.delay = 0.0
        self.status = 200
        self._stop = threading.Event()
        server = self

        class Handler(JsonHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.fetches += 1
                if server.delay:
                    server._stop.wait(server.delay)
                self.send_json(server.status, server.document())

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def document(self) -> dict[str, Any]:
        entries = []
        for kid, key in self.keys.items():
            jwk = json.loads(RSAAlgorithm.to_jwk(key))
            jwk.update(kid=kid, use="sig", alg="RS256")
            entries.append(jwk)
        return {"keys": entries}

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def jwks() -> Iterator[JwksServer]:
    server = JwksServer()
    yield server
    server.stop()


class Clocks:
    """The cache's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.mono = 1000.0

    def advance(self, seconds: float) -> None:
        self.mono += seconds


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


def make_verifier(jwks: JwksServer, clocks: Clocks, *, ttl: float = 3600, timeout: float = 2.0,
                  audiences: tuple[str, ...] = (AUDIENCE,), leeway: float = caller_token.CLOCK_LEEWAY_SECONDS,
                  ) -> CallerTokenVerifier:
    keys = JwksCache(jwks.url, ttl, timeout=timeout, clock=lambda: clocks.mono)
    return CallerTokenVerifier(ISSUER, audiences, keys, leeway=leeway)


@pytest.fixture
def verifier(jwks: JwksServer, clocks: Clocks) -> CallerTokenVerifier:
    return make_verifier(jwks, clocks)


def claims(**overrides: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "user-42", "iat": now(), "nbf": now(),
                                "exp": now() + 3600}
    document.update(overrides)
    return {k: v for k, v in document.items() if v is not None}


def token(key: Any = None, kid: Optional[str] = KID, algorithm: str = "RS256", **overrides: Any) -> str:
    headers = {"kid": kid} if kid is not None else {}
    return jwt.encode(claims(**overrides), key or private_key("tenant"), algorithm=algorithm, headers=headers)


def segment(document: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(document).encode()).rstrip(b"=").decode()


def rs256_signed(header: dict[str, Any], payload: str, key: Any = None) -> str:
    """A compact JWS with `header`, signed RS256 by `key` whatever the header claims."""
    signing_input = f"{segment(header)}.{payload}"
    signature = jwt.algorithms.RSAAlgorithm(jwt.algorithms.RSAAlgorithm.SHA256).sign(
        signing_input.encode(), key or private_key("tenant")
    )
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def assert_refused(verifier: CallerTokenVerifier, value: Any, reason: str = "") -> None:
    with pytest.raises(UnauthenticatedError) as caught:
        verifier.claims(value)
    assert caught.value.status == 401
    assert reason in caught.value.message


def test_a_valid_token_is_accepted_and_its_claims_returned(verifier: CallerTokenVerifier) -> None:
    verified = verifier.claims(token())

    assert verified["sub"] == "user-42"
    assert verified["aud"] == AUDIENCE


def test_alg_none_is_refused(verifier: CallerTokenVerifier) -> None:
    unsigned = jwt.encode(claims(), None, algorithm="none", headers={"kid": KID})

    assert_refused(verifier, unsigned, "algorithm 'none' is not accepted")


def test_hs256_with_an_attackers_secret_is_refused(verifier: CallerTokenVerifier) -> None:
    forged = token("an attacker's own secret, 32+ bytes long", algorithm="HS256")

    assert_refused(verifier, forged, "algorithm 'HS256' is not accepted")


@pytest.mark.parametrize("secret_form", ["pem", "jwk"])
def test_hs256_keyed_with_the_providers_public_key_is_refused(verifier: CallerTokenVerifier, jwks: JwksServer,
                                                              secret_form: str) -> None:
    # The key-confusion attack: HMAC keyed with the public key a naive verifier would hand to HS256.
    # PyJWT refuses to forge it, so it is built by hand.
    public = jwks.keys[KID]
    if secret_form == "pem":
        secret = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    else:
        secret = json.dumps(jwks.document()["keys"][0]).encode()
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT', 'kid': KID})}.{segment(claims())}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    forged = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"

    assert_refused(verifier, forged, "algorithm 'HS256' is not accepted")


@pytest.mark.parametrize(("alg", "reason"), [
    ("RS384", "does not match the identity provider's key"), ("RS512", "does not match"), ("PS256", "does not match"),
    ("ES256", "does not match"), ("none", "is not accepted"), ("None", "is not accepted"),
    ("rs256", "is not accepted"), ("", "names no algorithm"),
])
def test_a_genuine_rs256_signature_under_another_alg_header_is_refused(verifier: CallerTokenVerifier,
                                                                       alg: str, reason: str) -> None:
    # The JWKS key says alg RS256: no other algorithm may be verified with it, even of the RSA family.
    forged = rs256_signed({"alg": alg, "kid": KID}, segment(claims()))

    assert_refused(verifier, forged, reason)


def test_a_token_signed_by_another_key_under_the_providers_kid_is_refused(verifier: CallerTokenVerifier) -> None:
    assert_refused(verifier, token(private_key("other")), "signature does not verify")


def test_an_embedded_jwk_header_is_not_trusted(verifier: CallerTokenVerifier) -> None:
    attacker = private_key("other")
    embedded = json.loads(RSAAlgorithm.to_jwk(attacker.public_key()))
    forged = rs256_signed({"alg": "RS256", "kid": "attacker", "jwk": embedded}, segment(claims()), attacker)

    assert_refused(verifier, forged, "not signed by a key of the identity provider")


def test_an_unknown_kid_refetches_the_keys_once_then_is_refused(verifier: CallerTokenVerifier, jwks: JwksServer,
                                                                clocks: Clocks) -> None:
    verifier.claims(token())
    clocks.advance(caller_token.UNKNOWN_KID_REFETCH_INTERVAL + 1)

    assert_refused(verifier, token(private_key("tenant_rotated"), kid=ROTATED_KID), "not signed by a key")
    assert jwks.fetches == 2
    assert_refused(verifier, token(private_key("tenant_rotated"), kid=ROTATED_KID), "not signed by a key")
    assert jwks.fetches == 2  # made-up kids cannot make every request a fetch


def test_a_key_rotated_in_at_the_provider_is_picked_up(verifier: CallerTokenVerifier, jwks: JwksServer,
                                                       clocks: Clocks) -> None:
    verifier.claims(token())
    jwks.keys[ROTATED_KID] = private_key("tenant_rotated").public_key()
    clocks.advance(caller_token.UNKNOWN_KID_REFETCH_INTERVAL + 1)

    verified = verifier.claims(token(private_key("tenant_rotated"), kid=ROTATED_KID))

    assert verified["sub"] == "user-42"
    assert jwks.fetches == 2


def test_a_token_without_a_kid_is_refused(verifier: CallerTokenVerifier) -> None:
    assert_refused(verifier, token(kid=None), "no key id")


@pytest.mark.parametrize("part", ["payload", "signature", "header"])
def test_a_tampered_token_is_refused(verifier: CallerTokenVerifier, part: str) -> None:
    header, payload, signature = token().split(".")
    if part == "payload":
        payload = segment(claims(sub="admin"))
    elif part == "signature":
        signature = ("A" if signature[0] != "A" else "B") + signature[1:]
    else:
        header = segment({"alg": "RS256", "kid": KID, "typ": "at+jwt"})

    assert_refused(verifier, f"{header}.{payload}.{signature}", "signature does not verify")


def test_an_expired_token_is_refused(verifier: CallerTokenVerifier) -> None:
    assert_refused(verifier, token(exp=now() - caller_token.CLOCK_LEEWAY_SECONDS - 1), "expired")


def test_a_token_that_expired_within_a_configured_leeway_is_accepted(jwks: JwksServer, clocks: Clocks) -> None:
    verifier = make_verifier(jwks, clocks, leeway=30)

    assert verifier.claims(token(exp=now() - 20))["sub"] == "user-42"
    assert_refused(verifier, token(exp=now() - 40), "expired")


def test_the_default_leeway_is_the_local_authorizers(jwks: JwksServer, clocks: Clocks) -> None:
    from devstack.local_api import CLOCK_LEEWAY_SECONDS

    assert caller_token.CLOCK_LEEWAY_SECONDS == CLOCK_LEEWAY_SECONDS == 0
    assert_refused(make_verifier(jwks, clocks), token(exp=now() - 2), "expired")


@pytest.mark.parametrize("name", ["nbf", "iat"])
def test_a_token_not_valid_yet_is_refused(verifier: CallerTokenVerifier, name: str) -> None:
    assert_refused(verifier, token(**{name: now() + caller_token.CLOCK_LEEWAY_SECONDS + 60}), "not valid yet")


def test_a_clock_skew_on_nbf_within_a_configured_leeway_is_tolerated(jwks: JwksServer, clocks: Clocks) -> None:
    verifier = make_verifier(jwks, clocks, leeway=30)

    assert verifier.claims(token(nbf=now() + 10, iat=now() + 10))["sub"] == "user-42"


@pytest.mark.parametrize("issuer", ["https://evil.example.com/pool-1", ISSUER + "/", ISSUER.upper(), None])
def test_another_issuer_is_refused(verifier: CallerTokenVerifier, issuer: Optional[str]) -> None:
    assert_refused(verifier, token(iss=issuer), "another issuer")


@pytest.mark.parametrize("audience", ["another-app", ["another-app", "third-app"], [], None, 42])
def test_another_audience_is_refused(verifier: CallerTokenVerifier, audience: Any) -> None:
    assert_refused(verifier, token(aud=audience), "another audience")


def test_a_list_audience_that_contains_ours_is_accepted(verifier: CallerTokenVerifier) -> None:
    assert verifier.claims(token(aud=["another-app", AUDIENCE]))["sub"] == "user-42"


def test_any_of_several_configured_audiences_is_accepted(jwks: JwksServer, clocks: Clocks) -> None:
    verifier = make_verifier(jwks, clocks, audiences=("web-client", AUDIENCE))

    assert verifier.claims(token())["sub"] == "user-42"


def test_a_cognito_access_token_matches_on_client_id(verifier: CallerTokenVerifier) -> None:
    assert verifier.claims(token(aud=None, client_id=AUDIENCE, token_use="access"))["client_id"] == AUDIENCE
    assert_refused(verifier, token(aud=None, client_id="another-app"), "another audience")


def test_client_id_does_not_rescue_a_wrong_aud(verifier: CallerTokenVerifier) -> None:
    assert_refused(verifier, token(aud="another-app", client_id=AUDIENCE), "another audience")


@pytest.mark.parametrize(("expiry", "reason"), [(None, "no expiry"), ("1900000000", "no expiry"), (True, "expired"),
                                               (float("nan"), "malformed")])
def test_a_token_without_a_numeric_expiry_is_refused(verifier: CallerTokenVerifier, expiry: Any, reason: str) -> None:
    payload = segment({**claims(), "exp": expiry} if expiry is not None else {k: v for k, v in claims().items()
                                                                              if k != "exp"})
    forged = rs256_signed({"alg": "RS256", "kid": KID}, payload)

    assert_refused(verifier, forged, reason)


def test_a_key_under_2048_bits_in_the_jwks_is_not_used(verifier: CallerTokenVerifier, jwks: JwksServer) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    jwks.keys["weak"] = weak.public_key()

    # PyJWT warns about a weak key (warnings are errors here), so the token is signed by hand.
    assert_refused(verifier, rs256_signed({"alg": "RS256", "kid": "weak"}, segment(claims()), weak), "not signed by a key")


@pytest.mark.parametrize(
    "value",
    ["", "abc", "a.b", "a.b.c.d", "....", "eyJ!.eyJ.sig", "e.e.e", "a" * (caller_token.MAX_TOKEN_CHARS + 1),
     f"{segment([1, 2])}.{segment(claims())}.c2ln", f"{segment({'alg': 'RS256', 'kid': KID})}.bm90IGpzb24.c2ln",
     None, b"eyJ.eyJ.sig", 42],
)
def test_malformed_tokens_are_refused(verifier: CallerTokenVerifier, jwks: JwksServer, value: Any) -> None:
    assert_refused(verifier, value)


def test_the_jwks_is_fetched_once_per_ttl(jwks: JwksServer, clocks: Clocks) -> None:
    verifier = make_verifier(jwks, clocks, ttl=600)
    for _ in range(3):
        verifier.claims(token())
    assert jwks.fetches == 1

    clocks.advance(599)
    verifier.claims(token())
    assert jwks.fetches == 1

    clocks.advance(2)
    verifier.claims(token())
    assert jwks.fetches == 2


def test_a_slow_jwks_url_is_cut_at_the_fetch_timeout(jwks: JwksServer, clocks: Clocks) -> None:
    jwks.delay = 5.0
    verifier = make_verifier(jwks, clocks, timeout=0.2)
    started = time.monotonic()

    with pytest.raises(IdentityKeysUnavailableError) as caught:
        verifier.claims(token())

    assert time.monotonic() - started < 2.0
    assert caught.value.status == 503
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1


def test_a_failing_refresh_keeps_the_held_keys_for_the_grace_period(jwks: JwksServer, clocks: Clocks) -> None:
    verifier = make_verifier(jwks, clocks, ttl=600)
    verifier.claims(token())
    jwks.status = 500

    clocks.advance(601)
    assert verifier.claims(token(exp=now() + 7200))["sub"] == "user-42"
    assert jwks.fetches == 2

    clocks.advance(caller_token.GRACE_PERIOD)
    with pytest.raises(IdentityKeysUnavailableError):
        verifier.claims(token(exp=now() + 7200))


def test_after_a_failed_fetch_the_next_waits_for_the_retry_interval(jwks: JwksServer, clocks: Clocks) -> None:
    jwks.status = 503
    verifier = make_verifier(jwks, clocks)
    for _ in range(3):
        with pytest.raises(IdentityKeysUnavailableError):
            verifier.claims(token())
    assert jwks.fetches == 1

    jwks.status = 200
    clocks.advance(caller_token.RETRY_INTERVAL)
    assert verifier.claims(token())["sub"] == "user-42"
    assert jwks.fetches == 2


@pytest.mark.parametrize(
    ("header", "expected"),
    [("Bearer abc.def.ghi", "abc.def.ghi"), ("bearer  abc.def.ghi ", "abc.def.ghi"), ("BEARER x", "x")],
)
def test_the_bearer_token_is_taken_from_the_authorization_header(header: str, expected: str) -> None:
    assert bearer_token(header) == expected


@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer   ", "Basic dXNlcjpwdw==", "abc.def.ghi"])
def test_an_authorization_header_without_a_bearer_token_is_a_401(header: Optional[str]) -> None:
    with pytest.raises(UnauthenticatedError):
        bearer_token(header)


def test_the_streaming_settings_fail_by_name_when_the_caller_issuer_or_audience_is_missing() -> None:
    with pytest.raises(ConfigurationError) as caught:
        CallerTokenVerifier.from_settings(Settings.from_env(sign_env()).caller)

    assert "BEHEST_CALLER_ISSUER" in caught.value.message
    assert "BEHEST_CALLER_AUDIENCE" in caught.value.message


def test_without_a_jwks_url_the_keys_are_found_through_the_issuers_discovery_document() -> None:
    settings = Settings.from_env(sign_env(BEHEST_CALLER_ISSUER="https://tenant.auth0.com/",
                                          BEHEST_CALLER_AUDIENCE="api-a, api-b", BEHEST_JWKS_CACHE_TTL="900"))
    verifier = CallerTokenVerifier.from_settings(settings.caller)

    # Not a guessed issuer + /.well-known/jwks.json: Okta, Entra, Google, Firebase and Keycloak publish elsewhere.
    assert settings.caller.jwks_url is None
    assert caller_token.discovery_url(verifier.issuer) == "https://tenant.auth0.com/.well-known/openid-configuration"
    assert verifier.issuer == "https://tenant.auth0.com/"  # compared exactly, trailing slash and all
    assert verifier.audiences == {"api-a", "api-b"}
    assert settings.caller.jwks_cache_ttl == 900


def test_bad_caller_urls_are_configuration_errors() -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env(sign_env(BEHEST_CALLER_ISSUER="issuer.example.com", BEHEST_CALLER_JWKS_URL="file:///etc/x"))

    assert "BEHEST_CALLER_ISSUER" in caught.value.message
    assert "BEHEST_CALLER_JWKS_URL" in caught.value.message

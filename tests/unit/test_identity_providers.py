"""The provider presets: each provider's user-id claim, issuer shape, audience rule and legacy secret, as documented.

Tokens are signed by a loopback provider (provider_fake.py) shaped as each provider's documentation
describes its own; the page is cited where a test imitates it.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any, Iterator

import jwt
import pytest

from behest_lambda.app import Service
from behest_lambda.caller_token import CallerTokenVerifier, JwksCache
from behest_lambda.errors import ConfigurationError, UnauthenticatedError
from behest_lambda.identity import claim_at, identity_from_claims
from behest_lambda.key_source import SecretKeySource
from behest_lambda.providers import PROVIDERS, is_loopback
from behest_lambda.routes import RELAY_FUNCTION, TOKEN_FUNCTION
from behest_lambda.settings import Settings
from tests.support import ROOT, CapturedTelemetry, key_pem, load_event, sign_env
from tests.unit.provider_fake import AUDIENCE, ProviderServer, serve

APP_ORIGIN = "https://app.example.com"
LEGACY_SECRET = "super-secret-jwt-token-with-at-least-32-characters-long"


def settings(**env: str) -> Settings:
    return Settings.from_env(sign_env(**env))


@pytest.mark.parametrize(("preset", "claim"), [
    # https://developer.okta.com/docs/api/openapi/okta-oauth/guides/overview/ : uid is the user's id, sub the login.
    ("okta", "uid"),
    # https://learn.microsoft.com/en-us/entra/identity-platform/id-token-claims-reference : oid is the user across apps.
    ("entra", "oid"),
    ("oidc", "sub"), ("cognito", "sub"), ("auth0", "sub"), ("clerk", "sub"), ("supabase", "sub"),
    ("firebase", "sub"), ("google", "sub"), ("keycloak", "sub"),
])
def test_each_preset_names_its_providers_stable_user_id_claim(preset: str, claim: str) -> None:
    assert settings(BEHEST_IDENTITY_PROVIDER=preset).identity.user_claim == claim


def test_behest_user_claim_overrides_the_preset() -> None:
    assert settings(BEHEST_IDENTITY_PROVIDER="okta", BEHEST_USER_CLAIM="email").identity.user_claim == "email"
    assert settings(BEHEST_IDENTITY_PROVIDER="okta", BEHEST_USER_CLAIM="").identity.user_claim == "uid"


def test_an_unknown_preset_is_a_configuration_error_naming_every_preset() -> None:
    with pytest.raises(ConfigurationError) as caught:
        settings(BEHEST_IDENTITY_PROVIDER="azure")

    assert "BEHEST_IDENTITY_PROVIDER must be one of " + ", ".join(PROVIDERS) in caught.value.message
    assert caught.value.message.count("BEHEST_IDENTITY_PROVIDER") == 1


@pytest.mark.parametrize(("preset", "issuer"), [
    ("cognito", "https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_AbC123"),
    ("cognito", "http://127.0.0.1:9/us-east-1_AbC123"),
    ("auth0", "https://tenant.eu.auth0.com/"), ("auth0", "https://login.example.com/"),
    ("clerk", "https://clerk.example.com"), ("clerk", "https://humble-ant-12.clerk.accounts.dev"),
    ("supabase", "https://abcdefghijklmnop.supabase.co/auth/v1"), ("supabase", "http://localhost:54321/auth/v1"),
    ("firebase", "https://securetoken.google.com/my-project-1"), ("firebase", "http://127.0.0.1:9099/my-project-1"),
    ("okta", "https://example.okta.com/oauth2/default"), ("okta", "https://id.example.com/oauth2/aus1a2b3c4"),
    ("entra", "https://login.microsoftonline.com/9188040d-6c67-4c5b-b112-36a304b66dad/v2.0"),
    ("google", "https://accounts.google.com"),
    ("keycloak", "https://sso.example.com/realms/app"), ("keycloak", "https://sso.example.com/auth/realms/app"),
    ("oidc", "https://issuer.example.com/anything/at/all"), ("oidc", "http://[::1]:8080"),
])
def test_an_issuer_of_the_presets_shape_is_accepted(preset: str, issuer: str) -> None:
    assert PROVIDERS[preset].issuer_problem(issuer) is None


@pytest.mark.parametrize(("preset", "issuer", "expected"), [
    ("auth0", "https://tenant.auth0.com", "https://<tenant>.auth0.com/ (with the trailing /)"),
    ("cognito", "https://cognito-idp.us-east-1.example.com/us-east-1_AbC", "https://cognito-idp.<region>.amazonaws.com/"),
    ("supabase", "https://abcdefghijklmnop.supabase.co", "https://<project ref>.supabase.co/auth/v1"),
    ("okta", "https://example.okta.com", "https://<org>.okta.com/oauth2/<authorization server id>"),
    ("entra", "https://sts.windows.net/9188040d-6c67-4c5b-b112-36a304b66dad/", "/<tenant id>/v2.0"),
    ("google", "https://accounts.google.com/o/oauth2", "https://accounts.google.com"),
    ("firebase", "https://securetoken.google.com/a/b", "https://securetoken.google.com/<project id>"),
    ("keycloak", "https://sso.example.com/app", "https://<host>/realms/<realm>"),
    ("clerk", "https://clerk.example.com/v1", "https://<your Frontend API host> (no path"),
    # The iss of their tokens has no trailing slash, and the issuer is compared exactly.
    ("clerk", "https://clerk.example.com/", "(no path, no trailing /)"),
    ("google", "https://accounts.google.com/", "https://accounts.google.com (no trailing /)"),
    ("oidc", "http://issuer.example.com", "https://<your issuer>"),
    ("oidc", "http://127.0.0.2.example.com", "https://<your issuer>"),
    ("oidc", "https://issuer.example.com/?x=1", "https://<your issuer>"),
])
def test_an_issuer_of_another_shape_is_a_configuration_error_naming_the_expected_form(
    preset: str, issuer: str, expected: str
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        CallerTokenVerifier.from_settings(settings(BEHEST_IDENTITY_PROVIDER=preset, BEHEST_CALLER_ISSUER=issuer,
                                                   BEHEST_CALLER_AUDIENCE="app", BEHEST_ALLOWED_ORIGINS=APP_ORIGIN)
                                          .caller)

    assert expected in caught.value.message
    assert "BEHEST_CALLER_ISSUER" in caught.value.message


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.255.0.9", True), ("localhost", True),
                                                ("::1", True), ("127.0.0.1.example.com", False), ("128.0.0.1", False),
                                                ("127.0.0.256", False), ("0.0.0.0", False), ("example.com", False)])
def test_only_loopback_hosts_count_as_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_supabases_cookie_is_named_after_the_project_ref_as_supabase_js_names_its_storage_key() -> None:
    """supabase-js's default storage key is sb-<first label of the project URL's host>-auth-token.

    https://supabase.com/docs/guides/auth/server-side/creating-a-client
    """
    supabase = PROVIDERS["supabase"]

    assert supabase.cookie_name("https://abcdefghijklmnop.supabase.co/auth/v1") == "sb-abcdefghijklmnop-auth-token"
    assert supabase.cookie_name("http://127.0.0.1:54321/auth/v1") == "sb-127-auth-token"
    assert supabase.cookie_name("https://x.supabase.co/auth/v1", "my-cookie") == "my-cookie"
    assert PROVIDERS["clerk"].cookie_name("https://clerk.example.com") == "__session"
    assert PROVIDERS["okta"].cookie_name("https://example.okta.com/oauth2/default") is None


def test_a_preset_with_a_cookie_needs_the_allowed_origins() -> None:
    with pytest.raises(ConfigurationError) as caught:
        CallerTokenVerifier.from_settings(settings(BEHEST_IDENTITY_PROVIDER="supabase",
                                                   BEHEST_CALLER_ISSUER="https://abc.supabase.co/auth/v1",
                                                   BEHEST_CALLER_AUDIENCE="authenticated").caller)

    assert "BEHEST_ALLOWED_ORIGINS is required" in caught.value.message


# Clerk: session tokens carry no aud; azp is the origin that asked, checked against the authorized parties.
# https://clerk.com/docs/guides/sessions/manual-jwt-verification


@pytest.fixture
def clerk() -> Iterator[ProviderServer]:
    yield from serve("")


def clerk_verifier(provider: ProviderServer, audiences: tuple[str, ...] = ()) -> CallerTokenVerifier:
    keys = JwksCache(None, 3600, issuer=provider.issuer)
    return CallerTokenVerifier(provider.issuer, audiences, keys, provider=PROVIDERS["clerk"],
                               authorized_parties=(APP_ORIGIN, "http://localhost:3000"))


def test_a_clerk_token_without_aud_is_accepted_for_an_authorized_party(clerk: ProviderServer) -> None:
    token = clerk.token(aud=None, azp=APP_ORIGIN, sub="user_2abc", sid="sess_1", v=2)

    assert clerk_verifier(clerk).claims(token)["sub"] == "user_2abc"


@pytest.mark.parametrize(("claims", "reason"), [
    ({"aud": None, "azp": "https://evil.example.com"}, "another party (azp)"),
    ({"aud": None, "azp": None}, "neither an audience nor an authorized party"),
    ({"aud": None, "azp": ["https://app.example.com"]}, "another party (azp)"),
    ({"aud": "another-app", "azp": APP_ORIGIN}, "another audience"),
    ({"aud": AUDIENCE, "azp": "https://evil.example.com"}, "another party (azp)"),
    ({"aud": "another-app", "azp": "https://evil.example.com"}, "another party"),
])
def test_a_clerk_token_whose_azp_or_aud_fails_is_refused(clerk: ProviderServer, claims: dict[str, Any],
                                                       reason: str) -> None:
    with pytest.raises(UnauthenticatedError) as caught:
        clerk_verifier(clerk, audiences=(AUDIENCE,)).claims(clerk.token(**claims))

    assert reason in caught.value.message


def test_a_clerk_token_with_a_configured_aud_is_accepted(clerk: ProviderServer) -> None:
    assert clerk_verifier(clerk, audiences=(AUDIENCE,)).claims(clerk.token(azp=APP_ORIGIN))["aud"] == AUDIENCE


def test_clerks_authorized_parties_default_to_the_allowed_origins() -> None:
    caller = settings(BEHEST_IDENTITY_PROVIDER="clerk", BEHEST_ALLOWED_ORIGINS=f"{APP_ORIGIN}, http://localhost:3000")
    assert caller.caller.authorized_parties == (APP_ORIGIN, "http://localhost:3000")

    given = settings(BEHEST_IDENTITY_PROVIDER="clerk", BEHEST_ALLOWED_ORIGINS=APP_ORIGIN,
                     BEHEST_CALLER_AUTHORIZED_PARTIES="https://admin.example.com")
    assert given.caller.authorized_parties == ("https://admin.example.com",)


def test_clerk_needs_authorized_parties_rather_than_an_audience() -> None:
    with pytest.raises(ConfigurationError) as caught:
        CallerTokenVerifier.from_settings(settings(BEHEST_IDENTITY_PROVIDER="clerk",
                                                   BEHEST_CALLER_ISSUER="https://clerk.example.com").caller)

    assert "BEHEST_CALLER_AUTHORIZED_PARTIES is required" in caught.value.message
    assert "BEHEST_CALLER_AUDIENCE" not in caught.value.message


# Supabase's legacy JWT secret: HS256, accepted only with the secret from the key secret.
# https://supabase.com/docs/guides/auth/signing-keys


@pytest.fixture
def supabase() -> Iterator[ProviderServer]:
    yield from serve("/auth/v1")


def secret_service(provider: ProviderServer, preset: str, secret: dict[str, str], **extra: str) -> Service:
    env = {"BEHEST_KEY_SECRET_ID": "behest/key", "BEHEST_IDENTITY_PROVIDER": preset,
           "BEHEST_CALLER_ISSUER": provider.issuer, "BEHEST_CALLER_AUDIENCE": "authenticated",
           "BEHEST_ALLOWED_ORIGINS": APP_ORIGIN, "BEHEST_VERIFY_CALLERS": "true", "BEHEST_SECRETS_EXTENSION": "off",
           **extra}
    telemetry = CapturedTelemetry()
    config = Settings.from_env(env)
    document = json.dumps({"BEHEST_KEY": "behest_pk_" + key_pem("tenant"), "BEHEST_KID": "sk_test_primary",
                           "BEHEST_TENANT_ID": "tenant-test", "BEHEST_PROJECT_ID": "project-test", **secret})
    source = SecretKeySource(config.key, telemetry, fetch=lambda secret_id: document)
    return Service.build(TOKEN_FUNCTION, config, telemetry, key_source=source)


def mint_with(service: Service, token: str) -> tuple[int, dict[str, Any]]:
    event = load_event("token_mint_session_cookie")
    event["cookies"] = []
    event["headers"]["authorization"] = f"Bearer {token}"
    answer = service.handle(event)
    return answer["statusCode"], json.loads(answer["body"])


def legacy_token(provider: ProviderServer, secret: str = LEGACY_SECRET, **claims: Any) -> str:
    # Supabase's legacy tokens: HS256 with the project's JWT secret, no kid.
    return jwt.encode(provider.claims(aud="authenticated", role="authenticated", **claims), secret, algorithm="HS256")


def test_a_supabase_legacy_hs256_token_verifies_with_the_secret_from_the_key_secret(supabase: ProviderServer) -> None:
    service = secret_service(supabase, "supabase", {"AUTH_JWT_SECRET": LEGACY_SECRET})

    status, body = mint_with(service, legacy_token(supabase, sub="2a8f-uuid"))

    assert status == 200, body
    assert supabase.jwks_fetches == 0  # the secret, not the JWKS
    status, _ = mint_with(service, legacy_token(supabase, secret="another secret of at least 32 bytes, wrong"))
    assert status == 401


def test_hs256_is_refused_when_the_key_secret_holds_no_legacy_secret(supabase: ProviderServer) -> None:
    status, body = mint_with(secret_service(supabase, "supabase", {}), legacy_token(supabase))

    assert status == 401
    assert "AUTH_JWT_SECRET" in body["error"]["message"]


def test_hs256_is_refused_for_every_other_preset_even_with_the_secret(supabase: ProviderServer) -> None:
    status, body = mint_with(secret_service(supabase, "oidc", {"AUTH_JWT_SECRET": LEGACY_SECRET}),
                             legacy_token(supabase))

    assert status == 401
    assert "algorithm 'HS256' is not accepted" in body["error"]["message"]


def test_the_legacy_secret_is_never_read_from_the_environment(supabase: ProviderServer) -> None:
    key = json.dumps({"BEHEST_KEY": "behest_pk_" + key_pem("tenant"), "AUTH_JWT_SECRET": LEGACY_SECRET})
    env = sign_env(BEHEST_KEY=key, BEHEST_IDENTITY_PROVIDER="supabase", BEHEST_CALLER_ISSUER=supabase.issuer,
                   BEHEST_CALLER_AUDIENCE="authenticated", BEHEST_ALLOWED_ORIGINS=APP_ORIGIN,
                   BEHEST_VERIFY_CALLERS="true")
    service = Service.build(TOKEN_FUNCTION, Settings.from_env(env), CapturedTelemetry())

    status, body = mint_with(service, legacy_token(supabase))

    assert status == 401
    assert "AUTH_JWT_SECRET" in body["error"]["message"]


def test_a_legacy_secret_shorter_than_32_bytes_makes_the_key_secret_unusable(supabase: ProviderServer) -> None:
    status, body = mint_with(secret_service(supabase, "supabase", {"AUTH_JWT_SECRET": "short"}), legacy_token(supabase))

    assert status == 503
    assert body["error"]["code"] == "signing_key_unavailable"


# Tier from a claim path: Supabase's app_metadata, Auth0's namespaced object claims.


@pytest.mark.parametrize(("claims", "path", "expected"), [
    ({"app_metadata": {"plan": "pro", "provider": "email"}}, "app_metadata.plan", "pro"),
    ({"https://example.com/app_metadata": {"plan": "pro"}}, "https://example.com/app_metadata.plan", "pro"),
    ({"https://example.com/plan": "pro"}, "https://example.com/plan", "pro"),
    ({"a": {"b": {"c": 3}}}, "a.b.c", 3),
    ({"plan": "free", "app_metadata": {"plan": "pro"}}, "plan", "free"),
    ({"app_metadata": "{plan=pro}"}, "app_metadata.plan", None),
    ({"app_metadata": {"plan": "pro"}}, "app_metadata.tier", None),
])
def test_a_claim_path_walks_into_objects(claims: dict[str, Any], path: str, expected: Any) -> None:
    assert claim_at(claims, path) == expected


def test_the_tier_comes_from_a_claim_path_where_the_function_verifies(supabase: ProviderServer) -> None:
    """Supabase puts the user's app-controlled data, a plan for instance, in the app_metadata object.

    https://supabase.com/docs/guides/auth/jwt-fields
    """
    service = secret_service(supabase, "supabase", {}, BEHEST_TIER_CLAIM="app_metadata.plan",
                             BEHEST_TIER_MAP="free=1,pro=2")
    token = supabase.token("rsa", "RS256", aud="authenticated", app_metadata={"plan": "pro", "provider": "email"})

    status, body = mint_with(service, token)

    assert status == 200, body
    assert minted_claims(body)["tier"] == 2


def test_through_api_gateways_authorizer_an_object_claim_arrives_flattened_and_gives_no_tier() -> None:
    # API Gateway hands claims over as strings; an object becomes text, which no path can walk into.
    identity_settings = settings(BEHEST_TIER_CLAIM="app_metadata.plan", BEHEST_TIER_MAP="free=1,pro=2",
                                 BEHEST_TIER="1").identity

    identity = identity_from_claims({"sub": "user-42", "app_metadata": "{plan=pro, provider=email}"},
                                    identity_settings)

    assert identity.tier == 1


# Cold start: the authorizer path loads none of this.


def loaded_modules(env: dict[str, str], function: str) -> set[str]:
    script = (
        "import json, sys\n"
        "from behest_lambda.app import Service\n"
        "from behest_lambda.telemetry import Telemetry\n"
        f"Service.from_env({function!r}, Telemetry('cold'), {env!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT / "functions", capture_output=True, text=True,
                          check=True, timeout=60)
    return set(json.loads(done.stdout))


@pytest.mark.parametrize("function", [TOKEN_FUNCTION, RELAY_FUNCTION])
def test_the_authorizer_path_never_loads_the_verifier_or_the_cookie_reader(function: str) -> None:
    base = sign_env(BEHEST_CALLER_ISSUER="https://issuer.example.com", BEHEST_CALLER_AUDIENCE="app",
                    BEHEST_IDENTITY_PROVIDER="okta", BEHEST_VERIFY_CALLERS="false")

    authorizer = loaded_modules(base, function)
    verifying = loaded_modules({**base, "BEHEST_CALLER_ISSUER": "https://example.okta.com/oauth2/default",
                                "BEHEST_VERIFY_CALLERS": "true"}, function)

    assert {"behest_lambda.caller_token", "behest_lambda.session_cookie", "http.cookies"}.isdisjoint(authorizer)
    assert "behest_lambda.providers" in authorizer  # one row of a table: the user-id claim
    assert "behest_lambda.caller_token" in verifying
    assert "http.cookies" not in verifying  # only a request that brings a cookie to a cookie preset loads it


def minted_claims(body: dict[str, Any]) -> dict[str, Any]:
    payload = body["token"].split(".")[1]
    claims: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return claims


def test_an_okta_user_is_keyed_by_uid_not_by_the_login_in_sub() -> None:
    """Okta's sub is the login (an email address); uid is the user's stable id.

    https://developer.okta.com/docs/reference/api/oidc/#reserved-claims-in-the-payload-section
    """
    okta = ProviderServer("/oauth2/default")
    try:
        env = sign_env(BEHEST_IDENTITY_PROVIDER="okta", BEHEST_CALLER_ISSUER=okta.issuer,
                       BEHEST_CALLER_AUDIENCE="api://default", BEHEST_VERIFY_CALLERS="true")
        service = Service.build(TOKEN_FUNCTION, Settings.from_env(env), CapturedTelemetry())
        token = okta.token(aud="api://default", sub="ada@example.com", uid="00u1a2b3c4d5e6f7g8h9", cid="0oa1client")

        status, body = mint_with(service, token)
    finally:
        okta.stop()

    assert status == 200, body
    assert minted_claims(body)["uid"] == "00u1a2b3c4d5e6f7g8h9"

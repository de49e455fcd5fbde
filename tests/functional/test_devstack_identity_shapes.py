"""`make dev --idp NAME`: each imitated provider serves its issuer path, discovery document, keys and cookie."""

from __future__ import annotations

import base64
import contextlib
import json
import urllib.parse
import urllib.request
from typing import Any, Iterator

import jwt
import pytest

from devstack.identity import SHAPES, LocalIdentityProvider
from devstack.identity.cookies import SUPABASE_CHUNK_CHARS, supabase_cookie_values

PAGE = "http://127.0.0.1:3000"
ISSUER_PATHS = {"oidc": "", "cognito": "/us-east-1_BehestDev", "auth0": "/", "clerk": "", "supabase": "/auth/v1",
                "firebase": "/behest-dev-project", "okta": "/oauth2/default",
                "entra": "/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0", "google": "",
                "keycloak": "/realms/behest-dev"}
USER_ID_CLAIM = {"okta": "uid", "entra": "oid"}


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(params=sorted(SHAPES))
def provider(request: pytest.FixtureRequest) -> Iterator[LocalIdentityProvider]:
    with LocalIdentityProvider(shape=request.param, allowed_origins=[PAGE]) as idp:
        yield idp


def test_every_provider_is_imitated_with_its_documented_issuer_path() -> None:
    assert set(ISSUER_PATHS) == set(SHAPES)


def test_the_discovery_document_sits_at_the_issuer_and_names_where_the_provider_keeps_its_keys(
    provider: LocalIdentityProvider,
) -> None:
    document = get(provider.issuer.rstrip("/") + "/.well-known/openid-configuration")
    keys_at = urllib.parse.urlsplit(document["jwks_uri"])

    assert provider.issuer == provider.url + ISSUER_PATHS[provider.shape.name]
    assert document["issuer"] == provider.issuer
    assert document["id_token_signing_alg_values_supported"] == [provider.shape.algorithm]
    assert keys_at.path == provider.shape.jwks_path
    # Firebase and Google keep their keys on another host (www.googleapis.com): here, another loopback port.
    other_host = keys_at.port != urllib.parse.urlsplit(provider.url).port
    assert other_host == (provider.shape.name in ("firebase", "google"))


def test_a_signed_in_users_token_verifies_with_the_discovered_keys_and_names_the_provider_user_id(
    provider: LocalIdentityProvider,
) -> None:
    request = urllib.request.Request(provider.url + "/token", data=b'{"user": "ada", "plan": "pro"}',
                                     headers={"Origin": PAGE})
    with urllib.request.urlopen(request, timeout=5) as response:
        answer = json.loads(response.read())
    document = get(provider.discovery_url)
    token = answer["id_token"]

    key = jwt.PyJWKClient(document["jwks_uri"]).get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key, algorithms=[provider.shape.algorithm], issuer=document["issuer"],
                        options={"verify_aud": False})

    assert claims[USER_ID_CLAIM.get(provider.shape.name, "sub")] == provider.user_id("ada") == answer["user_id"]
    assert jwt.get_unverified_header(token)["alg"] == provider.shape.algorithm
    if provider.shape.audience is None:
        assert "aud" not in claims and claims["azp"] == PAGE  # Clerk: azp is the origin that asked
    else:
        audiences = claims.get("aud", claims.get("client_id"))
        assert provider.shape.audience in (audiences if isinstance(audiences, list) else [audiences])


def test_published_keys_carry_what_each_provider_publishes() -> None:
    with contextlib.ExitStack() as started:
        supabase, entra, keycloak, clerk = (started.enter_context(LocalIdentityProvider(shape=name)).jwks()["keys"]
                                            for name in ("supabase", "entra", "keycloak", "clerk"))

    assert supabase[0]["kty"] == "EC" and supabase[0]["crv"] == "P-256" and supabase[0]["key_ops"] == ["verify"]
    assert "alg" not in entra[0]
    assert [(k["use"], k["alg"]) for k in keycloak] == [("sig", "RS256"), ("enc", "RSA-OAEP")]
    assert clerk[0]["kid"].startswith("ins_")


def test_supabase_cookies_are_written_as_supabase_ssr_writes_them_one_cookie_up_to_3180_characters() -> None:
    def written(padding: int) -> tuple[dict[str, Any], int]:
        session = {"access_token": "t", "pad": "p" * padding}
        return session, len(supabase_cookie_values("sb-x-auth-token", session, chunk_chars=10**9)[0][1])

    # The largest session whose "base64-" value fits in 3180 characters, and the next one up.
    padding = next(p for p in range(SUPABASE_CHUNK_CHARS) if written(p + 1)[1] > SUPABASE_CHUNK_CHARS)
    (largest, length), (over, _) = written(padding), written(padding + 1)
    assert SUPABASE_CHUNK_CHARS - 2 <= length <= SUPABASE_CHUNK_CHARS
    fits = supabase_cookie_values("sb-x-auth-token", largest)
    split = supabase_cookie_values("sb-x-auth-token", over)

    assert [name for name, _ in fits] == ["sb-x-auth-token"]
    assert [name for name, _ in split] == ["sb-x-auth-token.0", "sb-x-auth-token.1"]
    assert len(split[0][1]) == SUPABASE_CHUNK_CHARS
    value = "".join(part for _, part in split)
    assert value.startswith("base64-") and "=" not in value
    encoded = value[len("base64-"):]
    decoded = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    assert decoded["access_token"] == "t"


def test_supabase_names_its_cookie_after_the_first_label_of_the_project_host() -> None:
    with LocalIdentityProvider(shape="supabase") as idp:
        assert idp.cookie_name == "sb-127-auth-token"
    with LocalIdentityProvider(shape="okta") as idp:
        assert idp.cookie_name is None

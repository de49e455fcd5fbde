"""What each identity provider serves, as data: issuer path, key location, algorithm, claims, cookie.

One row per provider `make dev --idp NAME` imitates, each following the provider's own
documentation (the `docs` page of the row). The loopback imitation keeps the path shapes
(Supabase's `/auth/v1`, Okta's `/oauth2/default`, Entra's `/<tenant id>/v2.0`, Keycloak's
`/realms/<realm>`, Firebase's `/<project id>`, Auth0's trailing slash) under
`http://127.0.0.1:<port>`, and puts keys on a second loopback host where the provider keeps
them on another host (Firebase and Google publish keys on googleapis.com).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import Any, Callable, Mapping, NamedTuple, Optional

# Stable dev ids derived from the dev user's name, so that "ada" is the same user on every run.
_NAMESPACE = uuid.UUID("6d1f0a52-8f0e-4a43-9d59-5b2f7c1e0b11")

FIREBASE_PROJECT = "behest-dev-project"
ENTRA_TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
ENTRA_API_CLIENT = "6e74172b-be56-4843-9ff4-e66a39bb12e3"
ENTRA_WEB_CLIENT = "c44b4083-3bb0-49c1-b47d-974e53cbdf3c"
KEYCLOAK_REALM = "behest-dev"
COGNITO_POOL = "us-east-1_BehestDev"
COGNITO_CLIENT = "4behestdev0local0client0id"  # 26 lowercase alphanumerics, as Cognito writes app client ids
GOOGLE_CLIENT = "1046-behestdev.apps.googleusercontent.com"
AUTH0_API = "https://api.behest-dev.example"
AUTH0_CLIENT = "BehestDevLocalAuth0Client0000"
AUTH0_NAMESPACE = "https://behest-dev.example/"
OKTA_CLIENT = "0oabehestdevlocal0h7"
DEFAULT_AUDIENCE = "behest-lambda-dev"


def stable_uuid(*parts: str) -> str:
    """A UUID that is always the same for the same parts."""
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def _digest(text: str, length: int, alphabet: str = "0123456789abcdefghijklmnopqrstuvwxyz") -> str:
    number = int.from_bytes(hashlib.sha256(text.encode()).digest(), "big")
    out = []
    for _ in range(length):
        number, index = divmod(number, len(alphabet))
        out.append(alphabet[index])
    return "".join(out)


class TokenContext(NamedTuple):
    """What a row's claims may depend on besides the user: when, which issuer, which page asked."""

    issuer: str
    now: int
    origin: Optional[str]
    plan: Optional[str]
    user_metadata: Mapping[str, Any]


Claims = Callable[[str, TokenContext], dict[str, Any]]


class CookieShape(NamedTuple):
    """Where the provider's browser SDK keeps the session: the cookie's name and how its value is written."""

    name: str  # "{ref}" is the first label of the issuer's host, as supabase-js names its storage key
    encoding: str  # "token": the JWT itself (Clerk); "supabase-session": @supabase/ssr's base64- JSON, chunked


class ProviderShape(NamedTuple):
    """One provider as its documentation describes its defaults."""

    name: str
    docs: str
    issuer_path: str
    jwks_path: str
    keys_elsewhere: bool
    algorithm: str
    audience: Optional[str]
    user_id: Callable[[str], str]
    claims: Claims
    tier_claim: Optional[str] = "plan"
    cookie: Optional[CookieShape] = None
    # Facts about the published keys: Supabase's carry key_ops, Entra's carry no alg, Keycloak also lists an
    # encryption key.
    key_ops: bool = False
    key_alg: bool = True
    encryption_key: bool = False
    kid_prefix: str = "dev-"


def _plan(context: TokenContext) -> dict[str, Any]:
    return {"plan": context.plan} if context.plan is not None else {}


def _oidc(user: str, context: TokenContext) -> dict[str, Any]:
    return {"sub": user, "aud": DEFAULT_AUDIENCE, **_plan(context)}


def _cognito(user: str, context: TokenContext) -> dict[str, Any]:
    # An access token: client_id and token_use, no aud (the API's JWT authorizer checks client_id then).
    # https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-the-access-token.html
    return {"sub": _cognito_id(user), "client_id": COGNITO_CLIENT, "token_use": "access", "scope": "openid profile",
            "username": user, "auth_time": context.now, "version": 2, "jti": str(uuid.uuid4()),
            "origin_jti": str(uuid.uuid4()), "event_id": str(uuid.uuid4()), **_plan(context)}


def _auth0(user: str, context: TokenContext) -> dict[str, Any]:
    # An access token for an API: aud = [API identifier, issuer + userinfo], azp = the application, and custom
    # claims under a namespace (https://auth0.com/docs/secure/tokens/json-web-tokens/create-custom-claims).
    namespaced = {AUTH0_NAMESPACE + "app_metadata": {"plan": context.plan}} if context.plan is not None else {}
    return {"sub": _auth0_id(user), "aud": [AUTH0_API, context.issuer + "userinfo"], "azp": AUTH0_CLIENT,
            "scope": "openid profile email", **namespaced}


def _clerk(user: str, context: TokenContext) -> dict[str, Any]:
    # A session token (v2): no aud, azp = the origin that asked, sid, fva
    # (https://clerk.com/docs/guides/sessions/session-tokens); plan through session-token customisation.
    azp = {"azp": context.origin} if context.origin else {}
    return {"sub": _clerk_id(user), **azp, "sid": "sess_" + _digest("sess" + user + str(context.now), 27),
            "v": 2, "fva": [0, -1], **_plan(context)}


def _supabase(user: str, context: TokenContext) -> dict[str, Any]:
    # https://supabase.com/docs/guides/auth/jwts: aud "authenticated", role, aal, amr, session_id, app_metadata
    # (server-controlled, where a plan lives), user_metadata (user-editable).
    app_metadata: dict[str, Any] = {"provider": "email", "providers": ["email"]}
    if context.plan is not None:
        app_metadata["plan"] = context.plan
    return {"sub": _supabase_id(user), "aud": "authenticated", "role": "authenticated",
            "email": f"{user}@example.com", "phone": "", "app_metadata": app_metadata,
            "user_metadata": dict(context.user_metadata), "aal": "aal1",
            "amr": [{"method": "password", "timestamp": context.now}], "session_id": str(uuid.uuid4()),
            "is_anonymous": False}


def _firebase(user: str, context: TokenContext) -> dict[str, Any]:
    # https://firebase.google.com/docs/auth/admin/verify-id-tokens: aud = project id, sub = user_id = the uid;
    # custom claims sit at the top level.
    uid = _firebase_id(user)
    return {"sub": uid, "user_id": uid, "aud": FIREBASE_PROJECT, "auth_time": context.now,
            "email": f"{user}@example.com", "email_verified": True,
            "firebase": {"identities": {"email": [f"{user}@example.com"]}, "sign_in_provider": "password"},
            **_plan(context)}


def _okta(user: str, context: TokenContext) -> dict[str, Any]:
    # A custom authorization server's access token: sub is the login, uid the user's id, cid the client
    # (https://developer.okta.com/docs/guides/validate-access-tokens/dotnet/main/).
    return {"sub": f"{user}@example.com", "uid": _okta_id(user), "cid": OKTA_CLIENT, "aud": "api://default",
            "ver": 1, "jti": "AT." + _digest(str(uuid.uuid4()), 43), "scp": ["openid", "profile"],
            "auth_time": context.now, **_plan(context)}


def _entra(user: str, context: TokenContext) -> dict[str, Any]:
    # A v2.0 access token: oid is the user across apps, sub is pairwise (differs per app), tid the tenant
    # (https://learn.microsoft.com/en-us/entra/identity-platform/access-token-claims-reference).
    return {"sub": _digest("pairwise" + ENTRA_WEB_CLIENT + user, 43), "oid": _entra_id(user), "tid": ENTRA_TENANT,
            "aud": ENTRA_API_CLIENT, "azp": ENTRA_WEB_CLIENT, "azpacr": "0", "ver": "2.0", "scp": "access_as_user",
            "name": user.title(), "preferred_username": f"{user}@example.com",
            "uti": _digest(str(uuid.uuid4()), 22), **_plan(context)}


def _google(user: str, context: TokenContext) -> dict[str, Any]:
    # An ID token (https://developers.google.com/identity/openid-connect/openid-connect): aud = azp = the client;
    # Google's tokens carry no custom claims, so no plan.
    return {"sub": _google_id(user), "aud": GOOGLE_CLIENT, "azp": GOOGLE_CLIENT, "email": f"{user}@example.com",
            "email_verified": True, "at_hash": _digest(str(uuid.uuid4()), 22)}


def _keycloak(user: str, context: TokenContext) -> dict[str, Any]:
    # An access token of a realm (https://www.keycloak.org/securing-apps/oidc-layers): aud "account",
    # azp = the client, typ "Bearer", realm roles; plan through a user-attribute mapper.
    return {"sub": _keycloak_id(user), "aud": "account", "azp": "behest-web", "typ": "Bearer",
            "sid": str(uuid.uuid4()), "scope": "openid profile email", "preferred_username": user,
            "realm_access": {"roles": ["default-roles-" + KEYCLOAK_REALM]}, **_plan(context)}


def _cognito_id(user: str) -> str:
    return stable_uuid("cognito", user)


def _auth0_id(user: str) -> str:
    return "auth0|" + _digest("auth0" + user, 24, "0123456789abcdef")


def _clerk_id(user: str) -> str:
    return "user_" + _digest("clerk" + user, 27, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _supabase_id(user: str) -> str:
    return stable_uuid("supabase", user)


def _firebase_id(user: str) -> str:
    return _digest("firebase" + user, 28, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _okta_id(user: str) -> str:
    return "00u" + _digest("okta" + user, 17, "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def _entra_id(user: str) -> str:
    return stable_uuid("entra", user)


def _google_id(user: str) -> str:
    return "1" + _digest("google" + user, 20, "0123456789")


def _keycloak_id(user: str) -> str:
    return stable_uuid("keycloak", user)


SHAPES: dict[str, ProviderShape] = {shape.name: shape for shape in (
    ProviderShape("oidc", "https://openid.net/specs/openid-connect-discovery-1_0.html", "",
                  "/.well-known/jwks.json", False, "RS256", DEFAULT_AUDIENCE, lambda user: user, _oidc),
    ProviderShape("cognito", "https://docs.aws.amazon.com/cognito/latest/developerguide/"
                  "amazon-cognito-user-pools-using-tokens-verifying-a-jwt.html", "/" + COGNITO_POOL,
                  "/" + COGNITO_POOL + "/.well-known/jwks.json", False, "RS256", COGNITO_CLIENT, _cognito_id, _cognito),
    # The issuer ends in a slash; keys at issuer + ".well-known/jwks.json".
    ProviderShape("auth0", "https://auth0.com/docs/secure/tokens/json-web-tokens/locate-json-web-key-sets", "/",
                  "/.well-known/jwks.json", False, "RS256", AUTH0_API, _auth0_id, _auth0,
                  tier_claim=AUTH0_NAMESPACE + "app_metadata.plan"),
    ProviderShape("clerk", "https://clerk.com/docs/guides/sessions/manual-jwt-verification", "",
                  "/.well-known/jwks.json", False, "RS256", None, _clerk_id, _clerk,
                  cookie=CookieShape("__session", "token"), kid_prefix="ins_"),
    # New projects sign with ES256 (https://supabase.com/docs/guides/auth/signing-keys); keys carry key_ops.
    ProviderShape("supabase", "https://supabase.com/docs/guides/auth/jwts", "/auth/v1",
                  "/auth/v1/.well-known/jwks.json", False, "ES256", "authenticated", _supabase_id, _supabase,
                  tier_claim="app_metadata.plan",
                  cookie=CookieShape("sb-{ref}-auth-token", "supabase-session"), key_ops=True),
    # Keys on another host: the discovery document's jwks_uri (www.googleapis.com in production).
    ProviderShape("firebase", "https://firebase.google.com/docs/auth/admin/verify-id-tokens"
                  "#verify_id_tokens_using_a_third-party_jwt_library", "/" + FIREBASE_PROJECT,
                  "/service_accounts/v1/jwk/securetoken@system.gserviceaccount.com", True, "RS256", FIREBASE_PROJECT,
                  _firebase_id, _firebase),
    ProviderShape("okta", "https://developer.okta.com/docs/concepts/auth-servers/", "/oauth2/default",
                  "/oauth2/default/v1/keys", False, "RS256", "api://default", _okta_id, _okta),
    # Entra's keys may carry no alg (https://learn.microsoft.com/en-us/entra/identity-platform/signing-key-rollover).
    ProviderShape("entra", "https://learn.microsoft.com/en-us/entra/identity-platform/access-token-claims-reference",
                  f"/{ENTRA_TENANT}/v2.0", f"/{ENTRA_TENANT}/discovery/v2.0/keys", False, "RS256", ENTRA_API_CLIENT,
                  _entra_id, _entra, key_alg=False),
    ProviderShape("google", "https://developers.google.com/identity/openid-connect/openid-connect", "",
                  "/oauth2/v3/certs", True, "RS256", GOOGLE_CLIENT, _google_id, _google, tier_claim=None),
    ProviderShape("keycloak", "https://www.keycloak.org/securing-apps/oidc-layers", f"/realms/{KEYCLOAK_REALM}",
                  f"/realms/{KEYCLOAK_REALM}/protocol/openid-connect/certs", False, "RS256", "account",
                  _keycloak_id, _keycloak, encryption_key=True),
)}


def shape_for(name: str) -> ProviderShape:
    """The row for `name`; ValueError listing the known names otherwise."""
    try:
        return SHAPES[name]
    except KeyError:
        raise ValueError(f"unknown identity provider {name!r}: one of {', '.join(SHAPES)}") from None


def now() -> int:
    return int(time.time())

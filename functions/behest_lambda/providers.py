"""Identity provider presets: one row per provider, each knowing what that provider documents.

As PyJWT's `algorithms.py` maps a name to an object that knows its algorithm, `PROVIDERS` maps a
preset name (`BEHEST_IDENTITY_PROVIDER`, template parameter `IdentityProvider`) to a `Provider`:
which claim is the user id, how the audience is checked, which cookie carries the token and in
which encoding, what the issuer looks like, and whether API Gateway's HTTP API JWT authorizer can
verify its tokens. Cheap to import: the authorizer path reads one row and nothing else.
"""

from __future__ import annotations

import re
from typing import NamedTuple, Optional

# How the audience is checked.
# API Gateway's rule: `aud` holds a configured audience, or, with no `aud`, `client_id` does (Cognito access tokens).
AUD = "aud"
# Clerk's: as AUD when the token has an `aud`; without one, `azp` (the origin that asked) is an authorized party.
# Clerk's own verifier checks `azp` whenever it is present, so a foreign `azp` is refused even beside a good `aud`.
AUD_OR_AZP = "aud_or_azp"

# How a session cookie carries the token.
RAW_JWT = "jwt"  # the cookie's value is the compact JWS (Clerk's `__session`)
# @supabase/ssr: "base64-" + base64url(JSON session holding `access_token`), split into `<name>.0`, `<name>.1`, …
# when too large for one cookie.
SUPABASE_SESSION = "supabase_session"

# In a cookie name, replaced by the first label of the issuer's host (Supabase's project ref).
PROJECT_REF = "{ref}"

LOOPBACK_HOSTS = ("localhost", "::1")


class Provider(NamedTuple):
    """What one identity provider documents about its tokens, as the functions need it."""

    name: str
    # The issuer's expected form, as a configuration error shows it.
    issuer_form: str
    # The issuer URL's path (fullmatch); a loopback issuer (make dev, tests) needs the same path.
    issuer_path: str
    # The issuer's host (fullmatch), or None where the provider lets customers use their own domain.
    issuer_host: Optional[str]
    # The page of the provider's documentation these facts come from.
    docs: str
    user_claim: str = "sub"
    audience: str = AUD
    # The cookie that carries the token (PROJECT_REF is filled from the issuer), and its encoding.
    cookie: Optional[str] = None
    cookie_format: str = RAW_JWT
    # Supabase's legacy shared secret (HS256): accepted only when the key secret holds AUTH_JWT_SECRET.
    legacy_hmac: bool = False
    # API Gateway's HTTP API JWT authorizer can verify the provider's default tokens: RSA, an `aud` or
    # `client_id`, sent in a header. Where it cannot, the functions verify them themselves.
    authorizer_verifies: bool = True

    def cookie_name(self, issuer: Optional[str], override: Optional[str] = None) -> Optional[str]:
        """The cookie to read the token from: the override (BEHEST_CALLER_COOKIE), else the preset's, if any."""
        if override:
            return override
        if self.cookie is None or PROJECT_REF not in self.cookie:
            return self.cookie
        host = _host(issuer or "")
        return self.cookie.replace(PROJECT_REF, host.split(".")[0]) if host else None

    def issuer_problem(self, issuer: str) -> Optional[str]:
        """Why `issuer` is not this provider's issuer, naming the expected form; None when it fits."""
        scheme, host, path = _parts(issuer)
        loopback = is_loopback(host)
        fits = (
            (scheme == "https" or (scheme == "http" and loopback))
            and bool(host)
            and (loopback or self.issuer_host is None or re.fullmatch(self.issuer_host, host) is not None)
            and re.fullmatch(self.issuer_path, path) is not None
        )
        if fits:
            return None
        return (f"the {self.name} issuer must look like {self.issuer_form} (got {issuer[:120]!r}; see "
                f"{self.docs}), or choose the identity provider oidc")

    def function_verifies(self, cookie_override: Optional[str] = None) -> bool:
        """Whether the HTTP API's functions must verify tokens themselves (API Gateway's authorizer cannot)."""
        return not self.authorizer_verifies or self.cookie is not None or bool(cookie_override)


_ANY_HOST = None
_PROVIDERS = (
    Provider("oidc", "https://<your issuer> (exactly as in the tokens' iss)", r"(/[^\s?#]*)?", _ANY_HOST,
             "https://openid.net/specs/openid-connect-discovery-1_0.html"),
    Provider("cognito", "https://cognito-idp.<region>.amazonaws.com/<user pool id>", r"/[a-z0-9-]+_[A-Za-z0-9]+",
             r"cognito-idp\.[a-z0-9-]+\.amazonaws\.com",
             "https://docs.aws.amazon.com/cognito/latest/developerguide/amazon-cognito-user-pools-using-tokens-verifying-a-jwt.html"),
    Provider("auth0", "https://<tenant>.auth0.com/ (with the trailing /)", r"/", _ANY_HOST,
             "https://auth0.com/docs/secure/tokens/access-tokens/validate-access-tokens"),
    Provider("clerk", "https://<your Frontend API host> (no path, no trailing /)", r"", _ANY_HOST,
             "https://clerk.com/docs/guides/sessions/manual-jwt-verification",
             audience=AUD_OR_AZP, cookie="__session", authorizer_verifies=False),
    Provider("supabase", "https://<project ref>.supabase.co/auth/v1", r"/auth/v1", _ANY_HOST,
             "https://supabase.com/docs/guides/auth/jwts",
             cookie="sb-" + PROJECT_REF + "-auth-token", cookie_format=SUPABASE_SESSION, legacy_hmac=True,
             authorizer_verifies=False),
    Provider("firebase", "https://securetoken.google.com/<project id>", r"/[a-z0-9-]+", r"securetoken\.google\.com",
             "https://firebase.google.com/docs/auth/admin/verify-id-tokens"),
    Provider("okta", "https://<org>.okta.com/oauth2/<authorization server id>", r"/oauth2/[A-Za-z0-9]+", _ANY_HOST,
             "https://developer.okta.com/docs/guides/validate-access-tokens/main/", user_claim="uid"),
    Provider("entra", "https://login.microsoftonline.com/<tenant id>/v2.0", r"/[0-9a-fA-F-]{36}/v2\.0",
             r"login\.microsoftonline\.(com|us)|login\.partner\.microsoftonline\.cn",
             "https://learn.microsoft.com/en-us/entra/identity-platform/access-token-claims-reference",
             user_claim="oid"),
    Provider("google", "https://accounts.google.com (no trailing /)", r"", r"accounts\.google\.com",
             "https://developers.google.com/identity/openid-connect/openid-connect#validatinganidtoken"),
    Provider("keycloak", "https://<host>/realms/<realm>", r"(/auth)?/realms/[^/\s?#]+", _ANY_HOST,
             "https://www.keycloak.org/docs/latest/securing_apps/#_oidc"),
)
PROVIDERS: dict[str, Provider] = {provider.name: provider for provider in _PROVIDERS}
DEFAULT_PROVIDER = "oidc"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: the only hosts reached over plain http."""
    if host.lower() in LOOPBACK_HOSTS:
        return True
    octets = host.split(".")
    return (len(octets) == 4 and octets[0] == "127"
            and all(o.isascii() and o.isdigit() and len(o) <= 3 and int(o) <= 255 for o in octets))


def is_allowed_url(url: str) -> bool:
    """https, or http to a loopback host: where the functions may fetch discovery documents and keys."""
    scheme, host, _ = _parts(url)
    return bool(host) and (scheme == "https" or (scheme == "http" and is_loopback(host)))


def _parts(url: str) -> tuple[str, str, str]:
    """(scheme, host, path) of a URL, lower-cased scheme and host; empty strings where it has none."""
    from urllib.parse import urlsplit

    try:
        split = urlsplit(url)
        host = split.hostname or ""
        split.port  # noqa: B018 - a malformed port raises here
    except ValueError:
        return "", "", ""
    if split.query or split.fragment or split.username is not None or any(c.isspace() for c in url):
        return "", "", ""
    return split.scheme.lower(), host.lower(), split.path


def _host(url: str) -> str:
    return _parts(url)[1]

"""Configuration: every environment variable the functions read, grouped by concern and validated where defined.

`Settings.from_env` reads the environment once, at the edge, and reports every bad variable by
name in one ConfigurationError.
"""

from __future__ import annotations

import os
import re
from types import MappingProxyType
from typing import Mapping, NamedTuple, Optional

from .errors import ConfigurationError
from .providers import AUD_OR_AZP, DEFAULT_PROVIDER, PROVIDERS, Provider

# Names shared with the official Behest SDK (see README, "Configuration").
BEHEST_KEY = "BEHEST_KEY"
BEHEST_API_KEY = "BEHEST_API_KEY"  # deprecated alias of BEHEST_KEY
BEHEST_BASE_URL = "BEHEST_BASE_URL"
BEHEST_KID = "BEHEST_KID"
BEHEST_TENANT_ID = "BEHEST_TENANT_ID"
BEHEST_PROJECT_ID = "BEHEST_PROJECT_ID"
BEHEST_TTL = "BEHEST_TTL"
BEHEST_TIER = "BEHEST_TIER"
BEHEST_ISSUER = "BEHEST_ISSUER"
BEHEST_AUDIENCE = "BEHEST_AUDIENCE"

# Names of this bundle.
BEHEST_KEY_SECRET_ID = "BEHEST_KEY_SECRET_ID"
BEHEST_KEY_CACHE_TTL = "BEHEST_KEY_CACHE_TTL"
BEHEST_KEY_GRACE_PERIOD = "BEHEST_KEY_GRACE_PERIOD"
BEHEST_SECRETS_EXTENSION = "BEHEST_SECRETS_EXTENSION"
BEHEST_MAX_TTL = "BEHEST_MAX_TTL"
BEHEST_MINT_TIMEOUT = "BEHEST_MINT_TIMEOUT"
BEHEST_USER_CLAIM = "BEHEST_USER_CLAIM"
BEHEST_TIER_CLAIM = "BEHEST_TIER_CLAIM"
BEHEST_TIER_MAP = "BEHEST_TIER_MAP"
BEHEST_TIER_MIN = "BEHEST_TIER_MIN"
BEHEST_TIER_MAX = "BEHEST_TIER_MAX"
BEHEST_UPSTREAM_TIMEOUT = "BEHEST_UPSTREAM_TIMEOUT"
BEHEST_MAX_BODY_BYTES = "BEHEST_MAX_BODY_BYTES"
BEHEST_ALLOWED_MODELS = "BEHEST_ALLOWED_MODELS"
BEHEST_MAX_TOKENS = "BEHEST_MAX_TOKENS"
BEHEST_MAX_N = "BEHEST_MAX_N"
BEHEST_ALLOWED_SERVICE_TIERS = "BEHEST_ALLOWED_SERVICE_TIERS"
# The streaming function (Function URL, no API Gateway authorizer) verifies callers itself.
BEHEST_CALLER_ISSUER = "BEHEST_CALLER_ISSUER"
BEHEST_CALLER_AUDIENCE = "BEHEST_CALLER_AUDIENCE"
BEHEST_CALLER_JWKS_URL = "BEHEST_CALLER_JWKS_URL"
BEHEST_JWKS_CACHE_TTL = "BEHEST_JWKS_CACHE_TTL"
# The server-to-server function (Function URL, AuthType AWS_IAM) serves only callers in these roles.
BEHEST_TRUSTED_ROLE_ARNS = "BEHEST_TRUSTED_ROLE_ARNS"
# Identity provider presets (providers.py) and the second transport, session cookies.
BEHEST_IDENTITY_PROVIDER = "BEHEST_IDENTITY_PROVIDER"
BEHEST_CALLER_COOKIE = "BEHEST_CALLER_COOKIE"  # overrides the preset's cookie name
BEHEST_CALLER_AUTHORIZED_PARTIES = "BEHEST_CALLER_AUTHORIZED_PARTIES"  # `azp` values accepted (Clerk)
BEHEST_ALLOWED_ORIGINS = "BEHEST_ALLOWED_ORIGINS"  # browser origins; a cookie-carried token needs one
# "true": the HTTP API's functions verify callers themselves (the template attaches no JWT authorizer).
BEHEST_VERIFY_CALLERS = "BEHEST_VERIFY_CALLERS"
# A field of the key secret's JSON: Supabase's legacy JWT secret (HS256), never read from the environment.
AUTH_JWT_SECRET = "AUTH_JWT_SECRET"

# Powertools' own names (read by Powertools); the older names of this bundle still work.
POWERTOOLS_SERVICE_NAME = "POWERTOOLS_SERVICE_NAME"
POWERTOOLS_LOG_LEVEL = "POWERTOOLS_LOG_LEVEL"
POWERTOOLS_METRICS_NAMESPACE = "POWERTOOLS_METRICS_NAMESPACE"
LOG_LEVEL = "LOG_LEVEL"  # older name of POWERTOOLS_LOG_LEVEL
METRICS_NAMESPACE = "METRICS_NAMESPACE"  # older name of POWERTOOLS_METRICS_NAMESPACE

# Set by Lambda or by the Parameters and Secrets extension layer.
AWS_SESSION_TOKEN = "AWS_SESSION_TOKEN"
AWS_LAMBDA_RUNTIME_API = "AWS_LAMBDA_RUNTIME_API"
AWS_LAMBDA_EXEC_WRAPPER = "AWS_LAMBDA_EXEC_WRAPPER"
X_AMZN_TRACE_ID = "_X_AMZN_TRACE_ID"
PARAMETERS_SECRETS_EXTENSION_HTTP_PORT = "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT"

DEFAULT_BASE_URL = "https://api.behest.ai"
DEFAULT_ISSUER = "https://api.behest.ai"
DEFAULT_AUDIENCE = "behest"
DEFAULT_TTL = 900
MIN_TTL = 60
DEFAULT_MAX_TTL = 3600
CEILING_TTL = 86400
DEFAULT_KEY_CACHE_TTL = 300
DEFAULT_KEY_GRACE_PERIOD = 900
DEFAULT_MINT_TIMEOUT = 5.0
DEFAULT_UPSTREAM_TIMEOUT = 25.0
DEFAULT_MAX_BODY_BYTES = 1_048_576
DEFAULT_MAX_TOKENS = 4096
DEFAULT_MAX_N = 4
# Priority (and scale) processing is billed above the standard rate: opting in is the operator's call.
DEFAULT_ALLOWED_SERVICE_TIERS = frozenset({"auto", "default"})
DEFAULT_TIER_MIN = 0
DEFAULT_TIER_MAX = 100
DEFAULT_EXTENSION_PORT = 2773
DEFAULT_JWKS_CACHE_TTL = 3600
JWKS_WELL_KNOWN_PATH = "/.well-known/jwks.json"
# An IAM role ARN, its path optional: the role's name is unique in its account whatever the path. Compiled
# on first use (re caches it): only the server-to-server function has roles to read.
ROLE_ARN = (r"arn:(?P<partition>aws(?:-[a-z]+)*):iam::(?P<account>[0-9]{12}):role/"
            r"(?:[\x21-\x7e]{1,510}/)?(?P<name>[\w+=,.@-]{1,64})")
DISCOVERY_PATH = "/.well-known/openid-configuration"


class _Reader:
    """Reads variables and collects every problem, so that all are reported at once."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []

    def text(self, name: str, default: Optional[str] = None) -> Optional[str]:
        value = self.env.get(name, "").strip()
        return value or default

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        value = self.optional_integer(name, low, high)
        return default if value is None else value

    def optional_integer(self, name: str, low: int, high: int) -> Optional[int]:
        raw = self.text(name)
        if raw is None:
            return None
        # int() accepts '²'-style and fullwidth digits; configuration takes ASCII digits only.
        if not (raw.isascii() and raw.lstrip("-").isdigit()):
            self.problems.append(f"{name} must be a whole number (got {raw[:40]!r})")
            return None
        value = int(raw)
        return value if self._within(name, value, low, high) else None

    def seconds(self, name: str, default: float, low: float, high: float) -> float:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = float(raw) if raw.isascii() else float("nan")
        except ValueError:
            value = float("nan")
        if value != value:  # NaN: not a number at all
            self.problems.append(f"{name} must be a number (got {raw[:40]!r})")
            return default
        return value if self._within(name, value, low, high) else default

    def url(self, name: str, default: Optional[str] = None) -> Optional[str]:
        value = self.text(name, default)
        problem = f"{name} must be an http(s) URL (got {(value or '')[:100]!r})"
        if value is not None and not value.startswith(("https://", "http://")) and problem not in self.problems:
            self.problems.append(problem)  # BEHEST_BASE_URL is read by two groups: said once
        return value

    def provider(self) -> Provider:
        name = (self.text(BEHEST_IDENTITY_PROVIDER) or DEFAULT_PROVIDER).lower()
        problem = (f"{BEHEST_IDENTITY_PROVIDER} must be one of {', '.join(PROVIDERS)} (got {name[:40]!r})")
        if name not in PROVIDERS and problem not in self.problems:
            self.problems.append(problem)  # read by two groups: said once
        return PROVIDERS.get(name, PROVIDERS[DEFAULT_PROVIDER])

    def flag(self, name: str) -> bool:
        raw = (self.text(name) or "false").lower()
        if raw not in ("true", "false"):
            self.problems.append(f"{name} must be true or false (got {raw[:20]!r})")
        return raw == "true"

    def names(self, name: str) -> tuple[str, ...]:
        return tuple(part.strip() for part in (self.text(name) or "").split(",") if part.strip())

    def _within(self, name: str, value: float, low: float, high: float) -> bool:
        if low <= value <= high:
            return True
        self.problems.append(f"{name} must be between {low:g} and {high:g} (got {value:g})")
        return False


class KeySettings(NamedTuple):
    """Where the tenant key comes from, and how long a fetched one is trusted."""

    behest_key: Optional[str]
    secret_id: Optional[str]
    kid: Optional[str]
    tenant_id: Optional[str]
    project_id: Optional[str]
    cache_ttl: float = DEFAULT_KEY_CACHE_TTL
    grace_period: float = DEFAULT_KEY_GRACE_PERIOD
    extension: str = "auto"
    extension_port: int = DEFAULT_EXTENSION_PORT

    @classmethod
    def read(cls, env: _Reader) -> KeySettings:
        behest_key = env.text(BEHEST_KEY) or env.text(BEHEST_API_KEY)
        secret_id = env.text(BEHEST_KEY_SECRET_ID)
        if behest_key is None and secret_id is None:
            env.problems.append(f"set {BEHEST_KEY} or {BEHEST_KEY_SECRET_ID}")
        extension = (env.text(BEHEST_SECRETS_EXTENSION) or "auto").lower()
        if extension not in ("auto", "on", "off"):
            env.problems.append(f"{BEHEST_SECRETS_EXTENSION} must be auto, on or off (got {extension[:20]!r})")
        return cls(
            behest_key=behest_key,
            secret_id=secret_id,
            kid=env.text(BEHEST_KID),
            tenant_id=env.text(BEHEST_TENANT_ID),
            project_id=env.text(BEHEST_PROJECT_ID),
            cache_ttl=env.seconds(BEHEST_KEY_CACHE_TTL, DEFAULT_KEY_CACHE_TTL, 0, 86400),
            grace_period=env.seconds(BEHEST_KEY_GRACE_PERIOD, DEFAULT_KEY_GRACE_PERIOD, 0, 86400),
            extension=extension,
            extension_port=env.integer(PARAMETERS_SECRETS_EXTENSION_HTTP_PORT, DEFAULT_EXTENSION_PORT, 1, 65535),
        )


class MintSettings(NamedTuple):
    """What a minted token says, and how long it lives."""

    base_url: str = DEFAULT_BASE_URL
    default_ttl: int = DEFAULT_TTL
    max_ttl: int = DEFAULT_MAX_TTL
    issuer: str = DEFAULT_ISSUER
    audience: str = DEFAULT_AUDIENCE
    timeout: float = DEFAULT_MINT_TIMEOUT

    @classmethod
    def read(cls, env: _Reader) -> MintSettings:
        max_ttl = env.integer(BEHEST_MAX_TTL, DEFAULT_MAX_TTL, MIN_TTL, CEILING_TTL)
        default_ttl = env.integer(BEHEST_TTL, min(DEFAULT_TTL, max_ttl), MIN_TTL, CEILING_TTL)
        if default_ttl > max_ttl:
            env.problems.append(f"{BEHEST_TTL} ({default_ttl}) must not exceed {BEHEST_MAX_TTL} ({max_ttl})")
        return cls(
            base_url=(env.url(BEHEST_BASE_URL, DEFAULT_BASE_URL) or DEFAULT_BASE_URL).rstrip("/"),
            default_ttl=default_ttl,
            max_ttl=max_ttl,
            issuer=env.text(BEHEST_ISSUER, DEFAULT_ISSUER) or DEFAULT_ISSUER,
            audience=env.text(BEHEST_AUDIENCE, DEFAULT_AUDIENCE) or DEFAULT_AUDIENCE,
            timeout=env.seconds(BEHEST_MINT_TIMEOUT, DEFAULT_MINT_TIMEOUT, 0.1, 60),
        )


class IdentitySettings(NamedTuple):
    """Which verified claims name the user and their tier, and which tiers are acceptable."""

    user_claim: str = "sub"
    tier_claim: Optional[str] = None
    tier_map: Mapping[str, int] = MappingProxyType({})
    default_tier: Optional[int] = None
    tier_min: int = DEFAULT_TIER_MIN
    tier_max: int = DEFAULT_TIER_MAX

    @classmethod
    def read(cls, env: _Reader) -> IdentitySettings:
        tier_min = env.integer(BEHEST_TIER_MIN, DEFAULT_TIER_MIN, 0, 1_000_000)
        tier_max = env.integer(BEHEST_TIER_MAX, DEFAULT_TIER_MAX, 0, 1_000_000)
        if tier_min > tier_max:
            env.problems.append(f"{BEHEST_TIER_MIN} ({tier_min}) must not exceed {BEHEST_TIER_MAX} ({tier_max})")
        tier_map = _tier_map(env.text(BEHEST_TIER_MAP), env.problems)
        default_tier = env.optional_integer(BEHEST_TIER, tier_min, tier_max)
        for plan, tier in tier_map.items():
            if not tier_min <= tier <= tier_max:
                env.problems.append(f"{BEHEST_TIER_MAP}: {plan[:40]!r}={tier} is outside {tier_min}..{tier_max}")
        return cls(
            # BEHEST_USER_CLAIM wins; empty takes the preset's (Okta uid, Entra oid, else sub).
            user_claim=env.text(BEHEST_USER_CLAIM) or env.provider().user_claim,
            tier_claim=env.text(BEHEST_TIER_CLAIM),
            tier_map=tier_map,
            default_tier=default_tier,
            tier_min=tier_min,
            tier_max=tier_max,
        )


class RelaySettings(NamedTuple):
    """What the relay forwards, where, within how long, and under which policy."""

    base_url: str = DEFAULT_BASE_URL
    timeout: float = DEFAULT_UPSTREAM_TIMEOUT
    allowed_models: frozenset[str] = frozenset()
    max_tokens: int = DEFAULT_MAX_TOKENS
    max_n: int = DEFAULT_MAX_N
    allowed_service_tiers: frozenset[str] = DEFAULT_ALLOWED_SERVICE_TIERS

    @classmethod
    def read(cls, env: _Reader) -> RelaySettings:
        return cls(
            base_url=(env.url(BEHEST_BASE_URL, DEFAULT_BASE_URL) or DEFAULT_BASE_URL).rstrip("/"),
            timeout=env.seconds(BEHEST_UPSTREAM_TIMEOUT, DEFAULT_UPSTREAM_TIMEOUT, 0.1, 900),
            allowed_models=frozenset(env.names(BEHEST_ALLOWED_MODELS)),
            max_tokens=env.integer(BEHEST_MAX_TOKENS, DEFAULT_MAX_TOKENS, 1, 10_000_000),
            max_n=env.integer(BEHEST_MAX_N, DEFAULT_MAX_N, 1, 128),
            allowed_service_tiers=frozenset(env.names(BEHEST_ALLOWED_SERVICE_TIERS)) or DEFAULT_ALLOWED_SERVICE_TIERS,
        )


class CallerSettings(NamedTuple):
    """The identity provider whose tokens a function verifies itself (the Function URL; the HTTP API when switched)."""

    issuer: Optional[str] = None
    audiences: tuple[str, ...] = ()
    # None: found through the issuer's OIDC discovery document (`jwks_uri`), as API Gateway finds it.
    jwks_url: Optional[str] = None
    jwks_cache_ttl: float = DEFAULT_JWKS_CACHE_TTL
    provider: Provider = PROVIDERS[DEFAULT_PROVIDER]
    # The session cookie a token may also travel in (None: bearer header only).
    cookie: Optional[str] = None
    # `azp` values accepted where the preset checks it (Clerk); default: the allowed origins.
    authorized_parties: tuple[str, ...] = ()
    # Browser origins: a cookie-carried token is accepted only from a request whose Origin is one of them.
    allowed_origins: tuple[str, ...] = ()
    # The HTTP API's functions verify callers themselves (no JWT authorizer attached).
    verify: bool = False

    @classmethod
    def read(cls, env: _Reader) -> CallerSettings:
        issuer = env.url(BEHEST_CALLER_ISSUER)
        provider = env.provider()
        origins = env.names(BEHEST_ALLOWED_ORIGINS)
        return cls(
            issuer=issuer,
            audiences=env.names(BEHEST_CALLER_AUDIENCE),
            jwks_url=env.url(BEHEST_CALLER_JWKS_URL),
            jwks_cache_ttl=env.seconds(BEHEST_JWKS_CACHE_TTL, DEFAULT_JWKS_CACHE_TTL, 0, 86400),
            provider=provider,
            cookie=provider.cookie_name(issuer, env.text(BEHEST_CALLER_COOKIE)),
            authorized_parties=env.names(BEHEST_CALLER_AUTHORIZED_PARTIES) or origins,
            allowed_origins=origins,
            verify=env.flag(BEHEST_VERIFY_CALLERS),
        )

    def missing(self) -> list[str]:
        """The variables a function that verifies callers cannot do without."""
        needed: list[tuple[str, object]] = [(BEHEST_CALLER_ISSUER, self.issuer)]
        if self.provider.audience == AUD_OR_AZP:
            needed.append((BEHEST_CALLER_AUTHORIZED_PARTIES, self.audiences or self.authorized_parties))
        else:
            needed.append((BEHEST_CALLER_AUDIENCE, self.audiences))
        if self.cookie is not None:
            needed.append((BEHEST_ALLOWED_ORIGINS, self.allowed_origins))
        return [name for name, value in needed if not value]

    def problems(self) -> list[str]:
        """What keeps a function from verifying callers: missing variables, an issuer of the wrong shape, plain http."""
        from .providers import is_allowed_url

        problems = [f"{name} is required" for name in self.missing()]
        if self.issuer is not None:
            shape = self.provider.issuer_problem(self.issuer)
            if shape is not None:
                problems.append(f"{BEHEST_CALLER_ISSUER}: {shape}")
        if self.jwks_url is not None and not is_allowed_url(self.jwks_url):
            problems.append(f"{BEHEST_CALLER_JWKS_URL} must be an https URL (plain http only to a loopback host)")
        if self.cookie is not None and "*" in self.allowed_origins:
            problems.append(f"{BEHEST_ALLOWED_ORIGINS} must list exact origins when a cookie carries the token (not *)")
        return problems


class TrustedRole(NamedTuple):
    """A role whose sessions may call the server-to-server front: its ARN as configured, and what identifies it."""

    arn: str
    partition: str
    account: str
    name: str


class ServiceSettings(NamedTuple):
    """The roles the server-to-server function (IAM Function URL) serves; empty everywhere else."""

    trusted_roles: tuple[TrustedRole, ...] = ()

    @classmethod
    def read(cls, env: _Reader) -> ServiceSettings:
        roles = []
        for arn in env.names(BEHEST_TRUSTED_ROLE_ARNS):
            found = re.fullmatch(ROLE_ARN, arn, re.ASCII)
            if found is None:
                env.problems.append(f"{BEHEST_TRUSTED_ROLE_ARNS}: {arn[:120]!r} is not an IAM role ARN "
                                    "(arn:aws:iam::<account>:role/<name>)")
                continue
            roles.append(TrustedRole(arn, found["partition"], found["account"], found["name"]))
        return cls(trusted_roles=tuple(roles))


class Settings(NamedTuple):
    """Everything the functions need from the environment, validated."""

    key: KeySettings
    mint: MintSettings
    identity: IdentitySettings
    relay: RelaySettings
    caller: CallerSettings
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    service: ServiceSettings = ServiceSettings()

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Settings:
        """Read and validate the environment; raise ConfigurationError naming every bad variable."""
        env = _Reader(os.environ if environ is None else environ)
        settings = cls(
            key=KeySettings.read(env),
            mint=MintSettings.read(env),
            identity=IdentitySettings.read(env),
            relay=RelaySettings.read(env),
            caller=CallerSettings.read(env),
            max_body_bytes=env.integer(BEHEST_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES, 1024, 6_291_456),
            service=ServiceSettings.read(env),
        )
        if env.problems:
            raise ConfigurationError("invalid configuration: " + "; ".join(env.problems))
        return settings


def _tier_map(raw: Optional[str], problems: list[str]) -> dict[str, int]:
    """Parse `free=1,pro=2` into a claim-value → tier mapping."""
    mapping: dict[str, int] = {}
    if raw is None:
        return mapping
    for pair in raw.split(","):
        name, sep, value = pair.partition("=")
        value = value.strip()
        if not sep or not name.strip() or not (value.isascii() and value.isdigit()):
            problems.append(f"{BEHEST_TIER_MAP} must look like free=1,pro=2 (bad entry {pair.strip()[:40]!r})")
            return {}
        mapping[name.strip()] = int(value)
    return mapping

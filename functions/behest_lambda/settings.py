"""Configuration: every environment variable the functions read, parsed once at the edge."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .errors import ConfigurationError

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
BEHEST_MAX_TTL = "BEHEST_MAX_TTL"
BEHEST_USER_CLAIM = "BEHEST_USER_CLAIM"
BEHEST_TIER_CLAIM = "BEHEST_TIER_CLAIM"
BEHEST_TIER_MAP = "BEHEST_TIER_MAP"
BEHEST_MINT_TIMEOUT = "BEHEST_MINT_TIMEOUT"
BEHEST_UPSTREAM_TIMEOUT = "BEHEST_UPSTREAM_TIMEOUT"
BEHEST_MAX_BODY_BYTES = "BEHEST_MAX_BODY_BYTES"
BEHEST_ALLOWED_MODELS = "BEHEST_ALLOWED_MODELS"
BEHEST_MAX_TOKENS = "BEHEST_MAX_TOKENS"
BEHEST_SECRETS_EXTENSION = "BEHEST_SECRETS_EXTENSION"
LOG_LEVEL = "LOG_LEVEL"
METRICS_NAMESPACE = "METRICS_NAMESPACE"
# The streaming function (Function URL, no API Gateway authorizer) verifies callers itself.
BEHEST_CALLER_ISSUER = "BEHEST_CALLER_ISSUER"
BEHEST_CALLER_AUDIENCE = "BEHEST_CALLER_AUDIENCE"
BEHEST_CALLER_JWKS_URL = "BEHEST_CALLER_JWKS_URL"
BEHEST_JWKS_CACHE_TTL = "BEHEST_JWKS_CACHE_TTL"

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
DEFAULT_EXTENSION_PORT = 2773
DEFAULT_JWKS_CACHE_TTL = 3600
JWKS_WELL_KNOWN_PATH = "/.well-known/jwks.json"


@dataclass(frozen=True)
class Settings:
    """Everything the functions need from the environment, validated."""

    behest_key: Optional[str]
    key_secret_id: Optional[str]
    base_url: str
    kid: Optional[str]
    tenant_id: Optional[str]
    project_id: Optional[str]
    default_ttl: int
    max_ttl: int
    default_tier: Optional[int]
    issuer: str
    audience: str
    user_claim: str
    tier_claim: Optional[str]
    tier_map: Mapping[str, int]
    key_cache_ttl: float
    key_grace_period: float
    mint_timeout: float
    upstream_timeout: float
    max_body_bytes: int
    allowed_models: frozenset[str]
    max_tokens: Optional[int]
    secrets_extension: str
    extension_port: int
    log_level: str
    metrics_namespace: str
    # Read by the streaming function only, which fails by name when the first two are missing.
    caller_issuer: Optional[str] = None
    caller_audiences: tuple[str, ...] = ()
    caller_jwks_url: Optional[str] = None
    jwks_cache_ttl: float = DEFAULT_JWKS_CACHE_TTL

    @classmethod
    def from_env(cls, environ: Optional[Mapping[str, str]] = None) -> Settings:
        """Read and validate the environment; raise ConfigurationError naming every bad variable."""
        env = os.environ if environ is None else environ
        problems: list[str] = []

        def text(name: str, default: Optional[str] = None) -> Optional[str]:
            value = env.get(name, "").strip()
            return value or default

        def number(name: str, default: Any, low: float, high: float, kind: type = int) -> Any:
            raw = text(name)
            if raw is None:
                return default
            try:
                value = kind(raw)
            except ValueError:
                problems.append(f"{name} must be a {'whole number' if kind is int else 'number'} (got {raw!r})")
                return default
            if not low <= value <= high:
                problems.append(f"{name} must be between {low:g} and {high:g} (got {raw})")
                return default
            return value

        def integer(name: str, default: Optional[int], low: int, high: int) -> Optional[int]:
            return number(name, default, low, high, int)  # type: ignore[no-any-return]

        def seconds(name: str, default: float, low: float, high: float) -> float:
            return number(name, default, low, high, float)  # type: ignore[no-any-return]

        behest_key = text(BEHEST_KEY) or text(BEHEST_API_KEY)
        key_secret_id = text(BEHEST_KEY_SECRET_ID)
        if behest_key is None and key_secret_id is None:
            problems.append(f"set {BEHEST_KEY} or {BEHEST_KEY_SECRET_ID}")

        max_ttl = integer(BEHEST_MAX_TTL, DEFAULT_MAX_TTL, MIN_TTL, CEILING_TTL) or DEFAULT_MAX_TTL
        default_ttl = integer(BEHEST_TTL, min(DEFAULT_TTL, max_ttl), MIN_TTL, CEILING_TTL) or DEFAULT_TTL
        if default_ttl > max_ttl:
            problems.append(f"{BEHEST_TTL} ({default_ttl}) must not exceed {BEHEST_MAX_TTL} ({max_ttl})")

        tier_map = _parse_tier_map(text(BEHEST_TIER_MAP), problems)
        extension = (text(BEHEST_SECRETS_EXTENSION, "auto") or "auto").lower()
        if extension not in ("auto", "on", "off"):
            problems.append(f"{BEHEST_SECRETS_EXTENSION} must be auto, on or off (got {extension!r})")

        base_url = (text(BEHEST_BASE_URL, DEFAULT_BASE_URL) or DEFAULT_BASE_URL).rstrip("/")
        if not base_url.startswith(("https://", "http://")):
            problems.append(f"{BEHEST_BASE_URL} must be an http(s) URL (got {base_url!r})")

        allowed = text(BEHEST_ALLOWED_MODELS)
        caller_issuer = text(BEHEST_CALLER_ISSUER)
        jwks_url = text(BEHEST_CALLER_JWKS_URL)
        for name, url in ((BEHEST_CALLER_ISSUER, caller_issuer), (BEHEST_CALLER_JWKS_URL, jwks_url)):
            if url is not None and not url.startswith(("https://", "http://")):
                problems.append(f"{name} must be an http(s) URL (got {url!r})")
        if jwks_url is None and caller_issuer is not None:
            jwks_url = caller_issuer.rstrip("/") + JWKS_WELL_KNOWN_PATH
        settings = cls(
            behest_key=behest_key,
            key_secret_id=key_secret_id,
            base_url=base_url,
            kid=text(BEHEST_KID),
            tenant_id=text(BEHEST_TENANT_ID),
            project_id=text(BEHEST_PROJECT_ID),
            default_ttl=default_ttl,
            max_ttl=max_ttl,
            default_tier=integer(BEHEST_TIER, None, 0, 1_000_000),
            issuer=text(BEHEST_ISSUER, DEFAULT_ISSUER) or DEFAULT_ISSUER,
            audience=text(BEHEST_AUDIENCE, DEFAULT_AUDIENCE) or DEFAULT_AUDIENCE,
            user_claim=text(BEHEST_USER_CLAIM, "sub") or "sub",
            tier_claim=text(BEHEST_TIER_CLAIM),
            tier_map=tier_map,
            key_cache_ttl=seconds(BEHEST_KEY_CACHE_TTL, DEFAULT_KEY_CACHE_TTL, 0, 86400),
            key_grace_period=seconds(BEHEST_KEY_GRACE_PERIOD, DEFAULT_KEY_GRACE_PERIOD, 0, 86400),
            mint_timeout=seconds(BEHEST_MINT_TIMEOUT, DEFAULT_MINT_TIMEOUT, 0.1, 60),
            upstream_timeout=seconds(BEHEST_UPSTREAM_TIMEOUT, DEFAULT_UPSTREAM_TIMEOUT, 0.1, 900),
            max_body_bytes=integer(BEHEST_MAX_BODY_BYTES, DEFAULT_MAX_BODY_BYTES, 1024, 6_291_456)
            or DEFAULT_MAX_BODY_BYTES,
            allowed_models=frozenset(m.strip() for m in (allowed or "").split(",") if m.strip()),
            max_tokens=integer(BEHEST_MAX_TOKENS, None, 1, 10_000_000),
            secrets_extension=extension,
            extension_port=integer(PARAMETERS_SECRETS_EXTENSION_HTTP_PORT, DEFAULT_EXTENSION_PORT, 1, 65535)
            or DEFAULT_EXTENSION_PORT,
            log_level=(text(LOG_LEVEL, "INFO") or "INFO").upper(),
            metrics_namespace=text(METRICS_NAMESPACE, "BehestLambda") or "BehestLambda",
            caller_issuer=caller_issuer,
            caller_audiences=tuple(a.strip() for a in (text(BEHEST_CALLER_AUDIENCE) or "").split(",") if a.strip()),
            caller_jwks_url=jwks_url,
            jwks_cache_ttl=seconds(BEHEST_JWKS_CACHE_TTL, DEFAULT_JWKS_CACHE_TTL, 0, 86400),
        )
        if problems:
            raise ConfigurationError("invalid configuration: " + "; ".join(problems))
        return settings


def _parse_tier_map(raw: Optional[str], problems: list[str]) -> Mapping[str, int]:
    """Parse `free=1,pro=2` into a claim-value → tier mapping."""
    mapping: dict[str, int] = {}
    if raw is None:
        return mapping
    for pair in raw.split(","):
        name, sep, value = pair.partition("=")
        try:
            if not sep or not name.strip():
                raise ValueError
            mapping[name.strip()] = int(value)
        except ValueError:
            problems.append(f"{BEHEST_TIER_MAP} must look like free=1,pro=2 (bad entry {pair.strip()!r})")
            return {}
    return mapping

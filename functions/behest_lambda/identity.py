"""The caller's identity, taken only from claims API Gateway's JWT authorizer has verified."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .errors import UnauthenticatedError
from .settings import Settings

MAX_USER_ID_LENGTH = 256


@dataclass(frozen=True)
class Identity:
    """A verified end user: their id and, when known, their tier."""

    user_id: str
    tier: Optional[int] = None


def verified_claims(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """Return `requestContext.authorizer.jwt.claims` (HTTP API payload 2.0), or fail closed with 401."""
    node: Any = event
    for step in ("requestContext", "authorizer", "jwt", "claims"):
        node = node.get(step) if isinstance(node, Mapping) else None
    if not isinstance(node, Mapping) or not node:
        raise UnauthenticatedError("no verified identity: this route needs a valid Authorization bearer token")
    return node


def identity_from_claims(claims: Mapping[str, Any], settings: Settings) -> Identity:
    """Pick the user id and tier out of verified claims, per the configured claim names."""
    user_id = claims.get(settings.user_claim)
    if isinstance(user_id, (int, float)) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > MAX_USER_ID_LENGTH:
        raise UnauthenticatedError(f"the verified token carries no usable {settings.user_claim!r} claim")
    return Identity(user_id=user_id, tier=_tier(claims, settings))


def identity_from_event(event: Mapping[str, Any], settings: Settings) -> Identity:
    """The identity of an API Gateway HTTP API event; body, query and headers are never consulted."""
    return identity_from_claims(verified_claims(event), settings)


def _tier(claims: Mapping[str, Any], settings: Settings) -> Optional[int]:
    if settings.tier_claim:
        raw = claims.get(settings.tier_claim)
        if isinstance(raw, bool):
            raw = None
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str):
            value = raw.strip()
            if value in settings.tier_map:
                return settings.tier_map[value]
            if value.isdigit() and len(value) <= 7:
                return int(value)
    return settings.default_tier

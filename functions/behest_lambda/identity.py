"""The caller's identity, taken only from verified claims (API Gateway's JWT authorizer, or `caller_token`)."""

from __future__ import annotations

from collections import abc
from typing import Any, Mapping, NamedTuple, Optional

from .errors import ForbiddenError, UnauthenticatedError
from .settings import IdentitySettings

MAX_USER_ID_LENGTH = 256
MAX_TIER_DIGITS = 7


class Identity(NamedTuple):
    """A verified end user: their id and, when known, their tier; on the IAM front, the trusted role acting for them."""

    user_id: str
    tier: Optional[int] = None
    caller: Optional[str] = None


def identity_from_claims(claims: Optional[Mapping[str, Any]], settings: IdentitySettings) -> Identity:
    """Pick the user id and tier out of verified claims, per the configured claim names; fail closed with 401."""
    if not isinstance(claims, abc.Mapping) or not claims:
        raise UnauthenticatedError("no verified identity: this route needs a valid Authorization bearer token")
    user_id = claims.get(settings.user_claim)
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > MAX_USER_ID_LENGTH:
        raise UnauthenticatedError(f"the verified token carries no usable {settings.user_claim[:64]!r} claim")
    return Identity(user_id=user_id, tier=tier_of(claims, settings))


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim named `path`, or, through objects, the one its dotted path leads to: `app_metadata.plan`.

    A claim whose name itself has dots (Auth0's namespaced `https://example.com/plan`) is found first
    by its whole name; otherwise the longest prefix naming an object is walked into. API Gateway's
    authorizer hands objects over flattened into strings, so a path leads somewhere only where the
    function verified the token itself.
    """
    if path in claims:
        return claims[path]
    cut = path.rfind(".")
    while cut > 0:
        inner = claims.get(path[:cut])
        if isinstance(inner, abc.Mapping):
            return claim_at(inner, path[cut + 1:])
        cut = path.rfind(".", 0, cut)
    return None


def tier_of(claims: Mapping[str, Any], settings: IdentitySettings) -> Optional[int]:
    """The user's tier: a mapped plan name, or a whole number written in ASCII digits, within the configured range.

    Anything else (unknown plan, '²', '９', a list) counts as no tier claim and takes BEHEST_TIER. A
    number outside BEHEST_TIER_MIN..BEHEST_TIER_MAX is refused (403) rather than clamped: clamping
    would hand a mis-issued claim the top tier.
    """
    if not settings.tier_claim:
        return settings.default_tier
    raw = claim_at(claims, settings.tier_claim)
    tier: Optional[int] = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        tier = raw
    elif isinstance(raw, str):
        value = raw.strip()
        if value in settings.tier_map:
            return settings.tier_map[value]
        if value.isascii() and value.isdigit() and len(value) <= MAX_TIER_DIGITS:
            tier = int(value)
    if tier is None:
        return settings.default_tier
    if not settings.tier_min <= tier <= settings.tier_max:
        raise ForbiddenError(
            f"the verified tier claim is outside {settings.tier_min}..{settings.tier_max}", code="tier_out_of_range"
        )
    return tier

"""Cost policy on every generating route: service tiers held to BEHEST_ALLOWED_SERVICE_TIERS; prompt caches per user."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from behest_lambda.credentials import ApiKey, SigningKey
from behest_lambda.errors import InvalidRequestError
from behest_lambda.identity import Identity
from behest_lambda.prompt_cache import MAX_KEY_CHARS, PromptCacheNamespace, namespace_key, namespaced
from behest_lambda.relay import POLICIES, UpstreamCall
from behest_lambda.request import Request
from behest_lambda.settings import Settings
from tests.support import private_key

BODIES = {
    "chat": {"messages": [{"role": "user", "content": "hi"}]},
    "responses": {"input": "hi"},
    "completions": {"prompt": "hi"},
}


def call(route: str, extra: dict[str, Any], **env: str) -> UpstreamCall:
    settings = Settings.from_env({"BEHEST_KEY": "behest_sk_live_x", **env}).relay
    body = json.dumps({**BODIES[route], **extra}).encode()
    return POLICIES[route](Request("POST", "/", {}, {}, body, "req-1"), Identity(user_id="user-42"), settings)


@pytest.mark.parametrize("route", sorted(BODIES))
@pytest.mark.parametrize("tier", ["priority", "scale", "flex", "Default", 1, ["auto"]])
def test_a_service_tier_outside_the_default_allowance_is_refused(route: str, tier: Any) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        call(route, {"service_tier": tier})

    assert (caught.value.status, caught.value.code) == (400, "service_tier_not_allowed")
    assert "auto, default" in caught.value.message


@pytest.mark.parametrize("route", sorted(BODIES))
def test_the_default_tiers_pass_and_an_operator_may_allow_more(route: str) -> None:
    assert call(route, {"service_tier": "auto"}).body["service_tier"] == "auto"  # type: ignore[index]
    assert call(route, {"service_tier": "default"}).body["service_tier"] == "default"  # type: ignore[index]
    assert call(route, {"service_tier": "priority"},
                BEHEST_ALLOWED_SERVICE_TIERS="auto,default,priority").body["service_tier"] == "priority"  # type: ignore[index]
    with pytest.raises(InvalidRequestError):
        call(route, {"service_tier": "default"}, BEHEST_ALLOWED_SERVICE_TIERS="flex")


@pytest.mark.parametrize("route", sorted(BODIES))
def test_the_callers_prompt_cache_key_is_kept_aside_to_be_namespaced(route: str) -> None:
    assert call(route, {"prompt_cache_key": "team-prompt-v2"}).prompt_cache_key == "team-prompt-v2"
    assert call(route, {}).prompt_cache_key is None
    for bad in ("", 7, "k" * 1025):
        with pytest.raises(InvalidRequestError):
            call(route, {"prompt_cache_key": bad})


def signing_key(name: str = "tenant") -> SigningKey:
    return SigningKey(private_key(name), "sk_test", "tenant", "project")


def test_two_users_never_send_the_same_cache_key_and_one_user_always_does() -> None:
    key = namespace_key(signing_key())

    ada, bea = namespaced(key, "ada", "shared"), namespaced(key, "bea", "shared")

    assert ada != bea and ada.endswith(".shared") and bea.endswith(".shared")
    assert namespaced(key, "ada", "shared") == ada
    assert namespaced(key, "ada", "other").split(".")[0] == ada.split(".")[0]


def test_the_tag_is_keyed_by_the_tenant_key_and_is_no_plain_hash_of_the_user() -> None:
    tenant, other = namespace_key(signing_key("tenant")), namespace_key(signing_key("other"))
    tag = namespaced(tenant, "ada", "k").split(".")[0]

    assert tag != namespaced(other, "ada", "k").split(".")[0]
    assert tag not in hashlib.sha256(b"ada").hexdigest() and tag not in namespaced(namespace_key(ApiKey("x")), "ada", "k")


def test_containers_loading_the_same_tenant_key_agree_on_every_users_key() -> None:
    first, second = PromptCacheNamespace(), PromptCacheNamespace()

    assert first.key_for(signing_key(), "ada", "k") == second.key_for(signing_key(), "ada", "k")
    assert first.key_for(ApiKey("behest_sk_live_a"), "ada", "k") == second.key_for(ApiKey("behest_sk_live_a"), "ada", "k")


@pytest.mark.parametrize("caller_key", ["k", "x" * 41, "x" * 42, "y" * 1024, "ü\ud800" * 30])
def test_every_namespaced_key_fits_the_providers_64_characters_and_long_ones_stay_distinct(caller_key: str) -> None:
    key = namespace_key(ApiKey("behest_sk_live_a"))

    sent = namespaced(key, "ada\ud800", caller_key)

    assert len(sent) <= MAX_KEY_CHARS
    assert sent == namespaced(key, "ada\ud800", caller_key)
    assert sent != namespaced(key, "ada\ud800", caller_key + "z")

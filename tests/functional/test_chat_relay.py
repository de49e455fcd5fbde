"""The chat relay as clients use it: the real OpenAI SDK → local HTTP API (JWT authorizer) → relay → stand-in Behest."""

from __future__ import annotations

import asyncio
from typing import Any, Iterator

import jwt
import openai
import pytest

from behest_lambda.app import Service
from behest_lambda.routes import RELAY_FUNCTION, TOKEN_FUNCTION
from devstack.identity import LocalIdentityProvider
from devstack.local_api import JwtAuthorizer, LocalHttpApi
from devstack.standin import Fault, StandinGateway
from tests.support import KID, PROJECT_ID, TENANT_ID, CapturedTelemetry, private_key, public_key, sign_env

CHAT = "/v1/chat/completions"
TOKEN = "/api/behest/token"
API_KEY = "behest_sk_live_relay_tests"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def identity_provider() -> Iterator[LocalIdentityProvider]:
    with LocalIdentityProvider() as provider:
        yield provider


@pytest.fixture(scope="module")
def standin() -> Iterator[StandinGateway]:
    gateway = StandinGateway()
    gateway.register_key(KID, public_key("tenant"))
    gateway.register_api_key(API_KEY, TENANT_ID, PROJECT_ID)
    with gateway:
        yield gateway


@pytest.fixture(autouse=True)
def fresh_standin(standin: StandinGateway) -> Iterator[None]:
    standin.clear_faults()
    standin.clear_records()
    yield
    standin.clear_faults()


class Stack:
    """The local HTTP API routing both functions, built from one environment."""

    def __init__(self, provider: LocalIdentityProvider, env: dict[str, str]) -> None:
        self.telemetry = CapturedTelemetry("relay")
        relay = Service.from_env(RELAY_FUNCTION, self.telemetry, env)
        token = Service.from_env(TOKEN_FUNCTION, self.telemetry, env)
        self.api = LocalHttpApi(
            {RELAY_FUNCTION: lambda event, context: relay.handle(event),
             TOKEN_FUNCTION: lambda event, context: token.handle(event)},
            JwtAuthorizer(provider.issuer, [provider.audience], provider.jwks_url),
        ).start()
        self.provider = provider
        self.clients: list[openai.OpenAI] = []

    def client(self, user: str = "user-42", **options: Any) -> openai.OpenAI:
        self.clients.append(openai.OpenAI(base_url=self.api.url + "/v1", api_key=self.provider.issue(user),
                                          max_retries=0, **options))
        return self.clients[-1]

    def stop(self) -> None:
        for client in self.clients:
            client.close()
        self.api.stop()

    def async_client(self, user: str = "user-42") -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.api.url + "/v1", api_key=self.provider.issue(user), max_retries=0)


def make_stack(provider: LocalIdentityProvider, standin: StandinGateway, **env: str) -> Iterator[Stack]:
    stack = Stack(provider, sign_env(BEHEST_BASE_URL=standin.url, BEHEST_UPSTREAM_TIMEOUT="1.5", **env))
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def stack(identity_provider: LocalIdentityProvider, standin: StandinGateway) -> Iterator[Stack]:
    yield from make_stack(identity_provider, standin)


def assert_every_upstream_request_was_for(standin: StandinGateway, user: str) -> None:
    chats = [r for r in standin.requests if r.path == CHAT]
    assert chats, "the stand-in saw no chat request"
    for recorded in chats:
        assert recorded.claims is not None and recorded.claims["uid"] == user
        assert recorded.body["user"] == user


def test_a_completion_comes_back_for_the_verified_user(stack: Stack, standin: StandinGateway) -> None:
    completion = stack.client().chat.completions.create(messages=HI, model="any-model")

    assert completion.choices[0].message.content == "Hello user-42! You said: hi"
    assert_every_upstream_request_was_for(standin, "user-42")
    recorded = standin.requests[-1]
    assert recorded.header("x-session-id") == recorded.claims["sid"]  # type: ignore[index]


def test_model_may_be_omitted(stack: Stack, standin: StandinGateway) -> None:
    # The SDK insists on a model argument; the wire format does not.
    completion = stack.client().post("/chat/completions", body={"messages": HI}, cast_to=dict)

    assert completion["model"] == "behest-default"
    assert "model" not in standin.requests[-1].body


def test_a_spoofed_user_field_is_not_honoured(stack: Stack, standin: StandinGateway) -> None:
    completion = stack.client("alice").chat.completions.create(messages=HI, model="m", user="admin")

    assert completion.choices[0].message.content.startswith("Hello alice!")  # type: ignore[union-attr]
    assert_every_upstream_request_was_for(standin, "alice")


def test_a_stream_is_consumed_by_the_sync_sdk(stack: Stack, standin: StandinGateway) -> None:
    stream = stack.client().chat.completions.create(messages=HI, model="m", stream=True)

    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert text == "Hello user-42! You said: hi"
    assert standin.requests[-1].header("accept") == "text/event-stream"


def test_the_async_sdk_completes_and_streams(stack: Stack) -> None:
    async def run() -> tuple[str, str]:
        client = stack.async_client("bob")
        completion = await client.chat.completions.create(messages=HI, model="m")
        stream = await client.chat.completions.create(messages=HI, model="m", stream=True)
        streamed = "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])
        await client.close()
        return completion.choices[0].message.content or "", streamed

    completed, streamed = asyncio.run(run())

    assert completed == streamed == "Hello bob! You said: hi"


def test_the_session_id_header_is_continued_and_echoed(stack: Stack, standin: StandinGateway) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(
        messages=HI, model="m", extra_headers={"X-Session-Id": "chat-session-7"}
    )

    assert raw.headers["x-session-id"] == "chat-session-7"
    assert standin.requests[-1].claims["sid"] == "chat-session-7"  # type: ignore[index]


def test_without_a_session_id_a_new_one_is_made_and_echoed(stack: Stack, standin: StandinGateway) -> None:
    raw = stack.client().chat.completions.with_raw_response.create(messages=HI, model="m")

    assert len(raw.headers["x-session-id"]) == 36
    assert standin.requests[-1].header("x-session-id") == raw.headers["x-session-id"]


def test_a_429_raises_rate_limit_error_carrying_retry_after(stack: Stack, standin: StandinGateway) -> None:
    standin.inject(Fault("status", status=429, retry_after=7, code="rate_limited", path="chat"))

    with pytest.raises(openai.RateLimitError) as caught:
        stack.client().chat.completions.create(messages=HI, model="m")

    assert caught.value.response.headers["retry-after"] == "7"
    assert caught.value.code == "rate_limited"


@pytest.mark.parametrize(("status", "code"), [(400, "validation_error"), (402, "quota_exceeded"), (403, "forbidden"),
                                            (404, "model_not_found"), (422, "validation_error"), (451, "pii_blocked")])
def test_other_upstream_4xx_keep_their_status_and_code(
    stack: Stack, standin: StandinGateway, status: int, code: str
) -> None:
    standin.inject(Fault("status", status=status, code=code, path="chat"))

    with pytest.raises(openai.APIStatusError) as caught:
        stack.client().chat.completions.create(messages=HI, model="m")

    assert (caught.value.status_code, caught.value.code) == (status, code)


def test_behest_refusing_the_token_we_minted_is_a_502_that_names_the_kid_in_the_log_and_not_to_the_user(
    stack: Stack, standin: StandinGateway,
) -> None:
    standin.unregister_key(KID)  # the likeliest cause: the kid was never registered at Behest
    try:
        with pytest.raises(openai.InternalServerError) as caught:
            stack.client().chat.completions.create(messages=HI, model="m")
    finally:
        standin.register_key(KID, public_key("tenant"))

    assert (caught.value.status_code, caught.value.code) == (502, "upstream_auth_failed")
    for word in ("key", "kid", "token", KID):
        assert word not in caught.value.message.lower()
    [logged] = [r for r in stack.telemetry.logs() if r["message"] == "Behest refused this deployment's credentials"]
    assert logged["level"] == "ERROR" and logged["kid"] == KID and "signed" in logged["refused"]
    assert (logged["upstream_status"], logged["upstream_code"]) == (401, "invalid_token")
    causes = " ".join(logged["likely_causes"])
    assert "not registered" in causes and "clock skew" in causes and "rotated" in causes
    assert "eyJ" not in stack.telemetry.text()
    stack.telemetry.flush()
    [emf] = [r["_aws"]["CloudWatchMetrics"][0] for r in stack.telemetry.records
             if "_aws" in r and "UpstreamAuthFailed" in r]
    # As template.yaml's UpstreamAuthFailedAlarm reads it; the same metric again with `front`, in the same record.
    assert emf["Dimensions"] == [["service"], ["service", "front"]]


@pytest.mark.parametrize("code", ["invalid_token", "token_expired"])
def test_a_403_refusing_the_token_itself_is_a_502_too(stack: Stack, standin: StandinGateway, code: str) -> None:
    standin.inject(Fault("status", status=403, code=code, path="chat"))

    with pytest.raises(openai.InternalServerError) as caught:
        stack.client().chat.completions.create(messages=HI, model="m")

    assert (caught.value.status_code, caught.value.code) == (502, "upstream_auth_failed")


@pytest.mark.parametrize("status", [500, 502, 503])
def test_an_upstream_5xx_is_a_502(stack: Stack, standin: StandinGateway, status: int) -> None:
    standin.inject(Fault("status", status=status, path="chat"))

    with pytest.raises(openai.APIStatusError) as caught:
        stack.client().chat.completions.create(messages=HI, model="m")

    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_error"


def test_a_slow_upstream_is_a_504(stack: Stack, standin: StandinGateway) -> None:
    standin.inject(Fault("delay", seconds=3, path="chat"))

    with pytest.raises(openai.APIStatusError) as caught:
        stack.client().chat.completions.create(messages=HI, model="m")

    assert caught.value.status_code == 504
    assert caught.value.code == "upstream_timeout"


def test_an_unreachable_upstream_is_a_502(identity_provider: LocalIdentityProvider, unused_port: int) -> None:
    stack = Stack(identity_provider, sign_env(BEHEST_BASE_URL=f"http://127.0.0.1:{unused_port}"))
    try:
        with pytest.raises(openai.APIStatusError) as caught:
            stack.client().chat.completions.create(messages=HI, model="m")
    finally:
        stack.stop()

    assert caught.value.status_code == 502
    assert "unreachable" in caught.value.message


def test_garbage_from_upstream_is_a_502(stack: Stack, standin: StandinGateway) -> None:
    standin.inject(Fault("garbage", path="chat"))

    with pytest.raises(openai.APIStatusError) as caught:
        stack.client().chat.completions.create(messages=HI, model="m")

    assert caught.value.status_code == 502


def test_a_reset_mid_stream_ends_the_stream_with_an_error_the_sdk_raises(stack: Stack, standin: StandinGateway) -> None:
    standin.inject(Fault("reset_after", chunks=2, path="chat"))
    received: list[str] = []

    with pytest.raises(openai.APIError) as caught:
        for chunk in stack.client().chat.completions.create(messages=HI, model="m", stream=True):
            received.append(chunk.choices[0].delta.content or "")

    assert len(received) == 2
    assert "broke off" in caught.value.message


def test_a_stream_that_never_ends_is_cut_at_the_upstream_timeout(stack: Stack, standin: StandinGateway) -> None:
    standin.inject(Fault("endless", seconds=0.05, path="chat"))

    with pytest.raises(openai.APIError) as caught:
        list(stack.client().chat.completions.create(messages=HI, model="m", stream=True))

    assert "timeout" in caught.value.message


def test_a_caller_without_a_valid_identity_token_is_refused_by_the_authorizer(stack: Stack, standin: StandinGateway) -> None:
    claims = {"sub": "user-42", "iss": stack.provider.issuer, "aud": stack.provider.audience, "exp": 2**31}
    forged_hs256 = jwt.encode(claims, "an attacker's own secret, 32+ bytes long", algorithm="HS256")
    forged_rs256 = jwt.encode(claims, private_key("other"), algorithm="RS256", headers={"kid": stack.provider.kid})
    expired = stack.provider.issue("user-42", ttl=-60)
    wrong_audience = stack.provider.issue("user-42", audience="another-app")
    for key in ("behest_sk_live_anything", forged_hs256, forged_rs256, expired, wrong_audience):
        client = openai.OpenAI(base_url=stack.api.url + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(messages=HI, model="m")

    assert not standin.requests


def test_bad_bodies_get_a_400_before_anything_reaches_behest(stack: Stack, standin: StandinGateway) -> None:
    with pytest.raises(openai.BadRequestError):
        stack.client().chat.completions.create(messages=[], model="m")

    assert not standin.requests


def test_api_key_mode_mints_through_behest_then_relays(identity_provider: LocalIdentityProvider,
                                                        standin: StandinGateway) -> None:
    env = {"BEHEST_KEY": API_KEY, "BEHEST_KID": "", "BEHEST_TENANT_ID": "", "BEHEST_PROJECT_ID": ""}
    for stack in make_stack(identity_provider, standin, **env):
        completion = stack.client("carol").chat.completions.create(messages=HI, model="m")

        assert completion.choices[0].message.content == "Hello carol! You said: hi"
        assert [r.path for r in standin.requests] == ["/v1/auth/mint", CHAT]
        assert standin.requests[0].header("authorization") == f"Bearer {API_KEY}"
        assert_every_upstream_request_was_for(standin, "carol")
        assert API_KEY not in stack.telemetry.text()


def test_api_key_mode_reuses_a_fresh_token_per_user_and_session(identity_provider: LocalIdentityProvider,
                                                                 standin: StandinGateway) -> None:
    env = {"BEHEST_KEY": API_KEY, "BEHEST_KID": "", "BEHEST_TENANT_ID": "", "BEHEST_PROJECT_ID": ""}
    for stack in make_stack(identity_provider, standin, **env):
        dave, erin = stack.client("dave"), stack.client("erin")
        for _ in range(3):
            dave.chat.completions.create(messages=HI, model="m")
        erin.chat.completions.create(messages=HI, model="m")
        dave.chat.completions.create(messages=HI, model="m", extra_headers={"X-Session-Id": "other-session"})

        mints = [r.body["user_id"] for r in standin.requests if r.path == "/v1/auth/mint"]
        assert mints == ["dave", "erin", "dave"]
        assert_every_upstream_request_was_for_each_caller(standin)


def test_api_key_mode_drops_a_token_behest_refused_and_mints_afresh(identity_provider: LocalIdentityProvider,
                                                                    standin: StandinGateway) -> None:
    env = {"BEHEST_KEY": API_KEY, "BEHEST_KID": "", "BEHEST_TENANT_ID": "", "BEHEST_PROJECT_ID": ""}
    for stack in make_stack(identity_provider, standin, **env):
        fay = stack.client("fay")
        fay.chat.completions.create(messages=HI, model="m")
        standin.inject(Fault("status", status=401, code="invalid_token", path="chat"))
        with pytest.raises(openai.InternalServerError):
            fay.chat.completions.create(messages=HI, model="m")
        fay.chat.completions.create(messages=HI, model="m")

        # The refused token is not reused: the request after the refusal mints again.
        assert [r.path for r in standin.requests] == ["/v1/auth/mint", CHAT, CHAT, "/v1/auth/mint", CHAT]
        [logged] = [r for r in stack.telemetry.logs() if r["message"] == "Behest refused this deployment's credentials"]
        assert "kid" not in logged and "clock skew" in " ".join(logged["likely_causes"])
        assert "API key" in " ".join(logged["likely_causes"])


def test_api_key_mode_behest_refusing_the_api_key_is_a_502_the_operator_is_told_about(
    identity_provider: LocalIdentityProvider, standin: StandinGateway,
) -> None:
    env = {"BEHEST_KEY": API_KEY, "BEHEST_KID": "", "BEHEST_TENANT_ID": "", "BEHEST_PROJECT_ID": ""}
    for stack in make_stack(identity_provider, standin, **env):
        standin.inject(Fault("status", status=401, code="invalid_api_key", path="mint"))

        with pytest.raises(openai.InternalServerError) as caught:
            stack.client("gus").chat.completions.create(messages=HI, model="m")

        assert (caught.value.status_code, caught.value.code) == (502, "upstream_auth_failed")
        assert "key" not in caught.value.message.lower()
        [logged] = [r for r in stack.telemetry.logs() if r["message"] == "Behest refused this deployment's credentials"]
        assert "API key" in logged["refused"] and logged["upstream_code"] == "invalid_api_key"


def test_sign_mode_mints_a_fresh_token_for_every_request(stack: Stack, standin: StandinGateway) -> None:
    client = stack.client()
    for _ in range(3):
        client.chat.completions.create(messages=HI, model="m")

    assert len({r.claims["jti"] for r in standin.requests if r.claims}) == 3


def assert_every_upstream_request_was_for_each_caller(standin: StandinGateway) -> None:
    for recorded in (r for r in standin.requests if r.path == CHAT):
        assert recorded.claims is not None and recorded.claims["uid"] == recorded.body["user"]


def test_a_garbled_event_mid_stream_ends_the_stream_with_an_error_the_sdk_raises(stack: Stack,
                                                                                  standin: StandinGateway) -> None:
    standin.inject(Fault("garbage", path="chat"))

    with pytest.raises(openai.APIError) as caught:
        list(stack.client().chat.completions.create(messages=HI, model="m", stream=True))

    assert "not UTF-8" in caught.value.message or "not JSON" in caught.value.message

"""The Behest stand-in gateway: token checks as Kong does them, mint, chat, Responses, embeddings and models,
recording and faults."""

from __future__ import annotations

import base64
import http.client
import json
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple, Optional, cast

import jwt
import openai
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from devstack import standin
from devstack.standin import Fault, StandinGateway

ROOT = Path(__file__).resolve().parents[2]
KID = "sk_test_standin"
TENANT_ID = "tenant-standin"
PROJECT_ID = "project-standin"
API_KEY = "behest_sk_live_standin_test_key"
ISSUER = "https://api.behest.ai"
AUDIENCE = "behest"
CHAT = "/v1/chat/completions"
MINT = "/v1/auth/mint"
HELLO = {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi there"}]}
MINTED_CLAIM_ORDER = ["tid", "pid", "uid", "role", "scp", "iss", "aud", "iat", "nbf", "exp", "jti", "sid", "tier"]


@pytest.fixture(scope="module")
def tenant_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def standin_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def gateway(tenant_key: rsa.RSAPrivateKey, standin_key: rsa.RSAPrivateKey) -> Iterator[StandinGateway]:
    with StandinGateway(signing_key=standin_key) as gateway:
        gateway.register_key(KID, tenant_key.public_key())
        gateway.register_api_key(API_KEY, TENANT_ID, PROJECT_ID)
        yield gateway


@pytest.fixture
def token(tenant_key: rsa.RSAPrivateKey) -> str:
    return sign(tenant_key, claims())


def claims(**overrides: Any) -> dict[str, Any]:
    """Claims as the local-sign mode writes them; an override of None drops the claim."""
    now = int(time.time())
    values: dict[str, Any] = {
        "tid": TENANT_ID, "pid": PROJECT_ID, "uid": "alice", "role": "user", "scp": [], "iss": ISSUER,
        "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 900, "jti": str(uuid.uuid4()), "sid": str(uuid.uuid4()),
    }
    values.update(overrides)
    return {name: value for name, value in values.items() if value is not None}


def sign(key: Any, payload: dict[str, Any], kid: str = KID, algorithm: str = "RS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm, headers={"kid": kid})


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def error_code(self) -> str:
        return str(self.json()["error"]["code"])


class Address(NamedTuple):
    host: str
    port: int


def call(gateway: StandinGateway | Address, path: str, payload: Any = None, *, bearer: Optional[str] = None,
         raw: Optional[bytes] = None, method: str = "POST") -> Reply:
    """One request over a fresh connection, the whole answer read."""
    connection = http.client.HTTPConnection(gateway.host, gateway.port, timeout=5)
    try:
        body = raw if raw is not None else (json.dumps(payload).encode() if payload is not None else None)
        headers = {"Content-Type": "application/json"}
        if bearer is not None:
            headers["Authorization"] = f"Bearer {bearer}"
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read())
    finally:
        connection.close()


class RawStream:
    """A streamed chat request read line by line, with the connection in the test's hands."""

    def __init__(self, gateway: StandinGateway, bearer: str, payload: Optional[dict[str, Any]] = None) -> None:
        self.connection = http.client.HTTPConnection(gateway.host, gateway.port, timeout=5)
        body = json.dumps({**(payload or HELLO), "stream": True}).encode()
        self.connection.request("POST", CHAT, body=body, headers={
            "Authorization": f"Bearer {bearer}", "Content-Type": "application/json", "Accept": "text/event-stream"})
        self.response = self.connection.getresponse()

    def next_data(self) -> bytes:
        """The payload of the next `data:` event; b"" at the end of the body."""
        while True:
            line = self.response.readline()
            if not line:
                return b""
            if line.startswith(b"data: "):
                return line[len(b"data: "):].rstrip(b"\n")

    def all_data(self) -> list[bytes]:
        events = []
        while data := self.next_data():
            events.append(data)
        return events

    def close(self) -> None:
        self.connection.close()


def sdk(gateway: StandinGateway, bearer: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.url + "/v1", api_key=bearer, max_retries=0, timeout=5)


def test_a_valid_token_is_answered_and_recorded_with_its_claims(gateway: StandinGateway, token: str) -> None:
    reply = call(gateway, CHAT, HELLO, bearer=token)

    assert reply.status == 200
    completion = reply.json()
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"] == {"role": "assistant", "content": "Hello alice! You said: hi there"}
    assert completion["choices"][0]["finish_reason"] == "stop"
    assert completion["model"] == "behest-default"
    assert completion["usage"]["total_tokens"] == completion["usage"]["prompt_tokens"] + 6
    [recorded] = gateway.requests
    assert (recorded.method, recorded.path, recorded.body) == ("POST", CHAT, HELLO)
    assert recorded.header("Authorization") == f"Bearer {token}"
    assert recorded.claims is not None and recorded.claims["uid"] == "alice" and recorded.claims["tid"] == TENANT_ID
    assert recorded.trace_id == reply.headers["x-trace-id"]
    assert abs(recorded.received_at - time.time()) < 5


def test_the_model_named_in_the_request_is_echoed(gateway: StandinGateway, token: str) -> None:
    reply = call(gateway, CHAT, {**HELLO, "model": "gpt-4o-mini"}, bearer=token)

    assert reply.json()["model"] == "gpt-4o-mini"


REFUSED_TOKENS: dict[str, Callable[[rsa.RSAPrivateKey, rsa.RSAPrivateKey], str]] = {
    "an unknown kid": lambda tenant, other: sign(tenant, claims(), kid="sk_nobody"),
    "a registered kid signed by another key": lambda tenant, other: sign(other, claims()),
    "HS256": lambda tenant, other: sign("s" * 64, claims(), algorithm="HS256"),
    "alg none": lambda tenant, other: sign(None, claims(), algorithm="none"),
    "the wrong audience": lambda tenant, other: sign(tenant, claims(aud="someone-else")),
    "the wrong issuer": lambda tenant, other: sign(tenant, claims(iss="https://evil.example")),
    "nbf in the future": lambda tenant, other: sign(tenant, claims(nbf=int(time.time()) + 300)),
    "no sid claim": lambda tenant, other: sign(tenant, claims(sid=None)),
    "no jti claim": lambda tenant, other: sign(tenant, claims(jti=None)),
    "no uid claim": lambda tenant, other: sign(tenant, claims(uid=None)),
    "not a JWT at all": lambda tenant, other: "not-a-jwt",
}


@pytest.mark.parametrize("case", REFUSED_TOKENS)
def test_a_token_the_gateway_would_refuse_gets_401_invalid_token(
    gateway: StandinGateway, tenant_key: rsa.RSAPrivateKey, other_key: rsa.RSAPrivateKey, case: str
) -> None:
    reply = call(gateway, CHAT, HELLO, bearer=REFUSED_TOKENS[case](tenant_key, other_key))

    assert reply.status == 401
    assert reply.error_code == "invalid_token"
    assert reply.json()["error"]["message"]
    assert reply.headers["x-trace-id"]
    assert [r.claims for r in gateway.requests] == [None]


def test_an_expired_token_is_refused_with_token_expired(gateway: StandinGateway, tenant_key: rsa.RSAPrivateKey) -> None:
    now = int(time.time())
    expired = sign(tenant_key, claims(iat=now - 1000, nbf=now - 1000, exp=now - 10))

    reply = call(gateway, CHAT, HELLO, bearer=expired)

    assert reply.status == 401
    assert reply.error_code == "token_expired"
    assert reply.headers["x-trace-id"]


def test_a_raw_api_key_as_bearer_on_chat_is_refused(gateway: StandinGateway) -> None:
    reply = call(gateway, CHAT, HELLO, bearer=API_KEY)

    assert reply.status == 401
    assert reply.error_code == "invalid_token"
    assert "mint" in reply.json()["error"]["message"]


def test_a_chat_request_without_a_bearer_is_refused(gateway: StandinGateway) -> None:
    reply = call(gateway, CHAT, HELLO)

    assert reply.status == 401
    assert reply.error_code == "invalid_token"


def test_a_key_that_is_unregistered_stops_being_accepted(gateway: StandinGateway, token: str) -> None:
    gateway.unregister_key(KID)

    assert call(gateway, CHAT, HELLO, bearer=token).status == 401


def test_the_mint_endpoint_signs_a_token_the_chat_endpoint_accepts(gateway: StandinGateway) -> None:
    request = {"user_id": "bob", "role": "user", "ttl": 900, "session_id": "session-1", "tier": 2}

    minted = call(gateway, MINT, request, bearer=API_KEY)

    assert minted.status == 200
    answer = minted.json()
    assert (answer["ttl"], answer["session_id"]) == (900, "session-1")
    assert jwt.get_unverified_header(answer["jwt"])["kid"] == gateway.signing_kid
    minted_claims = jwt.decode(answer["jwt"], options={"verify_signature": False})
    assert list(minted_claims) == MINTED_CLAIM_ORDER
    assert (minted_claims["tid"], minted_claims["pid"], minted_claims["uid"]) == (TENANT_ID, PROJECT_ID, "bob")
    assert (minted_claims["sid"], minted_claims["tier"], minted_claims["scp"]) == ("session-1", 2, [])
    assert minted_claims["exp"] - minted_claims["iat"] == 900
    chat = call(gateway, CHAT, HELLO, bearer=answer["jwt"])
    assert chat.status == 200
    assert chat.json()["choices"][0]["message"]["content"] == "Hello bob! You said: hi there"


def test_a_minted_token_without_tier_carries_no_tier_claim(gateway: StandinGateway) -> None:
    answer = call(gateway, MINT, {"user_id": "bob", "role": "user", "ttl": 900, "session_id": "s"}, bearer=API_KEY).json()

    assert list(jwt.decode(answer["jwt"], options={"verify_signature": False})) == MINTED_CLAIM_ORDER[:-1]


@pytest.mark.parametrize("bearer", [None, "behest_sk_live_unknown", "a.b.c"])
def test_mint_refuses_a_caller_without_a_registered_api_key(gateway: StandinGateway, bearer: Optional[str]) -> None:
    reply = call(gateway, MINT, {"user_id": "bob", "ttl": 900}, bearer=bearer)

    assert reply.status == 401
    assert reply.headers["x-trace-id"]
    assert "jwt" not in reply.json()


@pytest.mark.parametrize("body", [
    b"not json", b"[]", b'{"ttl": 900}', b'{"user_id": ""}', b'{"user_id": "bob", "ttl": "900"}',
    b'{"user_id": "bob", "ttl": 5}', b'{"user_id": "bob", "tier": "gold"}', b'{"user_id": "bob", "session_id": 7}',
])
def test_mint_refuses_a_malformed_body_with_validation_error(gateway: StandinGateway, body: bytes) -> None:
    reply = call(gateway, MINT, raw=body, bearer=API_KEY)

    assert reply.status == 400
    assert reply.error_code == "validation_error"


@pytest.mark.parametrize("body", [
    b"", b"not json", b'{"model": "m"}', b'{"messages": []}', b'{"messages": "hi"}', b'{"messages": ["hi"]}',
    b'{"messages": [{"role": "user", "content": "x"}], "model": 3}',
    b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
])
def test_chat_refuses_a_body_without_valid_messages(gateway: StandinGateway, token: str, body: bytes) -> None:
    reply = call(gateway, CHAT, raw=body, bearer=token)

    assert reply.status == 400
    assert reply.error_code == "validation_error"
    assert reply.headers["x-trace-id"]


def test_an_unknown_path_is_answered_404_in_behests_error_shape(gateway: StandinGateway, token: str) -> None:
    reply = call(gateway, "/v1/images/generations", {"prompt": "x"}, bearer=token)

    assert reply.status == 404
    assert reply.error_code == "not_found"


def test_a_known_path_with_another_method_is_answered_405_with_allow(gateway: StandinGateway, token: str) -> None:
    reply = call(gateway, "/v1/models", {}, bearer=token)

    assert (reply.status, reply.error_code, reply.headers["allow"]) == (405, "method_not_allowed", "GET")


def test_the_openai_sdk_reads_a_buffered_completion(gateway: StandinGateway, token: str) -> None:
    with sdk(gateway, token) as client:
        completion = client.chat.completions.create(model="behest-default", messages=HELLO["messages"])

    assert completion.choices[0].message.content == "Hello alice! You said: hi there"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 6


def test_the_openai_sdk_streams_the_deterministic_text_chunk_by_chunk(gateway: StandinGateway, token: str) -> None:
    gateway.chunk_delay = 0.03
    pieces: list[str] = []
    first_piece_at: Optional[float] = None
    finish_reasons = []
    with sdk(gateway, token) as client, client.chat.completions.create(
        model="behest-default", messages=HELLO["messages"], stream=True
    ) as stream:
        for chunk in stream:
            delta = chunk.choices[0].delta.content
            if delta:
                first_piece_at = first_piece_at or time.monotonic()
                pieces.append(delta)
            finish_reasons.append(chunk.choices[0].finish_reason)

    assert "".join(pieces) == "Hello alice! You said: hi there"
    assert len(pieces) == 6
    assert finish_reasons[-1] == "stop" and finish_reasons.count("stop") == 1
    last_sent = [e for e in gateway.events if e.kind == "chunk_sent"][-1]
    assert first_piece_at is not None and first_piece_at < last_sent.at
    assert gateway.wait_for_event("stream_done", timeout=1).chunk == 8


def test_the_openai_sdk_receives_usage_when_it_asks_for_it(gateway: StandinGateway, token: str) -> None:
    with sdk(gateway, token) as client, client.chat.completions.create(
        model="m", messages=HELLO["messages"], stream=True, stream_options={"include_usage": True}
    ) as stream:
        usages = [chunk.usage for chunk in stream if chunk.usage is not None]

    assert [u.completion_tokens for u in usages] == [6]


def test_a_stream_is_chunked_server_sent_events_ending_with_done(gateway: StandinGateway, token: str) -> None:
    stream = RawStream(gateway, token)
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type") == "text/event-stream"
        assert stream.response.getheader("Transfer-Encoding") == "chunked"
        assert stream.response.getheader("X-Trace-Id")
        events = stream.all_data()
    finally:
        stream.close()

    assert events[-1] == b"[DONE]"
    chunks = [json.loads(data) for data in events[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk["id"] for chunk in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "Hello alice! You said: hi there"


STATUS_FAULTS = [(401, "invalid_token"), (402, "quota_exceeded"), (403, "forbidden"), (429, "rate_limited"),
                 (451, "content_blocked"), (500, "server_error"), (502, "server_error"), (503, "server_error")]


@pytest.mark.parametrize(("status", "code"), STATUS_FAULTS)
def test_an_injected_status_is_answered_once_in_behests_error_shape(
    gateway: StandinGateway, token: str, status: int, code: str
) -> None:
    gateway.inject(Fault("status", status=status))

    faulted = call(gateway, CHAT, HELLO, bearer=token)
    after = call(gateway, CHAT, HELLO, bearer=token)

    assert (faulted.status, faulted.error_code) == (status, code)
    assert faulted.headers["x-trace-id"]
    assert (faulted.headers.get("retry-after") is not None) == (status == 429)
    assert after.status == 200
    assert gateway.pending_faults == []


def test_a_rate_limit_fault_reaches_the_openai_sdk_with_its_retry_after(gateway: StandinGateway, token: str) -> None:
    gateway.inject(Fault("status", status=429, retry_after=7, code="budget_exceeded", message="slow down"))

    with sdk(gateway, token) as client, pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(model="m", messages=HELLO["messages"])

    assert refused.value.status_code == 429
    assert refused.value.response.headers["retry-after"] == "7"
    assert refused.value.response.json() == {"error": {"code": "budget_exceeded", "message": "slow down"}}


def test_queued_faults_are_used_in_order_one_request_each(gateway: StandinGateway, token: str) -> None:
    gateway.inject(Fault("status", status=500), Fault("status", status=503))

    assert [call(gateway, CHAT, HELLO, bearer=token).status for _ in range(3)] == [500, 503, 200]


def test_a_fault_scoped_to_mint_leaves_chat_alone(gateway: StandinGateway, token: str) -> None:
    gateway.inject(Fault("status", status=503, path="mint"))

    assert call(gateway, CHAT, HELLO, bearer=token).status == 200
    assert call(gateway, MINT, {"user_id": "bob", "ttl": 900}, bearer=API_KEY).status == 503
    assert call(gateway, MINT, {"user_id": "bob", "ttl": 900}, bearer=API_KEY).status == 200


def test_a_delay_fault_holds_the_answer_back(gateway: StandinGateway, token: str) -> None:
    gateway.inject(Fault("delay", seconds=0.3))
    started = time.monotonic()

    reply = call(gateway, CHAT, HELLO, bearer=token)

    assert time.monotonic() - started >= 0.3
    assert reply.status == 200


def test_a_reset_fault_breaks_a_stream_after_k_chunks(gateway: StandinGateway, token: str) -> None:
    gateway.chunk_delay = 0.05
    gateway.inject(Fault("reset_after", chunks=2))
    stream = RawStream(gateway, token)
    received = []
    try:
        with pytest.raises(ConnectionResetError):
            while data := stream.next_data():
                received.append(json.loads(data))
    finally:
        stream.close()

    assert [c["choices"][0]["delta"] for c in received] == [{"role": "assistant", "content": ""}, {"content": "Hello "}]
    assert gateway.wait_for_event("stream_reset", timeout=1).chunk == 2


def test_a_reset_fault_on_a_buffered_answer_drops_the_connection_before_any_byte(
    gateway: StandinGateway, token: str
) -> None:
    gateway.inject(Fault("reset_after"))

    with pytest.raises(ConnectionResetError):
        call(gateway, CHAT, HELLO, bearer=token)


def test_a_reset_fault_with_chunks_on_a_buffered_answer_breaks_off_mid_body(gateway: StandinGateway, token: str) -> None:
    gateway.inject(Fault("reset_after", chunks=1, path="mint"))
    connection = http.client.HTTPConnection(gateway.host, gateway.port, timeout=5)
    try:
        connection.request("POST", MINT, body=b'{"user_id": "bob"}', headers={"Authorization": f"Bearer {API_KEY}"})
        response = connection.getresponse()
        assert response.status == 200
        with pytest.raises((ConnectionResetError, http.client.IncompleteRead)):
            response.read()
    finally:
        connection.close()


def test_a_garbage_fault_answers_200_with_a_body_that_is_not_json(gateway: StandinGateway, token: str) -> None:
    gateway.inject(Fault("garbage"))

    reply = call(gateway, CHAT, HELLO, bearer=token)

    assert reply.status == 200
    with pytest.raises(ValueError):
        reply.json()


def test_a_garbage_fault_on_a_stream_puts_garbage_inside_the_sse(gateway: StandinGateway, token: str) -> None:
    gateway.inject(Fault("garbage"))
    stream = RawStream(gateway, token)
    try:
        events = stream.all_data()
    finally:
        stream.close()

    assert stream.response.status == 200
    assert len(events) == 3
    assert json.loads(events[0])["object"] == "chat.completion.chunk"
    assert events[1] != b"[DONE]"
    with pytest.raises(ValueError):
        json.loads(events[1])
    assert events[2] == b"[DONE]"


def test_an_endless_stream_stops_when_the_client_goes_away(gateway: StandinGateway, token: str) -> None:
    gateway.inject(Fault("endless", seconds=0.02))
    stream = RawStream(gateway, token)
    try:
        received = [stream.next_data() for _ in range(12)]
    finally:
        stream.close()

    assert b"[DONE]" not in received
    assert all(json.loads(data)["choices"][0]["finish_reason"] is None for data in received)
    aborted = gateway.wait_for_event("stream_aborted", timeout=2)
    time.sleep(0.1)
    assert aborted.chunk >= 12
    assert [e for e in gateway.events if e.kind == "chunk_sent" and e.at > aborted.at] == []


def test_stop_returns_promptly_with_an_endless_stream_open(
    tenant_key: rsa.RSAPrivateKey, standin_key: rsa.RSAPrivateKey
) -> None:
    gateway = StandinGateway(signing_key=standin_key).start()
    gateway.register_key(KID, tenant_key.public_key())
    # A long interval: only stop() cutting the connection can end this stream within the test's bound.
    gateway.inject(Fault("endless", seconds=5))
    stream = RawStream(gateway, sign(tenant_key, claims()))
    ended = threading.Event()

    def drain() -> None:
        try:
            stream.all_data()
        except OSError:
            pass
        ended.set()

    reader = threading.Thread(target=drain, daemon=True)
    try:
        assert stream.next_data()
        reader.start()
        started = time.monotonic()
        gateway.stop()
        stopped_in = time.monotonic() - started
        assert ended.wait(2), "the client never saw the stream end"
    finally:
        gateway.stop()
        stream.close()

    assert stopped_in < 1.0
    assert gateway.wait_for_event("stream_stopped", timeout=1)
    with pytest.raises(ConnectionRefusedError), socket.create_connection((gateway.host, gateway.port), timeout=1):
        pass


def test_faults_can_be_queued_listed_and_cleared_over_http(gateway: StandinGateway, token: str) -> None:
    queued = call(gateway, "/_standin/faults", {"faults": [{"kind": "status", "status": 402, "path": "chat"}]})
    listed = call(gateway, "/_standin/faults", method="GET")
    faulted = call(gateway, CHAT, HELLO, bearer=token)
    call(gateway, "/_standin/faults", {"kind": "delay", "seconds": 5})
    cleared = call(gateway, "/_standin/faults", method="DELETE")
    after = call(gateway, CHAT, HELLO, bearer=token)

    assert queued.status == 200
    assert listed.json()["faults"][0]["path"] == CHAT
    assert (faulted.status, faulted.error_code) == (402, "quota_exceeded")
    assert cleared.json() == {"cleared": 1}
    assert after.status == 200
    assert [r.path for r in gateway.requests] == [CHAT, CHAT]


@pytest.mark.parametrize("fault", [
    {"kind": "explode"}, {"status": 500}, {"kind": "status", "status": 200}, {"kind": "delay", "seconds": -1},
    {"kind": "status", "path": "somewhere"}, {"kind": "status", "colour": "red"}, "status",
])
def test_a_malformed_fault_is_refused_over_http(gateway: StandinGateway, fault: Any) -> None:
    reply = call(gateway, "/_standin/faults", fault)

    assert reply.status == 400
    assert reply.error_code == "validation_error"
    assert gateway.pending_faults == []


def test_recorded_requests_can_be_read_over_http(gateway: StandinGateway, token: str) -> None:
    call(gateway, CHAT, HELLO, bearer=token)

    [recorded] = call(gateway, "/_standin/requests", method="GET").json()["requests"]

    assert (recorded["path"], recorded["body"], recorded["claims"]["uid"]) == (CHAT, HELLO, "alice")


@pytest.mark.parametrize("form", ["pem text", "pem bytes", "private key object"])
def test_register_key_accepts_pem_text_bytes_and_key_objects(
    gateway: StandinGateway, other_key: rsa.RSAPrivateKey, form: str
) -> None:
    pem = other_key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    given: Any = {"pem text": pem.decode(), "pem bytes": pem, "private key object": other_key}[form]

    gateway.register_key("sk_other", given)

    assert call(gateway, CHAT, HELLO, bearer=sign(other_key, claims(), kid="sk_other")).status == 200


def test_register_key_refuses_a_key_that_is_not_rsa(gateway: StandinGateway) -> None:
    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

    with pytest.raises(TypeError):
        gateway.register_key("sk_ec", ec_pem)


def test_the_command_line_serves_until_sigterm(tenant_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    pem_path = tmp_path / "tenant_public.pem"
    pem_path.write_bytes(tenant_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack.standin", "--port", "0", "--quiet",
         "--register-key", f"{KID}={pem_path}", "--api-key", f"{API_KEY}:{TENANT_ID}:{PROJECT_ID}"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline()
        url = first_line.strip().rsplit(" ", 1)[-1]
        host, port = url.removeprefix("http://").split(":")
        gateway_view = Address(host, int(port))
        assert call(gateway_view, CHAT, HELLO, bearer=sign(tenant_key, claims())).status == 200
        assert call(gateway_view, MINT, {"user_id": "bob"}, bearer=API_KEY).status == 200
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()

    assert first_line.startswith("Behest stand-in listening on http://127.0.0.1:")
    assert process.returncode == 0, stderr
    assert "stopped" in stdout


def test_only_allowed_origins_get_cors_headers_on_preflight_and_answers() -> None:
    import urllib.request

    with StandinGateway(allowed_origins=["http://app.example"]) as gateway:
        def preflight(origin: str) -> dict[str, str]:
            request = urllib.request.Request(gateway.url + "/v1/chat/completions", method="OPTIONS",
                                             headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
            with urllib.request.urlopen(request, timeout=5) as response:
                return {k.lower(): v for k, v in response.headers.items()}

        allowed, refused = preflight("http://app.example"), preflight("http://evil.example")
        request = urllib.request.Request(gateway.url + "/v1/chat/completions", data=b"{}", method="POST",
                                         headers={"Origin": "http://app.example"})
        try:
            urllib.request.urlopen(request, timeout=5)
        except urllib.error.HTTPError as e:
            answer_headers = {k.lower(): v for k, v in e.headers.items()}

    assert allowed["access-control-allow-origin"] == "http://app.example"
    assert "x-session-id" in allowed["access-control-allow-headers"]
    assert "access-control-allow-origin" not in refused
    assert answer_headers["access-control-allow-origin"] == "http://app.example"


# --- models, embeddings and the Responses API, through the real OpenAI Python SDK ---------------------------------

SAID = "hi there"


def test_the_openai_sdk_lists_the_models(gateway: StandinGateway, token: str) -> None:
    with sdk(gateway, token) as client:
        models = client.models.list()

    assert [model.id for model in models] == list(standin.MODELS)
    assert {(model.object, model.owned_by) for model in models} == {("model", "behest")}
    assert all(isinstance(model.created, int) for model in models)


def test_the_openai_sdk_retrieves_one_model_and_gets_404_for_an_unknown_one(gateway: StandinGateway, token: str) -> None:
    with sdk(gateway, token) as client:
        model = client.models.retrieve("behest-mini")
        with pytest.raises(openai.NotFoundError) as caught:
            client.models.retrieve("gpt-nobody")

    assert (model.id, model.object) == ("behest-mini", "model")
    assert caught.value.status_code == 404
    assert [r.path for r in gateway.requests] == ["/v1/models/behest-mini", "/v1/models/gpt-nobody"]


def test_the_openai_sdks_default_base64_embeddings_decode_to_the_float_ones(gateway: StandinGateway, token: str) -> None:
    with sdk(gateway, token) as client:
        default = client.embeddings.create(model="behest-embed", input="hello world")
        as_floats = client.embeddings.create(model="behest-embed", input="hello world", encoding_format="float")

    first, second = gateway.requests
    assert first.body["encoding_format"] == "base64"  # the SDK asks for base64 unless told otherwise, then decodes
    assert second.body["encoding_format"] == "float"
    assert default.data[0].embedding == as_floats.data[0].embedding
    assert len(default.data[0].embedding) == 16
    assert abs(sum(v * v for v in default.data[0].embedding) - 1) < 1e-5
    assert (default.usage.prompt_tokens, default.usage.total_tokens) == (2, 2)
    assert default.model == "behest-embed"


def test_explicit_base64_embeddings_arrive_as_little_endian_float32(gateway: StandinGateway, token: str) -> None:
    with sdk(gateway, token) as client:
        encoded = client.embeddings.create(model="m", input="hello", encoding_format="base64")
        floats = client.embeddings.create(model="m", input="hello", encoding_format="float")

    raw = base64.b64decode(cast(str, encoded.data[0].embedding))
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == floats.data[0].embedding


@pytest.mark.parametrize("given, count, tokens", [
    (["one", "two words"], 2, 3), ([1, 2, 3], 1, 3), ([[1, 2], [3, 4, 5]], 2, 5),
])
def test_embeddings_take_every_input_form_openai_takes(
    gateway: StandinGateway, token: str, given: Any, count: int, tokens: int
) -> None:
    with sdk(gateway, token) as client:
        answer = client.embeddings.create(model="m", input=given, encoding_format="float")

    assert [item.index for item in answer.data] == list(range(count))
    assert answer.usage.prompt_tokens == tokens
    assert gateway.last_usage == {"prompt_tokens": tokens, "total_tokens": tokens}


@pytest.mark.parametrize("body", [
    b'{"model": "m"}', b'{"input": ""}', b'{"input": []}', b'{"input": [1, "a"]}',
    b'{"input": "x", "encoding_format": "hex"}', b'{"input": "x", "dimensions": 0}',
])
def test_embeddings_refuse_what_openai_refuses(gateway: StandinGateway, token: str, body: bytes) -> None:
    reply = call(gateway, "/v1/embeddings", raw=body, bearer=token)

    assert (reply.status, reply.error_code) == (400, "validation_error")


def test_the_same_input_always_embeds_to_the_same_vector(gateway: StandinGateway, token: str) -> None:
    with sdk(gateway, token) as client:
        first = client.embeddings.create(model="m", input=["a", "b"], encoding_format="float")
        again = client.embeddings.create(model="m", input=["b"], encoding_format="float")

    assert first.data[1].embedding == again.data[0].embedding != first.data[0].embedding


RESPONSE_INPUT: list[Any] = [{"role": "user", "content": "an earlier question"},
                             {"role": "assistant", "content": "an earlier answer"},
                             {"role": "user", "content": [{"type": "input_text", "text": SAID}]}]


@pytest.mark.parametrize("given", [SAID, RESPONSE_INPUT], ids=["string input", "input items"])
def test_the_openai_sdk_reads_a_whole_response(gateway: StandinGateway, token: str, given: Any) -> None:
    with sdk(gateway, token) as client:
        response = client.responses.create(model="behest-mini", input=given, instructions="be brief",
                                           max_output_tokens=100, user="spoofed", safety_identifier="spoofed")

    assert response.output_text == "Hello alice! You said: hi there"
    assert (response.object, response.status, response.model) == ("response", "completed", "behest-mini")
    assert response.id.startswith("resp_")
    [message] = response.output
    assert (message.type, message.role, message.content[0].type) == ("message", "assistant", "output_text")
    [recorded] = gateway.requests
    expected = standin.usage_for(standin.RESPONSES_PATH, recorded.body, "alice")
    assert response.usage is not None and response.usage.model_dump(exclude_none=True) == expected
    assert expected["output_tokens"] == 6 and expected["total_tokens"] == expected["input_tokens"] + 6
    assert gateway.last_usage == expected


RESPONSE_EVENTS = ["response.created", "response.in_progress", "response.output_item.added",
                   "response.content_part.added"]
RESPONSE_CLOSING = ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                    "response.completed"]


def test_the_openai_sdk_streams_a_response_event_by_event(gateway: StandinGateway, token: str) -> None:
    with sdk(gateway, token) as client:
        events = list(client.responses.create(model="m", input=SAID, stream=True))

    types = [event.type for event in events]
    deltas = [event for event in events if event.type == "response.output_text.delta"]
    assert types == RESPONSE_EVENTS + ["response.output_text.delta"] * len(deltas) + RESPONSE_CLOSING
    assert len(deltas) == 6
    assert "".join(event.delta for event in deltas) == "Hello alice! You said: hi there"
    assert [event.sequence_number for event in events] == list(range(len(events)))
    completed = events[-1]
    assert completed.type == "response.completed"
    assert completed.response.output_text == "Hello alice! You said: hi there"
    assert completed.response.usage is not None
    assert completed.response.usage.model_dump(exclude_none=True) == gateway.last_usage


def test_the_openai_sdks_stream_helper_assembles_the_final_response(gateway: StandinGateway, token: str) -> None:
    with sdk(gateway, token) as client, client.responses.stream(model="m", input=RESPONSE_INPUT) as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()

    assert text == final.output_text == "Hello alice! You said: hi there"


def test_a_streamed_response_is_named_events_with_no_done_line(gateway: StandinGateway, token: str) -> None:
    connection = http.client.HTTPConnection(gateway.host, gateway.port, timeout=5)
    connection.request("POST", "/v1/responses", body=json.dumps({"input": SAID, "stream": True}),
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()

    blocks = [block for block in text.split("\n\n") if block]
    assert response.getheader("content-type") == "text/event-stream"
    assert all(block.startswith("event: response.") and "\ndata: {" in block for block in blocks)
    assert "[DONE]" not in text
    assert all(json.loads(block.split("data: ", 1)[1])["type"] == block.split("\n")[0][len("event: "):]
               for block in blocks)


def test_a_streamed_response_is_paced_by_the_chunk_delay(
    tenant_key: rsa.RSAPrivateKey, standin_key: rsa.RSAPrivateKey
) -> None:
    with StandinGateway(signing_key=standin_key, chunk_delay=0.05) as gateway:
        gateway.register_key(KID, tenant_key.public_key())
        with sdk(gateway, sign(tenant_key, claims())) as client:
            started = time.monotonic()
            stream = client.responses.create(model="m", input=SAID, stream=True)
            first_delta_at = next(time.monotonic() for event in stream if event.type == "response.output_text.delta")
            list(stream)
            ended = time.monotonic()

    assert first_delta_at - started < ended - started - 0.2
    assert len([e for e in gateway.events if e.kind == "chunk_sent"]) == len(RESPONSE_EVENTS + RESPONSE_CLOSING) + 6


@pytest.mark.parametrize("body", [b"{}", b'{"input": 3}', b'{"input": [1]}', b'{"input": "x", "stream": "yes"}',
                                  b'{"input": "x", "max_output_tokens": 0}', b'{"input": "x", "user": 7}'])
def test_responses_refuse_a_malformed_request(gateway: StandinGateway, token: str, body: bytes) -> None:
    reply = call(gateway, "/v1/responses", raw=body, bearer=token)

    assert (reply.status, reply.error_code) == (400, "validation_error")


@pytest.mark.parametrize("method, path, body", [
    ("GET", "/v1/models", None), ("GET", "/v1/models/behest-mini", None),
    ("POST", "/v1/embeddings", {"input": "x"}), ("POST", "/v1/responses", {"input": "x"}),
])
def test_every_new_route_takes_a_user_jwt_as_chat_does(
    gateway: StandinGateway, method: str, path: str, body: Any
) -> None:
    without = call(gateway, path, body, method=method)
    with_api_key = call(gateway, path, body, bearer=API_KEY, method=method)

    assert (without.status, without.error_code) == (401, "invalid_token")
    assert (with_api_key.status, with_api_key.error_code) == (401, "invalid_token")
    assert [(r.path, r.claims) for r in gateway.requests] == [(path, None), (path, None)]


@pytest.mark.parametrize("alias, path", [("models", "/v1/models/behest-mini"), ("embeddings", "/v1/embeddings"),
                                         ("responses", "/v1/responses")])
def test_a_status_fault_scoped_by_alias_hits_its_route_once(
    gateway: StandinGateway, token: str, alias: str, path: str
) -> None:
    gateway.inject(Fault("status", status=429, retry_after=4, path=alias))
    method, body = ("GET", None) if alias == "models" else ("POST", {"input": "x"})

    faulted = call(gateway, path, body, bearer=token, method=method)
    chat = call(gateway, CHAT, HELLO, bearer=token)
    after = call(gateway, path, body, bearer=token, method=method)

    assert (faulted.status, faulted.error_code, faulted.headers["retry-after"]) == (429, "rate_limited", "4")
    assert (chat.status, after.status) == (200, 200)


def test_a_rate_limit_on_responses_reaches_the_openai_sdk_typed(gateway: StandinGateway, token: str) -> None:
    gateway.inject(Fault("status", status=429, retry_after=2, path="responses"))

    with sdk(gateway, token) as client, pytest.raises(openai.RateLimitError) as caught:
        client.responses.create(model="m", input=SAID)

    assert caught.value.response.headers["retry-after"] == "2"


def test_a_reset_fault_breaks_a_responses_stream_after_k_events(gateway: StandinGateway, token: str) -> None:
    gateway.inject(Fault("reset_after", chunks=5, path="responses"))

    with sdk(gateway, token) as client, pytest.raises(openai.APIConnectionError):
        received = []
        for event in client.responses.create(model="m", input=SAID, stream=True):
            received.append(event.type)

    assert received == RESPONSE_EVENTS + ["response.output_text.delta"]
    assert gateway.wait_for_event("stream_reset").chunk == 5


def test_a_garbage_fault_on_a_responses_stream_puts_garbage_after_the_first_event(
    gateway: StandinGateway, token: str
) -> None:
    gateway.inject(Fault("garbage", path="responses"))
    connection = http.client.HTTPConnection(gateway.host, gateway.port, timeout=5)
    connection.request("POST", "/v1/responses", body=json.dumps({"input": SAID, "stream": True}),
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    body = connection.getresponse().read()
    connection.close()

    first, garbage = [block for block in body.split(b"\n\n") if block]
    assert first.startswith(b"event: response.created\n")
    assert garbage.startswith(b"data: \x00\xff")


def test_an_endless_responses_stream_keeps_sending_deltas_until_the_client_leaves(
    gateway: StandinGateway, token: str
) -> None:
    gateway.inject(Fault("endless", seconds=0.01, path="responses"))

    with sdk(gateway, token) as client:
        stream = client.responses.create(model="m", input=SAID, stream=True)
        deltas = []
        for event in stream:
            if event.type == "response.output_text.delta":
                deltas.append(event)
            if len(deltas) == 20:
                break
        stream.close()

    assert [event.sequence_number for event in deltas] == list(range(4, 24))
    assert gateway.wait_for_event("stream_aborted")


def test_chat_usage_is_a_deterministic_function_of_the_request(gateway: StandinGateway, token: str) -> None:
    with sdk(gateway, token) as client:
        completion = client.chat.completions.create(model="m", messages=HELLO["messages"])

    expected = standin.usage_for(CHAT, HELLO, "alice")
    assert completion.usage is not None and completion.usage.model_dump(exclude_none=True) == expected
    assert expected == {"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}
    assert gateway.last_usage == expected


def test_every_route_is_recorded_in_the_control_endpoint(gateway: StandinGateway, token: str) -> None:
    with sdk(gateway, token) as client:
        client.models.list()
        client.embeddings.create(model="m", input="x")
        client.responses.create(model="m", input="x")
        client.chat.completions.create(model="m", messages=HELLO["messages"])

    recorded = call(gateway, "/_standin/requests", method="GET").json()["requests"]
    assert [(r["method"], r["path"], r["claims"]["uid"]) for r in recorded] == [
        ("GET", "/v1/models", "alice"), ("POST", "/v1/embeddings", "alice"), ("POST", "/v1/responses", "alice"),
        ("POST", CHAT, "alice")]


def test_legacy_completions_answer_every_prompt_n_times_whole_and_streamed_with_usage(
    gateway: StandinGateway, token: str,
) -> None:
    asked = {"model": "behest-mini", "prompt": ["hi there", [1, 2, 3]], "n": 2}

    whole = call(gateway, "/v1/completions", asked, bearer=token).json()
    streamed = call(gateway, "/v1/completions", {**asked, "stream": True, "stream_options": {"include_usage": True}},
                    bearer=token)
    events = [line.removeprefix(b"data: ") for line in streamed.body.split(b"\n\n") if line.startswith(b"data: ")]
    chunks = [json.loads(event) for event in events[:-1]]

    assert (whole["object"], whole["model"]) == ("text_completion", "behest-mini")
    texts = ["Hello alice! You said: hi there"] * 2 + ["Hello alice! You said: 1 2 3"] * 2
    assert [(c["index"], c["text"], c["finish_reason"]) for c in whole["choices"]] == [
        (index, text, "stop") for index, text in enumerate(texts)]
    assert whole["usage"] == {"prompt_tokens": 5, "completion_tokens": 26, "total_tokens": 31}
    assert events[-1] == b"[DONE]" and chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    for index, text in enumerate(texts):
        assert "".join(c["choices"][0]["text"] for c in chunks[:-1] if c["choices"][0]["index"] == index) == text
    assert gateway.last_usage == whole["usage"]


@pytest.mark.parametrize("body", [{}, {"prompt": []}, {"prompt": [[]]}, {"prompt": "x", "n": 0}, {"prompt": 7}])
def test_a_malformed_completions_request_is_a_400(gateway: StandinGateway, token: str, body: dict[str, Any]) -> None:
    reply = call(gateway, "/v1/completions", body, bearer=token)

    assert (reply.status, reply.error_code) == (400, "validation_error")

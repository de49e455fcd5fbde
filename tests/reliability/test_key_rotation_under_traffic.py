"""A key rotation while containers mint and relay non-stop: moto's Secrets Manager, the real clock, real threads.

Each "container" is its own TokenFunction or RelayFunction service with its own key cache (BEHEST_KEY_CACHE_TTL
shortened so a rotation lands within the run); two threads per container check the cache is thread-safe.
The new public key is registered with the stand-in gateway before the secret is written, as the README's
rotation procedure says, and every token minted in the run is verified at the end by the gateway's checks.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional

import boto3
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto.server import ThreadedMotoServer

from behest_lambda.app import Service
from behest_lambda.routes import RELAY_FUNCTION, TOKEN_FUNCTION
from devstack.standin import StandinGateway
from tests.figures import Figures
from tests.reliability.suite import body_of, event_for, sized
from tests.support import KID, PROJECT_ID, ROTATED_KID, TENANT_ID, CapturedTelemetry, key_pem

TOPIC = "Key rotation under traffic (moto Secrets Manager, real clock)"
HI = {"messages": [{"role": "user", "content": "hi"}]}


@dataclass(frozen=True)
class Plan:
    seconds: float  # how long traffic runs
    rotations: int  # spread evenly over the run
    cache_ttl: float
    token_containers: int = 3
    relay_containers: int = 1
    threads_per_container: int = 2
    verify_every: int = 1  # verify every n-th token at the end


@dataclass
class Mint:
    container: int
    started: float
    ended: float
    status: int
    kid: Optional[str]
    token: Optional[str] = field(repr=False)


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    server.stop()


def secret(pem: str, kid: str) -> str:
    return json.dumps({"BEHEST_KEY": "behest_pk_" + pem, "BEHEST_KID": kid,
                       "BEHEST_TENANT_ID": TENANT_ID, "BEHEST_PROJECT_ID": PROJECT_ID})


def new_keys(count: int) -> list[tuple[str, str, Any]]:
    """(kid, PEM, public key): the committed rotated key first, then fresh ones."""
    keys = [(ROTATED_KID, key_pem("tenant_rotated"), None)]
    for index in range(1, count):
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
        keys.append((f"sk_rotation_{index}_{uuid.uuid4().hex[:6]}", pem, key.public_key()))
    return keys


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


@sized(short=Plan(seconds=2.4, rotations=1, cache_ttl=0.5),
       long=Plan(seconds=60.0, rotations=12, cache_ttl=1.0, verify_every=10))
def test_mints_and_relays_pick_up_each_rotation_within_the_cache_ttl_with_zero_failures(
    size: Plan, moto_url: str, aws_credentials: None, clean_standin: StandinGateway,
    monkeypatch: pytest.MonkeyPatch, figures: Figures,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto_url)
    client = boto3.client("secretsmanager", endpoint_url=moto_url)
    arn = client.create_secret(Name=f"rotation-{uuid.uuid4()}", SecretString=secret(key_pem("tenant"), KID))["ARN"]
    env = {"BEHEST_KEY_SECRET_ID": arn, "BEHEST_SECRETS_EXTENSION": "off", "BEHEST_KEY_CACHE_TTL": str(size.cache_ttl),
           "BEHEST_BASE_URL": clean_standin.url, "BEHEST_UPSTREAM_TIMEOUT": "10"}
    telemetry = CapturedTelemetry()
    token_containers = [Service.from_env(TOKEN_FUNCTION, telemetry, env) for _ in range(size.token_containers)]
    relay_containers = [Service.from_env(RELAY_FUNCTION, telemetry, env) for _ in range(size.relay_containers)]
    rotations = new_keys(size.rotations)
    mints: list[Mint] = []
    relays: list[tuple[float, int]] = []
    stop = threading.Event()

    def mint_forever(index: int, function: Service) -> None:
        while not stop.is_set():
            started = time.monotonic()
            response = function.handle(event_for("token_mint"))
            token = body_of(response).get("token") if response["statusCode"] == 200 else None
            mints.append(Mint(index, started, time.monotonic(), response["statusCode"],
                              kid_of(token) if token else None, token))

    def relay_forever(function: Service) -> None:
        while not stop.is_set():
            started = time.monotonic()
            relays.append((started, function.handle(event_for("chat_completion", body=HI))["statusCode"]))

    workers = [threading.Thread(target=mint_forever, args=(i, f)) for i, f in enumerate(token_containers)
               for _ in range(size.threads_per_container)]
    workers += [threading.Thread(target=relay_forever, args=(f,)) for f in relay_containers
                for _ in range(size.threads_per_container)]
    started = time.monotonic()
    for worker in workers:
        worker.start()
    # The schedule starts once every container has answered with the first key: on a loaded machine a container's
    # first answer (secret fetch, first connection) can outlast the time before the first rotation.
    warming = time.monotonic() + 60
    while time.monotonic() < warming and not (relays and {m.container for m in mints} >= set(range(size.token_containers))):
        time.sleep(0.01)
    begun = time.monotonic()
    written: list[tuple[float, float, str]] = []  # (write began, write returned, kid)
    try:
        for index, (kid, pem, public) in enumerate(rotations):
            time.sleep(max(0.0, begun + size.seconds * (index + 0.4) / size.rotations - time.monotonic()))
            if public is not None:
                clean_standin.register_key(kid, public)  # Behest first, then the secret
            began = time.monotonic()
            client.put_secret_value(SecretId=arn, SecretString=secret(pem, kid))
            written.append((began, time.monotonic(), kid))
        time.sleep(max(0.0, begun + size.seconds - time.monotonic()))
    finally:
        stop.set()
        for worker in workers:
            worker.join()

    failed = [m for m in mints if m.status != 200]
    assert not failed, f"{len(failed)} failed mints, first: {failed[0]}"
    assert [status for _, status in relays if status != 200] == []
    pickups, last_old = [], []
    generation = {KID: -1, **{kid: number for number, (_, _, kid) in enumerate(written)}}
    for number, (_, at, kid) in enumerate(written):
        # Until the next write begins. A mint counts as late only with an older key: one that started just before
        # the next write but reached the key cache after it may already carry the newer key.
        until = written[number + 1][0] if number + 1 < len(written) else float("inf")
        late = [m for m in mints if at + size.cache_ttl + 0.01 <= m.started < until and generation[str(m.kid)] < number]
        refresh_failures = [r for r in telemetry.logs() if r["level"] != "INFO"]
        assert not late, (f"{len(late)} mints still signed with an old key more than the cache TTL after rotation; "
                          f"first {late[0]}; refresh failures: {refresh_failures[:3]}")
        last_old.append(max((m.started - at for m in mints if at <= m.started < until and generation[str(m.kid)] < number),
                            default=0.0))
        for container in range(size.token_containers):
            first = min((m.ended for m in mints if m.container == container and m.kid == kid and m.started < until),
                        default=None)
            assert first is not None and first - at <= size.cache_ttl + 0.5
            pickups.append(first - at)
    verified: dict[str, int] = {}
    for m in mints[:: size.verify_every]:
        assert m.token is not None
        claims = clean_standin.verify(f"Bearer {m.token}")  # the gateway's checks, with every kid registered
        assert claims["uid"] == "user-42"
        verified[str(m.kid)] = verified.get(str(m.kid), 0) + 1
    upstream = [r for r in clean_standin.requests if r.path == "/v1/chat/completions"]
    assert len(upstream) == len(relays) and all(r.claims is not None for r in upstream)
    upstream_kids = {kid_of((r.header("authorization") or "")[7:]) for r in upstream}
    assert {KID, written[0][2]} <= upstream_kids
    assert "signing key rotated" in telemetry.text()

    elapsed = time.monotonic() - started
    figures(TOPIC, f"{size.seconds:g} s, {len(written)} rotation(s), cache TTL {size.cache_ttl:g} s, "
                   f"{size.token_containers} token + {size.relay_containers} relay containers × "
                   f"{size.threads_per_container} threads: {len(mints)} mints + {len(relays)} relays, "
                   f"0 failed ({len(mints) / elapsed:.0f} mints/s)")
    figures(TOPIC, f"after a write: first new-key mint in every container ≤ {max(pickups) * 1000:.0f} ms, last old-key "
                   f"mint started ≤ {max(last_old) * 1000:.0f} ms (bound: cache TTL {size.cache_ttl * 1000:.0f} ms)")
    figures(TOPIC, f"{sum(verified.values())} tokens of {len(verified)} kids verified by the gateway after the last "
                   "rotation: old-key tokens stay valid through the overlap")

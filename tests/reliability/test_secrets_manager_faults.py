"""Secrets Manager failing the ways AWS fails, through boto3 against a loopback endpoint speaking AWS's JSON.

Each outage kind goes through a whole life: a cold container gets 503 + Retry-After and a log line naming
the reason; the fix is picked up without a restart; a warm container signs through the grace period with
zero failed mints; past it, 503 again; then recovery. (Connection refused and malformed JSON strings are
covered in tests/functional/test_secrets_manager_key.py.)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import pytest

from behest_lambda import key_source
from behest_lambda.app import Service
from behest_lambda.key_source import RETRY_INTERVAL, SecretKeySource
from behest_lambda.routes import RELAY_FUNCTION, TOKEN_FUNCTION
from behest_lambda.settings import Settings
from devstack.standin import StandinGateway
from tests.figures import Figures
from tests.reliability.fake_secrets_manager import (
    ACCESS_DENIED,
    ARN,
    INTERNAL_ERROR,
    KMS_DECRYPTION_FAILED,
    THROTTLED,
    FakeSecretsManager,
    SecretsFault,
)
from tests.reliability.suite import body_of, event_for, sized
from tests.support import KID, PROJECT_ID, TENANT_ID, CapturedTelemetry, key_pem

TOPIC = "Secrets Manager faults (boto3 → loopback endpoint in AWS's JSON error shape)"
CACHE_TTL, GRACE = 300, 900
FETCH_TIMEOUT = 0.2  # SECRET_FETCH_TIMEOUT in the short runs; the long run keeps the real 3 s
TOKEN_FUNCTION_TIMEOUT = 10.0  # template.yaml, TokenFunction Timeout


def good_secret() -> str:
    return json.dumps({"BEHEST_KEY": "behest_pk_" + key_pem("tenant"), "BEHEST_KID": KID,
                       "BEHEST_TENANT_ID": TENANT_ID, "BEHEST_PROJECT_ID": PROJECT_ID})


@dataclass(frozen=True)
class Outage:
    name: str
    reason: str
    apply: Callable[[FakeSecretsManager], None]


def fault(value: SecretsFault) -> Callable[[FakeSecretsManager], None]:
    def apply(fake: FakeSecretsManager) -> None:
        fake.fault = value

    return apply


def secret_value(string: str | None = None, binary: bytes | None = None) -> Callable[[FakeSecretsManager], None]:
    def apply(fake: FakeSecretsManager) -> None:
        fake.secret_string, fake.secret_binary = string, binary

    return apply


truncated_pem = "behest_pk_" + "\n".join(key_pem("tenant").splitlines()[:12])
OUTAGES = [
    Outage("throttled", "throttled", fault(THROTTLED)),
    Outage("AccessDenied", "access_denied", fault(ACCESS_DENIED)),
    Outage("KMS DecryptionFailure", "access_denied", fault(KMS_DECRYPTION_FAILED)),
    Outage("InternalServiceError (500)", "secrets_manager_error", fault(INTERNAL_ERROR)),
    Outage("hung endpoint", "timeout", fault(SecretsFault("slow", seconds=FETCH_TIMEOUT * 3))),
    Outage("200 without a value", "malformed_secret", fault(SecretsFault("raw", status=200, body=b'{"Name": "x"}'))),
    Outage("200 that is not JSON", "malformed_secret", fault(SecretsFault("raw", status=200, body=b"<html>oops"))),
    Outage("binary value, not UTF-8", "malformed_secret", secret_value(binary=b"\xff\xfe\x00key")),
    Outage("blank value", "malformed_secret", secret_value(string="  \n")),
    Outage("kid not a string", "malformed_secret", secret_value(string=json.dumps(
        {"BEHEST_KEY": "behest_pk_" + key_pem("tenant"), "BEHEST_KID": 7}))),
    Outage("truncated PEM", "malformed_secret", secret_value(string=truncated_pem)),
]


@pytest.fixture
def secrets_manager(aws_credentials: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSecretsManager]:
    fake = FakeSecretsManager(good_secret())
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", fake.url)
    monkeypatch.setattr(key_source, "SECRET_FETCH_TIMEOUT", FETCH_TIMEOUT)
    yield fake
    fake.close()


def heal(fake: FakeSecretsManager) -> None:
    fake.fault, fake.secret_string, fake.secret_binary = None, good_secret(), None


def settings() -> Settings:
    return Settings.from_env({"BEHEST_KEY_SECRET_ID": ARN, "BEHEST_SECRETS_EXTENSION": "off",
                              "BEHEST_KEY_CACHE_TTL": str(CACHE_TTL), "BEHEST_KEY_GRACE_PERIOD": str(GRACE)})


def token_function(telemetry: CapturedTelemetry, clock: list[float]) -> Service:
    config = settings()
    secret_key = SecretKeySource(config.key, telemetry, clock=lambda: clock[0])
    return Service.build(TOKEN_FUNCTION, config, telemetry, key_source=secret_key)


def timed_mint(function: Service) -> tuple[int, dict[str, str], float]:
    started = time.monotonic()
    response = function.handle(event_for("token_mint"))
    return response["statusCode"], response["headers"], time.monotonic() - started


@pytest.mark.parametrize("outage", OUTAGES, ids=[o.name for o in OUTAGES])
def test_each_outage_kind_is_a_503_then_rides_the_grace_period_then_recovers_without_restart(
    outage: Outage, secrets_manager: FakeSecretsManager, clock: list[float], telemetry: CapturedTelemetry,
    figures: Figures,
) -> None:
    function = token_function(telemetry, clock)

    outage.apply(secrets_manager)  # a cold container meets the outage
    cold_status, cold_headers, cold_elapsed = timed_mint(function)
    cold_attempts = len(secrets_manager.calls)
    heal(secrets_manager)
    clock[0] += RETRY_INTERVAL + 1
    recovered_cold = timed_mint(function)[0]

    outage.apply(secrets_manager)  # a warm container meets it: the cached key signs through the grace period
    grace: list[tuple[int, float]] = []
    for step in (CACHE_TTL + 1, GRACE - 100):
        clock[0] += step
        grace += [timed_mint(function)[::2] for _ in range(5)]
    clock[0] += 100  # now past TTL + grace
    late_status, late_headers, _ = timed_mint(function)
    heal(secrets_manager)
    clock[0] += RETRY_INTERVAL + 1
    recovered_warm = timed_mint(function)[0]

    assert (cold_status, late_status) == (503, 503)
    assert int(cold_headers["retry-after"]) >= 1 and int(late_headers["retry-after"]) >= 1
    assert [status for status, _ in grace] == [200] * len(grace)
    assert (recovered_cold, recovered_warm) == (200, 200)
    logs = telemetry.logs()
    errors = [r for r in logs if r["message"] == "key secret unavailable"]
    warnings = [r for r in logs if r["message"] == "key secret refresh failed; signing with the cached key"]
    assert [r["reason"] for r in errors] == [outage.reason, outage.reason]
    assert len(warnings) == 2 and all(r["reason"] == outage.reason and r["grace_left_s"] > 0 for r in warnings)
    assert "Traceback" not in telemetry.text()
    figures(TOPIC, f"{outage.name:<27} reason={outage.reason:<21} cold: 503 Retry-After {cold_headers['retry-after']} s "
                   f"in {cold_elapsed * 1000:.0f} ms ({cold_attempts} HTTP attempt(s)); warm: {len(grace)}/{len(grace)} "
                   f"mints OK in grace (slowest {max(e for _, e in grace) * 1000:.0f} ms), 503 past it; "
                   "recovered without restart")


@sized(short=FETCH_TIMEOUT, long=3.0)
def test_a_hung_secrets_manager_gets_two_attempts_and_a_503_well_inside_the_function_timeout(
    size: float, secrets_manager: FakeSecretsManager, clock: list[float], telemetry: CapturedTelemetry,
    monkeypatch: pytest.MonkeyPatch, figures: Figures,
) -> None:
    monkeypatch.setattr(key_source, "SECRET_FETCH_TIMEOUT", size)
    secrets_manager.fault = SecretsFault("slow", seconds=size * 3)
    function = token_function(telemetry, clock)

    status, headers, elapsed = timed_mint(function)

    assert status == 503 and int(headers["retry-after"]) >= 1
    assert len(secrets_manager.calls) == 2
    assert size * 2 <= elapsed <= size * 2 + 1.5  # two timed-out attempts plus botocore's short backoff
    assert elapsed < TOKEN_FUNCTION_TIMEOUT
    figures(TOPIC, f"hung endpoint, fetch timeout {size:g} s: 503 after {elapsed:.2f} s, "
                   f"{len(secrets_manager.calls)} attempts (token function timeout {TOKEN_FUNCTION_TIMEOUT:g} s)")


def test_refreshes_during_an_outage_are_attempted_at_most_once_per_retry_interval(
    secrets_manager: FakeSecretsManager, clock: list[float], telemetry: CapturedTelemetry, figures: Figures,
) -> None:
    function = token_function(telemetry, clock)
    timed_mint(function)
    secrets_manager.fault = ACCESS_DENIED
    secrets_manager.calls.clear()
    clock[0] += CACHE_TTL + 1

    statuses = []
    for _ in range(50):  # 50 mints over 25 s of the container's clock
        statuses.append(timed_mint(function)[0])
        clock[0] += 0.5

    assert statuses == [200] * 50
    assert len(secrets_manager.calls) == 5  # at 0 s, 5 s, 10 s, 15 s, 20 s
    figures(TOPIC, f"outage with a cached key: 50 mints over 25 s → {len(secrets_manager.calls)} refresh attempts "
                   f"(one per {RETRY_INTERVAL:g} s), 0 failed mints")


def test_the_relay_answers_503_with_retry_after_calling_no_one_then_recovers(
    secrets_manager: FakeSecretsManager, clean_standin: StandinGateway, clock: list[float],
    telemetry: CapturedTelemetry,
) -> None:
    config = Settings.from_env({"BEHEST_KEY_SECRET_ID": ARN, "BEHEST_SECRETS_EXTENSION": "off",
                                "BEHEST_BASE_URL": clean_standin.url})
    secret_key = SecretKeySource(config.key, telemetry, clock=lambda: clock[0])
    relay = Service.build(RELAY_FUNCTION, config, telemetry, key_source=secret_key)
    secrets_manager.fault = THROTTLED

    refused = relay.handle(event_for("chat_completion"))
    nobody_called = not clean_standin.requests
    heal(secrets_manager)
    clock[0] += RETRY_INTERVAL + 1
    recovered = relay.handle(event_for("chat_completion"))

    assert refused["statusCode"] == 503
    assert int(refused["headers"]["retry-after"]) >= 1
    assert body_of(refused)["error"]["code"] == "signing_key_unavailable"
    assert nobody_called
    assert recovered["statusCode"] == 200

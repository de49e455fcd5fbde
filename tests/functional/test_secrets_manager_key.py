"""The tenant key from Secrets Manager, for real: moto's server on loopback, boto3 and the extension's HTTP API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import boto3
import jwt
import pytest
from moto.server import ThreadedMotoServer

from behest_lambda.app import Service
from behest_lambda.key_source import SecretKeySource, SecretsManagerFetcher
from behest_lambda.routes import TOKEN_FUNCTION
from behest_lambda.settings import Settings
from tests.support import (
    AUDIENCE,
    ISSUER,
    KID,
    PROJECT_ID,
    ROTATED_KID,
    TENANT_ID,
    CapturedTelemetry,
    key_pem,
    load_event,
    public_key,
)

SESSION_TOKEN = "session-token-for-the-extension"
ROOT = Path(__file__).resolve().parents[2]


def secret_document(key_name: str, kid: str) -> str:
    return json.dumps(
        {
            "BEHEST_KEY": "behest_pk_" + key_pem(key_name),
            "BEHEST_KID": kid,
            "BEHEST_TENANT_ID": TENANT_ID,
            "BEHEST_PROJECT_ID": PROJECT_ID,
        }
    )


class Moto:
    """moto's Secrets Manager as a real HTTP endpoint that a test can take down and bring back."""

    def __init__(self) -> None:
        self.server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
        self.server.start()
        self.port = self.server.get_host_and_port()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.client = boto3.client("secretsmanager", endpoint_url=self.url, region_name="us-east-1")
        # moto builds its Secrets Manager backend on the first request, seconds on a loaded machine: past the
        # functions' 3 s fetch timeout. Warm it here, so a test's first fetch meets the service, not moto's start-up.
        self.client.list_secrets()

    def outage(self) -> None:
        self.server.stop()

    def recover(self) -> None:
        self.server = ThreadedMotoServer("127.0.0.1", self.port, verbose=False)
        self.server.start()


@pytest.fixture
def moto(monkeypatch: pytest.MonkeyPatch) -> Iterator[Moto]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    server = Moto()
    monkeypatch.setenv("AWS_ENDPOINT_URL_SECRETS_MANAGER", server.url)
    yield server
    server.outage()


@pytest.fixture
def secret_arn(moto: Moto) -> str:
    name = f"behest/tenant-key/{uuid.uuid4()}"
    return str(moto.client.create_secret(Name=name, SecretString=secret_document("tenant", KID))["ARN"])


Build = Callable[..., Service]


@pytest.fixture
def build(telemetry: CapturedTelemetry, clock: list[float]) -> Build:
    def make(secret_id: str, **env: str) -> Service:
        settings = Settings.from_env(
            {"BEHEST_KEY_SECRET_ID": secret_id, "BEHEST_SECRETS_EXTENSION": "off", "BEHEST_KEY_CACHE_TTL": "300",
             "BEHEST_KEY_GRACE_PERIOD": "900", **env}
        )
        source = SecretKeySource(settings.key, telemetry, clock=lambda: clock[0])
        return Service.build(TOKEN_FUNCTION, settings, telemetry, key_source=source)

    return make


def mint(function: Service) -> dict[str, Any]:
    response = function.handle(load_event("token_mint"))
    return {"status": response["statusCode"], "headers": response["headers"], **json.loads(response["body"])}


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


def verifies_with(token: str, key_name: str) -> bool:
    claims = jwt.decode(token, public_key(key_name), algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)
    return bool(claims["uid"] == "user-42")


def test_a_json_secret_supplies_key_kid_tenant_and_project(build: Build, secret_arn: str) -> None:
    answer = mint(build(secret_arn))

    assert answer["status"] == 200
    assert kid_of(answer["token"]) == KID
    assert verifies_with(answer["token"], "tenant")


def test_a_plain_behest_key_secret_takes_its_ids_from_the_environment(build: Build, moto: Moto) -> None:
    arn = moto.client.create_secret(Name=f"plain-{uuid.uuid4()}", SecretString="behest_pk_" + key_pem("tenant"))["ARN"]

    answer = mint(build(arn, BEHEST_KID="sk_from_env", BEHEST_TENANT_ID=TENANT_ID, BEHEST_PROJECT_ID=PROJECT_ID))

    assert kid_of(answer["token"]) == "sk_from_env"
    assert verifies_with(answer["token"], "tenant")


def test_the_secret_is_fetched_once_per_cache_ttl(
    build: Build, secret_arn: str, moto: Moto, clock: list[float], telemetry: CapturedTelemetry
) -> None:
    function = build(secret_arn)
    mint(function)
    moto.client.update_secret(SecretId=secret_arn, SecretString="garbage that would fail if fetched")
    clock[0] += 299

    answers = [mint(function) for _ in range(5)]

    assert all(a["status"] == 200 for a in answers)
    assert "KeyRefreshFailed" not in telemetry.metrics()


def test_a_rotation_is_picked_up_after_the_cache_ttl_and_both_keys_tokens_verify(
    build: Build, secret_arn: str, moto: Moto, clock: list[float], telemetry: CapturedTelemetry
) -> None:
    function = build(secret_arn)
    before = mint(function)["token"]
    moto.client.put_secret_value(SecretId=secret_arn, SecretString=secret_document("tenant_rotated", ROTATED_KID))

    clock[0] += 100
    still_old = mint(function)["token"]
    clock[0] += 201
    after = mint(function)["token"]

    assert (kid_of(before), kid_of(still_old), kid_of(after)) == (KID, KID, ROTATED_KID)
    assert verifies_with(before, "tenant") and verifies_with(after, "tenant_rotated")
    assert any(r["message"] == "signing key rotated" and r["new_kid"] == ROTATED_KID for r in telemetry.logs())


def test_an_outage_inside_the_grace_period_fails_no_mint_and_says_so_in_the_log(
    build: Build, secret_arn: str, moto: Moto, clock: list[float], telemetry: CapturedTelemetry
) -> None:
    function = build(secret_arn)
    assert mint(function)["status"] == 200
    moto.outage()

    statuses = []
    for _ in range(10):
        clock[0] += 100  # 1000 s in all: past the 300 s TTL, inside TTL + 900 s grace
        statuses.append(mint(function)["status"])

    assert statuses == [200] * 10
    warnings = [r for r in telemetry.logs() if r["level"] == "WARNING"]
    assert warnings and warnings[0]["message"] == "key secret refresh failed; signing with the cached key"
    assert warnings[0]["grace_left_s"] > 0
    assert "KeyRefreshFailed" in telemetry.metrics()


def test_past_the_grace_period_a_503_with_retry_after_then_recovery_without_restart(
    build: Build, secret_arn: str, moto: Moto, clock: list[float]
) -> None:
    function = build(secret_arn)
    mint(function)
    moto.outage()
    clock[0] += 300 + 900 + 1

    refused = mint(function)
    moto.recover()
    clock[0] += 6  # past the retry interval
    recovered = mint(function)

    assert refused["status"] == 503
    assert refused["error"]["code"] == "signing_key_unavailable"
    assert int(refused["headers"]["retry-after"]) >= 1
    assert recovered["status"] == 200


def test_with_no_cached_key_an_unreachable_secrets_manager_is_a_503(
    build: Build, secret_arn: str, moto: Moto, telemetry: CapturedTelemetry
) -> None:
    moto.outage()

    answer = mint(build(secret_arn))

    assert answer["status"] == 503
    errors = [r for r in telemetry.logs() if r["level"] == "ERROR" and r["message"] == "key secret unavailable"]
    assert errors and errors[0]["reason"] == "timeout"
    assert "Traceback" not in telemetry.text()


@pytest.mark.parametrize(
    ("value", "reason"),
    [("not a key at all", "malformed_secret"), ('{"BEHEST_KEY": 5}', "malformed_secret"), ("{broken", "malformed_secret")],
)
def test_a_malformed_secret_value_is_a_503_and_a_fixed_one_recovers(
    build: Build, moto: Moto, clock: list[float], telemetry: CapturedTelemetry, value: str, reason: str
) -> None:
    arn = moto.client.create_secret(Name=f"malformed-{uuid.uuid4()}", SecretString=value)["ARN"]
    function = build(arn)

    refused = mint(function)
    moto.client.put_secret_value(SecretId=arn, SecretString=secret_document("tenant", KID))
    clock[0] += 6
    recovered = mint(function)

    assert refused["status"] == 503
    assert [r["reason"] for r in telemetry.logs() if r["message"] == "key secret unavailable"] == [reason]
    assert recovered["status"] == 200
    assert "PRIVATE KEY" not in telemetry.text()


def test_a_missing_secret_is_a_503_logged_as_not_found(build: Build, moto: Moto, telemetry: CapturedTelemetry) -> None:
    answer = mint(build("arn:aws:secretsmanager:us-east-1:123456789012:secret:nope-AbCdEf"))

    assert answer["status"] == 503
    assert [r["reason"] for r in telemetry.logs() if r["message"] == "key secret unavailable"] == ["not_found"]


class FakeExtension:
    """The Parameters and Secrets extension's HTTP API on loopback, backed by moto through boto3."""

    def __init__(self, moto: Moto) -> None:
        self.calls: list[str] = []
        self.fail_with: tuple[int, str] | None = None
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                url = urllib.parse.urlsplit(self.path)
                secret_id = urllib.parse.parse_qs(url.query).get("secretId", [""])[0]
                outer.calls.append(secret_id)
                if self.headers.get("X-Aws-Parameters-Secrets-Token") != SESSION_TOKEN:
                    self._answer(401, b"missing token")
                elif outer.fail_with:
                    self._answer(outer.fail_with[0], outer.fail_with[1].encode())
                else:
                    value = moto.client.get_secret_value(SecretId=secret_id)
                    self._answer(200, json.dumps({"SecretString": value["SecretString"], "ARN": value["ARN"]}).encode())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def extension(moto: Moto) -> Iterator[FakeExtension]:
    fake = FakeExtension(moto)
    yield fake
    fake.close()


def test_the_extension_is_used_when_it_listens_and_boto3_is_never_created(
    build: Build, secret_arn: str, extension: FakeExtension, telemetry: CapturedTelemetry
) -> None:
    settings = Settings.from_env(
        {"BEHEST_KEY_SECRET_ID": secret_arn, "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(extension.port)}
    )
    fetcher = SecretsManagerFetcher(settings.key, telemetry)

    value = fetcher(secret_arn)

    assert json.loads(value)["BEHEST_KID"] == KID
    assert extension.calls == [secret_arn]
    assert fetcher._client is None


def test_a_denied_read_through_the_extension_is_a_503_logged_as_access_denied(
    secret_arn: str, extension: FakeExtension, telemetry: CapturedTelemetry
) -> None:
    extension.fail_with = (400, '{"__type":"AccessDeniedException","message":"not allowed"}')
    settings = Settings.from_env(
        {"BEHEST_KEY_SECRET_ID": secret_arn, "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(extension.port)}
    )
    function = Service.build(TOKEN_FUNCTION, settings, telemetry, key_source=SecretKeySource(settings.key, telemetry))

    answer = mint(function)

    assert answer["status"] == 503
    assert [r["reason"] for r in telemetry.logs() if r["message"] == "key secret unavailable"] == ["access_denied"]


def test_without_an_extension_auto_mode_falls_back_to_boto3_once(
    secret_arn: str, telemetry: CapturedTelemetry, unused_port: int
) -> None:
    settings = Settings.from_env(
        {"BEHEST_KEY_SECRET_ID": secret_arn, "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(unused_port)}
    )
    fetcher = SecretsManagerFetcher(settings.key, telemetry)

    first, second = fetcher(secret_arn), fetcher(secret_arn)

    assert first == second
    assert [r["message"] for r in telemetry.logs()] == ["Parameters and Secrets extension not found; using boto3"]


FALLBACK_IN_A_FRESH_PROCESS = r"""
import json, sys
from behest_lambda import token_handler
from tests.support import load_event
response = token_handler.handler(load_event("token_mint"), None)
print(json.dumps({"status": response["statusCode"], "imported": sorted(
    m for m in ("boto3", "s3transfer", "botocore.client") if m in sys.modules)}))
"""


def test_the_fallback_reads_through_botocore_without_importing_boto3_or_s3transfer(moto: Moto, secret_arn: str) -> None:
    # boto3.client() is botocore's client behind an import of boto3's resource layer and s3transfer: the
    # fallback asks botocore for the same client and skips that import (fresh process: sys.modules is the point).
    environment = {key: value for key, value in os.environ.items() if not key.startswith("BEHEST_")}
    environment.update(BEHEST_KEY_SECRET_ID=secret_arn, BEHEST_SECRETS_EXTENSION="off",
                       PYTHONPATH=os.pathsep.join([str(ROOT / "functions"), str(ROOT)]))
    done = subprocess.run([sys.executable, "-c", FALLBACK_IN_A_FRESH_PROCESS], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=60, check=False)

    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"status": 200, "imported": ["botocore.client"]}


def test_extension_mode_on_does_not_fall_back_to_boto3(
    secret_arn: str, telemetry: CapturedTelemetry, clock: list[float], unused_port: int
) -> None:
    settings = Settings.from_env(
        {"BEHEST_KEY_SECRET_ID": secret_arn, "BEHEST_SECRETS_EXTENSION": "on",
         "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT": str(unused_port)}
    )
    function = Service.build(TOKEN_FUNCTION, settings, telemetry, key_source=SecretKeySource(settings.key, telemetry))

    assert mint(function)["status"] == 503

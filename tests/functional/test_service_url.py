"""The server-to-server front through `make dev`: a trusted role's SigV4-signed OpenAI SDK, acting for named users.

One `make dev` process; its local IAM Function URL checks every signature with botocore's signer
and hands the function Lambda's `iam` context; the stand-in Behest records what reached it, and
the process's log lines carry the usage records and mint lines.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import subprocess
from typing import Any, Iterator, Optional

import botocore.auth
import jwt
import openai
import pytest
from behest_sigv4 import SigV4Auth, for_user, httpx
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from devstack.iam_url import DEV_REGION, DEV_TRUSTED_CREDENTIALS, DEV_UNTRUSTED_CREDENTIALS, DevCredentials
from tests.dev_process import DevProcess
from tests.functional.test_node_clients import NODE_DIR, node_clients_missing
from tests.support import ROOT

CHUNK_DELAY = 0.01
HI = [{"role": "user", "content": "hi"}]
TRUSTED_ROLE = DEV_TRUSTED_CREDENTIALS.role_arn


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    process = DevProcess(chunk_delay=CHUNK_DELAY)
    yield process
    process.stop()


def credentials(dev_credentials: DevCredentials = DEV_TRUSTED_CREDENTIALS, *,
                secret: Optional[str] = None) -> Credentials:
    return Credentials(dev_credentials.access_key, secret or dev_credentials.secret_key, dev_credentials.session_token)


def signed(**options: Any) -> SigV4Auth:
    return SigV4Auth(DEV_REGION, credentials=credentials(**options))


def sdk(dev: DevProcess, auth: Optional[SigV4Auth] = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=dev.urls["service"] + "/v1", api_key="unused", max_retries=0,
                         http_client=openai.DefaultHttpxClient(auth=auth or signed()))


def upstream_users(dev: DevProcess, path: str, count: int) -> list[str]:
    return [r["claims"]["uid"] for r in dev.standin_requests() if r["path"] == path][-count:]


def post(dev: DevProcess, path: str, body: Any, *, auth: Any = None, headers: Optional[dict[str, str]] = None,
         front: str = "service") -> httpx.Response:
    with httpx.Client(auth=auth, timeout=10) as client:
        return client.post(dev.urls[front] + path, content=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json", **(headers or {})})


def sign_at(url: str, body: bytes, headers: dict[str, str], when: datetime.datetime) -> dict[str, str]:
    """The headers of a request botocore signed at `when` (add_auth, with the clock given)."""
    request = AWSRequest(method="POST", url=url, data=body, headers=headers)
    signer = botocore.auth.SigV4Auth(credentials(), "lambda", DEV_REGION)
    request.context["timestamp"] = when.strftime(botocore.auth.SIGV4_TIMESTAMP)
    signer._modify_request_before_signing(request)
    signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    signer._inject_signature_to_request(request, signature)
    return dict(request.headers.items())


def test_one_signed_client_serves_two_users_on_every_route(dev: DevProcess) -> None:
    with sdk(dev) as client:
        chat = [client.chat.completions.create(model="any", messages=HI, extra_headers=for_user(user))
                for user in ("ada", "bob")]
        streamed = ["".join(chunk.choices[0].delta.content or "" for chunk in client.chat.completions.create(
            model="any", messages=HI, stream=True, extra_headers=for_user(user)) if chunk.choices)
            for user in ("cy", "dee")]
        responses = [client.responses.create(model="behest-default", input="hi", extra_headers=for_user(user))
                     .output_text for user in ("ada", "bob")]
        embedded = [client.embeddings.create(model="behest-embed", input="hello", extra_headers=for_user(user))
                    for user in ("ada", "bob")]
        models = [[m.id for m in client.models.list(extra_headers=for_user(user))] for user in ("ada", "bob")]
    assert [c.choices[0].message.content for c in chat] == ["Hello ada! You said: hi", "Hello bob! You said: hi"]
    assert streamed == ["Hello cy! You said: hi", "Hello dee! You said: hi"]
    assert responses == ["Hello ada! You said: hi", "Hello bob! You said: hi"]
    assert all(len(e.data[0].embedding) > 0 for e in embedded)
    assert all("behest-default" in ids for ids in models)
    assert upstream_users(dev, "/v1/chat/completions", 4) == ["ada", "bob", "cy", "dee"]
    assert upstream_users(dev, "/v1/responses", 2) == ["ada", "bob"]
    assert upstream_users(dev, "/v1/embeddings", 2) == ["ada", "bob"]
    assert upstream_users(dev, "/v1/models", 2) == ["ada", "bob"]


def test_the_async_client_signs_whole_and_streamed_answers_for_two_users(dev: DevProcess) -> None:
    async def run() -> tuple[list[str], list[str]]:
        client = openai.AsyncOpenAI(base_url=dev.urls["service"] + "/v1", api_key="unused", max_retries=0,
                                    http_client=openai.DefaultAsyncHttpxClient(auth=signed()))
        whole = [(await client.responses.create(model="behest-default", input="hi",
                                                extra_headers=for_user(user))).output_text for user in ("eve", "fay")]
        streamed = []
        for user in ("gus", "hal"):
            stream = await client.chat.completions.create(model="any", messages=HI, stream=True,
                                                          extra_headers=for_user(user))
            streamed.append("".join([chunk.choices[0].delta.content or "" async for chunk in stream
                                     if chunk.choices]))
        await client.close()
        return whole, streamed

    whole, streamed = asyncio.run(run())

    assert whole == ["Hello eve! You said: hi", "Hello fay! You said: hi"]
    assert streamed == ["Hello gus! You said: hi", "Hello hal! You said: hi"]
    assert upstream_users(dev, "/v1/chat/completions", 2) == ["gus", "hal"]


def test_the_minted_token_names_exactly_the_user_and_tier_the_backend_named(dev: DevProcess) -> None:
    before = len(dev.records("token minted"))
    answer = post(dev, "/api/behest/token", {"ttl": 120}, auth=signed(), headers=for_user("ivy", tier=2))

    assert answer.status_code == 200
    claims = jwt.decode(answer.json()["token"], options={"verify_signature": False})
    assert (claims["uid"], claims["tier"], claims["role"]) == ("ivy", 2, "user")
    line = dev.wait_for_records("token minted", before + 1)[before]
    assert (line["uid"], line["caller"], line["tier"]) == ("ivy", TRUSTED_ROLE, 2)


def test_a_plan_name_in_the_tier_header_takes_the_tier_map(dev: DevProcess) -> None:
    answer = post(dev, "/api/behest/token", {}, auth=signed(), headers={"X-Behest-User-Id": "jo", "X-Behest-Tier": "pro"})

    assert jwt.decode(answer.json()["token"], options={"verify_signature": False})["tier"] == 2


def test_usage_records_name_the_user_and_the_calling_role(dev: DevProcess) -> None:
    before = len(dev.records("usage"))
    with sdk(dev) as client:
        client.chat.completions.create(model="any", messages=HI, extra_headers=for_user("kim"))

    record = dev.wait_for_records("usage", before + 1)[before]
    assert (record["user_id"], record["caller"], record["service"]) == ("kim", TRUSTED_ROLE, "behest-service")


def test_the_default_credential_chain_signs_when_the_environment_holds_credentials(
    dev: DevProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in DEV_TRUSTED_CREDENTIALS.environment().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)

    with sdk(dev, SigV4Auth()) as client:
        answer = client.responses.create(model="behest-default", input="hi", extra_headers=for_user("lu"))

    assert answer.output_text == "Hello lu! You said: hi"


def _refused_by_lambda(answer: httpx.Response, error_type: str) -> str:
    assert answer.status_code == 403
    assert answer.headers["x-amzn-errortype"] == error_type
    message: str = answer.json()["Message"]
    return message


def test_an_unsigned_request_is_refused_before_the_function_runs(dev: DevProcess) -> None:
    requests = len(dev.standin_requests())

    message = _refused_by_lambda(post(dev, "/v1/chat/completions", {"messages": HI}, headers=for_user("ada")),
                                 "AccessDeniedException")

    assert message.startswith("Forbidden.")
    assert len(dev.standin_requests()) == requests


def test_a_signature_made_with_another_secret_is_refused(dev: DevProcess) -> None:
    answer = post(dev, "/v1/chat/completions", {"messages": HI}, auth=signed(secret="not-the-secret"),
                  headers=for_user("ada"))

    assert "does not match" in _refused_by_lambda(answer, "InvalidSignatureException")


def test_a_user_id_changed_after_signing_is_refused(dev: DevProcess) -> None:
    url = dev.urls["service"] + "/api/behest/token"
    headers = sign_at(url, b"{}", {"Content-Type": "application/json", **for_user("ada")},
                      datetime.datetime.now(datetime.UTC))
    headers["X-Behest-User-Id"] = "mallory"

    with httpx.Client(timeout=10) as client:
        answer = client.post(url, content=b"{}", headers=headers)

    assert "does not match" in _refused_by_lambda(answer, "InvalidSignatureException")


@pytest.mark.parametrize("minutes", [-6, 6])
def test_a_signature_more_than_five_minutes_from_now_is_refused(dev: DevProcess, minutes: int) -> None:
    url = dev.urls["service"] + "/api/behest/token"
    when = datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=minutes)
    headers = sign_at(url, b"{}", {"Content-Type": "application/json", **for_user("ada")}, when)
    fresh = sign_at(url, b"{}", {"Content-Type": "application/json", **for_user("ada")},
                    datetime.datetime.now(datetime.UTC) + datetime.timedelta(minutes=minutes // 2))

    with httpx.Client(timeout=10) as client:
        answer = client.post(url, content=b"{}", headers=headers)
        within = client.post(url, content=b"{}", headers=fresh)

    assert "Signature" in _refused_by_lambda(answer, "InvalidSignatureException")
    assert within.status_code == 200


def test_a_role_not_listed_is_refused_by_the_function_even_when_iam_lets_it_in(dev: DevProcess) -> None:
    requests = len(dev.standin_requests())

    with sdk(dev, signed(dev_credentials=DEV_UNTRUSTED_CREDENTIALS)) as client, \
            pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="any", messages=HI, extra_headers=for_user("ada"))

    assert refused.value.code == "caller_not_trusted"
    assert len(dev.standin_requests()) == requests


def test_a_request_naming_no_user_is_refused_with_400(dev: DevProcess) -> None:
    with sdk(dev) as client, pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="any", messages=HI)

    assert refused.value.code == "user_id_required"


def test_a_tier_outside_the_range_is_refused_with_403(dev: DevProcess) -> None:
    with sdk(dev) as client, pytest.raises(openai.PermissionDeniedError) as refused:
        client.chat.completions.create(model="any", messages=HI, extra_headers=for_user("ada", tier=101))

    assert refused.value.code == "tier_out_of_range"


@pytest.mark.parametrize("front", ["api", "stream"])
def test_the_user_headers_are_ignored_on_the_http_api_and_the_public_function_url(dev: DevProcess, front: str) -> None:
    spoof = {"X-Behest-User-Id": "mallory", "X-Behest-Tier": "99"}
    with openai.OpenAI(base_url=dev.urls[front] + "/v1", api_key=dev.identity_token("ada", "free"),
                       max_retries=0) as client:
        client.chat.completions.create(model="any", messages=HI, extra_headers=spoof)

    upstream = [r for r in dev.standin_requests() if r["path"] == "/v1/chat/completions"][-1]
    assert (upstream["claims"]["uid"], upstream["claims"]["tier"]) == ("ada", 1)


def test_the_user_headers_do_not_change_whom_the_http_api_mints_for(dev: DevProcess) -> None:
    answer = post(dev, "/api/behest/token", {}, front="api",
                  headers={"Authorization": f"Bearer {dev.identity_token('ada')}", "X-Behest-User-Id": "mallory"})

    assert jwt.decode(answer.json()["token"], options={"verify_signature": False})["uid"] == "ada"


def node_client(dev: DevProcess, dev_credentials: DevCredentials, scenario: str) -> Any:
    """tests/node/service_client.mjs: openai-node signed by client/node/behest-sigv4.mjs, credentials from the env."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    done = subprocess.run(["node", "service_client.mjs", dev.urls["service"], scenario], cwd=NODE_DIR, timeout=120,
                          env={**environment, **dev_credentials.environment()}, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(node_clients_missing() is not None, reason=str(node_clients_missing()))
def test_openai_node_signed_by_the_node_client_serves_two_users_on_every_route(dev: DevProcess) -> None:
    before = len(dev.records("usage"))
    result = node_client(dev, DEV_TRUSTED_CREDENTIALS, "users")

    hello = ["Hello nia! You said: hi", "Hello oli! You said: hi"]
    assert result["chat"] == result["streamed"] == result["responses"] == hello
    assert all(length > 0 for length in result["embeddings"])
    assert all("behest-default" in ids for ids in result["models"])
    assert upstream_users(dev, "/v1/chat/completions", 4) == ["nia", "nia", "oli", "oli"]
    records = dev.wait_for_records("usage", before + 10)[before:]
    assert {(r["user_id"], r["caller"]) for r in records} == {("nia", TRUSTED_ROLE), ("oli", TRUSTED_ROLE)}


@pytest.mark.skipif(node_clients_missing() is not None, reason=str(node_clients_missing()))
def test_openai_node_signed_for_a_role_not_listed_is_refused_by_the_function(dev: DevProcess) -> None:
    assert node_client(dev, DEV_UNTRUSTED_CREDENTIALS, "refused") == {"status": 403, "code": "caller_not_trusted"}


def test_the_banners_server_to_server_example_runs_pasted_into_a_shell(dev: DevProcess) -> None:
    block = dev.banner.split("from the repository's root:\n", 1)[1].split("\nPython, with the OpenAI SDK", 1)[0]
    environment = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}

    ran = subprocess.run(["bash", "-c", block], cwd=ROOT, env=environment, capture_output=True, text=True, timeout=60)

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["Hello ada! You said: hi", "Hello bob! You said: hi"]

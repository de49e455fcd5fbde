"""The post-deploy check of the server-to-server URL: a trusted role's session mints and relays for a named user.

Against a deployed stack it needs the output ServiceBaseUrl (TrustedServiceRoleArns set) and
BEHEST_TEST_SERVICE_ROLE, a listed role the ambient AWS credentials may assume; without them the
module is skipped with one reason. Against `make dev` it signs with the dev stack's trusted credentials.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import jwt
import openai
import pytest
from behest_sigv4 import SigV4Auth, for_user, httpx

from tests.integration.targets import Targets, TargetUnavailable, service_target

HTTP_TIMEOUT_SECONDS = 30
USER = "post-deploy-check-user"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def service(targets: Targets) -> Iterator[tuple[str, SigV4Auth]]:
    try:
        base_url, credentials, region = service_target(targets)
    except TargetUnavailable as e:
        pytest.skip(str(e))
    yield base_url, SigV4Auth(region, credentials=credentials)


def post(url: str, auth: Any, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(auth=auth, timeout=HTTP_TIMEOUT_SECONDS) as client:
        return client.post(url, content=b"{}", headers={"Content-Type": "application/json", **headers})


def token_url(base_url: str) -> str:
    return base_url.removesuffix("/v1") + "/api/behest/token"


def test_a_trusted_role_mints_a_token_for_exactly_the_user_it_names(service: tuple[str, SigV4Auth]) -> None:
    base_url, auth = service
    answer = post(token_url(base_url), auth, for_user(USER))

    assert answer.status_code == 200
    assert jwt.decode(answer.json()["token"], options={"verify_signature": False})["uid"] == USER


def test_a_trusted_role_streams_a_chat_completion_for_a_named_user(service: tuple[str, SigV4Auth],
                                                                    targets: Targets) -> None:
    base_url, auth = service
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=HTTP_TIMEOUT_SECONDS,
                       http_client=openai.DefaultHttpxClient(auth=auth)) as client:
        model = targets.model or client.models.list(extra_headers=for_user(USER)).data[0].id
        chunks = list(client.chat.completions.create(model=model, messages=HI, stream=True,
                                                     extra_headers=for_user(USER)))

    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_an_unsigned_request_and_one_naming_no_user_are_refused(service: tuple[str, SigV4Auth]) -> None:
    base_url, auth = service
    unsigned = post(token_url(base_url), None, for_user(USER))
    nobody = post(token_url(base_url), auth, {})

    assert unsigned.status_code == 403 and "Message" in json.loads(unsigned.content)
    assert (nobody.status_code, nobody.json()["error"]["code"]) == (400, "user_id_required")

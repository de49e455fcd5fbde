"""make dev's local IAM Function URL: its SigV4 check (botocore's signer recomputing), refusal by refusal."""

from __future__ import annotations

import datetime
from email.message import Message
from typing import Any, Optional

import botocore.auth
import pytest
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from devstack.iam_url import (
    DEV_ACCOUNT,
    DEV_REGION,
    DEV_TRUSTED_CREDENTIALS,
    DEV_UNTRUSTED_CREDENTIALS,
    SignatureRefused,
    SigV4Verifier,
)

URL = "http://127.0.0.1:3002/v1/chat/completions?trace=1"
BODY = b'{"messages": [{"role": "user", "content": "hi"}]}'
TRUSTED = DEV_TRUSTED_CREDENTIALS


def signed(*, credentials: Any = TRUSTED, region: str = DEV_REGION, service: str = "lambda", body: bytes = BODY,
           headers: Optional[dict[str, str]] = None) -> Message:
    """The headers botocore's signer gives a request, as the server reads them."""
    request = AWSRequest(method="POST", url=URL, data=body, headers={
        "Content-Type": "application/json", "X-Behest-User-Id": "ada", **(headers or {})})
    botocore.auth.SigV4Auth(Credentials(credentials.access_key, credentials.secret_key, credentials.session_token),
                            service, region).add_auth(request)
    message = Message()
    message["Host"] = "127.0.0.1:3002"
    for name, value in request.headers.items():
        message[name] = value
    return message


def verify(headers: Message, body: bytes = BODY, clock: Any = None) -> dict[str, Any]:
    return SigV4Verifier((TRUSTED, DEV_UNTRUSTED_CREDENTIALS), clock=clock).verify("POST", URL, headers, body)


def refusal(headers: Message, body: bytes = BODY, clock: Any = None) -> SignatureRefused:
    with pytest.raises(SignatureRefused) as refused:
        verify(headers, body, clock)
    return refused.value


def test_a_request_botocore_signed_passes_with_the_iam_context_lambda_builds() -> None:
    iam = verify(signed())

    assert iam == {"accessKey": TRUSTED.access_key, "accountId": DEV_ACCOUNT,
                   "callerId": f"{TRUSTED.role_id}:dev-session", "cognitoIdentity": None, "principalOrgId": None,
                   "userArn": f"arn:aws:sts::{DEV_ACCOUNT}:assumed-role/trusted-backend/dev-session",
                   "userId": f"{TRUSTED.role_id}:dev-session"}


def test_the_untrusted_roles_session_passes_the_signature_check_too() -> None:
    assert verify(signed(credentials=DEV_UNTRUSTED_CREDENTIALS))["userArn"].endswith("/other-service/dev-session")


def test_a_body_changed_after_signing_does_not_match() -> None:
    assert refusal(signed(), body=BODY.replace(b"hi", b"ho")).error_type == "InvalidSignatureException"


def test_a_content_hash_header_that_is_not_the_bodys_is_refused() -> None:
    headers = signed(headers={"X-Amz-Content-SHA256": "0" * 64})

    assert "does not match" in refusal(headers).message


@pytest.mark.parametrize(("region", "service"), [("eu-west-1", "lambda"), (DEV_REGION, "execute-api")])
def test_a_signature_scoped_to_another_region_or_service_is_refused(region: str, service: str) -> None:
    assert "scoped" in refusal(signed(region=region, service=service)).message


def test_unknown_keys_and_a_missing_session_token_are_unrecognized() -> None:
    stranger = TRUSTED._replace(access_key="ASIASOMEONEELSE12345")
    no_token = signed()
    del no_token["X-Amz-Security-Token"]

    assert refusal(signed(credentials=stranger)).error_type == "UnrecognizedClientException"
    assert refusal(no_token).error_type == "UnrecognizedClientException"


def test_an_authorization_header_that_is_not_sigv4_is_incomplete() -> None:
    headers = signed()
    headers.replace_header("Authorization", "Bearer a.b.c")

    assert refusal(headers).error_type == "IncompleteSignatureException"


def test_no_authorization_at_all_is_lambdas_plain_forbidden() -> None:
    headers = signed()
    del headers["Authorization"]
    refused = refusal(headers)

    assert (refused.error_type, refused.answer()[0]) == ("AccessDeniedException", 403)


@pytest.mark.parametrize(("minutes", "passes"), [(-4.9, True), (4.9, True), (-5.1, False), (5.1, False)])
def test_the_signature_holds_five_minutes_either_side_of_its_time(minutes: float, passes: bool) -> None:
    headers = signed()
    signed_at = datetime.datetime.strptime(headers["X-Amz-Date"], botocore.auth.SIGV4_TIMESTAMP).replace(
        tzinfo=datetime.UTC)
    clock = lambda: signed_at - datetime.timedelta(minutes=minutes)  # noqa: E731

    if passes:
        assert verify(headers, clock=clock)["accessKey"] == TRUSTED.access_key
    else:
        assert refusal(headers, clock=clock).message.startswith("Signature ")

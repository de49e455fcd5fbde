"""A local Lambda Function URL with AuthType AWS_IAM, for the server-to-server function, on loopback.

Before the function runs, each request's SigV4 signature (service `lambda`) is checked as Lambda
checks it: the credential scope, the X-Amz-Date within five minutes of now, the session token, the
body's hash, and the signature itself, recomputed by botocore's own signer from the headers the
request says it signed. A request that fails gets the 403 Lambda answers (`{"Message": …}` and
`x-amzn-ErrorType`); the function never sees it. A request that passes reaches the function with
the `requestContext.authorizer.iam` Lambda builds for the signing role's session.

Two sets of dev credentials are known, each a session of its own role: DEV_TRUSTED_CREDENTIALS (a
role `make dev` lists in BEHEST_TRUSTED_ROLE_ARNS, with a path, as roles often have) and
DEV_UNTRUSTED_CREDENTIALS (a role that is not listed). Both are let through here, as if someone had
widened the invoke permission: the function's own check refuses the second with 403 caller_not_trusted.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import re
from email.message import Message
from typing import Any, NamedTuple, Optional

from botocore.auth import SIGV4_TIMESTAMP, SigV4Auth
from botocore.awsrequest import AWSRequest, HTTPHeaders
from botocore.credentials import Credentials

from devstack.stream_url import StreamFunctionUrl

DEV_REGION = "us-east-1"
DEV_ACCOUNT = "123456789012"
SERVICE = "lambda"
# SigV4: a request is refused when its X-Amz-Date is more than this far from the server's clock, either way.
SIGNATURE_WINDOW = datetime.timedelta(minutes=5)
URLS_AUTH_DOC = "https://docs.aws.amazon.com/lambda/latest/dg/urls-auth.html"
_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[A-Z0-9]{16,128})/(?P<date>[0-9]{8})/(?P<region>[a-z0-9-]{1,32})/"
    r"(?P<service>[a-z0-9-]{1,32})/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9-]+(?:;[a-z0-9-]+)*), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})"
)

Refusal = tuple[int, dict[str, str], bytes]


class DevCredentials(NamedTuple):
    """A dev role's session: its keys, and who IAM says it is."""

    access_key: str
    secret_key: str
    session_token: str
    role_arn: str
    role_id: str
    session_name: str = "dev-session"

    @property
    def assumed_role_arn(self) -> str:
        """The session's ARN, as STS names it: the role's name without its path."""
        name = self.role_arn.rsplit("/", 1)[1]
        return f"arn:aws:sts::{DEV_ACCOUNT}:assumed-role/{name}/{self.session_name}"

    def environment(self) -> dict[str, str]:
        """The variables that make botocore's (and the AWS SDKs') default credential chain pick these up."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_SESSION_TOKEN": self.session_token, "AWS_REGION": DEV_REGION}


# Dev only, valid on loopback only: never AWS credentials.
DEV_TRUSTED_CREDENTIALS = DevCredentials(
    "ASIADEVTRUSTEDBACKEND", "dev-trusted-backend-secret-access-key", "dev-trusted-backend-session-token",
    f"arn:aws:iam::{DEV_ACCOUNT}:role/behest-dev/trusted-backend", "AROADEVTRUSTEDBACKEND",
)
DEV_UNTRUSTED_CREDENTIALS = DevCredentials(
    "ASIADEVOTHERSERVICE", "dev-other-service-secret-access-key", "dev-other-service-session-token",
    f"arn:aws:iam::{DEV_ACCOUNT}:role/other-service", "AROADEVOTHERSERVICE",
)


class SignatureRefused(Exception):
    """Lambda refuses the request before the function runs: 403 with its error type and message."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message

    def answer(self) -> Refusal:
        return 403, {"Content-Type": "application/json", "x-amzn-ErrorType": self.error_type}, json.dumps(
            {"Message": self.message}).encode()


FORBIDDEN = SignatureRefused("AccessDeniedException",
                             f"Forbidden. For troubleshooting Function URL authorization issues, see: {URLS_AUTH_DOC}")
MISMATCH = ("The request signature we calculated does not match the signature you provided. Check your AWS Secret "
            "Access Key and signing method. Consult the service documentation for details.")
INVALID_TOKEN = "The security token included in the request is invalid."


class _SignedHeadersOnly(SigV4Auth):
    """botocore's SigV4 signer, over exactly the headers the request says it signed (as the server must)."""

    def __init__(self, credentials: Credentials, region: str, signed: frozenset[str]) -> None:
        super().__init__(credentials, SERVICE, region)
        self._signed = signed

    def headers_to_sign(self, request: AWSRequest) -> HTTPHeaders:
        picked = HTTPHeaders()
        for name, value in request.headers.items():
            if name.lower() in self._signed:
                picked[name.lower()] = value
        return picked


class SigV4Verifier:
    """Checks a request's SigV4 signature against known credentials; the caller's iam context, or SignatureRefused."""

    def __init__(self, credentials: tuple[DevCredentials, ...], region: str = DEV_REGION,
                 clock: Any = None) -> None:
        self._credentials = {c.access_key: c for c in credentials}
        self.region = region
        self._clock = clock or (lambda: datetime.datetime.now(datetime.UTC))

    def verify(self, method: str, url: str, headers: Message, body: bytes) -> dict[str, Any]:
        """The `requestContext.authorizer.iam` of a correctly signed request."""
        authorization = headers.get("Authorization")
        if authorization is None:
            raise FORBIDDEN
        found = _AUTHORIZATION.fullmatch(authorization.strip())
        if found is None:
            raise SignatureRefused("IncompleteSignatureException",
                                   "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' "
                                   "parameters of the AWS4-HMAC-SHA256 algorithm.")
        credentials = self._credentials.get(found["key"])
        if credentials is None:
            raise SignatureRefused("UnrecognizedClientException", INVALID_TOKEN)
        signed = frozenset(found["signed"].split(";"))
        if not {"host", "x-amz-date"} <= signed:
            raise SignatureRefused("InvalidSignatureException", "'Host' and 'X-Amz-Date' must be signed headers.")
        if headers.get("X-Amz-Security-Token") != credentials.session_token or "x-amz-security-token" not in signed:
            raise SignatureRefused("UnrecognizedClientException", INVALID_TOKEN)
        amz_date = headers.get("X-Amz-Date", "")
        try:
            when = datetime.datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(tzinfo=datetime.UTC)
        except ValueError:
            raise SignatureRefused("IncompleteSignatureException", "X-Amz-Date is not a SigV4 timestamp.") from None
        now = self._clock()
        if when < now - SIGNATURE_WINDOW:
            raise SignatureRefused("InvalidSignatureException", f"Signature expired: {amz_date} is now earlier than "
                                   f"{(now - SIGNATURE_WINDOW).strftime(SIGV4_TIMESTAMP)}.")
        if when > now + SIGNATURE_WINDOW:
            raise SignatureRefused("InvalidSignatureException", f"Signature not yet current: {amz_date} is still "
                                   f"later than {(now + SIGNATURE_WINDOW).strftime(SIGV4_TIMESTAMP)}.")
        scope = (found["date"], found["region"], found["service"])
        if scope != (amz_date[:8], self.region, SERVICE):
            raise SignatureRefused("InvalidSignatureException", f"Credential should be scoped to a valid region, "
                                   f"'{amz_date[:8]}/{self.region}/{SERVICE}/aws4_request'.")
        content_hash = headers.get("X-Amz-Content-SHA256")
        if content_hash is not None and content_hash != hashlib.sha256(body).hexdigest():
            raise SignatureRefused("InvalidSignatureException", MISMATCH)
        if not hmac.compare_digest(self._signature(credentials, method, url, headers, body, signed, amz_date),
                                   found["signature"]):
            raise SignatureRefused("InvalidSignatureException", MISMATCH)
        caller_id = f"{credentials.role_id}:{credentials.session_name}"
        return {"accessKey": credentials.access_key, "accountId": DEV_ACCOUNT, "callerId": caller_id,
                "cognitoIdentity": None, "principalOrgId": None, "userArn": credentials.assumed_role_arn,
                "userId": caller_id}

    def _signature(self, credentials: DevCredentials, method: str, url: str, headers: Message, body: bytes,
                   signed: frozenset[str], amz_date: str) -> str:
        """The signature botocore computes for this request with these credentials."""
        signer = _SignedHeadersOnly(Credentials(credentials.access_key, credentials.secret_key,
                                                credentials.session_token), self.region, signed)
        request = AWSRequest(method=method, url=url, headers=headers, data=body)
        request.context["timestamp"] = amz_date
        canonical = signer.canonical_request(request)
        signature: str = signer.signature(signer.string_to_sign(request, canonical), request)
        return signature


class IamFunctionUrl(StreamFunctionUrl):
    """A StreamFunctionUrl whose requests must be SigV4-signed by known dev credentials (AuthType AWS_IAM)."""

    def __init__(self, function: Any, *, host: str = "127.0.0.1", port: int = 0,
                 credentials: tuple[DevCredentials, ...] = (DEV_TRUSTED_CREDENTIALS, DEV_UNTRUSTED_CREDENTIALS),
                 verifier: Optional[SigV4Verifier] = None) -> None:
        super().__init__(function, host=host, port=port)
        self.verifier = verifier or SigV4Verifier(credentials)

    def authorize(self, method: str, target: str, headers: Message, body: bytes,
                  event: dict[str, Any]) -> Optional[Refusal]:
        url = f"http://{headers.get('Host', 'localhost')}{target}"
        try:
            iam = self.verifier.verify(method, url, headers, body)
        except SignatureRefused as refused:
            return refused.answer()
        context = event["requestContext"]
        context["accountId"] = iam["accountId"]
        context["authorizer"] = {"iam": iam}
        return None

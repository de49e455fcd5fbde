"""SigV4-sign an OpenAI SDK's requests for behest-lambda's server-to-server URL (a Function URL with AuthType AWS_IAM).

    from openai import DefaultHttpxClient, OpenAI
    from behest_sigv4 import SigV4Auth, for_user

    client = OpenAI(base_url=SERVICE_BASE_URL, api_key="unused", http_client=DefaultHttpxClient(auth=SigV4Auth()))
    client.chat.completions.create(model="any", messages=[...], extra_headers=for_user("user-42"))

`SigV4Auth` is an `httpx.Auth` (of `httpx2`, the OpenAI SDK's HTTP client since openai 3, or of
`httpx` for earlier SDKs, whichever is installed, httpx2 first). It signs every request (streamed
ones too: the body is signed, the answer needs nothing)
with botocore's SigV4 signer, service `lambda`, and the credentials of
botocore's default chain (environment, profile, SSO, the container's or instance's role),
refreshed as botocore refreshes them. It serves `httpx.Client` and `httpx.AsyncClient` alike
(`DefaultAsyncHttpxClient(auth=SigV4Auth())`; the signing is a local HMAC, a credential refresh
may block briefly). The user is named per request (`for_user`), so one client serves every user.
Needs `botocore` (or `boto3`) beside the SDK.
"""

from __future__ import annotations

import os
import re
from typing import Generator, Optional

import botocore.auth
import botocore.session
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

try:
    import httpx2 as httpx  # the OpenAI SDK's HTTP client since openai 3
except ImportError:  # earlier SDKs: httpx itself
    import httpx  # type: ignore[no-redef]

USER_ID_HEADER = "X-Behest-User-Id"
TIER_HEADER = "X-Behest-Tier"
SERVICE = "lambda"
# Signed besides host and the x-amz-* headers: what says what the request is and for whom. Headers an
# HTTP stack may add or change on the way (user-agent, accept-encoding, connection) stay unsigned.
SIGNED_HEADERS = ("content-type", "x-session-id")
SIGNED_PREFIXES = ("x-behest-",)
_FUNCTION_URL_HOST = re.compile(r"[a-z0-9]+\.lambda-url\.(?P<region>[a-z0-9-]+)\.on\.aws", re.ASCII)


def for_user(user_id: str, tier: Optional[int] = None) -> dict[str, str]:
    """The headers naming the user a request is for (and their tier), e.g. as an SDK call's `extra_headers`."""
    return {USER_ID_HEADER: user_id, **({TIER_HEADER: str(tier)} if tier is not None else {})}


class SigV4Auth(httpx.Auth):
    """Signs each request with SigV4 for AWS Lambda (Function URL, AuthType AWS_IAM)."""

    requires_request_body = True  # the signature covers the body's hash

    def __init__(self, region: Optional[str] = None, *, credentials: Optional[Credentials] = None,
                 session: Optional[botocore.session.Session] = None) -> None:
        self._session = session or botocore.session.get_session()
        self._region = region
        self._credentials = credentials

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        credentials = self._credentials or self._session.get_credentials()
        if credentials is None:
            raise RuntimeError("no AWS credentials: botocore's default chain found none")
        signed = AWSRequest(method=request.method, url=str(request.url), data=request.content,
                            headers={name: value for name, value in request.headers.items() if _signed(name)})
        botocore.auth.SigV4Auth(credentials.get_frozen_credentials(), SERVICE, self._region_for(request.url)).add_auth(
            signed)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            value = signed.headers.get(name)
            if value is not None:
                request.headers[name] = value
        yield request

    def _region_for(self, url: httpx.URL) -> str:
        found = _FUNCTION_URL_HOST.fullmatch(url.host)
        # AWS_REGION is what Lambda, ECS and the AWS SDKs set; botocore itself reads AWS_DEFAULT_REGION or the profile.
        region = (self._region or (found["region"] if found else None) or os.environ.get("AWS_REGION")
                  or self._session.get_config_variable("region"))
        if not region:
            raise RuntimeError("no AWS region: pass SigV4Auth(region=...) or set AWS_REGION")
        return str(region)


def _signed(name: str) -> bool:
    lowered = name.lower()
    return lowered == "host" or lowered in SIGNED_HEADERS or lowered.startswith(SIGNED_PREFIXES)

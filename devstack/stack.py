"""The whole product on loopback, no AWS account and no Docker: `make dev` runs this.

- a local identity provider (JWKS + tokens for named dev users),
- moto's Secrets Manager server holding a freshly generated tenant key, fetched by the
  functions through boto3 exactly as in AWS,
- the stand-in Behest gateway, which knows that tenant key's public half,
- a local HTTP API doing what the deployed API Gateway does (the route table, JWT authorizer,
  CORS, payload 2.0) in front of the real Lambda handlers; it also serves the demo page
  (`devstack/web/`) and the browser client (`client/behest-client.js`),
- a local Function URL in front of the streaming function,
- a local IAM Function URL (AuthType AWS_IAM: SigV4 checked by botocore's signer) in front of the
  server-to-server function, for dev credentials of a trusted and an untrusted role.
"""

from __future__ import annotations

import json
import mimetypes
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import boto3
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from moto.server import ThreadedMotoServer

from behest_lambda.app import Service, entry_point
from behest_lambda.providers import DEFAULT_PROVIDER, PROVIDERS
from behest_lambda.routes import (
    FUNCTION_URL,
    HTTP_API,
    RELAY_FUNCTION,
    SERVICE_FUNCTION,
    SERVICE_URL,
    TOKEN_FUNCTION,
    routes_for,
)
from behest_lambda.settings import AUTH_JWT_SECRET
from behest_lambda.telemetry import Telemetry
from devstack.iam_url import DEV_REGION, DEV_TRUSTED_CREDENTIALS, DEV_UNTRUSTED_CREDENTIALS, IamFunctionUrl
from devstack.identity import LocalIdentityProvider
from devstack.local_api import JwtAuthorizer, LocalHttpApi
from devstack.standin import StandinGateway
from devstack.stream_url import StreamFunctionUrl

WEB_ROOT = Path(__file__).resolve().parent / "web"
# The browser module another part of the repository ships; served when present.
BROWSER_CLIENT = Path(__file__).resolve().parent.parent / "client" / "behest-client.js"
CONTENT_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
                 ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon",
                 ".txt": "text/plain; charset=utf-8", ".map": "application/json"}
TENANT_ID = "tenant-dev"
PROJECT_ID = "project-dev"
DEV_API_KEY = "behest_sk_live_dev_only_key"


def content_type(path: Path) -> str:
    """The Content-Type a browser needs (a module script must be served as JavaScript)."""
    return CONTENT_TYPES.get(path.suffix.lower()) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"


@dataclass(frozen=True)
class Ports:
    """Where each piece listens (0 picks a free port)."""

    api: int = 3000
    stream: int = 3001
    identity: int = 3100
    behest: int = 8787
    secrets: int = 4566
    service: int = 3002


class DevStack:
    """Starts and stops every piece, in order, in this process."""

    def __init__(self, ports: Ports = Ports(), *, chunk_delay: float = 0.05, mode: str = "sign",
                 allowed_origins: tuple[str, ...] = (), idp: str = DEFAULT_PROVIDER, legacy_secret: bool = False,
                 idp_latency: float = 0.0) -> None:
        self.ports = ports
        self.chunk_delay = chunk_delay
        self.mode = mode
        self.extra_origins = allowed_origins
        # The identity provider `make dev --idp NAME` imitates, and the preset the functions run with.
        self.idp = idp
        self.preset = PROVIDERS[idp]
        self.legacy_secret = legacy_secret
        self.idp_latency = idp_latency
        self.kid = "sk_dev_" + uuid.uuid4().hex[:8]
        self._stops: list[Any] = []
        self.identity: Optional[LocalIdentityProvider] = None
        self.behest: Optional[StandinGateway] = None
        self.api: Optional[LocalHttpApi] = None
        self.stream: Optional[StreamFunctionUrl] = None
        self.service: Optional[IamFunctionUrl] = None
        self.secrets_url = ""
        self.secret_arn = ""
        # The functions' environment, as the template would set it for the preset (read when each is built).
        self.env: dict[str, str] = {}

    def start(self) -> DevStack:
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def function_verifies(self) -> bool:
        """The HTTP API has no JWT authorizer for this preset (ES/HMAC keys, no aud, cookies): the functions verify."""
        return self.preset.function_verifies()

    def _start(self) -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()

        self.identity = LocalIdentityProvider(port=self.ports.identity, shape=self.idp,
                                              legacy_secret=self.legacy_secret, latency=self.idp_latency).start()
        self._stops.append(self.identity.stop)

        self.behest = StandinGateway(port=self.ports.behest, chunk_delay=self.chunk_delay)
        self.behest.register_key(self.kid, key.public_key())
        self.behest.register_api_key(DEV_API_KEY, TENANT_ID, PROJECT_ID)
        self.behest.start()
        self._stops.append(self.behest.stop)

        moto = ThreadedMotoServer("127.0.0.1", self.ports.secrets, verbose=False)
        moto.start()
        self._stops.append(moto.stop)
        self.secrets_url = f"http://127.0.0.1:{moto.get_host_and_port()[1]}"
        os.environ.update(AWS_ACCESS_KEY_ID="dev", AWS_SECRET_ACCESS_KEY="dev", AWS_DEFAULT_REGION="us-east-1",
                          AWS_ENDPOINT_URL_SECRETS_MANAGER=self.secrets_url)
        secret = {"BEHEST_KEY": "behest_pk_" + pem, "BEHEST_KID": self.kid,
                  "BEHEST_TENANT_ID": TENANT_ID, "BEHEST_PROJECT_ID": PROJECT_ID}
        if self.mode == "api-key":
            secret = {"BEHEST_KEY": DEV_API_KEY}
        if self.identity.legacy_secret is not None:
            # Supabase's legacy JWT secret lives in the key secret, never in a plain parameter.
            secret[AUTH_JWT_SECRET] = self.identity.legacy_secret
        client = boto3.client("secretsmanager", endpoint_url=self.secrets_url)
        self.secret_arn = client.create_secret(Name="behest/dev/tenant-key-" + uuid.uuid4().hex[:6],
                                               SecretString=json.dumps(secret))["ARN"]

        # Each stack builds its own functions from its own environment (a second stack in the process gets its own).
        token = entry_point(TOKEN_FUNCTION, "behest-token", build=self._build)
        relay = entry_point(RELAY_FUNCTION, "behest-relay", build=self._build)
        self.api = LocalHttpApi(
            # The route table (behest_lambda.routes) says which function serves which route, as the template does.
            {TOKEN_FUNCTION: token, RELAY_FUNCTION: relay},
            # Where API Gateway's JWT authorizer cannot verify the provider's tokens, the template attaches none.
            None if self.function_verifies else JwtAuthorizer(self.identity.issuer, [self.identity.audience or ""]),
            allowed_origins=set(self.extra_origins),
            port=self.ports.api,
            public_paths=self._public_paths(),
            credentials=self.preset.cookie is not None,
        )
        self.api.allowed_origins.update({self.api.url, self.api.url.replace("127.0.0.1", "localhost")})
        self.behest.allowed_origins.update(self.api.allowed_origins)
        self.identity.allowed_origins.update(self.api.allowed_origins)
        self.env = self._function_env(self.api.allowed_origins)
        self.api.start()
        self._stops.append(self.api.stop)

        # The streaming route: a local Function URL in front of the function the Runtime API loop serves in AWS.
        from behest_lambda.stream_handler import StreamFunction
        from behest_lambda.telemetry import Telemetry

        function = StreamFunction.from_env(Telemetry("behest-stream"), self.env)
        self.stream = StreamFunctionUrl(function, port=self.ports.stream, allowed_origins=self.api.allowed_origins,
                                        credentials=self.preset.cookie is not None).start()
        self._stops.append(self.stream.stop)

        # The server-to-server front: the same loop's function behind a URL that checks SigV4 signatures.
        service = StreamFunction.from_env(Telemetry("behest-service"),
                                          {**self.env, "BEHEST_TRUSTED_ROLE_ARNS": DEV_TRUSTED_CREDENTIALS.role_arn},
                                          function=SERVICE_FUNCTION)
        self.service = IamFunctionUrl(service, port=self.ports.service).start()
        self._stops.append(self.service.stop)
        self.api.public_paths["/config.json"] = ("application/json", json.dumps(self.page_config()).encode())

    def _build(self, function: str, telemetry: Telemetry) -> Service:
        return Service.from_env(function, telemetry, self.env)

    def _function_env(self, origins: set[str]) -> dict[str, str]:
        """The functions' environment for the preset, as the template sets it (issuer, audience, origins...)."""
        assert self.behest is not None and self.identity is not None
        env = {name: value for name, value in os.environ.items() if not name.startswith("BEHEST_")}
        env.update(
            BEHEST_KEY_SECRET_ID=self.secret_arn,
            BEHEST_SECRETS_EXTENSION="off",
            BEHEST_BASE_URL=self.behest.url,
            BEHEST_TIER_MAP="free=1,pro=2",
            BEHEST_UPSTREAM_TIMEOUT="25",
            BEHEST_IDENTITY_PROVIDER=self.idp,
            BEHEST_CALLER_ISSUER=self.identity.issuer,
            BEHEST_ALLOWED_ORIGINS=",".join(sorted(origins)),
        )
        if self.identity.shape.tier_claim:
            env["BEHEST_TIER_CLAIM"] = self.identity.shape.tier_claim
        if self.identity.audience is not None:
            env["BEHEST_CALLER_AUDIENCE"] = self.identity.audience
        if self.function_verifies:
            env["BEHEST_VERIFY_CALLERS"] = "true"
        return env

    def page_config(self) -> dict[str, str]:
        """Where the demo page finds each piece, which provider it signs in with, and that provider's cookie."""
        assert self.api and self.identity and self.behest and self.stream
        config = {"apiUrl": self.api.url, "identityUrl": self.identity.url, "behestUrl": self.behest.url,
                  "relayUrl": self.stream.url, "identityProvider": self.idp}
        if self.identity.cookie_name:
            config["cookieName"] = self.identity.cookie_name
        return config

    def _cookie_example(self) -> str:
        """For a provider with a session cookie: sign in by that cookie, as a same-origin page would."""
        assert self.api and self.identity
        if not self.identity.cookie_name:
            return ""
        return f"""
By the {self.identity.cookie_name} session cookie (as the provider's browser SDK writes it; its Origin
must be allowed):
{cookie_example(self.api.url, self.identity.url)}"""

    def _hs256(self) -> str:
        return ", legacy HS256 secret" if self.legacy_secret else ""

    @staticmethod
    def _public_paths() -> dict[str, tuple[str, bytes]]:
        """The demo page's files at /<name> (index.html at / too) and the browser client at /behest-client.js."""
        files = [path for path in sorted(WEB_ROOT.iterdir()) if path.is_file()] if WEB_ROOT.is_dir() else []
        if BROWSER_CLIENT.is_file():
            files.append(BROWSER_CLIENT)
        pages = {"/" + path.name: (content_type(path), path.read_bytes()) for path in files}
        if "/index.html" in pages:
            pages["/"] = pages["/index.html"]
        return pages

    def stop(self) -> None:
        while self._stops:
            stop = self._stops.pop()
            try:
                stop()
            except Exception as e:  # noqa: BLE001 - one piece failing to stop must not keep the others running
                print(f"stopping {stop!r} failed: {e}")

    def __enter__(self) -> DevStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def banner(self) -> str:
        assert self.api and self.identity and self.behest and self.stream and self.service
        api, idp, stream, service = self.api.url, self.identity.url, self.stream.url, self.service.url
        routes = ", ".join(f"{r.method} {r.path}" for r in routes_for(HTTP_API))
        streamed = ", ".join(f"{r.method} {r.path}" for r in routes_for(FUNCTION_URL))
        shape = self.identity.shape
        verifier = "the functions (no JWT authorizer)" if self.function_verifies else "the API's JWT authorizer"
        cookie = f", or the {self.identity.cookie_name} cookie" if self.identity.cookie_name else ""
        trusted, untrusted = DEV_TRUSTED_CREDENTIALS, DEV_UNTRUSTED_CREDENTIALS
        served = ", ".join(f"{r.method} {r.path}" for r in routes_for(SERVICE_URL))
        return f"""
behest-lambda local stack is up ({self.mode} mode, --idp {self.idp}{self._hs256()})
  demo page                  {api}/
  API (token + chat relay)   {api}     routes {routes} (buffered)
  streaming chat relay       {stream}     {streamed}, token by token (the Function URL)
  server-to-server (IAM)     {service}     {served}, SigV4-signed, for the user in X-Behest-User-Id
  identity provider          {idp}     POST /token {{"user": "ada", "plan": "pro"}} -> id_token
  Behest stand-in            {self.behest.url}
  Secrets Manager (moto)     {self.secrets_url}     secret {self.secret_arn}

Identity provider ({self.idp}, as {shape.docs} describes it):
  issuer                     {self.identity.issuer}
  discovery                  {self.identity.discovery_url}
  keys (jwks_uri)            {self.identity.jwks_url}
  signed with                {self.identity.algorithm}; user id claim {self.preset.user_claim}
  HTTP API tokens checked by {verifier}; tokens by Authorization: Bearer{cookie}

Try it in a shell (every answer on its own line):
{shell_example(api, idp, stream)}{self._cookie_example()}
Server-to-server, signed with SigV4 by a session of {trusted.role_arn} (listed in
BEHEST_TRUSTED_ROLE_ARNS; the session {untrusted.access_key} / {untrusted.secret_key} /
{untrusted.session_token} of {untrusted.role_arn}, not listed, gets 403), from the repository's root:
{service_example(service)}
Python, with the OpenAI SDK: paste into .venv/bin/python (it has the SDK) as it is, or save and run it:
{python_example(idp, stream)}
Ctrl-C stops everything.
"""


def shell_example(api: str, idp: str, stream: str) -> str:
    """Shell lines that sign in as a dev user and call each route, pasteable as they are (README shows them too)."""
    return f"""\
TOKEN=$(curl -s -X POST {idp}/token -d '{{"user": "ada", "plan": "pro"}}' \\
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["id_token"])')
curl -s -X POST {api}/api/behest/token -H "Authorization: Bearer $TOKEN"; echo
curl -s {api}/v1/chat/completions -H "Authorization: Bearer $TOKEN" \\
     -H 'Content-Type: application/json' -d '{{"messages": [{{"role": "user", "content": "hi"}}]}}'; echo
curl -s {api}/v1/models -H "Authorization: Bearer $TOKEN"; echo
curl -s {api}/v1/embeddings -H "Authorization: Bearer $TOKEN" \\
     -H 'Content-Type: application/json' -d '{{"input": "hello", "encoding_format": "float"}}'; echo
curl -s {api}/v1/responses -H "Authorization: Bearer $TOKEN" \\
     -H 'Content-Type: application/json' -d '{{"input": "hi"}}'; echo
curl -s {api}/v1/completions -H "Authorization: Bearer $TOKEN" \\
     -H 'Content-Type: application/json' -d '{{"prompt": "hi"}}'; echo
curl -sN {stream}/v1/chat/completions -H "Authorization: Bearer $TOKEN" \\
     -H 'Content-Type: application/json' -d '{{"stream": true, "messages": [{{"role": "user", "content": "hi"}}]}}'
curl -sN {stream}/v1/responses -H "Authorization: Bearer $TOKEN" \\
     -H 'Content-Type: application/json' -d '{{"stream": true, "input": "hi"}}'
"""

def service_example(service: str) -> str:
    """Shell lines that sign as the dev stack's trusted role and ask for two users in turn, pasteable as they are."""
    trusted = DEV_TRUSTED_CREDENTIALS
    return f"""\
export AWS_ACCESS_KEY_ID={trusted.access_key} AWS_SECRET_ACCESS_KEY={trusted.secret_key} \\
       AWS_SESSION_TOKEN={trusted.session_token} AWS_REGION={DEV_REGION}
.venv/bin/python - <<'EOF'
import sys
sys.path.insert(0, "client/python")
from behest_sigv4 import SigV4Auth, for_user
from openai import DefaultHttpxClient, OpenAI
client = OpenAI(base_url="{service}/v1", api_key="unused", http_client=DefaultHttpxClient(auth=SigV4Auth()))
for user in ("ada", "bob"):
    print(client.responses.create(model="behest-default", input="hi", extra_headers=for_user(user)).output_text)
EOF
"""


def cookie_example(api: str, idp: str) -> str:
    """Shell lines that sign in, keep the session cookie(s) the provider's browser SDK would write, and mint with them."""
    return f"""\
COOKIE=$(curl -s -X POST {idp}/token -d '{{"user": "ada", "plan": "pro"}}' | python3 -c \\
         'import json, sys; print("; ".join(c["name"] + "=" + c["value"] for c in json.load(sys.stdin)["cookies"]))')
curl -s -X POST {api}/api/behest/token -H "Cookie: $COOKIE" -H 'Origin: {api}'; echo
"""


def python_example(idp: str, stream: str) -> str:
    """A Python session that signs in as a dev user and uses the streaming relay, pasteable into python3 as it is.

    Flush left, and a blank line after each loop, so that the interactive interpreter takes it
    pasted; it signs in itself (no shell variable), and each answer ends its own line.
    """
    return f"""\
import json
import urllib.request

from openai import OpenAI

# An identity token for the dev user "ada" (in production: your users' Cognito/Auth0/Clerk/Okta token).
login = urllib.request.Request("{idp}/token", data=json.dumps({{"user": "ada"}}).encode())
identity_token = json.load(urllib.request.urlopen(login))["id_token"]
client = OpenAI(base_url="{stream}/v1", api_key=identity_token)  # the streaming relay
print([model.id for model in client.models.list()])
print(len(client.embeddings.create(model="behest-embed", input="hello").data[0].embedding))
print(client.responses.create(model="behest-default", input="hi").output_text)
for event in client.responses.create(model="behest-default", input="hi", stream=True):
    if event.type == "response.output_text.delta":
        print(event.delta, end="", flush=True)

print()
for chunk in client.chat.completions.create(model="any", messages=[{{"role": "user", "content": "hi"}}], stream=True):
    print(chunk.choices[0].delta.content or "", end="", flush=True)

print()
"""

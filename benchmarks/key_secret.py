"""The key secret where a deployed function finds it: the Parameters and Secrets extension, or Secrets Manager.

`ExtensionStandIn` answers the extension's HTTP API (GET /secretsmanager/get?secretId=…, the
session token in X-Aws-Parameters-Secrets-Token) from memory, as the extension does once it has
the secret cached. `MotoSecretsManager` is moto's server on loopback, for the boto3 fallback.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Optional

from benchmarks.deployed import REGION, SESSION_TOKEN

SECRET_NAME = "behest/tenant-key"


def secret_document(pem: str) -> str:
    """The JSON secret the README describes: the key and the ids that go with it."""
    return json.dumps({"BEHEST_KEY": "behest_pk_" + pem, "BEHEST_KID": "sk_bench",
                       "BEHEST_TENANT_ID": "tenant-bench", "BEHEST_PROJECT_ID": "project-bench"})


class ExtensionStandIn:
    """The extension's loopback HTTP API, answering {"SecretString": …} for one secret."""

    def __init__(self, secret_string: str, secret_arn: str) -> None:
        self.calls = 0
        outer = self
        body = json.dumps({"ARN": secret_arn, "Name": SECRET_NAME, "SecretString": secret_string,
                           "VersionId": "v1", "VersionStages": ["AWSCURRENT"]}).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                url = urllib.parse.urlsplit(self.path)
                secret_id = urllib.parse.parse_qs(url.query).get("secretId", [""])[0]
                outer.calls += 1
                if self.headers.get("X-Aws-Parameters-Secrets-Token") != SESSION_TOKEN:
                    self._answer(401, b'{"__type": "AccessDeniedException"}')
                elif url.path != "/secretsmanager/get" or secret_id not in (secret_arn, SECRET_NAME):
                    self._answer(400, b'{"__type": "ResourceNotFoundException"}')
                else:
                    self._answer(200, body)

            def _answer(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> ExtensionStandIn:
        self._thread.start()
        return self

    def __exit__(self, kind: Optional[type[BaseException]], error: Optional[BaseException],
                 trace: Optional[TracebackType]) -> None:
        self._server.shutdown()
        self._server.server_close()


class MotoSecretsManager:
    """moto's Secrets Manager on loopback, holding one secret."""

    def __init__(self, secret_string: str) -> None:
        import logging

        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise

        self._server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
        self._secret_string = secret_string
        self.url = ""
        self.secret_arn = ""

    def __enter__(self) -> MotoSecretsManager:
        import boto3

        self._server.start()
        self.url = f"http://127.0.0.1:{self._server.get_host_and_port()[1]}"
        self._client = boto3.client("secretsmanager", endpoint_url=self.url, region_name=REGION,
                                    aws_access_key_id="bench", aws_secret_access_key="bench")
        self.secret_arn = self._client.create_secret(Name=SECRET_NAME, SecretString=self._secret_string)["ARN"]
        return self

    def __exit__(self, kind: Optional[type[BaseException]], error: Optional[BaseException],
                 trace: Optional[TracebackType]) -> None:
        # moto keeps its accounts' state per process, across servers: the next benchmark creates the secret anew.
        self._client.delete_secret(SecretId=self.secret_arn, ForceDeleteWithoutRecovery=True)
        self._server.stop()

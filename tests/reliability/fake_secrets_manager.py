"""Secrets Manager on loopback for fault tests: boto3 talks to it as to AWS, and it fails on demand.

It speaks the awsJson1_1 protocol of `GetSecretValue` and answers errors in AWS's JSON shape
(`{"__type": "ThrottlingException", "message": …}` with `x-amzn-ErrorType`), so botocore parses,
classifies and retries them exactly as it does AWS's own.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:behest/tenant-key-AbCdEf"


@dataclass(frozen=True)
class SecretsFault:
    """How the next GetSecretValue calls fail until cleared.

    error: answer `status` with AWS error `type`; slow: wait `seconds` before answering normally;
    raw: answer `status` with `body` as is (a 200 that is not what botocore expects).
    """

    kind: str
    type: str = ""
    status: int = 400
    seconds: float = 0.0
    body: bytes = b""


THROTTLED = SecretsFault("error", type="ThrottlingException", status=400)
ACCESS_DENIED = SecretsFault("error", type="AccessDeniedException", status=400)
KMS_DECRYPTION_FAILED = SecretsFault("error", type="DecryptionFailure", status=400)
INTERNAL_ERROR = SecretsFault("error", type="InternalServiceError", status=500)


class FakeSecretsManager:
    """One secret behind a loopback GetSecretValue endpoint; `fault` bends the answers, `calls` records them."""

    def __init__(self, secret_string: Optional[str] = None) -> None:
        self.secret_string = secret_string
        self.secret_binary: Optional[bytes] = None
        self.fault: Optional[SecretsFault] = None
        self.calls: list[float] = []
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, args=(0.05,), name="fake-secrets-manager", daemon=True).start()

    def close(self) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, request: Any) -> tuple[int, dict[str, str], bytes]:
        self.calls.append(time.monotonic())
        fault = self.fault
        if fault is not None and fault.kind == "slow":
            if self._closing.wait(fault.seconds):
                return 503, {}, b""
        elif fault is not None and fault.kind == "error":
            message = f"injected {fault.type}" if fault.type != "AccessDeniedException" else (
                "User: arn:aws:sts::123456789012:assumed-role/fn is not authorized to perform: "
                "secretsmanager:GetSecretValue")
            body = json.dumps({"__type": fault.type, "message": message}).encode()
            return fault.status, {"x-amzn-ErrorType": fault.type}, body
        elif fault is not None and fault.kind == "raw":
            return fault.status, {}, fault.body
        secret_id = request.get("SecretId") if isinstance(request, dict) else None
        if not isinstance(secret_id, str) or (self.secret_string is None and self.secret_binary is None):
            body = json.dumps({"__type": "ResourceNotFoundException", "message": "not found"}).encode()
            return 400, {"x-amzn-ErrorType": "ResourceNotFoundException"}, body
        document: dict[str, Any] = {"ARN": ARN, "Name": "behest/tenant-key", "VersionId": str(uuid.uuid4()),
                                    "VersionStages": ["AWSCURRENT"], "CreatedDate": 1.7e9}
        if self.secret_string is not None:
            document["SecretString"] = self.secret_string
        else:
            document["SecretBinary"] = base64.b64encode(self.secret_binary or b"").decode()
        return 200, {}, json.dumps(document).encode()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    request = json.loads(raw or b"{}")
                except ValueError:
                    request = None
                if self.headers.get("X-Amz-Target") != "secretsmanager.GetSecretValue":
                    status, headers, body = 400, {}, b'{"__type":"UnknownOperationException"}'
                else:
                    status, headers, body = fake._answer(request)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/x-amz-json-1.1")
                    self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up (its read timeout) before the answer

            def log_message(self, *args: Any) -> None:
                pass

        return Handler

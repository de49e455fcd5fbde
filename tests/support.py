"""Test support: sample events from events/, committed test keys, captured telemetry."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from behest_lambda.telemetry import Telemetry

ROOT = Path(__file__).resolve().parent.parent
EVENTS = ROOT / "events"
KEYS = ROOT / "tests" / "keys"

ISSUER = "https://api.behest.ai"
AUDIENCE = "behest"
TENANT_ID = "tenant-test"
PROJECT_ID = "project-test"
KID = "sk_test_primary"
ROTATED_KID = "sk_test_rotated"


def load_event(name: str) -> dict[str, Any]:
    """A fresh copy of events/<name>.json."""
    return copy.deepcopy(json.loads((EVENTS / f"{name}.json").read_text()))


def key_pem(name: str) -> str:
    """tests/keys/<name>_private.pem as text."""
    return (KEYS / f"{name}_private.pem").read_text()


def public_key(name: str) -> Any:
    """tests/keys/<name>_public.pem, loaded."""
    return load_pem_public_key((KEYS / f"{name}_public.pem").read_bytes())


def private_key(name: str) -> Any:
    return load_pem_private_key((KEYS / f"{name}_private.pem").read_bytes(), password=None)


def sign_env(**overrides: str) -> dict[str, str]:
    """An environment for local-sign mode with the committed tenant key."""
    env = {
        "BEHEST_KEY": "behest_pk_" + key_pem("tenant"),
        "BEHEST_KID": KID,
        "BEHEST_TENANT_ID": TENANT_ID,
        "BEHEST_PROJECT_ID": PROJECT_ID,
    }
    env.update(overrides)
    return {k: v for k, v in env.items() if v is not None}


class CapturedTelemetry(Telemetry):
    """Telemetry whose JSON lines land in memory, for assertions on logs and metrics."""

    def __init__(self, service: str = "test") -> None:
        self.buffer = io.StringIO()
        super().__init__(service, level="DEBUG", stream=self.buffer, environ={})

    @property
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.buffer.getvalue().splitlines()]

    def logs(self) -> list[dict[str, Any]]:
        return [r for r in self.records if "_aws" not in r]

    def metrics(self) -> list[str]:
        """The names of the metrics written so far, one entry per record they appear in."""
        return [m["Name"] for r in self.records if "_aws" in r for m in r["_aws"]["CloudWatchMetrics"][0]["Metrics"]]

    def text(self) -> str:
        return self.buffer.getvalue()


class FakeContext:
    aws_request_id = "req-test-0001"
    function_name = "test-function"


def standin_figures(path: str, body: dict[str, Any], uid: str) -> tuple[int, int]:
    """The input and output tokens the stand-in Behest answers for a request, as a usage record counts them."""
    from devstack.standin import usage_for

    usage = usage_for(path, body, uid)
    return usage.get("prompt_tokens", usage.get("input_tokens")), usage.get("completion_tokens", usage.get("output_tokens"))

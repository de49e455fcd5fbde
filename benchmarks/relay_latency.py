"""Latency the relay adds: the warm relay handler against calling the stand-in Behest directly.

Both sides use stdlib urllib against the same stand-in on loopback, interleaved request by
request; the difference is the relay's own work (parse, validate, mint, forward, shape).
"""

from __future__ import annotations

import json
import os
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from behest_lambda.app import Service
from behest_lambda.key_source import key_source_for
from behest_lambda.mint import Minter
from behest_lambda.routes import RELAY_FUNCTION
from behest_lambda.settings import Settings
from behest_lambda.telemetry import Telemetry
from devstack.standin import StandinGateway

ROOT = Path(__file__).resolve().parent.parent
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(requests: int = 400) -> dict[str, dict[str, float]]:
    pem = (ROOT / "tests" / "keys" / "tenant_private.pem").read_text()
    with StandinGateway() as standin, open(os.devnull, "w") as sink:
        standin.register_key("sk_bench", load_pem_public_key((ROOT / "tests" / "keys" / "tenant_public.pem").read_bytes()))
        env = {"BEHEST_KEY": "behest_pk_" + pem, "BEHEST_KID": "sk_bench", "BEHEST_TENANT_ID": "t",
               "BEHEST_PROJECT_ID": "p", "BEHEST_BASE_URL": standin.url}
        telemetry = Telemetry("bench", stream=sink)
        function = Service.from_env(RELAY_FUNCTION, telemetry, env)
        standin.register_api_key("behest_sk_live_bench", "t", "p")
        api_key_function = Service.from_env(
            RELAY_FUNCTION, Telemetry("bench", stream=sink),
            {"BEHEST_KEY": "behest_sk_live_bench", "BEHEST_BASE_URL": standin.url},
        )
        event = json.loads((ROOT / "events" / "chat_completion.json").read_text())
        token = _minter(env, telemetry).mint(_identity()).token

        def direct(stream: bool) -> Callable[[], Any]:
            body = json.dumps({**BODY, "stream": stream}).encode()
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", "X-Session-Id": "bench"}

            def call() -> Any:
                request = urllib.request.Request(standin.url + "/v1/chat/completions", data=body, headers=headers)
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.read()

            return call

        def relayed(stream: bool, through: Service = function) -> Callable[[], Any]:
            streamed = {**event, "body": json.dumps({**BODY, "stream": stream})}

            def call() -> Any:
                answer = through.handle(streamed)
                assert answer["statusCode"] == 200, answer
                return answer

            return call

        variants = {
            ("direct", False): direct(False), ("relay", False): relayed(False),
            ("direct", True): direct(True), ("relay", True): relayed(True),
            ("direct", None): direct(False), ("relay", None): relayed(False, api_key_function),
        }
        samples: dict[tuple[str, Any], list[float]] = {name: [] for name in variants}
        for round_number in range(requests + 20):
            for name, call in variants.items():
                started = time.perf_counter()
                call()
                if round_number >= 20:  # warm-up
                    samples[name].append((time.perf_counter() - started) * 1000)
            standin.clear_records()
    figures: dict[str, dict[str, float]] = {}
    for mode, stream in (("non-streaming", False), ("streaming", True), ("API-key mode", None)):
        direct_ms, relay_ms = samples[("direct", stream)], samples[("relay", stream)]
        figures[mode] = {
            "direct_p50": statistics.median(direct_ms), "relay_p50": statistics.median(relay_ms),
            "direct_p99": percentile(direct_ms, 0.99), "relay_p99": percentile(relay_ms, 0.99),
        }
    return figures


def _minter(env: dict[str, str], telemetry: Telemetry) -> Minter:
    """A minter on the relay's own settings and key, for the direct calls' token."""
    settings = Settings.from_env(env)
    return Minter(settings.mint, key_source_for(settings.key, telemetry))


def _identity() -> Any:
    from behest_lambda.identity import Identity

    return Identity(user_id="bench-user")


def report(figures: dict[str, dict[str, float]]) -> list[str]:
    lines = ["Relay latency: warm relay handler vs calling the stand-in directly (ms)"]
    for mode, f in figures.items():
        lines.append(
            f"  {mode:<14} direct p50 {f['direct_p50']:6.2f}  relay p50 {f['relay_p50']:6.2f}  "
            f"added p50 {f['relay_p50'] - f['direct_p50']:5.2f}   |  direct p99 {f['direct_p99']:6.2f}  "
            f"relay p99 {f['relay_p99']:6.2f}  added p99 {f['relay_p99'] - f['direct_p99']:5.2f}"
        )
    lines.append("  target: <= 2 ms added at p50. API-key mode reuses a user's fresh token, so its mint round trip")
    lines.append("  (50-200 ms against hosted Behest) is paid once per user and session, not per request.")
    return lines


if __name__ == "__main__":
    print("\n".join(report(run())))

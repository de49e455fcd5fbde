"""Latency the relay adds: the warm relay handler against calling the stand-in Behest directly.

Both sides use stdlib urllib against the same stand-in on loopback with the same payload, in
pairs measured back to back (order alternating). The added latency is taken per pair, relay minus
direct, and its percentiles are over those differences: the difference of two independent
percentiles mixes unrelated noise and can even come out negative.
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
WARMUP = 20


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run(requests: int = 1000) -> dict[str, dict[str, float]]:
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

        pairs = {
            "non-streaming": (direct(False), relayed(False)),
            "streaming": (direct(True), relayed(True)),
            "API-key mode": (direct(False), relayed(False, api_key_function)),
        }
        samples: dict[str, dict[str, list[float]]] = {
            mode: {"direct": [], "relay": [], "added": []} for mode in pairs}
        for round_number in range(requests + WARMUP):
            for mode, (direct_call, relay_call) in pairs.items():
                # Back to back, the order alternating, so that drift and the first call's share cancel.
                first, second = (direct_call, relay_call) if round_number % 2 else (relay_call, direct_call)
                first_ms, second_ms = timed(first), timed(second)
                direct_ms, relay_ms = (first_ms, second_ms) if round_number % 2 else (second_ms, first_ms)
                if round_number >= WARMUP:
                    samples[mode]["direct"].append(direct_ms)
                    samples[mode]["relay"].append(relay_ms)
                    samples[mode]["added"].append(relay_ms - direct_ms)
            standin.clear_records()
    return {mode: {f"{side}_{name}": value for side, values in sides.items()
                   for name, value in (("p50", statistics.median(values)), ("p99", percentile(values, 0.99)))}
            for mode, sides in samples.items()}


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return (time.perf_counter() - started) * 1000


def _minter(env: dict[str, str], telemetry: Telemetry) -> Minter:
    """A minter on the relay's own settings and key, for the direct calls' token."""
    settings = Settings.from_env(env)
    return Minter(settings.mint, key_source_for(settings.key, telemetry))


def _identity() -> Any:
    from behest_lambda.identity import Identity

    return Identity(user_id="bench-user")


def report(figures: dict[str, dict[str, float]]) -> list[str]:
    lines = ["Relay latency: warm relay handler vs calling the stand-in directly, same payload, back to back (ms)",
             "  added = relay minus direct within each pair; its percentiles are over those per-pair differences"]
    for mode, f in figures.items():
        lines.append(
            f"  {mode:<14} added p50 {f['added_p50']:5.2f}  p99 {f['added_p99']:5.2f}   |  "
            f"direct p50 {f['direct_p50']:5.2f} p99 {f['direct_p99']:5.2f}   relay p50 {f['relay_p50']:5.2f} "
            f"p99 {f['relay_p99']:5.2f}"
        )
    lines.append("  target: <= 2 ms added at p50. API-key mode reuses a user's fresh token, so its mint round trip")
    lines.append("  (50-200 ms against hosted Behest) is paid once per user and session, not per request.")
    return lines


def rows(figures: dict[str, dict[str, float]]) -> list[tuple[str, str, str, str]]:
    """README table rows: (configuration, figure, ratio, target)."""
    return [(f"latency the relay adds, warm, p50 / p99 — {mode}{' (buffered by the HTTP API)' * (mode == 'streaming')}",
             f"{f['added_p50']:.2f} / {f['added_p99']:.2f} ms",
             f"direct p50 {f['direct_p50']:.2f} ms", "p50 ≤ 2 ms")
            for mode, f in figures.items()]


if __name__ == "__main__":
    print("\n".join(report(run())))

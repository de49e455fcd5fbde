"""Streaming: time to first byte through the streaming path with Behest pacing its tokens, and the cold
start of the streaming process against the buffered relay handler.

(a) Time to first byte (the first SSE event) and to the whole answer, stand-in pacing its chunks:
    calling the stand-in directly, the streaming function behind the local Function URL
    (devstack/stream_url.py), the real Runtime API loop in a warm process (via the emulator), and the
    buffered relay handler (whose first byte is its last). Interleaved request by request; medians.
(b) Cold start, fresh process until one chat completion is answered: the streaming runtime
    (`python -m behest_lambda.stream_runtime`, and through `functions/stream-bootstrap`, measured
    at the emulator: JWKS fetch and token check included), the server-to-server function (the same
    loop and wrapper with its Handler: Lambda's iam context and the user headers checked, no JWKS)
    against the buffered relay handler (spawn, import, handle one event) and a bare interpreter.
    Interleaved; medians.
"""

from __future__ import annotations

import http.client
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives.serialization import load_pem_public_key

from behest_lambda.app import Service
from behest_lambda.key_source import key_source_for
from behest_lambda.mint import Minter
from behest_lambda.routes import RELAY_FUNCTION
from behest_lambda.settings import Settings
from behest_lambda.stream_handler import StreamFunction
from behest_lambda.telemetry import Telemetry
from benchmarks.deployed import PRINT_SERVED, build_tree, until_served
from devstack.identity import LocalIdentityProvider
from devstack.standin import StandinGateway
from devstack.stream_url import StreamFunctionUrl
from tests.runtime_emulator import RuntimeEmulator

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
KID = "sk_bench"
PACING = 0.05  # seconds between the stand-in's chunks: 7 chunks, about 0.3 s per answer
MESSAGES = [{"role": "user", "content": "hi"}]
SERVICE_HANDLER = "behest_lambda.stream_handler.service_handler"
SERVICE_COLD = "server-to-server (stream-bootstrap)"

SERVE_ONE_BUFFERED = """
import json, sys
from behest_lambda.relay_handler import handler
class Context:
    aws_request_id = "bench"
event = json.load(open({event!r}))
response = handler(event, Context())
assert response["statusCode"] == 200, response
sys.stdout.write("served\\n")
sys.stdout.flush()
"""


def _env(standin: StandinGateway, provider: LocalIdentityProvider, **extra: str) -> dict[str, str]:
    pem = (ROOT / "tests" / "keys" / "tenant_private.pem").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEHEST_", "PYTHON", "AWS_"))}
    env.update(BEHEST_KEY="behest_pk_" + pem, BEHEST_KID=KID, BEHEST_TENANT_ID="tenant-bench",
               BEHEST_PROJECT_ID="project-bench", BEHEST_BASE_URL=standin.url, BEHEST_CALLER_ISSUER=provider.issuer,
               BEHEST_CALLER_AUDIENCE=provider.audience, **extra)
    return env


def _function_url_event(provider: LocalIdentityProvider, stream: bool) -> dict[str, Any]:
    event = json.loads((ROOT / "events" / "stream_chat_completion.json").read_text())
    event["headers"]["authorization"] = "Bearer " + provider.issue("bench-user")
    event["body"] = json.dumps({"model": "m", "stream": stream, "messages": MESSAGES})
    return event


def _post_timed(url: str, path: str, body: bytes, headers: dict[str, str]) -> tuple[float, float]:
    """(first body byte, whole answer) in ms for one POST, read with http.client as it arrives."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    started = time.perf_counter()
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json", **headers})
    response = connection.getresponse()
    first = response.read1(65536)
    first_at = time.perf_counter()
    assert response.status == 200 and first, response.status
    while response.read1(65536):
        pass
    done_at = time.perf_counter()
    connection.close()
    return (first_at - started) * 1000, (done_at - started) * 1000


def time_to_first_byte(rounds: int = 12, warmup: int = 2) -> dict[str, dict[str, float]]:
    """Median ms to the first SSE event and to the whole answer, per path."""
    with StandinGateway(chunk_delay=PACING) as standin, LocalIdentityProvider() as provider, \
            open(os.devnull, "w") as sink, RuntimeEmulator() as emulator:
        standin.register_key(KID, load_pem_public_key((ROOT / "tests" / "keys" / "tenant_public.pem").read_bytes()))
        env = _env(standin, provider)
        telemetry = Telemetry("bench", stream=sink)
        streaming = StreamFunction.from_env(telemetry, env)
        buffered = Service.from_env(RELAY_FUNCTION, Telemetry("bench", stream=sink), env)
        function_url = StreamFunctionUrl(streaming).start()
        runtime = subprocess.Popen([sys.executable, "-m", "behest_lambda.stream_runtime"], cwd=ROOT,
                                   env={**env, "AWS_LAMBDA_RUNTIME_API": emulator.address, "PYTHONPATH": str(FUNCTIONS)},
                                   stdout=subprocess.DEVNULL)
        settings = Settings.from_env(env)
        behest_token = Minter(settings.mint, key_source_for(settings.key, telemetry)).mint(_bench_identity()).token
        stream_body = json.dumps({"model": "m", "stream": True, "messages": MESSAGES}).encode()
        buffered_event = json.loads((ROOT / "events" / "chat_completion_stream.json").read_text())
        buffered_event["body"] = stream_body.decode()

        def direct() -> tuple[float, float]:
            return _post_timed(standin.url, "/v1/chat/completions", stream_body,
                               {"Authorization": f"Bearer {behest_token}", "X-Session-Id": "bench"})

        def through_function_url() -> tuple[float, float]:
            return _post_timed(function_url.url, "/v1/chat/completions", stream_body,
                               {"Authorization": "Bearer " + provider.issue("bench-user")})

        def through_runtime_api() -> tuple[float, float]:
            started = time.monotonic()
            response = emulator.response(emulator.queue(_function_url_event(provider, True)), timeout=30)
            assert response.prelude()["statusCode"] == 200
            return (response.chunks[1].at - started) * 1000, (response.chunks[-1].at - started) * 1000

        def buffered_relay() -> tuple[float, float]:
            started = time.perf_counter()
            answer = buffered.handle(buffered_event)
            assert answer["statusCode"] == 200, answer
            elapsed = (time.perf_counter() - started) * 1000
            return elapsed, elapsed

        variants: dict[str, Callable[[], tuple[float, float]]] = {
            "stand-in directly": direct,
            "streaming, local Function URL": through_function_url,
            "streaming, Runtime API loop": through_runtime_api,
            "buffered relay handler": buffered_relay,
        }
        samples: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
        try:
            for round_number in range(warmup + rounds):
                for name, call in variants.items():
                    figures = call()
                    if round_number >= warmup:
                        samples[name].append(figures)
                standin.clear_records()
        finally:
            runtime.terminate()
            runtime.wait(10)
            function_url.stop()
    return {name: {"first_byte": statistics.median(f for f, _ in values), "whole": statistics.median(w for _, w in values)}
            for name, values in samples.items()}


def _service_event() -> dict[str, Any]:
    """events/service_chat_completion.json, as Lambda hands it over once the signature has passed, not streamed."""
    event = json.loads((ROOT / "events" / "service_chat_completion.json").read_text())
    event["body"] = json.dumps({"model": "m", "stream": False, "messages": MESSAGES})
    return event


def _bench_identity() -> Any:
    from behest_lambda.identity import Identity

    return Identity(user_id="bench-user")


def cold_start(rounds: int = 12, warmup: int = 2) -> dict[str, float]:
    """Median ms from spawn until one (non-streamed) chat completion is answered, per way of running.

    Each process runs the functions as `sam build` ships them (functions/build.py: compiled) with
    PYTHONDONTWRITEBYTECODE, as on Lambda's read-only /var/task.
    """
    event_path = str(ROOT / "events" / "chat_completion.json")
    with StandinGateway() as standin, LocalIdentityProvider() as provider, RuntimeEmulator() as emulator, \
            build_tree() as tree:
        standin.register_key(KID, load_pem_public_key((ROOT / "tests" / "keys" / "tenant_public.pem").read_bytes()))
        env = _env(standin, provider, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1",
                   POWERTOOLS_METRICS_NAMESPACE="BehestLambda")
        runtime_env = {**env, "AWS_LAMBDA_RUNTIME_API": emulator.address, "LAMBDA_TASK_ROOT": str(tree),
                       "POWERTOOLS_SERVICE_NAME": "behest-stream"}
        buffered_env = {**env, "POWERTOOLS_SERVICE_NAME": "behest-relay"}
        # ServiceFunction as template.yaml sets it up: its Handler picks the function, no caller issuer.
        service_env = {**{k: v for k, v in runtime_env.items() if not k.startswith("BEHEST_CALLER_")},
                       "POWERTOOLS_SERVICE_NAME": "behest-service", "_HANDLER": SERVICE_HANDLER,
                       "BEHEST_TRUSTED_ROLE_ARNS": "arn:aws:iam::123456789012:role/digest-worker"}

        def runtime(argv: list[str], function_env: dict[str, str] = runtime_env,
                    event: Callable[[], dict[str, Any]] = lambda: _function_url_event(provider, False)
                    ) -> Callable[[], float]:
            def run() -> float:
                request_id = emulator.queue(event())
                started = time.perf_counter()
                process = subprocess.Popen(argv, env=function_env, stdout=subprocess.DEVNULL, cwd=tree)
                try:
                    response = emulator.response(request_id, timeout=30)
                    elapsed = (time.perf_counter() - started) * 1000
                    assert response.prelude()["statusCode"] == 200, response.payload()
                finally:
                    process.terminate()
                    process.wait(10)
                return elapsed

            return run

        variants: dict[str, Callable[[], float]] = {
            "bare interpreter": lambda: until_served([sys.executable, "-c", PRINT_SERVED], env, tree),
            "buffered relay handler": lambda: until_served(
                [sys.executable, "-c", SERVE_ONE_BUFFERED.format(event=event_path)], buffered_env, tree),
            "streaming runtime (python -m)": runtime([sys.executable, "-m", "behest_lambda.stream_runtime"]),
            "streaming runtime (stream-bootstrap)": runtime(
                [str(tree / "stream-bootstrap"), sys.executable, "-m", "awslambdaric", "handler"]),
            SERVICE_COLD: runtime([str(tree / "stream-bootstrap"), sys.executable, "-m", "awslambdaric", "handler"],
                                  service_env, _service_event),
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        for round_number in range(warmup + rounds):
            for name, call in variants.items():
                value = call()
                if round_number >= warmup:
                    samples[name].append(value)
            standin.clear_records()
    return {name: statistics.median(values) for name, values in samples.items()}


def run() -> dict[str, Any]:
    return {"ttfb": time_to_first_byte(), "cold_start": cold_start()}


def report(figures: dict[str, Any]) -> list[str]:
    ttfb: dict[str, dict[str, float]] = figures["ttfb"]
    direct = ttfb["stand-in directly"]["first_byte"]
    streamed = ttfb["streaming, Runtime API loop"]["first_byte"]
    lines = [f"Streaming: time to first SSE event and to the whole answer, stand-in pacing {PACING * 1000:.0f} ms "
             "between its 7 chunks (median ms)"]
    for name, f in ttfb.items():
        lines.append(f"  {name:<34} first byte {f['first_byte']:7.1f}   whole answer {f['whole']:7.1f}"
                     f"   first byte / direct {f['first_byte'] / direct:6.2f}x")
    buffered = ttfb["buffered relay handler"]["first_byte"]
    lines.append(f"  first byte, buffered / streaming (Runtime API loop): {buffered / streamed:5.1f}x"
                 "  (the buffered route's first byte is its last)")
    cold: dict[str, float] = figures["cold_start"]
    bare = cold["bare interpreter"]
    buffered_cold = cold["buffered relay handler"]
    lines.append("Cold start: fresh process until one chat completion is answered (median ms)")
    for name, value in cold.items():
        above = (value - bare) / (buffered_cold - bare)
        ratio = f"   vs buffered: whole {value / buffered_cold:5.2f}x, above bare {above:5.2f}x"
        if name == "bare interpreter":
            ratio = ""
        lines.append(f"  {name:<38} {value:7.1f}   (+{value - bare:6.1f} over bare){ratio}")
    lines.append("  the streaming runtime also fetches the issuer's JWKS and verifies the caller's token itself")
    lines.append("  (on Lambda, API Gateway's authorizer does that for the buffered route, outside the function);")
    lines.append("  the server-to-server function's SigV4 check is Lambda's, outside the function, as the authorizer's.")
    stream_cold = cold["streaming runtime (stream-bootstrap)"]
    lines.append(f"  server-to-server / streaming (both through stream-bootstrap): whole "
                 f"{cold[SERVICE_COLD] / stream_cold:5.2f}x, above bare "
                 f"{(cold[SERVICE_COLD] - bare) / (stream_cold - bare):5.2f}x")
    return lines


def rows(figures: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """README table rows: (configuration, figure, ratio, target)."""
    ttfb: dict[str, dict[str, float]] = figures["ttfb"]
    cold: dict[str, float] = figures["cold_start"]
    streamed = ttfb["streaming, Runtime API loop"]["first_byte"]
    buffered = ttfb["buffered relay handler"]["first_byte"]
    stream_cold = cold["streaming runtime (stream-bootstrap)"]
    buffered_cold = cold["buffered relay handler"]
    return [
        (f"time to first SSE event, streaming route (Runtime API loop) vs buffered route, stand-in pacing "
         f"{PACING * 1000:.0f} ms × 7", f"{streamed:.1f} ms vs {buffered:.0f} ms", f"{buffered / streamed:.1f}× sooner",
         "—"),
        ("cold start until one completion is answered: streaming function (stream-bootstrap, JWKS fetch and caller "
         "token check included) vs buffered relay handler", f"{stream_cold:.0f} ms vs {buffered_cold:.0f} ms",
         f"{stream_cold / buffered_cold:.2f}×", "—"),
        ("cold start until one completion is answered: server-to-server function (stream-bootstrap, Lambda's iam "
         "context and the user headers checked) vs streaming function", f"{cold[SERVICE_COLD]:.0f} ms vs "
         f"{stream_cold:.0f} ms", f"{cold[SERVICE_COLD] / stream_cold:.2f}×", "—"),
    ]


if __name__ == "__main__":
    print("\n".join(report(run())))

"""Warm path: one mint through the token handler in a warm container, against a raw RS256 sign."""

from __future__ import annotations

import json
import os
import statistics
import time
from pathlib import Path
from typing import Any, Callable

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from behest_lambda.app import Service
from behest_lambda.routes import TOKEN_FUNCTION
from behest_lambda.telemetry import Telemetry

ROOT = Path(__file__).resolve().parent.parent


def per_call_us(action: Callable[[], Any], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        action()
    return (time.perf_counter() - started) / calls * 1e6


def run(blocks: int = 15, calls: int = 200) -> dict[str, float]:
    """Median microseconds per call of each, measured in interleaved blocks."""
    pem = (ROOT / "tests" / "keys" / "tenant_private.pem").read_text()
    env = {"BEHEST_KEY": "behest_pk_" + pem, "BEHEST_KID": "sk_bench", "BEHEST_TENANT_ID": "t", "BEHEST_PROJECT_ID": "p"}
    with open(os.devnull, "w") as sink:
        function = Service.from_env(TOKEN_FUNCTION, Telemetry("bench", stream=sink), env)
        event = json.loads((ROOT / "events" / "token_mint.json").read_text())
        key = load_pem_private_key(pem.encode(), password=None)
        # A message the size of a real token's signing input.
        message = json.loads(function.handle(event)["body"])["token"].rsplit(".", 1)[0].encode()

        def mint() -> None:
            function.handle(event)

        def raw_sign() -> None:
            key.sign(message, padding.PKCS1v15(), hashes.SHA256())

        samples: dict[str, list[float]] = {"token handler mint": [], "raw RS256 sign": []}
        for _ in range(blocks):
            samples["token handler mint"].append(per_call_us(mint, calls))
            samples["raw RS256 sign"].append(per_call_us(raw_sign, calls))
    return {name: statistics.median(values) for name, values in samples.items()}


def report(medians: dict[str, float]) -> list[str]:
    mint, sign = medians["token handler mint"], medians["raw RS256 sign"]
    return [
        "Warm mint: one invocation in a warm container (median us per call)",
        f"  token handler mint (event in, response out) {mint:8.1f} us",
        f"  raw RS256 sign (cryptography)               {sign:8.1f} us",
        f"  ratio mint/sign                             {mint / sign:8.3f}x   (target <= 1.5x)",
    ]


def rows(medians: dict[str, float]) -> list[tuple[str, str, str, str]]:
    """README table rows: (configuration, figure, ratio, target)."""
    mint, sign = medians["token handler mint"], medians["raw RS256 sign"]
    return [("warm mint (event in, response out) vs a raw RS256 sign (cryptography)",
             f"{mint:.0f} µs vs {sign:.0f} µs", f"{mint / sign:.2f}×", "≤ 1.5×")]


if __name__ == "__main__":
    print("\n".join(report(run())))

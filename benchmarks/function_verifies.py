"""Cold mint where the function verifies the caller, beside the authorizer path.

Where API Gateway's JWT authorizer cannot verify a provider's tokens (ES256, no `aud`, cookies),
the template attaches none and the token function verifies them itself: on a cold start it reads
the issuer's OIDC discovery document, then the JWKS it names, then checks the signature. Here a
loopback imitation of the provider (`devstack.identity`, Supabase's shape: ES256, keys under
`/auth/v1`) answers each of those fetches after an added 50 ms, a provider across the internet
rather than beside the function. Each variant is a fresh process that imports the token handler
and serves one mint, as `cold_start` measures the authorizer path (the key secret through the
extension, the template's default), interleaved, medians; ratios are against that authorizer path
measured in the same run.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.cold_start import EVENT, SERVE_ONE, key_envs
from benchmarks.deployed import build_tree, lambda_env, template_env, tenant_pem, until_served
from benchmarks.key_secret import ExtensionStandIn, MotoSecretsManager, secret_document
from devstack.identity import LocalIdentityProvider

ROUND_TRIP = 0.050  # seconds added to every answer of the provider
AUTHORIZER = "authorizer path (claims from API Gateway)"
# (label, provider shape, added round trip) of each variant where the function verifies.
VERIFYING = {
    "function verifies, supabase ES256, +50 ms per fetch": ("supabase", ROUND_TRIP),
    "function verifies, okta RS256, +50 ms per fetch": ("okta", ROUND_TRIP),
    "function verifies, supabase ES256, loopback (no added delay)": ("supabase", 0.0),
}
ORIGIN = "https://app.example.com"


def _verifying_event(token: str, scratch: Path, name: str) -> Path:
    """The sample mint event as the HTTP API hands it over without an authorizer: the token in the header."""
    event: dict[str, Any] = json.loads(EVENT.read_text())
    event["requestContext"].pop("authorizer", None)
    event["headers"]["authorization"] = "Bearer " + token
    path = scratch / f"{name}.json"
    path.write_text(json.dumps(event))
    return path


def run(rounds: int = 10, warmup: int = 2) -> dict[str, float]:
    """Median ms from spawn until one mint is served, for the authorizer path and each verifying variant."""
    secret = secret_document(tenant_pem())
    with ExitStack() as stack:
        tree = stack.enter_context(build_tree())
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="behest-verify-")))
        moto = stack.enter_context(MotoSecretsManager(secret))
        extension = stack.enter_context(ExtensionStandIn(secret, moto.secret_arn))
        key_path = key_envs(extension, moto)["extension"]
        base = {**template_env("behest-token"), **key_path}
        commands: dict[str, tuple[list[str], dict[str, str]]] = {
            AUTHORIZER: ([sys.executable, "-c", SERVE_ONE.format(prelude="", module="behest_lambda.token_handler",
                                                                 event=str(EVENT))],
                         lambda_env(tree, "behest-token", **base)),
        }
        for index, (label, (shape, delay)) in enumerate(VERIFYING.items()):
            idp = stack.enter_context(LocalIdentityProvider(shape=shape, latency=delay))
            event = _verifying_event(idp.issue("ada", ttl=86400), scratch, f"event-{index}")
            variables = {**base, "BEHEST_IDENTITY_PROVIDER": shape, "BEHEST_VERIFY_CALLERS": "true",
                         "BEHEST_CALLER_ISSUER": idp.issuer, "BEHEST_CALLER_AUDIENCE": idp.audience or "",
                         "BEHEST_ALLOWED_ORIGINS": ORIGIN}
            script = SERVE_ONE.format(prelude="", module="behest_lambda.token_handler", event=str(event))
            commands[label] = ([sys.executable, "-c", script], lambda_env(tree, "behest-token", **variables))
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for round_number in range(warmup + rounds):
            for name, (argv, env) in commands.items():
                elapsed = until_served(argv, env, tree)
                if round_number >= warmup:
                    samples[name].append(elapsed)
    return {name: statistics.median(values) for name, values in samples.items()}


def report(medians: dict[str, float]) -> list[str]:
    authorizer = medians[AUTHORIZER]
    lines = ["Cold mint where the function verifies the caller (discovery + JWKS from a loopback provider),",
             "beside the authorizer path; fresh process each, key secret via extension, median ms, "
             f"{ROUND_TRIP * 1000:.0f} ms added per provider answer"]
    for name, value in medians.items():
        lines.append(f"  {name:<62} {value:8.1f} ms   {value / authorizer:6.2f}x   (+{value - authorizer:6.1f} ms)")
    return lines


def rows(medians: dict[str, float]) -> list[tuple[str, str, str, str]]:
    """Figures-table rows: (configuration, figure, ratio, target)."""
    authorizer = medians[AUTHORIZER]
    return [(f"cold mint — {name}", f"{value:.0f} ms (authorizer path {authorizer:.0f} ms)",
             f"{value / authorizer:.2f}× the authorizer path", "report")
            for name, value in medians.items() if name != AUTHORIZER]


if __name__ == "__main__":
    print("\n".join(report(run())))

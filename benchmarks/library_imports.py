"""What PyJWT and Powertools each add to a cold start: their import in a fresh process, over a baseline.

The baseline already imported what the functions need anyway (cryptography's RSA, json,
http.client), so each figure is the library's own cost: PyJWT as the functions import it
(cryptography.x509 deferred, see behest_lambda/libraries.py) and a plain `import jwt` beside it.
For the Secrets Manager fallback: what botocore's session costs (the fallback's import; the
runtime's SDK, here the dev virtualenv's), and what `import boto3` would add on top of it.
Interleaved; medians.
"""

from __future__ import annotations

import statistics
import sys

from benchmarks.deployed import build_tree, lambda_env, timed_run

BASELINE = ("import json, http.client\n"
            "from cryptography.hazmat.primitives import hashes, serialization\n"
            "from cryptography.hazmat.primitives.asymmetric import padding, rsa\n")
PYJWT = "PyJWT as the functions import it (from behest_lambda.libraries import jwt)"
PLAIN_PYJWT = "PyJWT, a plain import jwt (cryptography.x509 run too)"
POWERTOOLS = "Powertools (from aws_lambda_powertools import Logger, Metrics)"
BOTOCORE = "botocore's session (what the Secrets Manager fallback imports)"
BOTOCORE_AND_BOTO3 = "botocore's session, then import boto3"
LIBRARIES = {
    PYJWT: "from behest_lambda.libraries import jwt",
    PLAIN_PYJWT: "import jwt",
    POWERTOOLS: "from aws_lambda_powertools import Logger, Metrics",
    "both, as the functions import them": "from behest_lambda.libraries import jwt\n"
                                          "from aws_lambda_powertools import Logger, Metrics",
    BOTOCORE: "import botocore.session",
    BOTOCORE_AND_BOTO3: "import botocore.session\nimport boto3",
}


def run(rounds: int = 20, warmup: int = 2) -> dict[str, float]:
    """Median ms from spawn to exit: the baseline, and the baseline plus each library."""
    with build_tree() as tree:
        env = lambda_env(tree, "imports")
        scripts = {"baseline": BASELINE, **{name: BASELINE + line for name, line in LIBRARIES.items()}}
        samples: dict[str, list[float]] = {name: [] for name in scripts}
        for round_number in range(warmup + rounds):
            for name, script in scripts.items():
                elapsed = timed_run([sys.executable, "-c", script], env, tree)
                if round_number >= warmup:
                    samples[name].append(elapsed)
    return {name: statistics.median(values) for name, values in samples.items()}


def added(figures: dict[str, float]) -> dict[str, float]:
    return {name: figures[name] - figures["baseline"] for name in LIBRARIES}


def report(figures: dict[str, float], cold_mint_ms: float) -> list[str]:
    lines = ["Library imports: fresh process, over a baseline that imported cryptography's RSA, json, http.client "
             "(median ms)",
             f"  {'baseline':<78} {figures['baseline']:7.1f} ms"]
    for name, ms in added(figures).items():
        lines.append(f"  + {name:<76} {ms:+7.1f} ms   {ms / cold_mint_ms:6.1%} of the cold mint "
                     f"({cold_mint_ms:.0f} ms, key secret via extension)")
    lines.append(f"  import boto3 on top of botocore's session (the fallback skips it)             "
                 f"{boto3_over_botocore(figures):+7.1f} ms")
    return lines


def boto3_over_botocore(figures: dict[str, float]) -> float:
    return figures[BOTOCORE_AND_BOTO3] - figures[BOTOCORE]


def rows(figures: dict[str, float], cold_mint_ms: float) -> list[tuple[str, str, str, str]]:
    """README table rows: (configuration, figure, ratio, target)."""
    extra = added(figures)
    table: list[tuple[str, str, str, str]] = []
    for name, label in ((PYJWT, "from behest_lambda.libraries import jwt"), (PLAIN_PYJWT, "import jwt"),
                        (POWERTOOLS, "from aws_lambda_powertools import Logger, Metrics")):
        table.append((f"what `{label}` adds to a cold start (over cryptography RSA + json + http.client)",
                      f"+{extra[name]:.0f} ms", f"{extra[name] / cold_mint_ms:.0%} of the cold mint", "—"))
    table.append(("what `import boto3` would add to the Secrets Manager fallback, on top of the botocore session it "
                  "imports", f"+{boto3_over_botocore(figures):.0f} ms", f"botocore's session: +{extra[BOTOCORE]:.0f} ms",
                  "—"))
    return table


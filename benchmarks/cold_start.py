"""Cold start: a fresh process that imports the token handler and serves one mint, against the
quickstart stack (FastAPI + Mangum + behest-ai) doing the same job, and a bare interpreter.

Runs are interleaved so machine noise lands on every variant alike; figures are medians.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEYS = ROOT / "tests" / "keys"
QUICKSTART_PYTHON = ROOT / ".venv" / "quickstart" / "bin" / "python"
QUICKSTART_REQUIREMENTS = ROOT / "benchmarks" / "requirements-quickstart.txt"

SERVE_ONE = """
import json
{prelude}
from {module} import handler
class Context:
    aws_request_id = "bench"
event = json.load(open({event!r}))
response = handler(event, Context())
assert response["statusCode"] == 200, response
assert json.loads(response["body"])["token"].count(".") == 2
"""


def ensure_quickstart_env() -> Path:
    """The comparison stack lives in its own venv, installed on first use."""
    if not QUICKSTART_PYTHON.exists():
        subprocess.run([sys.executable, "-m", "venv", str(QUICKSTART_PYTHON.parent.parent)], check=True)
        subprocess.run(
            [str(QUICKSTART_PYTHON), "-m", "pip", "install", "-q", "-r", str(QUICKSTART_REQUIREMENTS)], check=True
        )
    return QUICKSTART_PYTHON


def sign_mode_env(pythonpath: Path) -> dict[str, str]:
    pem = (KEYS / "tenant_private.pem").read_text()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEHEST_", "PYTHON"))}
    env.update(
        BEHEST_KEY="behest_pk_" + pem,
        BEHEST_KID="sk_bench",
        BEHEST_TENANT_ID="tenant-bench",
        BEHEST_PROJECT_ID="project-bench",
        PYTHONPATH=str(pythonpath),
    )
    return env


def variants() -> dict[str, tuple[list[str], dict[str, str]]]:
    event = str(ROOT / "events" / "token_mint.json")
    ours_env = sign_mode_env(ROOT / "functions")
    quickstart = ensure_quickstart_env()
    return {
        "bare interpreter": ([sys.executable, "-c", "pass"], ours_env),
        "behest-lambda token handler": (
            [sys.executable, "-c", SERVE_ONE.format(prelude="", module="behest_lambda.token_handler", event=event)],
            ours_env,
        ),
        "same + Powertools Logger/Metrics": (
            [
                sys.executable,
                "-c",
                SERVE_ONE.format(
                    prelude="from aws_lambda_powertools import Logger, Metrics",
                    module="behest_lambda.token_handler",
                    event=event,
                ),
            ],
            ours_env,
        ),
        "quickstart (FastAPI+Mangum+behest-ai)": (
            [str(quickstart), "-c", SERVE_ONE.format(prelude="", module="quickstart_app", event=event)],
            sign_mode_env(ROOT / "benchmarks"),
        ),
    }


def run(rounds: int = 15, warmup: int = 2) -> dict[str, float]:
    """Median wall time (ms) of each variant from spawn to exit."""
    commands = variants()
    samples: dict[str, list[float]] = {name: [] for name in commands}
    for round_number in range(warmup + rounds):
        for name, (argv, env) in commands.items():
            started = time.perf_counter()
            subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, cwd=ROOT)
            elapsed = (time.perf_counter() - started) * 1000
            if round_number >= warmup:
                samples[name].append(elapsed)
    return {name: statistics.median(values) for name, values in samples.items()}


def report(medians: dict[str, float]) -> list[str]:
    bare = medians["bare interpreter"]
    ours = medians["behest-lambda token handler"]
    quickstart = medians["quickstart (FastAPI+Mangum+behest-ai)"]
    lines = ["Cold start: fresh process, import handler, serve one local-sign mint (median ms)"]
    for name, value in medians.items():
        lines.append(f"  {name:<40} {value:8.1f} ms   (+{value - bare:6.1f} over bare)")
    total = ours / quickstart
    added = (ours - bare) / (quickstart - bare)
    lines.append(f"  ratio ours/quickstart, whole process     {total:8.3f}x")
    lines.append(f"  ratio ours/quickstart, above bare        {added:8.3f}x   (target <= 0.15x, aim 0.10x)")
    return lines


if __name__ == "__main__":
    print("\n".join(report(run())))

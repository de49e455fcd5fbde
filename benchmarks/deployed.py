"""What a cold container runs: the functions as `sam build` ships them, under the environment Lambda sets.

Lambda's /var/task is read-only, so Python compiles our modules in memory on every cold start
(`sam build` ships no __pycache__ for our own package); the dependencies keep the .pyc that pip
wrote. A precompiled tree (`compileall --invalidation-mode unchecked-hash`) shows what a build step
that shipped our .pyc would save.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS = ROOT / "functions"
KEYS = ROOT / "tests" / "keys"
REGION = "us-east-1"
# Lambda hands the function temporary credentials; the extension wants the session token as its auth header.
SESSION_TOKEN = "bench-session-token"


@contextmanager
def build_tree(*, precompiled: bool = False) -> Iterator[Path]:
    """functions/ copied as `sam build` copies CodeUri: no __pycache__, or our package precompiled on request."""
    with tempfile.TemporaryDirectory(prefix="behest-build-") as scratch:
        tree = Path(scratch) / "task"
        shutil.copytree(FUNCTIONS, tree, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), symlinks=True)
        if precompiled:
            subprocess.run([sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash",
                            str(tree / "behest_lambda")], check=True)
        yield tree


def lambda_env(task_root: Path, function_name: str, **variables: str) -> dict[str, str]:
    """The process environment of a cold Lambda container (credentials fake), plus `variables`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BEHEST_", "PYTHON", "AWS_", "POWERTOOLS_"))}
    env.update(
        PYTHONPATH=str(task_root),
        PYTHONDONTWRITEBYTECODE="1",  # /var/task is read-only
        LAMBDA_TASK_ROOT=str(task_root),
        AWS_REGION=REGION,
        AWS_DEFAULT_REGION=REGION,
        AWS_ACCESS_KEY_ID="bench",
        AWS_SECRET_ACCESS_KEY="bench",
        AWS_SESSION_TOKEN=SESSION_TOKEN,
        AWS_LAMBDA_FUNCTION_NAME=function_name,
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512",
        AWS_LAMBDA_FUNCTION_VERSION="1",
        AWS_EXECUTION_ENV="AWS_Lambda_python3.13",
    )
    env.update(variables)
    return env


def template_env(service: str) -> dict[str, str]:
    """The variables template.yaml gives the functions, at the parameters' defaults (key values come separately)."""
    return {
        "BEHEST_KEY": "",
        "BEHEST_KID": "",
        "BEHEST_TENANT_ID": "",
        "BEHEST_PROJECT_ID": "",
        "POWERTOOLS_SERVICE_NAME": service,
        "POWERTOOLS_LOG_LEVEL": "INFO",
        "POWERTOOLS_METRICS_NAMESPACE": "BehestLambda",
    }


def tenant_pem() -> str:
    return (KEYS / "tenant_private.pem").read_text()


def machine_header(command: str) -> list[str]:
    """Date, machine and command, printed above the figures."""
    return [
        f"date     {time.strftime('%Y-%m-%d %H:%M %Z')}",
        f"machine  {os.cpu_count()} CPUs (nproc {_nproc()}), {cpu_model()}, {platform.system()} {platform.machine()}",
        f"python   {platform.python_implementation()} {platform.python_version()}",
        f"command  {command}",
    ]


def machine_summary() -> str:
    """One line for the figures table: cores, CPU, system, Python."""
    return f"{_nproc()}-core {cpu_model()}, {platform.system()}, Python {platform.python_version()}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _nproc() -> str:
    try:
        return subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return str(os.cpu_count())


def timed_run(argv: list[str], env: Mapping[str, str], cwd: Path) -> float:
    """ms from spawn to exit of one process, which must succeed (Lambda starts it in the task root)."""
    started = time.perf_counter()
    subprocess.run(argv, env=dict(env), check=True, stdout=subprocess.DEVNULL, cwd=cwd)
    return (time.perf_counter() - started) * 1000

"""What a cold container runs: the functions as the template builds them, under the environment Lambda sets.

`sam build` runs functions/Makefile → functions/build.py: the dependencies pip-installed beside our
package, every module compiled to unchecked-hash bytecode. Here the same script builds for this
machine's platform and interpreter. The tree SAM's own Python build made before (the same files,
no bytecode anywhere: Lambda's /var/task is read-only, so each cold start compiled everything
again) is the same build with `--no-compile`.
"""

from __future__ import annotations

import os
import platform
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
def build_tree(*, compiled: bool = True) -> Iterator[Path]:
    """The function package as functions/build.py builds it for this machine (pip reaches PyPI or its cache);
    `compiled=False`: as SAM's own Python build shipped it, sources only."""
    with tempfile.TemporaryDirectory(prefix="behest-build-") as scratch:
        tree = Path(scratch) / "task"
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        subprocess.run([sys.executable, str(FUNCTIONS / "build.py"), str(tree), "--platform", "host",
                        "--python-version", version, *([] if compiled else ["--no-compile"])], check=True)
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


# A script ends with this; `until_served` stops its clock when the line arrives.
SERVED = "served"
PRINT_SERVED = "import sys; sys.stdout.write('served\\n'); sys.stdout.flush()"


def until_served(argv: list[str], env: Mapping[str, str], cwd: Path) -> float:
    """ms from spawn until the process says it has served: a cold start as Lambda counts it (init plus the first
    invocation), not the interpreter's exit, which no request waits for. The process must then exit cleanly."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, env=dict(env), stdout=subprocess.PIPE, cwd=cwd, text=True)
    assert process.stdout is not None
    elapsed = None
    for line in process.stdout:
        if elapsed is None and line.strip() == SERVED:
            elapsed = (time.perf_counter() - started) * 1000
    if process.wait(30) != 0 or elapsed is None:
        raise RuntimeError(f"{argv[:2]} did not serve (exit {process.returncode})")
    return elapsed


def timed_run(argv: list[str], env: Mapping[str, str], cwd: Path) -> float:
    """ms from spawn to exit of one process, which must succeed (Lambda starts it in the task root)."""
    started = time.perf_counter()
    subprocess.run(argv, env=dict(env), check=True, stdout=subprocess.DEVNULL, cwd=cwd)
    return (time.perf_counter() - started) * 1000

"""`stream-bootstrap` as Lambda's managed runtime starts it, and the Python path it builds.

The managed runtime runs `$AWS_LAMBDA_EXEC_WRAPPER /var/lang/bin/python3.13 /var/runtime/bootstrap.py`
(its /var/runtime/bootstrap script). Those exact arguments are passed here, in a private mount
namespace where /var and /opt are a Lambda-like tree: the function in /var/task, a layer in
/opt/python, a stand-in interpreter at /var/lang/bin/python3.13 that notes it was run. The path
expected is the one the managed runtime's bootstrap.py builds (set_default_sys_path,
add_default_site_directories, set_default_pythonpath): task root first with its .pth files, the
layer's site-packages and /opt/python, the interpreter's own site-packages, then /var/runtime.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import pytest

from tests.runtime_emulator import RuntimeEmulator
from tests.support import ROOT, load_event, sign_env

FUNCTIONS = ROOT / "functions"
VERSION = f"python{sys.version_info.major}.{sys.version_info.minor}"
LAYER_SITE_PACKAGES = f"/opt/python/lib/{VERSION}/site-packages"
MANAGED_ARGUMENTS = ["/var/lang/bin/python3.13", "/var/runtime/bootstrap.py"]
STARTUP_TIMEOUT = 20.0


def mount_namespaces_work() -> bool:
    unshare = shutil.which("unshare")
    if unshare is None:
        return False
    probe = subprocess.run([unshare, "--user", "--map-root-user", "--mount", "true"], capture_output=True, check=False)
    return probe.returncode == 0


needs_mount_namespace = pytest.mark.skipif(not mount_namespaces_work(),
                                           reason="needs unprivileged user + mount namespaces (unshare -rm)")


def lambda_tree(root: Path, interpreter_log: Path) -> None:
    """/var and /opt as in a Lambda execution environment, to be bind-mounted over the real ones."""
    bin_dir = root / "var/lang/bin"
    bin_dir.mkdir(parents=True)
    interpreter = bin_dir / "python3.13"
    interpreter.write_text(f'#!/bin/sh\necho "$0" >> "{interpreter_log}"\nexec "{sys.executable}" "$@"\n')
    interpreter.chmod(0o755)
    runtime = root / "var/runtime"
    runtime.mkdir()
    (runtime / "bootstrap.py").write_text("raise SystemExit('the managed, buffered loop must not run')\n")
    task = root / "var/task"
    task.mkdir()
    (task / "behest_lambda").symlink_to(FUNCTIONS / "behest_lambda")
    shutil.copy2(FUNCTIONS / "stream-bootstrap", task / "stream-bootstrap")
    (task / "vendored").mkdir()
    (task / "vendored.pth").write_text("vendored\n")  # a .pth line is relative to its site directory
    layer_site = root / f"opt/python/lib/{VERSION}/site-packages"
    layer_site.mkdir(parents=True)
    (root / "opt/python/layer-extra").mkdir()
    (root / "opt/python/layer.pth").write_text("layer-extra\n")


def function_env(emulator: RuntimeEmulator) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BEHEST_", "PYTHON", "AWS_", "LAMBDA_"))}
    # Configured, but nothing here reaches Behest or the identity provider: the caller has no token.
    return {**base, **sign_env(BEHEST_BASE_URL="http://127.0.0.1:9", BEHEST_CALLER_ISSUER="http://127.0.0.1:9",
                               BEHEST_CALLER_AUDIENCE="app"),
            "AWS_LAMBDA_RUNTIME_API": emulator.address, "LAMBDA_TASK_ROOT": "/var/task",
            "LAMBDA_RUNTIME_DIR": "/var/runtime", "AWS_LAMBDA_EXEC_WRAPPER": "/var/task/stream-bootstrap",
            "POWERTOOLS_LOG_LEVEL": "DEBUG", "LOG_LEVEL": "DEBUG"}


def records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]


@needs_mount_namespace
def test_the_wrapper_runs_the_interpreter_lambda_hands_it_on_the_managed_runtimes_python_path(tmp_path: Path) -> None:
    root, interpreter_log, log = tmp_path / "lambda", tmp_path / "interpreter.log", tmp_path / "runtime.log"
    lambda_tree(root, interpreter_log)
    # As the managed runtime's /var/runtime/bootstrap does: exec "$wrapper" <interpreter> <bootstrap.py>.
    script = ('mount --bind "$1/var" /var && mount --bind "$1/opt" /opt && shift && '
              'exec "$AWS_LAMBDA_EXEC_WRAPPER" "$@"')
    argv = ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script, "sh", str(root), *MANAGED_ARGUMENTS]
    event = load_event("stream_chat_completion")
    del event["headers"]["authorization"]
    with RuntimeEmulator() as emulator, log.open("wb") as output:
        process = subprocess.Popen(argv, env=function_env(emulator), stdout=output, stderr=subprocess.STDOUT,
                                   cwd=root / "var/task")
        try:
            response = emulator.response(emulator.queue(event), timeout=STARTUP_TIMEOUT)
            started = wait_for(log, "the streaming loop started")
        finally:
            process.terminate()
            process.wait(10)

    assert interpreter_log.read_text().split() == ["/var/lang/bin/python3.13"]
    assert response.prelude()["statusCode"] == 401  # the real function answered, through the streaming loop
    path = started["python_path"]
    front = ["/var/task", LAYER_SITE_PACKAGES, "/opt/python", sysconfig.get_paths()["purelib"], "/var/runtime"]
    assert path[:len(front)] == front, path
    assert "/var/task/vendored" in path and "/opt/python/layer-extra" in path  # .pth files were processed
    assert "" not in path and str(FUNCTIONS) not in path


def wait_for(log: Path, message: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        found = [record for record in records(log) if record.get("message") == message]
        if found or time.monotonic() > deadline:
            assert found, f"no {message!r} in:\n{log.read_text()[-3000:]}"
            return found[0]
        time.sleep(0.05)


def python_path_after(task_root: Path, runtime_dir: str, **env: str) -> dict[str, Any]:
    """sys.path and PYTHONPATH once use_lambda_python_path has run in a fresh interpreter."""
    code = ("import json, os, sys; sys.path[0] = sys.argv[1]\n"
            "from behest_lambda.stream_runtime import use_lambda_python_path\n"
            "use_lambda_python_path(sys.argv[1], sys.argv[2])\n"
            "print(json.dumps({'path': sys.path, 'PYTHONPATH': os.environ.get('PYTHONPATH')}))")
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "LAMBDA_"))}
    result = subprocess.run([sys.executable, "-c", code, str(task_root), runtime_dir], env={**base, **env},
                            capture_output=True, text=True, check=True)
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def task_root_with_a_pth_file(tmp_path: Path) -> Path:
    task = tmp_path / "task"
    task.mkdir()
    (task / "behest_lambda").symlink_to(FUNCTIONS / "behest_lambda")
    (task / "vendored").mkdir()
    (task / "vendored.pth").write_text("vendored\n")
    return task


def test_the_task_root_comes_first_with_its_pth_files_then_layers_then_the_runtime(tmp_path: Path) -> None:
    task = task_root_with_a_pth_file(tmp_path)

    after = python_path_after(task, "/var/runtime", LAMBDA_RUNTIME_DIR="/var/runtime")

    front = [str(task), LAYER_SITE_PACKAGES, "/opt/python", sysconfig.get_paths()["purelib"], "/var/runtime"]
    assert after["path"][:len(front)] == front
    assert str(task / "vendored") in after["path"]
    assert after["PYTHONPATH"] == "/var/runtime"  # for child processes, as the managed runtime sets it


def test_a_pythonpath_the_function_sets_leaves_the_layers_out_as_in_the_managed_runtime(tmp_path: Path) -> None:
    task = task_root_with_a_pth_file(tmp_path)
    own = tmp_path / "own"
    own.mkdir()

    after = python_path_after(task, "/var/runtime", LAMBDA_RUNTIME_DIR="/var/runtime", PYTHONPATH=str(own))

    assert after["path"][:3] == [str(task), "/var/runtime", str(own)]
    assert "/opt/python" not in after["path"] and LAYER_SITE_PACKAGES not in after["path"]
    assert str(task / "vendored") in after["path"]
    assert after["PYTHONPATH"] == str(own)

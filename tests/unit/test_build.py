"""What `sam build` ships: every function built by functions/Makefile → build.py, as compiled bytecode."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT

FUNCTIONS = ROOT / "functions"
HOST_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
sys.path.insert(0, str(FUNCTIONS))
import build  # noqa: E402  (functions/build.py: not part of the deployed package)

sys.path.remove(str(FUNCTIONS))


def functions_of(sam: dict[str, Any]) -> dict[str, Any]:
    return {name: r for name, r in sam["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}


def test_every_function_is_built_by_the_makefile_that_runs_build_py(sam: dict[str, Any]) -> None:
    functions = functions_of(sam)
    assert len(functions) == 4
    for name, resource in functions.items():
        assert resource.get("Metadata", {}).get("BuildMethod") == "makefile", name
        dry_run = subprocess.run(["make", "-n", "-C", str(FUNCTIONS), f"build-{name}", "ARTIFACTS_DIR=/artifacts"],
                                 capture_output=True, text=True, check=True).stdout
        assert 'python3.13 build.py "/artifacts"' in dry_run, name
    assert sam["Globals"]["Function"]["Runtime"] == f"python{build.LAMBDA_PYTHON}"
    assert sam["Globals"]["Function"]["Architectures"] == ["arm64"] and "aarch64" in build.LAMBDA_PLATFORM


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package built for this interpreter (no dependencies: tests stay off the network)."""
    target = tmp_path_factory.mktemp("artifacts")
    requirements = target.parent / "no-requirements.txt"
    requirements.write_text("# dependencies come from the test environment\n")
    build.build(target, platform="host", python_version=HOST_PYTHON, requirements=requirements)
    return target


def test_every_module_ships_with_unchecked_hash_bytecode_and_the_bootstrap_stays_executable(built: Path) -> None:
    sources = sorted(built.rglob("*.py"))
    assert {p.name for p in sources} >= {"app.py", "token_handler.py", "relay_handler.py", "stream_runtime.py"}
    for source in sources:
        cached = Path(importlib.util.cache_from_source(str(source)))
        flags = int.from_bytes(cached.read_bytes()[4:8], "little")
        assert flags == 0b01, f"{cached.name}: not an unchecked-hash pyc (flags {flags:#b})"
    assert os.access(built / "stream-bootstrap", os.X_OK)
    assert {p.name for p in built.iterdir()} == {"behest_lambda", "stream-bootstrap"}


def test_a_cold_import_runs_the_shipped_bytecode_without_compiling_a_source(built: Path, tmp_path: Path) -> None:
    tree = tmp_path / "task"
    subprocess.run(["cp", "-a", str(built), str(tree)], check=True)
    # Were any source compiled, this one would fail: the bytecode beside it is what runs.
    (tree / "behest_lambda" / "errors.py").write_text("this is not Python (\n")
    env = {**os.environ, "PYTHONPATH": str(tree), "PYTHONDONTWRITEBYTECODE": "1"}
    shown = subprocess.run([sys.executable, "-c", "import behest_lambda.token_handler, behest_lambda.relay_handler\n"
                            "from behest_lambda.errors import answer_for; print(answer_for.__code__.co_filename)"],
                           env=env, cwd=tree, check=True, capture_output=True, text=True).stdout
    # The import system names each code object after the file it was loaded beside (as in /var/task).
    assert shown.strip() == str(tree / "behest_lambda" / "errors.py")


def test_two_builds_ship_the_same_bytes(built: Path, tmp_path: Path) -> None:
    requirements = tmp_path / "no-requirements.txt"
    requirements.write_text("")
    again = tmp_path / "again"
    build.build(again, platform="host", python_version=HOST_PYTHON, requirements=requirements)
    first = {p.relative_to(built): p.read_bytes() for p in built.rglob("*.pyc")}
    second = {p.relative_to(again): p.read_bytes() for p in again.rglob("*.pyc")}
    assert first == second and len(first) > 20


def test_bytecode_for_another_python_version_is_refused_with_the_interpreter_to_use(tmp_path: Path) -> None:
    other = "3.13" if HOST_PYTHON != "3.13" else "3.12"
    with pytest.raises(SystemExit, match=f"run it with python{other}"):
        build.build(tmp_path / "x", platform="host", python_version=other)
    assert not (tmp_path / "x").exists()


def wheel_with_a_console_script(directory: Path) -> Path:
    """A minimal wheel, made here (tests stay off the network), whose install writes bin/demo-tool as pip does."""
    import zipfile

    path = directory / "demo_tool-1.0-py3-none-any.whl"
    files = {
        "demo_tool/__init__.py": "def main() -> None:\n    print('demo')\n",
        "demo_tool-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: demo-tool\nVersion: 1.0\n",
        "demo_tool-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        "demo_tool-1.0.dist-info/entry_points.txt": "[console_scripts]\ndemo-tool = demo_tool:main\n",
    }
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            wheel.writestr(name, text)
        wheel.writestr("demo_tool-1.0.dist-info/RECORD", "".join(f"{name},,\n" for name in files)
                       + "demo_tool-1.0.dist-info/RECORD,,\n")
    return path


def test_pips_console_scripts_are_not_shipped(tmp_path: Path) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text(f"{wheel_with_a_console_script(tmp_path)}\n")
    target = tmp_path / "artifacts"

    build.build(target, platform="host", python_version=HOST_PYTHON, requirements=requirements)

    # Scripts pip writes for the build machine's interpreter: nothing on Lambda runs them.
    assert not (target / "bin").exists()
    assert (target / "demo_tool" / "__init__.py").is_file() and (target / "behest_lambda").is_dir()

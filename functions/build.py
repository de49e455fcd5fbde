"""Build a function's deployment package, compiled: what `sam build` runs through functions/Makefile.

SAM's own Python build extracts the dependency wheels and copies our sources, with no bytecode:
Lambda's /var/task is read-only, so every cold start compiled PyJWT, Powertools, cryptography's
Python half and our package from source again (≈ 100 ms of a 230 ms cold mint, measured by
`make bench`). This build installs the same requirements for the Lambda platform, copies the
package, and compiles every module to hash-checked-never (`unchecked-hash`) bytecode, which Python
loads without reading the source's timestamp (zip files keep no reliable one) and which is the
same bytes on every build (the artifact hash SAM compares does not change when nothing did).

    python3.13 build.py ARTIFACTS_DIR                      # what functions/Makefile runs
    python build.py DIR --platform host --python-version 3.11   # the same for this machine (benchmarks)

Bytecode is version-specific: the interpreter running this must be the runtime's version.
"""

from __future__ import annotations

import argparse
import compileall
import py_compile
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# What the function ships besides its dependencies (CodeUri is functions/; only these are deployed).
SHIPPED = ("behest_lambda", "stream-bootstrap")
LAMBDA_PLATFORM = "manylinux2014_aarch64"  # template.yaml: Architectures [arm64]
LAMBDA_PYTHON = "3.13"  # template.yaml: Runtime python3.13
TASK_ROOT = "/var/task"  # where Lambda unpacks the package


def install_dependencies(target: Path, requirements: Path, platform: str, python_version: str) -> None:
    """pip installs the requirements into `target`, as wheels for Lambda's platform (or this machine's)."""
    if not any(line.split("#")[0].strip() for line in requirements.read_text().splitlines()):
        return  # nothing to install (pip refuses an empty requirements file)
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
               "--upgrade", "--target", str(target), "--requirement", str(requirements)]
    if platform != "host":
        command += ["--platform", platform, "--implementation", "cp", "--python-version", python_version,
                    "--only-binary=:all:"]
    subprocess.run(command, check=True)  # noqa: S603 (our own fixed command line)
    # pip writes console scripts for the build machine's interpreter into bin/: nothing on Lambda runs them.
    shutil.rmtree(target / "bin", ignore_errors=True)


def copy_sources(target: Path) -> None:
    """Our package and the streaming bootstrap, without any bytecode a development tree holds."""
    for name in SHIPPED:
        source, destination = HERE / name, target / name
        if destination.is_dir():
            shutil.rmtree(destination)
        if source.is_dir():
            shutil.copytree(source, destination, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(source, destination)  # keeps stream-bootstrap executable


def compile_tree(target: Path) -> None:
    """Every module under `target` to unchecked-hash bytecode for this interpreter; a syntax error fails.

    File names are recorded as under /var/task, not this machine's build directory, so the bytes do
    not depend on where the build ran (the import system names code after where it is loaded anyway).
    """
    if not compileall.compile_dir(str(target), ddir=TASK_ROOT, quiet=1, workers=0,
                                  invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH):
        raise SystemExit(f"build.py: some modules under {target} did not compile")


def build(target: Path, *, platform: str = LAMBDA_PLATFORM, python_version: str = LAMBDA_PYTHON,
          requirements: Path = HERE / "requirements.txt", compile_bytecode: bool = True) -> None:
    running = f"{sys.version_info.major}.{sys.version_info.minor}"
    if compile_bytecode and running != python_version:
        raise SystemExit(f"build.py: the runtime is Python {python_version} but this is Python {running}; "
                         f"bytecode is version-specific, run it with python{python_version}")
    target.mkdir(parents=True, exist_ok=True)
    install_dependencies(target, requirements, platform, python_version)
    copy_sources(target)
    if compile_bytecode:
        compile_tree(target)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("target", type=Path, help="the artifacts directory (sam build's $ARTIFACTS_DIR)")
    parser.add_argument("--platform", default=LAMBDA_PLATFORM,
                        help=f"wheel platform (default {LAMBDA_PLATFORM}); 'host' for this machine's")
    parser.add_argument("--python-version", default=LAMBDA_PYTHON, help=f"default {LAMBDA_PYTHON}")
    parser.add_argument("--requirements", type=Path, default=HERE / "requirements.txt")
    parser.add_argument("--no-compile", dest="compile_bytecode", action="store_false",
                        help="ship sources only, as SAM's own Python build does")
    args = parser.parse_args(argv)
    build(args.target, platform=args.platform, python_version=args.python_version, requirements=args.requirements,
          compile_bytecode=args.compile_bytecode)


if __name__ == "__main__":
    main()

"""README's server-to-server section, run as pasted against `make dev`: its shell exports, then its Python blocks."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from typing import Iterator

import pytest

from tests.dev_process import DevProcess
from tests.functional.test_node_clients import NODE_DIR, node_clients_missing
from tests.support import ROOT

SECTION = re.compile(r"^## Server-to-server.*?(?=^## )", re.DOTALL | re.MULTILINE)


def blocks(language: str) -> list[str]:
    found = SECTION.search((ROOT / "README.md").read_text())
    assert found, "README has no server-to-server section"
    return re.findall(rf"```{language}\n(.*?)```", found.group(0), re.DOTALL)


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    process = DevProcess()
    yield process
    process.stop()


def readme_environment(dev: DevProcess) -> dict[str, str]:
    """The environment after the README's shell exports, pointed at this stack's server-to-server URL."""
    (exports,) = blocks("sh")
    words = shlex.split(exports.replace("\\\n", " "))
    assert words[0] == "export"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environment.update(word.split("=", 1) for word in words[1:])
    environment["SERVICE_BASE_URL"] = dev.urls["service"] + "/v1"  # make dev's port here is a free one
    return environment


# Saved and run, or pasted into the interactive interpreter (which ends a block only at a blank line).
@pytest.mark.parametrize("pasted", [False, True], ids=["saved", "pasted"])
def test_the_readmes_server_to_server_example_runs_as_pasted(dev: DevProcess, pasted: bool) -> None:
    code = "\n".join(blocks("python"))
    command = [sys.executable, "-i", "-q"] if pasted else [sys.executable, "-c", code]
    done = subprocess.run(command, input=code if pasted else None, cwd=ROOT, env=readme_environment(dev),
                          capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert "Error" not in done.stderr and "Traceback" not in done.stderr, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:3] == ["Hello ada! You said: hi", "Hello bob! You said: hi", "Hello ada! You said: hi"]
    assert int(lines[3]) > 0 and lines[4].isdigit()


@pytest.mark.skipif(node_clients_missing() is not None, reason=str(node_clients_missing()))
def test_the_readmes_node_example_runs_with_the_packages_it_names(dev: DevProcess) -> None:
    (example,) = blocks("js")
    client = (ROOT / "client" / "node" / "behest-sigv4.mjs").as_uri()
    assert '"./behest-sigv4.mjs"' in example

    # Evaluated as a module from tests/node, where the packages its first line installs are (make node-clients).
    done = subprocess.run(["node", "--input-type=module", "-"], input=example.replace("./behest-sigv4.mjs", client),
                          cwd=NODE_DIR, env=readme_environment(dev), capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["Hello ada! You said: hi"]

"""`make clean` leaves the tree as a fresh clone has it: every directory the tools create is gone."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import ROOT

# Directories the targets and tools create (each is git-ignored), and what must stay.
CREATED = (".venv", ".pytest_cache", ".mypy_cache", ".ruff_cache", ".hypothesis", ".aws-sam", "test-artifacts",
           "tests/node/node_modules")
KEPT = ("tests/node/package.json", "env.json")


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_make_clean_removes_every_directory_the_tools_create_and_nothing_else(tmp_path: Path) -> None:
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    for directory in CREATED:
        (tmp_path / directory).mkdir(parents=True)
        (tmp_path / directory / "something").write_text("x")
    for kept in KEPT:
        (tmp_path / kept).write_text("{}")

    subprocess.run(["make", "clean"], cwd=tmp_path, check=True, capture_output=True)

    assert [d for d in CREATED if (tmp_path / d).exists()] == []
    assert all((tmp_path / kept).is_file() for kept in KEPT)


def test_every_directory_make_clean_removes_is_git_ignored() -> None:
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".gitignore").read_text().splitlines()}

    assert set(CREATED) <= ignored

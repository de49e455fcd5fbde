"""What `sam build` ships: every third-party package the functions import is in the deployed requirements."""

from __future__ import annotations

import ast
import re
import sys

from tests.support import ROOT

PACKAGE = ROOT / "functions" / "behest_lambda"
# Modules the Lambda Python runtime itself provides (not packaged).
RUNTIME_PROVIDED = {"boto3", "botocore", "snapshot_restore_py"}
# Import name → distribution name on PyPI.
DISTRIBUTIONS = {"jwt": "pyjwt", "aws_lambda_powertools": "aws-lambda-powertools", "cryptography": "cryptography"}


def imported_top_level_modules() -> set[str]:
    modules: set[str] = set()
    for source in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules - set(sys.stdlib_module_names) - {"__future__"}


def deployed_requirements() -> set[str]:
    text = (ROOT / "functions" / "requirements.txt").read_text()
    return {re.split(r"[<>=\[ ;]", line.strip())[0].lower() for line in text.splitlines()
            if line.strip() and not line.startswith("#")}


def test_every_third_party_import_of_the_functions_is_deployed_or_provided_by_the_runtime() -> None:
    third_party = imported_top_level_modules() - RUNTIME_PROVIDED

    assert third_party == set(DISTRIBUTIONS), "an import with no known distribution: add it to DISTRIBUTIONS"
    missing = {DISTRIBUTIONS[m] for m in third_party} - deployed_requirements()
    assert not missing, f"imported by the functions but not in functions/requirements.txt: {sorted(missing)}"

"""README's configuration tables against template.yaml's Parameters and the names settings.py reads."""

from __future__ import annotations

import re
from typing import Any

import yaml
from samtranslator.yaml_helper import intrinsics_multi_constructor

from behest_lambda import settings
from tests.support import ROOT

README = (ROOT / "README.md").read_text()
# Names the runtime sets, and a field of the key secret: none of them is the operator's to configure.
NOT_CONFIGURED = {"AWS_SESSION_TOKEN", "AWS_LAMBDA_RUNTIME_API", "AWS_LAMBDA_EXEC_WRAPPER", "_X_AMZN_TRACE_ID",
                  "PARAMETERS_SECRETS_EXTENSION_HTTP_PORT", "AUTH_JWT_SECRET"}


class _Loader(yaml.SafeLoader):
    """SafeLoader reading !Ref, !If … as their JSON forms."""


_Loader.add_multi_constructor("!", intrinsics_multi_constructor)
TEMPLATE: dict[str, Any] = yaml.load((ROOT / "template.yaml").read_text(), Loader=_Loader)  # noqa: S506


def variable_rows() -> list[str]:
    """Every row of README's variable tables (those whose first column is `variable`)."""
    rows: list[str] = []
    for table in re.findall(r"^\| variable[^\n]*\n\|[-|]+\n((?:\|[^\n]*\n)+)", README, re.M):
        rows += table.splitlines()
    return rows


def parameters_behind_variables() -> set[tuple[str, str]]:
    """(variable, parameter) for every function variable the template sets straight from a parameter."""
    environments = [TEMPLATE["Globals"]["Function"]["Environment"]["Variables"]]
    environments += [resource["Properties"].get("Environment", {}).get("Variables", {})
                     for resource in TEMPLATE["Resources"].values() if resource["Type"] == "AWS::Serverless::Function"]
    pairs = set()
    for variables in environments:
        for name, value in variables.items():
            joined = value.get("Fn::Join", [None, [None]])[1] if isinstance(value, dict) else None
            ref = value.get("Ref") if isinstance(value, dict) else None
            ref = ref or (joined.get("Ref") if isinstance(joined, dict) else None)
            if ref in TEMPLATE["Parameters"]:
                pairs.add((name, ref))
    return pairs


def configured_names() -> set[str]:
    """The environment variable names settings.py defines, less those the runtime sets."""
    return {value for name, value in vars(settings).items() if value == name and value not in NOT_CONFIGURED}


def test_the_readme_names_every_template_parameter() -> None:
    unnamed = [name for name in TEMPLATE["Parameters"] if f"`{name}`" not in README]

    assert unnamed == []


def test_each_variable_row_names_the_template_parameter_that_sets_it() -> None:
    rows = variable_rows()
    pairs = parameters_behind_variables()

    missing = sorted((variable, parameter) for variable, parameter in pairs
                     if not any(f"`{variable}`" in row.split(" | ")[0] and f"`{parameter}`" in row for row in rows))

    assert len(pairs) > 30
    assert missing == []


def test_every_variable_the_functions_read_has_a_row_in_the_readme() -> None:
    rows = "\n".join(variable_rows())

    undocumented = sorted(name for name in configured_names() if f"`{name}`" not in rows)

    assert "BEHEST_ALLOWED_SERVICE_TIERS" in configured_names()
    assert undocumented == []


def test_every_variable_the_readme_documents_is_one_the_functions_read() -> None:
    documented = set(re.findall(r"`((?:BEHEST|POWERTOOLS)_[A-Z_]+)`", "\n".join(variable_rows())))

    unknown = sorted(documented - configured_names())

    assert len(documented) > 30
    assert unknown == []


def test_the_readme_names_no_template_parameter_that_does_not_exist() -> None:
    # Parameter-shaped names in README's variable tables' parameter column.
    named = {name for row in variable_rows() if row.count(" | ") >= 3
             for name in re.findall(r"`([A-Z][a-z]+(?:[A-Z][a-z0-9]*)+)`", row.split(" | ")[1])}

    assert named and named <= set(TEMPLATE["Parameters"])


def test_each_sam_local_invoke_line_names_a_function_of_the_template_and_an_event_that_exists() -> None:
    invocations = re.findall(r"^sam local invoke (\w+) -e (\S+) --env-vars env\.json", README, re.M)

    assert len(invocations) >= 5
    assert [(function, event) for function, event in invocations
            if TEMPLATE["Resources"].get(function, {}).get("Type") != "AWS::Serverless::Function"
            or not (ROOT / event).is_file()] == []


def test_each_variables_default_in_the_readme_is_the_one_settings_py_uses() -> None:
    defaults = {"BEHEST_" + name.removeprefix("DEFAULT_"): value for name, value in vars(settings).items()
                if name.startswith("DEFAULT_") and isinstance(value, (int, float, str))
                and "BEHEST_" + name.removeprefix("DEFAULT_") in configured_names()}
    rows = [row.strip("|").split(" | ") for row in variable_rows()]

    wrong = []
    for variable, value in defaults.items():
        written = f"{value:g}" if isinstance(value, float) else str(value)
        cells = [row[2] for row in rows if len(row) >= 4 and f"`{variable}`" in row[0]]
        if not cells or not all(re.search(rf"(?<![\w.]){re.escape(written)}(?![\w.])", cell) for cell in cells):
            wrong.append((variable, written, cells))

    assert len(defaults) >= 15
    assert wrong == []

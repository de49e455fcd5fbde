"""template.yaml's server-to-server front: an AWS_IAM streaming Function URL, invocable by the listed roles alone."""

from __future__ import annotations

import json
from typing import Any

import pytest
from cfnlint.api import lint

from behest_lambda.routes import SERVICE_FUNCTION
from tests.unit.test_template import REGION, _of_type
from tests.unit.test_template_operations import _Stack

ROLES = [f"arn:aws:iam::123456789012:role/{name}" for name in ("digest-worker", "batch/summariser", "agent")]
MAX_ROLES = 5


def _on_service_function(properties: dict[str, Any]) -> dict[str, Any]:
    """The properties of the resources (by name) that grant or front the server-to-server function."""
    return {name: p for name, p in properties.items() if {"Ref": SERVICE_FUNCTION} in (
        p.get("FunctionName"), p.get("TargetFunctionArn"))}


def _deployed(cfn: dict[str, Any], roles: list[str]) -> dict[str, Any]:
    """The resources CloudFormation creates with TrustedServiceRoleArns = roles (those of the front evaluated)."""
    stack = _Stack(cfn, "us-east-1", TrustedServiceRoleArns=roles or [""])
    return {name: stack.value(r["Properties"]) if name.startswith("Service") else r["Properties"]
            for name, r in cfn["Resources"].items() if "Condition" not in r or stack.condition(r["Condition"])}


def test_the_server_to_server_url_is_an_iam_streaming_function_url_without_cors(resources: dict[str, Any]) -> None:
    url = resources[SERVICE_FUNCTION + "Url"]

    assert url["Type"] == "AWS::Lambda::Url"
    assert url["Properties"] == {"TargetFunctionArn": {"Ref": SERVICE_FUNCTION}, "AuthType": "AWS_IAM",
                                 "InvokeMode": "RESPONSE_STREAM"}


def test_the_function_runs_the_streaming_loop_and_checks_the_same_roles_itself(sam: dict[str, Any]) -> None:
    properties = sam["Resources"][SERVICE_FUNCTION]["Properties"]
    env = properties["Environment"]["Variables"]

    assert env["AWS_LAMBDA_EXEC_WRAPPER"] == "/var/task/stream-bootstrap"
    assert env["BEHEST_TRUSTED_ROLE_ARNS"] == {"Fn::Join": [",", {"Ref": "TrustedServiceRoleArns"}]}
    assert sam["Parameters"]["TrustedServiceRoleArns"] == {**sam["Parameters"]["TrustedServiceRoleArns"],
                                                           "Type": "CommaDelimitedList", "Default": ""}


@pytest.mark.parametrize("count", [1, 2, 3])
def test_each_listed_role_and_no_one_else_may_invoke_the_url_with_both_actions(cfn: dict[str, Any], count: int) -> None:
    deployed = _deployed(cfn, ROLES[:count])
    grants = [p for p in _on_service_function(deployed).values() if "Action" in p]

    url_grants = sorted(p["Principal"] for p in grants if p["Action"] == "lambda:InvokeFunctionUrl")
    invoke_grants = sorted(p["Principal"] for p in grants if p["Action"] == "lambda:InvokeFunction")
    assert url_grants == invoke_grants == sorted(ROLES[:count])
    assert all(p["FunctionUrlAuthType"] == "AWS_IAM" for p in grants if p["Action"] == "lambda:InvokeFunctionUrl")
    # The InvokeFunction grant holds only through the Function URL, never for the Invoke API.
    assert all(p["InvokedViaFunctionUrl"] is True for p in grants if p["Action"] == "lambda:InvokeFunction")
    assert {p["Action"] for p in grants} == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}


def test_with_no_listed_role_nothing_of_the_front_is_deployed(cfn: dict[str, Any]) -> None:
    deployed = _deployed(cfn, [])
    with_roles = _deployed(cfn, ROLES[:1])

    assert not [name for name in deployed if name.startswith("Service")]
    assert {SERVICE_FUNCTION, SERVICE_FUNCTION + "Url", SERVICE_FUNCTION + "Role", "ServiceLogGroup"} <= set(with_roles)
    stack = _Stack(cfn, "us-east-1", TrustedServiceRoleArns=[""])
    assert [name for name, output in cfn["Outputs"].items() if "Condition" in output
            and not stack.condition(output["Condition"])] == ["ServiceBaseUrl", "ServiceFunctionName"]


def test_roles_past_the_documented_limit_get_no_resource_policy_grant(cfn: dict[str, Any], sam: dict[str, Any]) -> None:
    roles = [f"arn:aws:iam::123456789012:role/r{i}" for i in range(MAX_ROLES + 1)]
    grants = [p for p in _on_service_function(_deployed(cfn, roles)).values() if "Action" in p]

    assert sorted({p["Principal"] for p in grants}) == sorted(roles[:MAX_ROLES])
    assert f"at most {MAX_ROLES}" in sam["Parameters"]["TrustedServiceRoleArns"]["Description"]


def test_no_permission_of_the_server_to_server_function_is_public(resources: dict[str, Any]) -> None:
    granted = _of_type(resources, "AWS::Lambda::Permission")
    permissions = _on_service_function({name: r["Properties"] for name, r in granted.items()})

    assert len(permissions) == 2 * MAX_ROLES
    assert all(p["Principal"] != "*" and "SourceArn" not in p for p in permissions.values())


def test_the_conditional_front_lints_without_warnings_as_sam_validate_lint_wants(cfn: dict[str, Any]) -> None:
    # `sam validate --lint` fails on warnings too: a grant must be conditional on what deploys the function.
    warnings = [f"{m.rule.id}: {m.message}" for m in lint(json.dumps(cfn), regions=[REGION])]

    assert warnings == []

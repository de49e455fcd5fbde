"""Choosing the post-deploy check's target, and reading a stack's Outputs: moto's CloudFormation on loopback."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterator

import boto3
import pytest
from moto.server import ThreadedMotoServer

from tests.integration.targets import (
    OUTPUTS,
    TargetUnavailable,
    deployed_targets,
    service_target,
    stack_outputs,
    target_name,
)

REGION = "eu-west-1"
API = "https://abc123.execute-api.eu-west-1.amazonaws.com"
FUNCTION_URL = "https://xyz789.lambda-url.eu-west-1.on.aws/"
# The four Outputs as template.yaml shapes them, with literal values moto can hold.
STACK_TEMPLATE = {
    "Resources": {"Placeholder": {"Type": "AWS::SNS::Topic"}},  # moto needs one resource it models
    "Outputs": {
        "ApiUrl": {"Value": API},
        "TokenEndpoint": {"Value": API + "/api/behest/token"},
        "OpenAIBaseUrl": {"Value": API + "/v1"},
        "StreamBaseUrl": {"Value": FUNCTION_URL + "v1"},
        "KeySecretArn": {"Value": "arn:aws:secretsmanager:eu-west-1:123456789012:secret:behest-key"},
    },
}
AWS_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                 "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ROLE_ARN",
                 "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                 "AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_CLOUDFORMATION",
                 "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")


@pytest.fixture
def bare_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """An AWS environment with nothing in it: no credentials, no region, no config files, no instance metadata."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


@pytest.fixture
def cloudformation(bare_aws: pytest.MonkeyPatch) -> Iterator[str]:
    """moto's CloudFormation on loopback holding stack `behest`; the AWS environment points at it."""
    server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    bare_aws.setenv("AWS_ACCESS_KEY_ID", "testing")
    bare_aws.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bare_aws.setenv("AWS_REGION", REGION)
    bare_aws.setenv("AWS_ENDPOINT_URL_CLOUDFORMATION", endpoint)
    client = boto3.session.Session().client("cloudformation", region_name=REGION)
    client.create_stack(StackName="behest", TemplateBody=json.dumps(STACK_TEMPLATE))
    yield endpoint
    client.delete_stack(StackName="behest")  # moto's state is the process's, not the server's
    server.stop()


def test_the_target_is_deployed_when_a_stack_is_named_and_local_otherwise() -> None:
    assert target_name({}) == "local"
    assert target_name({"STACK_NAME": "behest"}) == "deployed"
    assert target_name({"AWS_SAM_STACK_NAME": "behest"}) == "deployed"
    assert target_name({"STACK_NAME": "behest", "BEHEST_INTEGRATION_TARGET": "local"}) == "local"
    assert target_name({"BEHEST_INTEGRATION_TARGET": " Deployed "}) == "deployed"
    with pytest.raises(ValueError, match="expected one of local, deployed"):
        target_name({"BEHEST_INTEGRATION_TARGET": "staging"})


def test_a_deployed_target_without_a_stack_name_or_an_identity_token_says_which_is_missing() -> None:
    with pytest.raises(TargetUnavailable, match="set STACK_NAME"):
        deployed_targets({"BEHEST_INTEGRATION_TARGET": "deployed"}, outputs_of=lambda stack: {})
    with pytest.raises(TargetUnavailable, match="set BEHEST_TEST_ID_TOKEN"):
        deployed_targets({"STACK_NAME": "behest"}, outputs_of=lambda stack: {})


def test_a_stack_missing_an_output_is_named_with_what_it_lacks() -> None:
    outputs = {"ApiUrl": API, "TokenEndpoint": API + "/api/behest/token"}

    with pytest.raises(TargetUnavailable, match="no output OpenAIBaseUrl, StreamBaseUrl"):
        deployed_targets({"STACK_NAME": "behest", "BEHEST_TEST_ID_TOKEN": "a.b.c"}, outputs_of=lambda stack: outputs)


def test_no_aws_credentials_skip_at_once_without_a_network_call(bare_aws: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    with pytest.raises(TargetUnavailable, match="no AWS credentials"):
        stack_outputs("behest")

    assert time.monotonic() - started < 2


def test_credentials_without_a_region_are_named(bare_aws: pytest.MonkeyPatch) -> None:
    bare_aws.setenv("AWS_ACCESS_KEY_ID", "testing")
    bare_aws.setenv("AWS_SECRET_ACCESS_KEY", "testing")

    with pytest.raises(TargetUnavailable, match="no AWS region"):
        stack_outputs("behest")


def test_an_unreachable_cloudformation_fails_after_one_attempt(bare_aws: pytest.MonkeyPatch, unused_port: int) -> None:
    bare_aws.setenv("AWS_ACCESS_KEY_ID", "testing")
    bare_aws.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    bare_aws.setenv("AWS_REGION", REGION)
    bare_aws.setenv("AWS_ENDPOINT_URL_CLOUDFORMATION", f"http://127.0.0.1:{unused_port}")

    started = time.monotonic()
    with pytest.raises(TargetUnavailable, match="cannot read stack behest's outputs"):
        stack_outputs("behest")

    assert time.monotonic() - started < 2


def test_the_deployed_target_reads_the_stacks_outputs_through_describe_stacks(cloudformation: str) -> None:
    targets = deployed_targets({"STACK_NAME": "behest", "BEHEST_TEST_ID_TOKEN": "a.b.c", "BEHEST_TEST_MODEL": "m"})

    assert set(OUTPUTS) <= set(stack_outputs("behest"))
    assert (targets.name, targets.api_url, targets.token_endpoint) == ("deployed", API, API + "/api/behest/token")
    assert (targets.openai_base_url, targets.stream_base_url) == (API + "/v1", FUNCTION_URL + "v1")
    assert (targets.identity_token, targets.model, targets.chunk_delay) == ("a.b.c", "m", None)


def test_a_stack_that_does_not_exist_is_a_skip_reason_not_an_error(cloudformation: str) -> None:
    with pytest.raises(TargetUnavailable, match="cannot read stack nope's outputs.*does not exist"):
        stack_outputs("nope")


SERVICE_URL = "https://svc456.lambda-url.eu-west-1.on.aws/"
DEPLOYED = {"STACK_NAME": "behest", "BEHEST_TEST_ID_TOKEN": "a.b.c"}


def _outputs(**more: str) -> dict[str, str]:
    return {name: output["Value"] for name, output in STACK_TEMPLATE["Outputs"].items()} | more


def test_a_stack_without_the_server_to_server_url_skips_its_check_saying_so() -> None:
    targets = deployed_targets(DEPLOYED, outputs_of=lambda stack: _outputs())

    with pytest.raises(TargetUnavailable, match="no ServiceBaseUrl output .deployed without TrustedServiceRoleArns"):
        service_target(targets)


def test_the_server_to_server_check_needs_a_role_to_assume(bare_aws: pytest.MonkeyPatch) -> None:
    targets = deployed_targets(DEPLOYED, outputs_of=lambda stack: _outputs(ServiceBaseUrl=SERVICE_URL + "v1"))

    with pytest.raises(TargetUnavailable, match="set BEHEST_TEST_SERVICE_ROLE"):
        service_target(targets)


def test_the_server_to_server_check_signs_as_a_session_of_the_role_it_assumes(
    cloudformation: str, bare_aws: pytest.MonkeyPatch
) -> None:
    bare_aws.setenv("AWS_ENDPOINT_URL_STS", cloudformation)
    role = "arn:aws:iam::123456789012:role/post-deploy-check"
    environ = {**DEPLOYED, "BEHEST_TEST_SERVICE_ROLE": role}
    targets = deployed_targets(environ, outputs_of=lambda stack: _outputs(ServiceBaseUrl=SERVICE_URL + "v1"))

    base_url, credentials, region = service_target(targets)

    assert (base_url, region) == (SERVICE_URL + "v1", REGION)
    assert credentials.access_key and credentials.token and credentials.access_key != "testing"

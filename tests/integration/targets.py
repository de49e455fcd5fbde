"""What the post-deploy check runs against: a deployed stack's Outputs, or `make dev`'s URLs on loopback.

`BEHEST_INTEGRATION_TARGET` chooses: `deployed` reads the CloudFormation Outputs of `STACK_NAME`
(AWS credentials and region from the usual AWS environment) and uses `BEHEST_TEST_ID_TOKEN`, an
identity token of a test user of the stack's identity provider, as the bearer; `local` starts
`make dev`'s stack on free loopback ports and signs in a dev user at its identity provider.
Unset, it is `deployed` when `STACK_NAME` is set and `local` otherwise.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

TARGET_VARIABLE = "BEHEST_INTEGRATION_TARGET"
STACK_VARIABLES = ("STACK_NAME", "AWS_SAM_STACK_NAME")  # ours, then the name SAM's generated projects read
TOKEN_VARIABLE = "BEHEST_TEST_ID_TOKEN"
MODEL_VARIABLE = "BEHEST_TEST_MODEL"
# A role listed in the stack's TrustedServiceRoleArns: the check assumes it to call the server-to-server URL.
SERVICE_ROLE_VARIABLE = "BEHEST_TEST_SERVICE_ROLE"
SERVICE_OUTPUT = "ServiceBaseUrl"
TARGETS = ("local", "deployed")
OUTPUTS = ("ApiUrl", "TokenEndpoint", "OpenAIBaseUrl", "StreamBaseUrl")
# Fail fast when AWS is unreachable or refuses: one attempt, short connect timeout.
CONNECT_TIMEOUT_SECONDS = 2
READ_TIMEOUT_SECONDS = 10


class TargetUnavailable(Exception):
    """What the chosen target needs is absent; the message says what, for the skip reason."""


@dataclass(frozen=True)
class Targets:
    """The stack under test: its four entry points, a caller's identity token, and the pacing it streams at."""

    name: str
    api_url: str
    token_endpoint: str
    openai_base_url: str
    stream_base_url: str
    identity_token: str
    # Seconds between streamed chunks when the target's upstream is known to pace them (the local
    # stand-in); None for a real Behest, whose pace is the model's.
    chunk_delay: Optional[float] = None
    model: Optional[str] = None
    # The server-to-server URL (output ServiceBaseUrl; absent when the stack lists no trusted role).
    service_base_url: Optional[str] = None
    # How to get credentials of a trusted role's session (botocore Credentials, region): make dev's own, or STS.
    service_session: Optional[Callable[[], tuple[Any, str]]] = None


def stack_name(environ: Mapping[str, str]) -> Optional[str]:
    return next((environ[name] for name in STACK_VARIABLES if environ.get(name)), None)


def target_name(environ: Mapping[str, str]) -> str:
    """`local` or `deployed`, as chosen by the environment."""
    chosen = environ.get(TARGET_VARIABLE, "").strip().lower()
    if not chosen:
        return "deployed" if stack_name(environ) else "local"
    if chosen not in TARGETS:
        raise ValueError(f"{TARGET_VARIABLE}={chosen!r}: expected one of {', '.join(TARGETS)}")
    return chosen


def deployed_targets(environ: Mapping[str, str],
                     outputs_of: Optional[Callable[[str], dict[str, str]]] = None) -> Targets:
    """The entry points of the deployed stack, read from its CloudFormation Outputs (`outputs_of`, for tests)."""
    stack = stack_name(environ)
    if not stack:
        raise TargetUnavailable("deployed target: set STACK_NAME to the name of the deployed stack")
    identity_token = environ.get(TOKEN_VARIABLE, "").strip()
    if not identity_token:
        raise TargetUnavailable(f"deployed target: set {TOKEN_VARIABLE} to an identity token of a test user "
                                f"of the identity provider stack {stack} trusts")
    outputs = (outputs_of or stack_outputs)(stack)
    missing = [name for name in OUTPUTS if not outputs.get(name)]
    if missing:
        raise TargetUnavailable(f"deployed target: stack {stack} has no output {', '.join(missing)} "
                                "(deployed from an older template.yaml?)")
    return Targets(
        name="deployed",
        api_url=outputs["ApiUrl"].rstrip("/"),
        token_endpoint=outputs["TokenEndpoint"],
        openai_base_url=outputs["OpenAIBaseUrl"].rstrip("/"),
        stream_base_url=outputs["StreamBaseUrl"].rstrip("/"),
        identity_token=identity_token,
        model=environ.get(MODEL_VARIABLE) or None,
        service_base_url=(outputs.get(SERVICE_OUTPUT) or "").rstrip("/") or None,
        service_session=lambda: assumed_service_role(environ),
    )


def service_target(targets: Targets) -> tuple[str, Any, str]:
    """The server-to-server URL, a trusted session's credentials and the region; TargetUnavailable says what lacks."""
    if targets.service_base_url is None:
        raise TargetUnavailable(f"server-to-server front: the stack has no {SERVICE_OUTPUT} output "
                                "(deployed without TrustedServiceRoleArns)")
    assert targets.service_session is not None
    credentials, region = targets.service_session()
    return targets.service_base_url, credentials, region


def assumed_service_role(environ: Mapping[str, str]) -> tuple[Any, str]:
    """A session of the role BEHEST_TEST_SERVICE_ROLE names, assumed with the ambient AWS credentials."""
    role = environ.get(SERVICE_ROLE_VARIABLE, "").strip()
    if not role:
        raise TargetUnavailable(f"server-to-server front: set {SERVICE_ROLE_VARIABLE} to a role of the stack's "
                                "TrustedServiceRoleArns that these AWS credentials may assume")
    import boto3
    from botocore.config import Config
    from botocore.credentials import Credentials
    from botocore.exceptions import BotoCoreError, ClientError

    session = boto3.session.Session()
    region = session.region_name or os.environ.get("AWS_REGION") or ""
    try:
        sts = session.client("sts", region_name=region or None, config=Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS,
            retries={"total_max_attempts": 1}))
        found = sts.assume_role(RoleArn=role, RoleSessionName="behest-post-deploy-check")["Credentials"]
    except (BotoCoreError, ClientError) as e:
        raise TargetUnavailable(f"server-to-server front: cannot assume {role}: {e}") from e
    return Credentials(found["AccessKeyId"], found["SecretAccessKey"], found["SessionToken"]), region


@functools.cache
def deployed_stack() -> Targets:
    """The deployed target of this process's environment, resolved once (describe_stacks is not free)."""
    return deployed_targets(os.environ)


def stack_outputs(stack: str) -> dict[str, str]:
    """`describe_stacks` Outputs as {OutputKey: OutputValue}; any AWS failure becomes TargetUnavailable."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        session = boto3.session.Session()
        # Checked before any call: without credentials botocore would fail only when it came to sign one.
        if session.get_credentials() is None:
            raise TargetUnavailable(f"deployed target: no AWS credentials to read stack {stack}'s outputs "
                                    "(AWS_PROFILE, AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, …)")
        # botocore reads AWS_DEFAULT_REGION and the profile; AWS_REGION is what the AWS CLI v2 and CI runners set.
        region = session.region_name or os.environ.get("AWS_REGION")
        if not region:
            raise TargetUnavailable(f"deployed target: no AWS region for stack {stack} "
                                    "(set AWS_REGION or AWS_DEFAULT_REGION)")
        cloudformation = session.client("cloudformation", region_name=region, config=Config(
            connect_timeout=CONNECT_TIMEOUT_SECONDS, read_timeout=READ_TIMEOUT_SECONDS,
            retries={"total_max_attempts": 1}))
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except (BotoCoreError, ClientError) as e:
        raise TargetUnavailable(f"deployed target: cannot read stack {stack}'s outputs: {e}") from e
    if not stacks:
        raise TargetUnavailable(f"deployed target: no stack named {stack}")
    return {output["OutputKey"]: output["OutputValue"] for output in stacks[0].get("Outputs", [])}

"""Fixtures of the reliability suite: AWS credentials for boto3, one stand-in Behest gateway per module."""

from __future__ import annotations

from typing import Iterator

import pytest

from devstack.standin import StandinGateway
from tests.reliability.suite import API_KEY
from tests.support import KID, PROJECT_ID, ROTATED_KID, TENANT_ID, public_key


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_SESSION_TOKEN": "testing"}.items():
        monkeypatch.setenv(name, value)


@pytest.fixture(scope="module")
def standin() -> Iterator[StandinGateway]:
    """The stand-in Behest gateway, knowing both committed tenant keys and the suite's API key."""
    gateway = StandinGateway()
    gateway.register_key(KID, public_key("tenant"))
    gateway.register_key(ROTATED_KID, public_key("tenant_rotated"))
    gateway.register_api_key(API_KEY, TENANT_ID, PROJECT_ID)
    with gateway:
        yield gateway


@pytest.fixture
def clean_standin(standin: StandinGateway) -> Iterator[StandinGateway]:
    """The module's stand-in with no pending fault and no records."""
    standin.clear_faults()
    standin.clear_records()
    yield standin
    standin.clear_faults()

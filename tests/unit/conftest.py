"""The template, as written and as CloudFormation sees it after the SAM transform, shared by the template tests."""

from __future__ import annotations

from typing import Any

import pytest

from tests.unit.test_template import load_sam, transform


@pytest.fixture(scope="module")
def sam() -> dict[str, Any]:
    return load_sam()


@pytest.fixture(scope="module")
def cfn(sam: dict[str, Any]) -> dict[str, Any]:
    return transform(sam)


@pytest.fixture(scope="module")
def resources(cfn: dict[str, Any]) -> dict[str, Any]:
    transformed: dict[str, Any] = cfn["Resources"]
    return transformed

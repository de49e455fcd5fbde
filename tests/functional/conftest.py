"""Fixtures the functional tests share."""

from __future__ import annotations

from typing import Iterator

import pytest

from devstack.standin import StandinGateway
from tests.support import KID, public_key


@pytest.fixture(scope="module")
def standin() -> Iterator[StandinGateway]:
    """The stand-in Behest gateway on loopback, knowing the committed tenant key (a module may define its own)."""
    gateway = StandinGateway()
    gateway.register_key(KID, public_key("tenant"))
    with gateway:
        yield gateway

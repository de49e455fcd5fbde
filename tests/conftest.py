"""Shared fixtures (helpers live in tests/support.py)."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from tests.support import CapturedTelemetry, FakeContext, load_event


@pytest.fixture
def telemetry() -> CapturedTelemetry:
    return CapturedTelemetry()


@pytest.fixture
def context() -> FakeContext:
    return FakeContext()


@pytest.fixture
def event_named() -> Callable[[str], dict[str, Any]]:
    return load_event


@pytest.fixture
def clock() -> Iterator[list[float]]:
    """A settable monotonic clock: tests move `clock[0]` forward."""
    yield [1000.0]


@pytest.fixture
def unused_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])

"""Shared fixtures (helpers live in tests/support.py), the --long switch, figures, and suite-wide log hygiene."""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import pytest

from behest_lambda.telemetry import _Output
from tests.figures import ARTIFACT, FigureBook, Figures
from tests.log_hygiene import SCANNER, LeakScanner
from tests.support import CapturedTelemetry, FakeContext, load_event

BOOK = pytest.StashKey[FigureBook]()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true", default=False,
                     help="also run the long reliability, fuzzing and load runs (tests marked `long`)")


def pytest_configure(config: pytest.Config) -> None:
    config.stash[BOOK] = FigureBook()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--long"):
        return
    skip = pytest.mark.skip(reason="long run: add --long")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Scan what each test phase printed (stdout, stderr, log records) for secrets."""
    for name, content in report.sections:
        if name.startswith("Captured") and name.endswith(report.when):
            SCANNER.scan(content, f"{report.nodeid} ({name})")


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    lines = config.stash[BOOK].lines()
    if not lines:
        return
    terminalreporter.write_sep("=", "reliability and security figures")
    for line in lines:
        terminalreporter.write_line(line)
    try:
        ARTIFACT.parent.mkdir(exist_ok=True)
        ARTIFACT.write_text("\n".join(lines) + "\n")
    except OSError:
        pass


@pytest.fixture(scope="session", autouse=True)
def log_hygiene(request: pytest.FixtureRequest) -> Iterator[LeakScanner]:
    """Every line the functions write (their logs, library loggers' and metrics, and all captured output) is scanned."""
    scanner = SCANNER
    original = _Output.write

    def scanned_write(self: _Output, text: str) -> int:
        scanner.scan(text, os.environ.get("PYTEST_CURRENT_TEST", "-"))
        return original(self, text)

    _Output.write = scanned_write  # type: ignore[method-assign]
    yield scanner
    _Output.write = original  # type: ignore[method-assign]
    request.config.stash[BOOK].add(
        "Log hygiene (whole session)",
        f"{scanner.lines} log and output lines scanned; leaks: {len(scanner.leaks)} "
        "(PEM, token eyJ….….…, behest_sk_live_…, committed key lines)",
    )
    if scanner.leaks:
        pytest.fail("secrets in logs or output:\n" + "\n".join(
            f"  {leak.kind} in {leak.where}: {leak.hint}" for leak in scanner.leaks[:20]), pytrace=False)


@pytest.fixture
def figures(request: pytest.FixtureRequest) -> Figures:
    """Record a figure for the terminal summary: figures("Load", "p50 1.2 ms")."""
    return Figures(request.config.stash[BOOK])


@pytest.fixture(scope="session")
def long_run(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--long"))


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
def unused_port() -> Iterator[int]:
    """A loopback port nothing listens on, held for the whole test.

    Bound and never listening: a connection is refused. Released only after the test, so that no
    server another test or make dev starts meanwhile can take it (a port released at once was taken
    by a stand-in once, and the "unreachable" gateway answered).
    """
    import socket

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield int(held.getsockname()[1])

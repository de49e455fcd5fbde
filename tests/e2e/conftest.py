"""Browser fixtures: `make dev`'s stack in a subprocess, headless Chromium."""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from typing import Any, Iterator

import pytest

from tests.e2e.pages import CHROMEDRIVER, CHROMIUM, Stack, call
from tests.support import ROOT


@contextlib.contextmanager
def dev_stack(*args: str) -> Iterator[Stack]:
    """`python -m devstack` (what `make dev` runs) with all ports 0 and `args`, until the block ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "--api-port", "0", "--stream-port", "0", "--identity-port", "0",
         "--behest-port", "0", "--secrets-port", "0", "--service-port", "0", "--chunk-delay", "0.15", *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    assert process.stdout is not None
    banner = []
    for line in process.stdout:
        banner.append(line)
        if "Ctrl-C stops everything" in line:
            break
    text = "".join(banner)
    match = re.search(r"API \(token \+ chat relay\)\s+(\S+)", text)
    assert match, text
    threading.Thread(target=process.stdout.read, daemon=True).start()  # keep the pipe drained
    api = match.group(1)
    config = dict(call("GET", api + "/config.json"))
    try:
        yield Stack(api=api, config=config)
    finally:
        process.terminate()
        process.wait(timeout=15)
        process.stdout.close()


@pytest.fixture(scope="session")
def stack() -> Iterator[Stack]:
    with dev_stack() as started:
        yield started


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium/chromedriver not installed")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # type: ignore[assignment]
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,1000", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the console, failed loads included
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    driver.set_script_timeout(30)
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def standin(stack: Stack) -> Iterator[Stack]:
    """The stack with the stand-in's faults and records cleared before and after the test."""
    stack.reset_standin()
    yield stack
    stack.reset_standin()

"""Every value that reaches a log line is written, whatever it holds: usage records never go missing.

`make dev` runs as a process whose output is a real UTF-8 pipe, as Lambda's is: a lone surrogate
(valid JSON, `"\\ud800"`) cannot be encoded there, and a log write that fails on it used to lose
the line and print a "Logging error" traceback instead.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Iterator

import pytest

from tests.dev_process import DevProcess

FRONTS = ["api", "stream"]
SURROGATE = "\ud800"
CONTROLS = "\x00\x07\x1b[31m\x7f\x85\u2028"
HUGE = "m" * 300_000
HOSTILE_USER = f"eve{SURROGATE}{CONTROLS}"
HOSTILE_MODELS = [f"gpt{SURROGATE}", f"gpt{CONTROLS}", HUGE]
MAX_LOGGED_CHARS = 4096


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    process = DevProcess()
    yield process
    process.stop()


def post(dev: DevProcess, front: str, path: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(dev.urls[front] + path, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            response.read()
            return int(response.status)
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def logged(value: str) -> str:
    """A value as a log line keeps it: whole, or its head with how much was cut."""
    if len(value) <= MAX_LOGGED_CHARS:
        return value
    return value[:MAX_LOGGED_CHARS] + f"…[{len(value) - MAX_LOGGED_CHARS} more characters]"


BODIES = {  # route → a request body naming `model`; json.dumps escapes a lone surrogate as the JSON text \\ud800
    "chat": lambda model: {"model": model, "messages": [{"role": "user", "content": "hi"}]},
    "chat stream": lambda model: {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": True},
    "responses": lambda model: {"model": model, "input": f"hi {SURROGATE}"},
    "embeddings": lambda model: {"model": model, "input": "x"},
}
PATHS = {"chat": "/v1/chat/completions", "chat stream": "/v1/chat/completions", "responses": "/v1/responses",
         "embeddings": "/v1/embeddings"}


@pytest.mark.parametrize("front", FRONTS)
def test_hostile_values_in_every_logged_field_leave_one_json_usage_record_each(dev: DevProcess, front: str) -> None:
    headers = {"Authorization": f"Bearer {dev.identity_token(HOSTILE_USER)}", "Content-Type": "application/json"}
    before = len(dev.records("usage"))
    asked: list[tuple[str, str]] = []

    for model in HOSTILE_MODELS:
        for kind, body in BODIES.items():
            assert post(dev, front, PATHS[kind], json.dumps(body(model)).encode(), headers) == 200
            asked.append((kind.split()[0], model))

    records = dev.wait_for_records("usage", before + len(asked))[before:]
    assert [(r["route"], r["model_requested"]) for r in records] == [(route, logged(m)) for route, m in asked]
    for record in records:
        assert record["user_id"] == HOSTILE_USER and record["outcome"] == "ok"
        assert len(record["model"]) <= 128
    assert not [line for line in dev.lines if "Logging error" in line or "Traceback" in line]


@pytest.mark.parametrize("front", FRONTS)
def test_hostile_headers_and_paths_are_refused_and_their_log_lines_written(dev: DevProcess, front: str) -> None:
    token = dev.identity_token(HOSTILE_USER)
    before = len(dev.records("request refused"))
    body = json.dumps({"messages": [{"role": "user", "content": "hi"}]}).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    statuses = [
        post(dev, front, "/v1/chat/completions", body, {**headers, "X-Session-Id": "s\x1b[2J\x07é"}),
        post(dev, front, "/v1/%ED%A0%80%00" + "x" * 5000, body, headers),
        post(dev, front, "/v1/chat/completions", b'{"messages": [{"role": "user"}], "model": 7, "x": "\\ud800"}',
             headers),
    ]

    assert statuses == [400, 404, 400]
    refused = dev.wait_for_records("request refused", before + 3)[before:]
    assert [r["status"] for r in refused] == statuses
    assert not [line for line in dev.lines if "Logging error" in line or "Traceback" in line]

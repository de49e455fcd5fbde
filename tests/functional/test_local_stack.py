"""`make dev`'s stack as a new user meets it: started as a process, used over HTTP, stopped with Ctrl-C."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from typing import Any, Iterator

import pytest

from tests.support import ROOT


def post(url: str, body: Any, token: str | None = None) -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture(scope="module")
def dev_stack() -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "devstack", "--api-port", "0", "--stream-port", "0", "--identity-port", "0",
         "--behest-port", "0", "--secrets-port", "0", "--chunk-delay", "0"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    banner: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        banner.append(line)
        if "Ctrl-C stops everything" in line:
            break
    text = "".join(banner)
    urls = {
        "api": re.search(r"API \(token \+ chat relay\)\s+(\S+)", text),
        "identity": re.search(r"identity provider\s+(\S+)", text),
        "stream": re.search(r"streaming chat relay\s+(\S+)", text),
    }
    assert all(urls.values()), text
    yield process, {name: match.group(1) for name, match in urls.items() if match}
    if process.poll() is None:
        process.kill()
    process.wait(timeout=15)
    process.stdout.close()


def test_the_dev_stack_mints_and_relays_for_a_signed_in_dev_user(dev_stack: Any) -> None:
    _, urls = dev_stack
    status, identity = post(urls["identity"] + "/token", {"user": "ada", "plan": "pro"})
    assert status == 200

    status, minted = post(urls["api"] + "/api/behest/token", {}, identity["id_token"])
    assert status == 200 and set(minted) == {"token", "ttl", "sessionId", "expiresAt"}

    status, completion = post(urls["api"] + "/v1/chat/completions",
                              {"messages": [{"role": "user", "content": "hi"}]}, identity["id_token"])
    assert status == 200
    assert completion["choices"][0]["message"]["content"] == "Hello ada! You said: hi"


def test_the_dev_stacks_streaming_route_streams_to_the_openai_sdk(dev_stack: Any) -> None:
    import openai

    _, urls = dev_stack
    identity = post(urls["identity"] + "/token", {"user": "bea"})[1]["id_token"]
    client = openai.OpenAI(base_url=urls["stream"] + "/v1", api_key=identity, max_retries=0)

    with client.chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}], stream=True) as stream:
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)

    assert text == "Hello bea! You said: hi"


def test_the_dev_stack_refuses_a_caller_without_an_identity_token(dev_stack: Any) -> None:
    _, urls = dev_stack

    assert post(urls["api"] + "/api/behest/token", {})[0] == 401


def test_ctrl_c_stops_the_whole_stack_cleanly(dev_stack: Any) -> None:
    process, _ = dev_stack

    process.send_signal(signal.SIGINT)

    assert process.wait(timeout=15) == 0

"""`make dev`'s stack as a new user meets it: started as a process, used over HTTP, stopped with Ctrl-C."""

from __future__ import annotations

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator

import pytest

from devstack.stack import cookie_example, python_example, shell_example
from tests.dev_process import DevProcess
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
         "--behest-port", "0", "--secrets-port", "0", "--service-port", "0", "--chunk-delay", "0"],
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
        "behest": re.search(r"Behest stand-in\s+(\S+)", text),
    }
    assert all(urls.values()), text
    yield process, {**{name: match.group(1) for name, match in urls.items() if match}, "banner": text}
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


def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "devstack" / "web").iterdir() if p.is_file()))
def test_the_dev_stack_serves_every_demo_page_file_with_its_content_type(dev_stack: Any, name: str) -> None:
    _, urls = dev_stack
    status, headers, body = fetch(f"{urls['api']}/{name}")

    assert status == 200
    assert body == (ROOT / "devstack" / "web" / name).read_bytes()
    expected = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}.get(Path(name).suffix)
    assert expected is None or headers["content-type"].startswith(expected)


def test_the_dev_stack_serves_the_demo_page_at_the_root_and_the_browser_client_as_javascript(dev_stack: Any) -> None:
    _, urls = dev_stack
    status, headers, body = fetch(urls["api"] + "/")
    client = ROOT / "client" / "behest-client.js"

    assert (status, headers["content-type"]) == (200, "text/html; charset=utf-8")
    assert body == (ROOT / "devstack" / "web" / "index.html").read_bytes()
    if client.is_file():
        status, headers, body = fetch(urls["api"] + "/behest-client.js")
        assert (status, headers["content-type"], body) == (200, "text/javascript; charset=utf-8", client.read_bytes())


def test_only_the_demo_pages_origin_may_ask_the_identity_provider_for_tokens(dev_stack: Any) -> None:
    _, urls = dev_stack

    def granted(origin: str) -> str | None:
        request = urllib.request.Request(urls["identity"] + "/token", data=b'{"user": "ada"}', method="POST",
                                         headers={"Origin": origin, "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.headers.get("Access-Control-Allow-Origin")

    assert granted(urls["api"]) == urls["api"]
    assert granted("https://evil.example") is None


def test_the_banner_shows_the_new_routes_with_examples(dev_stack: Any) -> None:
    _, urls = dev_stack
    banner = urls["banner"]

    for route in ("GET /v1/models", "POST /v1/embeddings", "POST /v1/responses", "GET /v1/models/{model}"):
        assert route in banner
    for example in ("client.models.list()", "client.embeddings.create(", "client.responses.create("):
        assert example in banner


def banner_block(banner: str, header: str) -> str:
    """The example the banner prints under the line starting `header`, up to the blank line before the next part."""
    after = banner[banner.index(header):].split("\n", 1)[1]
    return after[:after.index("\n\nCtrl-C") if header.startswith("Python") else after.index("\n\n")] + "\n"


def test_the_banners_python_example_runs_pasted_into_the_interactive_interpreter(dev_stack: Any) -> None:
    _, urls = dev_stack
    snippet = banner_block(urls["banner"], "Python, with the OpenAI SDK")

    # Piped into `python -i`, as into a terminal's python3: a paste the interactive interpreter refuses fails here.
    pasted = subprocess.run([sys.executable, "-i", "-q"], input=snippet, capture_output=True, text=True, timeout=60,
                            check=False)

    assert "Error" not in pasted.stderr and "Traceback" not in pasted.stderr, pasted.stderr
    assert pasted.stdout.splitlines() == [
        "['behest-default', 'behest-mini', 'behest-embed']", "16", "Hello ada! You said: hi",
        "Hello ada! You said: hi", "Hello ada! You said: hi"]


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs curl and bash")
def test_the_banners_shell_example_prints_each_answer_on_its_own_line(dev_stack: Any) -> None:
    _, urls = dev_stack
    script = banner_block(urls["banner"], "Try it in a shell")

    ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)

    lines = [line for line in ran.stdout.splitlines() if line]
    whole = [json.loads(line) for line in lines[:6]]  # mint, chat, models, embeddings, responses, completions
    assert set(whole[0]) == {"token", "ttl", "sessionId", "expiresAt"}
    assert whole[1]["object"] == "chat.completion" and whole[4]["object"] == "response"
    assert whole[5]["object"] == "text_completion"
    assert lines[6].startswith("data: {") and lines[-1].startswith("data: {")


def test_the_readme_shows_the_banners_examples_for_the_default_ports() -> None:
    readme = (ROOT / "README.md").read_text()
    api, idp, stream = "http://127.0.0.1:3000", "http://127.0.0.1:3100", "http://127.0.0.1:3001"

    assert f"```sh\n{shell_example(api, idp, stream)}```" in readme
    assert f"```python\n{python_example(idp, stream)}```" in readme
    assert cookie_example(api, idp) in readme


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs curl and bash")
@pytest.mark.parametrize("idp", ["clerk", "supabase"])
def test_the_banners_cookie_example_mints_with_the_providers_session_cookie(idp: str) -> None:
    stack = DevProcess("--idp", idp)
    try:
        script = banner_block(stack.banner, "By the ").split("must be allowed):\n", 1)[1]

        ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)
    finally:
        stack.stop()

    assert set(json.loads(ran.stdout)) == {"token", "ttl", "sessionId", "expiresAt"}, ran.stdout + ran.stderr


def test_malformed_http_to_the_dev_stacks_api_gets_json_not_a_traceback(dev_stack: Any) -> None:
    _, urls = dev_stack
    host, port = urls["api"].removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: ten\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()

    assert response.status == 400
    assert json.loads(body) == {"message": "Content-Length must be one non-negative whole number"}


def test_a_taken_port_is_named_with_its_flag_when_the_stack_cannot_start() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        started = subprocess.run(
            [sys.executable, "-m", "devstack", "--api-port", "0", "--stream-port", str(port), "--identity-port", "0",
             "--behest-port", "0", "--secrets-port", "0", "--service-port", "0"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)

    assert started.returncode == 1
    assert f"port {port} (--stream-port) is taken" in started.stderr, started.stderr
    assert "Traceback" not in started.stderr


def test_the_readmes_flags_paragraph_names_every_flag_of_make_dev_and_no_other() -> None:
    shown = subprocess.run([sys.executable, "-m", "devstack", "--help"], cwd=ROOT, capture_output=True, text=True,
                           timeout=60, check=True).stdout
    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index("\nFlags ("):].split("\n\n", 1)[0]

    flags = set(re.findall(r"--[a-z0-9-]+", shown)) - {"--help"}
    assert set(re.findall(r"`(--[a-z0-9-]+)", paragraph)) == flags


def test_the_readmes_streaming_example_runs_with_a_stream_url_and_an_identity_token(dev_stack: Any) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("\n## Streaming"):readme.index("\n## Server-to-server")]
    (example,) = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    _, urls = dev_stack
    _, identity = post(urls["identity"] + "/token", {"user": "ada"})
    environment = {**os.environ,
                   "STREAM_BASE_URL": urls["stream"] + "/v1", "IDENTITY_TOKEN": identity["id_token"]}

    ran = subprocess.run([sys.executable, "-c", example], env=environment, capture_output=True, text=True, timeout=60,
                         check=False)

    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == "Hello ada! You said: hi\n"


@pytest.mark.skipif(shutil.which("curl") is None or shutil.which("bash") is None, reason="needs curl and bash")
def test_the_readmes_failure_examples_show_upstream_auth_failed_and_a_responses_error_event(dev_stack: Any) -> None:
    _, urls = dev_stack
    readme = (ROOT / "README.md").read_text()
    faults = re.search(r"To see the failure answers.*?```sh\n(.*?)```", readme, re.DOTALL)
    assert faults
    local = {"http://127.0.0.1:8787": urls["behest"], "http://127.0.0.1:3000": urls["api"],
             "http://127.0.0.1:3001": urls["stream"]}
    sign_in = banner_block(urls["banner"], "Try it in a shell").splitlines()[:2]  # TOKEN=$(…), two lines
    script = "\n".join([*sign_in, faults.group(1)])
    for default, here in local.items():
        script = script.replace(default, here)

    ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, check=False)

    lines = [line for line in ran.stdout.splitlines() if line]
    assert json.loads(lines[1])["error"]["code"] == "upstream_auth_failed"
    assert lines[-2] == "event: error"
    assert json.loads(lines[-1].removeprefix("data: "))["code"] == "upstream_error"


# Last: it stops the module's stack.
def test_ctrl_c_stops_the_whole_stack_cleanly(dev_stack: Any) -> None:
    process, _ = dev_stack

    process.send_signal(signal.SIGINT)

    assert process.wait(timeout=15) == 0

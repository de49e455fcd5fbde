"""client/README.md's copy-paste example, run in Chromium against `make dev`'s stack with the local values it names."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.e2e.pages import Stack, open_page, skip_without_chromium, text_of, wait_for
from tests.support import ROOT

skip_without_chromium()

CLIENT_README = (ROOT / "client" / "README.md").read_text()
# What the README's local values point at under make dev's default ports, and where the stack says each piece is.
DEFAULT_ORIGINS = {"http://127.0.0.1:3000": "apiUrl", "http://127.0.0.1:8787": "behestUrl",
                   "http://127.0.0.1:3001": "relayUrl", "http://127.0.0.1:3100": "identityUrl"}

# The README's script as a module the page runs: `auth.getIdToken()` is the page's sign-in at the local provider.
RUN_EXAMPLE = """
const [script, identityUrl, done] = arguments;
document.getElementById("answer")?.remove();
document.body.insertAdjacentHTML("beforeend", '<div id="answer"></div>');
window.auth = {
  getIdToken: async () => (await (await fetch(identityUrl + "/token",
    { method: "POST", body: JSON.stringify({ user: "ada", plan: "pro" }) })).json()).id_token,
};
const element = document.createElement("script");
element.type = "module";
element.textContent = script;
document.body.append(element);
done(true);
"""


def example_for(stack: Stack, via: str) -> str:
    """The README's example script with the local values the README gives for `make dev`, on this stack's ports."""
    script = re.search(r'<script type="module">\n(.*?)</script>', CLIENT_README, re.S)
    assert script, "client/README.md has no module script example"
    local = dict(re.findall(r'`(tokenUrl|behestUrl|relayUrl): "([^"]+)"`', CLIENT_README))
    text = script.group(1)
    for option, deployed in re.findall(r'^\s*(tokenUrl|behestUrl|relayUrl): ("[^"]+")', text, re.M):
        value = local[option]
        for default, key in DEFAULT_ORIGINS.items():
            value = value.replace(default, stack.config[key])
        text = text.replace(deployed, json.dumps(value))
    assert 'via: "direct"' in text
    return text.replace('via: "direct"', f'via: "{via}"')


@pytest.mark.parametrize("via", ["direct", "relay"])
def test_the_client_readmes_example_streams_an_answer_with_the_local_values_it_gives(
        stack: Stack, browser: Any, via: str) -> None:
    open_page(browser, stack.page)
    browser.get_log("browser")  # what the page logged before the example

    browser.execute_async_script(RUN_EXAMPLE, example_for(stack, via), stack.config["identityUrl"])

    answer = wait_for(browser, lambda d: text_of(d, "answer").endswith("slowly.") and text_of(d, "answer"))
    assert answer == "Hello ada! You said: Count to five slowly."
    logged = wait_for(browser, lambda d: [entry["message"] for entry in d.get_log("browser")] or None)
    assert any("completion_tokens" in line or "Object" in line for line in logged), logged
    assert not [line for line in logged if "error" in line.lower()], logged

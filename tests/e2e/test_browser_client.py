"""client/behest-client.js in Chromium: SSE parsing, chat streams, errors, token refreshes, against fakes and the stack."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.pages import Stack, open_page, skip_without_chromium

skip_without_chromium()

HARNESS = (Path(__file__).parent / "client_harness.js").read_text()


def run(driver: Any, script: str) -> Any:
    """Run `script` (an async function body) in the page with the module loaded; its return value, or what it threw."""
    wrapped = ("const done = arguments[arguments.length - 1];\n(async () => {\n" + HARNESS + script
               + "\n})().then(done, (e) => done({ pageThrew: String(e && e.stack || e) }));")
    result = driver.execute_async_script(wrapped)
    if isinstance(result, dict) and "pageThrew" in result:
        pytest.fail("the page threw: " + result["pageThrew"])
    return result


@pytest.fixture
def page(stack: Stack, browser: Any) -> Any:
    open_page(browser, stack.page)
    return browser


def test_server_sent_events_read_the_same_however_the_bytes_are_split(page: Any) -> None:
    result = run(page, r"""
      const text = "\uFEFF: comment\r\ndata: caf\u00e9 \u2615\r\ndata:second line\r\n\r\nevent: note\rid: 7\rdata: x\r\r"
                 + "retry: 10\nunknown: y\ndata\n\ndata: [DONE]\n\ndata: cut off";
      const bytes = encoder.encode(text);
      const read = async (parts) => {
        const out = [];
        for await (const event of m.readEvents(body(parts))) out.push(event);
        return out;
      };
      const reference = await read([bytes]);
      const mismatches = [];
      for (let i = 0; i <= bytes.length; i++) {
        for (let j = i; j <= bytes.length; j += 3) {
          const got = await read([bytes.slice(0, i), bytes.slice(i, j), bytes.slice(j)]);
          if (JSON.stringify(got) !== JSON.stringify(reference)) mismatches.push([i, j]);
        }
      }
      return { reference, mismatches };
    """)

    assert result["reference"] == [
        {"event": "message", "data": "café ☕\nsecond line", "id": None},
        {"event": "note", "data": "x", "id": "7"},
        {"event": "message", "data": "", "id": "7"},
        {"event": "message", "data": "[DONE]", "id": "7"},
    ]
    assert result["mismatches"] == []


def test_a_chat_stream_yields_the_text_deltas_and_keeps_the_final_usage(page: Any) -> None:
    result = run(page, r"""
      const usage = { prompt_tokens: 3, completion_tokens: 2, total_tokens: 5 };
      const backend = fakeBackend({ chat: () => sse([
        chunk({ role: "assistant", content: "" }), ": keep-alive\r\n\r\n", chunk({ content: "Hel" }).replace(/\n/g, "\r\n"),
        chunk({ content: "lo" }).slice(0, 20), chunk({ content: "lo" }).slice(20),
        "data: " + JSON.stringify({ id: "c1", choices: [{ index: 0, delta: {}, finish_reason: "stop" }] }) + "\n\n",
        "data: " + JSON.stringify({ id: "c1", model: "m1", choices: [], usage }) + "\n\n", DONE,
      ]) });
      const client = new m.BehestClient({ tokenUrl: "https://app.test/api/behest/token", behestUrl: "https://behest.test/",
                                          identityToken: () => "id-1", ttl: 60, fetch: backend.fetch });
      const request = { model: "m1", messages: [{ role: "user", content: "hi" }] };
      const stream = client.chat(request, { includeUsage: true });
      const { deltas, error } = await drain(stream);
      client.close();
      return { deltas, error, text: stream.text, usage: stream.usage, finish: stream.finishReason, model: stream.model,
               request, calls: backend.calls };
    """)

    assert result.get("error") is None, result["error"]
    assert result["deltas"] == ["Hel", "lo"]
    assert result["text"] == "Hello"
    assert result["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    assert (result["finish"], result["model"]) == ("stop", "m1")
    assert result["request"] == {"model": "m1", "messages": [{"role": "user", "content": "hi"}]}, "the caller's body changed"
    assert result["calls"]["token"] == [{"ttl": 60}]
    (sent,) = result["calls"]["chat"]
    assert sent["url"] == "https://behest.test/v1/chat/completions"
    assert sent["headers"]["Authorization"] == "Bearer tok-1"
    assert sent["headers"]["X-Session-Id"] == "s-1"
    assert sent["body"] == {"model": "m1", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                            "stream_options": {"include_usage": True}}


def test_an_error_event_in_the_stream_throws_a_typed_error_with_status_and_code(page: Any) -> None:
    result = run(page, r"""
      const backend = fakeBackend({ chat: () => sse([chunk({ content: "Hi" }),
        'data: {"error":{"message":"slow down","type":"rate_limit_error","code":"rate_limited"}}\n\n', DONE]) });
      const client = fakeClient(backend);
      const outcome = await drain(client.chat(hi));
      client.close();
      return outcome;
    """)

    assert result["deltas"] == ["Hi"]
    assert result["error"] == {"name": "BehestError", "message": "slow down", "status": 429, "code": "rate_limited",
                               "type": "rate_limit_error", "retryAfter": None}


def test_a_stream_that_ends_before_done_throws_rather_than_passing_for_a_whole_answer(page: Any) -> None:
    result = run(page, r"""
      const backend = fakeBackend({ chat: () => sse([chunk({ content: "Hal" })]) });
      const client = fakeClient(backend);
      const outcome = await drain(client.chat(hi));
      client.close();
      return outcome;
    """)

    assert result["deltas"] == ["Hal"]
    assert result["error"]["code"] == "stream_incomplete"


def test_an_http_error_carries_status_code_and_retry_after(page: Any) -> None:
    result = run(page, r"""
      const backend = fakeBackend({ chat: () => json(429, { error: { code: "budget_exceeded", message: "over budget" } },
                                                       { "retry-after": "3", "x-trace-id": "t-9" }) });
      const client = fakeClient(backend);
      const outcome = await drain(client.chat(hi));
      client.close();
      return outcome;
    """)

    assert result["error"] == {"name": "BehestError", "message": "429 over budget", "status": 429, "code": "budget_exceeded",
                               "type": None, "retryAfter": 3}


def test_callers_that_need_a_token_at_once_share_one_fetch_and_a_refresh_continues_the_session(page: Any) -> None:
    result = run(page, r"""
      let now = 1000000;
      const backend = fakeBackend({ tokenDelay: 50 });
      const client = fakeClient(backend, { ttl: 60, now: () => now, autoRefresh: false });
      const first = await Promise.all([1, 2, 3, 4, 5].map(() => client.token()));
      now += 55000;  // inside the default 6 s margin of a 60 s token
      const second = await Promise.all([1, 2, 3].map(() => client.token()));
      client.close();
      return { first: first.map((t) => t.token), second: second.map((t) => t.token), bodies: backend.calls.token };
    """)

    assert result["first"] == ["tok-1"] * 5
    assert result["second"] == ["tok-2"] * 3
    assert result["bodies"] == [{"ttl": 60}, {"ttl": 60, "sessionId": "s-1"}]


def test_two_requests_refused_with_401_at_once_cause_one_refresh(page: Any) -> None:
    result = run(page, r"""
      const backend = fakeBackend({ tokenDelay: 20, chat: (auth) => auth === "Bearer tok-1"
        ? json(401, { error: { code: "token_expired", message: "expired" } }) : sse([chunk({ content: "ok" }), DONE]) });
      const client = fakeClient(backend);
      await client.token();
      const reasons = [];
      client.addEventListener("token", (e) => reasons.push(e.detail.reason));
      const outcomes = await Promise.all([1, 2].map(() => drain(client.chat(hi))));
      client.close();
      return { outcomes, reasons, tokens: backend.calls.token.length,
               auth: backend.calls.chat.map((c) => c.headers.Authorization) };
    """)

    assert result["outcomes"] == [{"deltas": ["ok"]}, {"deltas": ["ok"]}]
    assert result["reasons"] == ["unauthorized"]
    assert result["tokens"] == 2
    assert sorted(result["auth"]) == ["Bearer tok-1", "Bearer tok-1", "Bearer tok-2", "Bearer tok-2"]


def test_a_failed_refresh_ahead_of_expiry_keeps_the_valid_token_and_says_why(page: Any) -> None:
    result = run(page, r"""
      let now = 1000000;
      const backend = fakeBackend({ tokenFailures: [0, 503, 503] });
      const client = fakeClient(backend, { now: () => now, autoRefresh: false });
      const errors = [];
      client.addEventListener("error", (e) => errors.push(e.detail.error.code));
      await client.token();
      now += 56000;
      const kept = await client.token();
      now += 5000;  // past expiry: no token to fall back on
      let thrown = null;
      try { await client.token(); } catch (e) { thrown = errorOf(e); }
      client.close();
      return { kept: kept.token, errors, thrown, calls: backend.calls.token.length };
    """)

    assert result["kept"] == "tok-1"
    assert result["errors"] == ["signing_key_unavailable"]
    assert (result["thrown"]["status"], result["thrown"]["code"]) == (503, "signing_key_unavailable")
    assert result["calls"] == 3


def test_the_relay_path_asks_for_a_new_identity_token_once_after_a_401(stack: Stack, page: Any) -> None:
    result = run(page, r"""
      const { config, idToken } = await signedIn();
      let asked = 0;
      const client = new m.BehestClient({ tokenUrl: config.apiUrl + "/api/behest/token", relayUrl: config.relayUrl,
                                          identityToken: () => (asked++ === 0 ? "not-a-token" : idToken) });
      const stream = client.chat({ messages: [{ role: "user", content: "hi" }] }, { via: "relay", includeUsage: true });
      const outcome = await drain(stream);
      const session = client.sessionId;
      client.close();
      return { ...outcome, asked, text: stream.text, usage: stream.usage, session };
    """)

    assert result.get("error") is None, result["error"]
    assert result["text"] == "Hello grace! You said: hi"
    assert result["asked"] == 2
    assert result["usage"]["completion_tokens"] == 5
    assert result["session"], "the relay's x-session-id was not kept"


def test_an_abort_signal_stops_a_browser_direct_stream_with_an_abort_error(stack: Stack, page: Any) -> None:
    result = run(page, r"""
      const { config, idToken } = await signedIn();
      const client = new m.BehestClient({ tokenUrl: config.apiUrl + "/api/behest/token", behestUrl: config.behestUrl,
                                          identityToken: () => idToken });
      const controller = new AbortController();
      const deltas = [];
      let error = null;
      const started = performance.now();
      try {
        for await (const d of client.chat({ messages: [{ role: "user", content: "one two three four five six" }] },
                                          { signal: controller.signal })) {
          deltas.push(d);
          if (deltas.length === 2) controller.abort();
        }
      } catch (e) { error = errorOf(e); }
      client.close();
      return { deltas, error, ms: performance.now() - started };
    """)

    assert result["error"]["name"] == "AbortError"
    assert result["deltas"] == ["Hello ", "grace! "]

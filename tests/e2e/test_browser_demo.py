"""The demo chat in headless Chromium against `make dev`'s stack: streaming on both paths, history, token refreshes."""

from __future__ import annotations

import re
from typing import Any

from selenium.webdriver.common.by import By

from tests.e2e.pages import (
    Stack,
    call,
    current_token,
    jti_of,
    open_page,
    page_server_for,
    screenshot,
    sign_in,
    skip_without_chromium,
    text_of,
    wait_for,
)

skip_without_chromium()

FIRST = "Count to five slowly."
SECOND = "Now backwards please."
# The stand-in answers "Hello <user>! You said: <last user message>", a word per chunk.
LONG = " ".join(["one", "two", "three", "four", "five"] * 5)


def answer_for(message: str) -> str:
    return f"Hello ada! You said: {message}"


def words(text: str) -> int:
    return len(text.split())


def answers(driver: Any) -> list[str]:
    return [str(e.text) for e in driver.find_elements(By.CSS_SELECTOR, ".turn.assistant .content")]


def metas(driver: Any) -> list[str]:
    return [str(e.text) for e in driver.find_elements(By.CSS_SELECTOR, ".turn.assistant .meta")]


def send(driver: Any, message: str, via: str = "direct") -> None:
    driver.find_element(By.ID, f"route-{via}").click()
    box = driver.find_element(By.ID, "message")
    box.clear()
    box.send_keys(message)
    driver.find_element(By.ID, "send").click()


def watch_answer(driver: Any, index: int, expected: str, timeout: float = 30) -> list[str]:
    """Every text the answer at `index` showed until the chat status said done; the last is the whole answer."""
    seen: list[str] = []

    def finished(d: Any) -> bool:
        texts = answers(d)
        if len(texts) > index:
            seen.append(texts[index])
        status = text_of(d, "chat-status")
        assert "failed" not in status, status
        return status.startswith("done") and len(texts) > index

    wait_for(driver, finished, timeout=timeout)
    seen.append(answers(driver)[index])
    return seen


def assert_streamed(seen: list[str], expected: str) -> None:
    assert seen[-1] == expected
    partial = [t for t in seen if t and t != expected]
    assert partial, "the answer never showed a partial text: it did not stream"
    assert all(expected.startswith(t) for t in partial)


def refreshes(driver: Any) -> list[dict[str, Any]]:
    return list(driver.execute_script("return window.demo.refreshes"))


def test_the_chat_streams_answers_browser_direct_and_through_the_relay_and_keeps_the_history(
        standin: Stack, browser: Any) -> None:
    open_page(browser, standin.page)
    sign_in(browser)
    assert text_of(browser, "token-status").startswith("Token for session "), text_of(browser, "token-status")
    session = current_token(browser)["sessionId"]

    send(browser, FIRST, via="direct")
    direct = watch_answer(browser, 0, answer_for(FIRST))
    send(browser, SECOND, via="relay")
    relay = watch_answer(browser, 1, answer_for(SECOND))
    shot = screenshot(browser, "browser-demo.png")

    assert_streamed(direct, answer_for(FIRST))
    assert_streamed(relay, answer_for(SECOND))
    # The second turn carried the whole history: the stand-in counts every message's words as prompt tokens.
    first_meta, second_meta = metas(browser)
    prompt_1, completion_1 = words(FIRST), words(answer_for(FIRST))
    prompt_2, completion_2 = prompt_1 + completion_1 + words(SECOND), words(answer_for(SECOND))
    assert re.fullmatch(rf"direct · first token \d+ ms · {prompt_1} prompt \+ {completion_1} completion = "
                        rf"{prompt_1 + completion_1} tokens", first_meta), first_meta
    assert re.fullmatch(rf"relay · first token \d+ ms · {prompt_2} prompt \+ {completion_2} completion = "
                        rf"{prompt_2 + completion_2} tokens", second_meta), second_meta
    direct_request, relayed_request = standin.chat_requests()
    assert [m["role"] for m in relayed_request["body"]["messages"]] == ["user", "assistant", "user"]
    # One session on both paths: the page's X-Session-Id, forwarded by the relay.
    assert direct_request["headers"]["x-session-id"] == session
    assert relayed_request["headers"]["x-session-id"] == session
    assert relayed_request["claims"]["sid"] == session
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_token_is_refreshed_on_a_timer_before_it_expires_while_an_answer_streams(
        standin: Stack, browser: Any) -> None:
    # A 60 s token refreshed 57 s before it expires: the timer fires about 3 s after sign-in.
    open_page(browser, standin.page + "/?ttl=60&margin=57")
    sign_in(browser)
    first = current_token(browser)
    assert first["ttl"] == 60

    send(browser, LONG)
    statuses_at_refresh: list[str] = []

    def refreshed_while_streaming(d: Any) -> bool:
        status = text_of(d, "chat-status")
        if refreshes(d):
            statuses_at_refresh.append(status)
            return True
        return False

    wait_for(browser, refreshed_while_streaming, timeout=10)
    seen = watch_answer(browser, 0, answer_for(LONG))
    screenshot(browser, "browser-demo-refreshed.png")

    assert statuses_at_refresh[0].startswith(("streaming", "waiting")), statuses_at_refresh
    assert refreshes(browser)[0]["reason"] == "timer"
    assert_streamed(seen, answer_for(LONG))
    refreshed = current_token(browser)
    assert refreshed["token"] != first["token"]
    assert refreshed["sessionId"] == first["sessionId"]
    assert "error" not in browser.find_element(By.ID, "token-status").get_attribute("class")
    assert browser.execute_script("return window.demo.errors") == []

    send(browser, FIRST)
    watch_answer(browser, 1, answer_for(FIRST))
    earlier, later = standin.chat_requests()
    assert earlier["claims"]["jti"] == jti_of(first["token"])
    assert later["claims"] is not None and later["claims"]["jti"] != jti_of(first["token"])
    assert later["claims"]["sid"] == earlier["claims"]["sid"] == first["sessionId"]


def test_a_token_about_to_expire_is_refreshed_before_the_request_that_would_use_it(
        standin: Stack, browser: Any) -> None:
    # ttl 60 s, default margin 10 % (6 s): moving the page's clock 56 s on leaves 4 s, inside the margin.
    open_page(browser, standin.page + "/?ttl=60")
    sign_in(browser)
    first = current_token(browser)
    browser.execute_script("window.demo.clock.advance(56)")
    wait_for(browser, lambda d: text_of(d, "token-expiry") in ("0:04", "0:03"))
    assert refreshes(browser) == []

    send(browser, FIRST)
    watch_answer(browser, 0, answer_for(FIRST))

    assert [r["reason"] for r in refreshes(browser)] == ["expiring"]
    (request,) = standin.chat_requests()
    used = current_token(browser)
    assert request["claims"]["jti"] == jti_of(used["token"]) != jti_of(first["token"])
    assert request["claims"]["sid"] == first["sessionId"]
    assert text_of(browser, "token-expiry") in ("1:00", "0:59", "0:58")


def test_a_401_from_behest_triggers_exactly_one_refresh_and_one_retry(standin: Stack, browser: Any) -> None:
    open_page(browser, standin.page)
    sign_in(browser)
    first = current_token(browser)
    standin.inject({"kind": "status", "status": 401, "code": "token_expired", "path": "chat"})

    send(browser, FIRST)
    seen = watch_answer(browser, 0, answer_for(FIRST))

    assert_streamed(seen, answer_for(FIRST))
    assert [r["reason"] for r in refreshes(browser)] == ["unauthorized"]
    refused, retried = standin.chat_requests()
    assert refused["claims"]["jti"] == jti_of(first["token"])
    assert retried["claims"]["jti"] == jti_of(current_token(browser)["token"]) != jti_of(first["token"])
    assert retried["headers"]["x-session-id"] == first["sessionId"]


def test_a_second_401_is_shown_to_the_user_after_the_one_retry(standin: Stack, browser: Any) -> None:
    open_page(browser, standin.page)
    sign_in(browser)
    standin.inject(*[{"kind": "status", "status": 401, "code": "token_expired", "path": "chat"}] * 3)

    send(browser, FIRST)
    wait_for(browser, lambda d: "failed" in text_of(d, "chat-status"))

    assert text_of(browser, "chat-status") == "Direct call failed: 401 injected fault: status 401 (token_expired)"
    assert len(standin.chat_requests()) == 2
    assert [r["reason"] for r in refreshes(browser)] == ["unauthorized"]


def test_the_stop_button_cancels_the_stream_and_keeps_what_arrived(standin: Stack, browser: Any) -> None:
    open_page(browser, standin.page)
    sign_in(browser)

    send(browser, LONG, via="relay")
    wait_for(browser, lambda d: answers(d) and len(answers(d)[0].split()) >= 3)
    browser.find_element(By.ID, "stop").click()
    wait_for(browser, lambda d: text_of(d, "chat-status").startswith("stopped"))

    kept = answers(browser)[0]
    assert kept and answer_for(LONG).startswith(kept) and kept != answer_for(LONG)
    assert metas(browser) == ["relay · stopped"]
    # Nothing half-answered joins the history.
    assert browser.execute_script("return window.demo.history") == []


def test_a_page_on_a_disallowed_origin_is_refused_by_cors(stack: Stack, browser: Any) -> None:
    # A signed-in user's identity token, got outside the browser: the page could not get one itself.
    id_token = call("POST", stack.config["identityUrl"] + "/token", {"user": "ada", "plan": "pro"})["id_token"]
    server = page_server_for(stack.config)
    try:
        open_page(browser, server.url + "/")
        sign_in(browser)
        sign_in_status = text_of(browser, "sign-in-status")
        refused = browser.execute_async_script("""
          const [idToken, done] = arguments;
          (async () => {
            const { BehestClient } = await import("/behest-client.js");
            const config = window.demo.config;
            const client = new BehestClient({ tokenUrl: config.apiUrl + "/api/behest/token", relayUrl: config.relayUrl,
                                              identityToken: () => idToken });
            const outcomes = [];
            try { await client.token(); } catch (e) { outcomes.push([e.name, e.code, e.message]); }
            try {
              for await (const delta of client.chat({ messages: [{ role: "user", content: "hi" }] }, { via: "relay" })) {
                outcomes.push(["delta", delta]);
              }
            } catch (e) { outcomes.push([e.name, e.code, e.message]); }
            return outcomes;
          })().then(done, (e) => done(String(e)));
        """, id_token)
    finally:
        server.stop()

    assert sign_in_status == "Sign-in failed: Failed to fetch"
    assert refused == [["BehestError", "network_error", "Failed to fetch"]] * 2


def test_the_demo_page_loads_without_a_failed_request_not_even_for_a_favicon(browser: Any, stack: Stack) -> None:
    browser.get_log("browser")  # what earlier tests left
    open_page(browser, stack.page)
    # The favicon is asked for once the page has loaded: by the time a fresh navigation is under way, it has been.
    browser.get("about:blank")

    failures = [entry["message"] for entry in browser.get_log("browser") if "Failed to load resource" in entry["message"]]
    assert failures == []

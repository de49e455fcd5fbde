"""The demo page and behest-client.js in Chromium with `make dev --idp supabase|clerk`: a session cookie, or a bearer.

Same-origin dev setup: the page is served by the local API, writes the provider's session cookie
on that origin as the provider's browser SDK does (@supabase/ssr: `sb-127-auth-token`, a `base64-`
JSON session, https://github.com/supabase/ssr; clerk-js: `__session`, the session token,
https://clerk.com/docs/guides/sessions/manual-jwt-verification), and the client calls the token
endpoint and the streaming relay with `credentials: "include"` and no Authorization header.
"""

from __future__ import annotations

from typing import Any, Iterator

import jwt
import pytest
from selenium.webdriver.common.by import By

from devstack.identity.shapes import shape_for
from tests.e2e.conftest import dev_stack
from tests.e2e.pages import Stack, call, current_token, open_page, sign_in, skip_without_chromium, text_of, wait_for

skip_without_chromium()


@pytest.fixture(scope="module", params=["supabase", "clerk"])
def cookie_stack(request: pytest.FixtureRequest) -> Iterator[Stack]:
    with dev_stack("--idp", request.param) as started:
        yield started


def user_id(stack: Stack, user: str = "ada") -> str:
    return shape_for(stack.config["identityProvider"]).user_id(user)


@pytest.fixture(autouse=True)
def signed_out(browser: Any) -> Iterator[None]:
    """No cookie of one test (or of this host's other stacks: cookies ignore ports) reaches the next."""
    yield
    browser.delete_all_cookies()


def minted_user(driver: Any) -> str:
    return str(jwt.decode(current_token(driver)["token"], options={"verify_signature": False})["uid"])


def relay_chat(driver: Any, message: str) -> None:
    driver.find_element(By.ID, "route-relay").click()
    box = driver.find_element(By.ID, "message")
    box.clear()
    box.send_keys(message)
    driver.find_element(By.ID, "send").click()
    wait_for(driver, lambda d: text_of(d, "chat-status").startswith(("done", "Relay call failed")), timeout=30)


def test_the_page_signs_in_by_the_providers_session_cookie_and_streams_through_the_relay(cookie_stack: Stack,
                                                                                     browser: Any) -> None:
    call("DELETE", cookie_stack.behest + "/_standin/requests")
    open_page(browser, cookie_stack.page + "/?auth=cookie")
    sign_in(browser)

    assert text_of(browser, "token-status").startswith("Token for session "), text_of(browser, "token-status")
    cookie = cookie_stack.config["cookieName"]
    assert f"by session cookie {cookie}" in text_of(browser, "sign-in-status")
    written = browser.execute_script("return document.cookie")
    assert f"{cookie}=" + ("base64-" if cookie.startswith("sb-") else "eyJ") in written
    assert minted_user(browser) == user_id(cookie_stack)

    relay_chat(browser, "hi by cookie")
    assert text_of(browser, "chat-status").startswith("done"), text_of(browser, "chat-status")
    relayed = [r for r in call("GET", cookie_stack.behest + "/_standin/requests")["requests"]
               if r["path"] == "/v1/chat/completions"]
    assert [r["claims"]["uid"] for r in relayed] == [user_id(cookie_stack)]


def test_without_the_cookie_the_cookie_mode_client_has_no_identity_to_send(cookie_stack: Stack, browser: Any) -> None:
    open_page(browser, cookie_stack.page + "/?auth=cookie")
    sign_in(browser)
    assert text_of(browser, "token-status").startswith("Token for session ")

    # The page signs out of the provider: its cookie is gone, and the client never sent a bearer token.
    outcome = browser.execute_async_script("""
      const done = arguments[arguments.length - 1];
      document.cookie = arguments[0] + "=; Path=/; Max-Age=0";
      window.demo.client.refresh().then(() => done("refreshed"), (e) => done(e.status + " " + e.code));
    """, cookie_stack.config["cookieName"])

    assert outcome.startswith("401 "), outcome


def test_the_same_page_signs_in_by_bearer_token_as_before(cookie_stack: Stack, browser: Any) -> None:
    browser.delete_all_cookies()
    open_page(browser, cookie_stack.page)
    sign_in(browser)

    assert text_of(browser, "token-status").startswith("Token for session "), text_of(browser, "token-status")
    assert "by bearer token" in text_of(browser, "sign-in-status")
    assert cookie_stack.config["cookieName"] not in browser.execute_script("return document.cookie")
    assert minted_user(browser) == user_id(cookie_stack)


def test_the_client_refuses_an_identity_token_in_cookie_mode(cookie_stack: Stack, browser: Any) -> None:
    open_page(browser, cookie_stack.page)
    message = browser.execute_async_script("""
      const done = arguments[arguments.length - 1];
      import("/behest-client.js").then((m) => {
        try {
          new m.BehestClient({ tokenUrl: "/api/behest/token", auth: "cookie", identityToken: () => "x" });
          done("accepted");
        } catch (e) {
          done(e.name + ": " + e.message);
        }
      });
    """)

    assert message.startswith("TypeError: "), message

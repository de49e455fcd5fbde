"""The tool-call round trip in events/ (chat with tools, then the follow-up carrying the tool's result), through the
RelayFunction to the stand-in Behest, as `sam local invoke` would run them."""

from __future__ import annotations

import json
from typing import Any

from behest_lambda.app import Service
from behest_lambda.routes import RELAY_FUNCTION
from devstack.standin import CHAT_PATH, StandinGateway, schema_instance, tools_reply_text, usage_for
from tests.support import CapturedTelemetry, load_event, sign_env

USER = "user-42"  # the events' verified `sub`


def relayed(standin: StandinGateway, name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The RelayFunction's answer to events/<name>.json, and the usage records it wrote."""
    telemetry = CapturedTelemetry("relay")
    service = Service.from_env(RELAY_FUNCTION, telemetry, sign_env(BEHEST_BASE_URL=standin.url))
    response = service.handle(load_event(name))
    assert response["statusCode"] == 200, response["body"]
    return json.loads(response["body"]), [r for r in telemetry.logs() if r.get("message") == "usage"]


def test_the_chat_with_tools_event_gets_a_tool_call_that_fits_the_offered_schema(standin: StandinGateway) -> None:
    offered = json.loads(load_event("chat_completion_tools")["body"])["tools"][0]["function"]

    answer, [record] = relayed(standin, "chat_completion_tools")

    [choice] = answer["choices"]
    [call] = choice["message"]["tool_calls"]
    assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
    assert (call["function"]["name"], json.loads(call["function"]["arguments"])) == \
        (offered["name"], schema_instance(offered["parameters"]))
    assert (record["input_tokens"], record["output_tokens"]) == \
        (answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"])
    assert answer["usage"] == usage_for(CHAT_PATH, standin.requests[-1].body, USER)


def test_the_tool_result_event_gets_a_plain_answer_that_uses_the_result(standin: StandinGateway) -> None:
    messages = json.loads(load_event("chat_completion_tool_result")["body"])["messages"]

    answer, [record] = relayed(standin, "chat_completion_tool_result")

    [choice] = answer["choices"]
    assert [m["role"] for m in messages][-2:] == ["assistant", "tool"]
    assert choice["finish_reason"] == "stop" and "tool_calls" not in choice["message"]
    assert choice["message"]["content"] == tools_reply_text(USER, [messages[-1]["content"]])
    assert (record["input_tokens"], record["output_tokens"]) == \
        (answer["usage"]["prompt_tokens"], answer["usage"]["completion_tokens"])

"""The stand-in's turns: when it calls tools (which, how many), when it answers text, and in which format."""

from __future__ import annotations

import json
from typing import Any

import pytest

from devstack.standin import Refusal, chat_turn, reply_text, responses_turn, schema_instance, tools_reply_text

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
           "required": ["city", "unit"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}
CHAT_TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": WEATHER}},
              {"type": "function", "function": {"name": "time", "parameters": TIME}}]
RESPONSES_TOOLS = [{"type": "function", "name": "weather", "parameters": WEATHER, "strict": True},
                   {"type": "function", "name": "time", "parameters": TIME, "strict": False}]
ASK = [{"role": "user", "content": "weather and time in Oslo?"}]


def chat(**body: Any) -> dict[str, Any]:
    return {"messages": ASK, "tools": CHAT_TOOLS, **body}


def names(body: dict[str, Any]) -> list[str]:
    return [call.name for call in chat_turn(body, "ada").calls]


def test_every_offered_tool_is_called_at_once_unless_parallel_calls_are_off() -> None:
    assert names(chat()) == ["weather", "time"]
    assert names(chat(tool_choice="required")) == ["weather", "time"]
    assert names(chat(parallel_tool_calls=False)) == ["weather"]


def test_tools_of_other_types_are_offered_but_never_called() -> None:
    custom = {"type": "custom", "custom": {"name": "grammar"}}

    assert names(chat(tools=[custom, *CHAT_TOOLS])) == ["weather", "time"]
    assert names(chat(tools=[custom])) == []


def test_a_named_tool_is_called_alone_and_none_calls_nothing() -> None:
    assert names(chat(tool_choice={"type": "function", "function": {"name": "time"}})) == ["time"]
    assert chat_turn(chat(tool_choice="none"), "ada") == (reply_text("ada", ASK[0]["content"]), [])


def test_the_arguments_are_the_schema_instance_of_the_tools_parameters() -> None:
    weather, time = chat_turn(chat(), "ada").calls

    assert json.loads(weather.arguments) == schema_instance(WEATHER) == {"city": "city", "unit": "c"}
    assert json.loads(time.arguments) == {"zone": "zone"}


def test_call_ids_are_distinct_and_repeat_for_a_repeated_request() -> None:
    first, again = chat_turn(chat(), "ada").calls, chat_turn(chat(), "ada").calls

    assert first == again and len({call.call_id for call in first}) == 2
    assert all(call.call_id.startswith("call_") for call in first)


def with_results(*results: str, called: tuple[str, ...] = ("weather", "time")) -> list[dict[str, Any]]:
    calls = [{"id": f"call_{n}", "type": "function", "function": {"name": name, "arguments": "{}"}}
             for n, name in enumerate(called)]
    return [*ASK, {"role": "assistant", "content": None, "tool_calls": calls},
            *({"role": "tool", "tool_call_id": f"call_{n}", "content": result} for n, result in enumerate(results))]


def test_tool_results_get_a_text_answer_that_uses_them() -> None:
    turn = chat_turn(chat(messages=with_results("sunny, 21", "14:05")), "ada")

    assert turn == (tools_reply_text("ada", ["sunny, 21", "14:05"]), [])
    assert turn.content == "Hello ada! The tools said: sunny, 21 | 14:05"


def test_after_tool_results_a_required_choice_calls_the_tools_not_called_yet() -> None:
    body = chat(messages=with_results("sunny", called=("weather",)), tool_choice="required")

    assert names(body) == ["time"]


def test_once_every_tool_has_been_called_a_new_question_calls_them_all_and_required_results_the_first() -> None:
    asked_again = [*with_results("sunny", "14:05"), {"role": "assistant", "content": "ok"},
                   {"role": "user", "content": "and tomorrow?"}]

    assert names(chat(messages=asked_again)) == ["weather", "time"]
    assert names(chat(messages=with_results("sunny", "14:05"), tool_choice="required")) == ["weather"]


def test_a_json_schema_format_answers_its_schema_instance_and_json_object_wraps_the_text() -> None:
    schema_format = {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER, "strict": True}}

    assert json.loads(chat_turn({"messages": ASK, "response_format": schema_format}, "ada").content or "") == \
        schema_instance(WEATHER)
    assert json.loads(chat_turn({"messages": ASK, "response_format": {"type": "json_object"}}, "ada").content or "") == \
        {"reply": reply_text("ada", ASK[0]["content"])}


def test_the_responses_api_calls_its_function_tools_and_answers_their_outputs() -> None:
    first = responses_turn({"input": ASK, "tools": RESPONSES_TOOLS + [{"type": "web_search"}]}, "ada")
    items = [*ASK, *({"type": "function_call", "call_id": call.call_id, "name": call.name,
                      "arguments": call.arguments} for call in first.calls),
             *({"type": "function_call_output", "call_id": call.call_id, "output": f"out {n}"}
               for n, call in enumerate(first.calls))]
    second = responses_turn({"input": items, "tools": RESPONSES_TOOLS}, "ada")

    assert [call.name for call in first.calls] == ["weather", "time"]
    assert second == (tools_reply_text("ada", ["out 0", "out 1"]), [])


def test_a_responses_text_format_answers_its_schema_instance() -> None:
    body = {"input": "hi", "text": {"format": {"type": "json_schema", "name": "w", "schema": TIME, "strict": True}}}

    assert json.loads(responses_turn(body, "ada").content or "") == {"zone": "zone"}


@pytest.mark.parametrize("body", [
    chat(tool_choice={"type": "function", "function": {"name": "nowhere"}}),
    chat(tool_choice="sometimes"),
    chat(tools={"not": "a list"}),
    chat(tools=[{"type": "function"}]),
    {"messages": ASK, "response_format": {"type": "json_schema", "json_schema": {"name": "no schema"}}},
    {"messages": ASK, "response_format": {"type": "yaml"}},
], ids=["unknown named tool", "unknown choice", "tools not a list", "nameless tool", "no schema", "unknown format"])
def test_malformed_tools_and_formats_are_refused_with_a_400(body: dict[str, Any]) -> None:
    with pytest.raises(Refusal) as refused:
        chat_turn(body, "ada")

    assert refused.value.status == 400

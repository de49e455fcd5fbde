"""Function calling and structured output through `make dev`'s local API (buffered) and its local Function URL
(streamed), as real Python clients use them: openai-py, LangChain, the OpenAI Agents SDK and pydantic-ai.

Each test is one user on one front. Whatever the client does, every request it made reached the
stand-in Behest for that user, and every answer left one usage record whose figures equal the
stand-in's own for that request (`usage_for` of the body it received), streamed or not.
"""

from __future__ import annotations

import json
import time
from typing import Any, Iterator

import openai
import pytest
from pydantic import BaseModel

from devstack.standin import CHAT_PATH, RESPONSES_PATH, schema_instance, usage_for
from tests.dev_process import DevProcess
from tests.support import standin_figures

FRONTS = ["api", "stream"]
ROUTES = {CHAT_PATH: "chat", RESPONSES_PATH: "responses"}
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
           "required": ["city", "days"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"], "additionalProperties": False}
CHAT_TOOLS: list[Any] = [{"type": "function", "function": {"name": "weather", "parameters": WEATHER, "strict": True}},
                         {"type": "function", "function": {"name": "time", "parameters": TIME, "strict": True}}]
RESPONSES_TOOLS: list[Any] = [{"type": "function", "name": "weather", "parameters": WEATHER, "strict": True},
                              {"type": "function", "name": "time", "parameters": TIME, "strict": True}]
ASK: list[Any] = [{"role": "user", "content": "weather and time in Oslo"}]


class Weather(BaseModel):
    city: str
    days: int


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    process = DevProcess()
    yield process
    process.stop()


class Caller:
    """One user on one front: a token for them, and what their requests left upstream and in the usage log."""

    def __init__(self, dev: DevProcess, front: str, user: str) -> None:
        self.dev = dev
        self.user = f"{user}-{front}"
        self.base_url = dev.urls[front] + "/v1"
        self.token = dev.identity_token(self.user)

    def openai(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=self.token, max_retries=0, timeout=20)

    def async_openai(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(base_url=self.base_url, api_key=self.token, max_retries=0, timeout=20)

    def upstream(self) -> list[dict[str, Any]]:
        """The answered requests the stand-in received for this user, in order."""
        return [r for r in self.dev.standin_requests() if r["method"] == "POST" and r["claims"]["uid"] == self.user]

    def records(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """This user's usage records, once there are `count` (each is printed just after its answer has gone out)."""
        deadline = time.monotonic() + timeout
        while True:
            records = [r for r in self.dev.records("usage") if r["user_id"] == self.user]
            if len(records) >= count or time.monotonic() > deadline:
                return records
            time.sleep(0.02)

    def assert_usage_records_match_the_stand_in(self, count: int) -> list[dict[str, Any]]:
        """Exactly `count` requests went upstream, each left one usage record with the stand-in's figures."""
        upstream = self.upstream()
        assert len(upstream) == count
        records = self.records(count)
        expected = [(ROUTES[r["path"]], r["body"].get("stream") is True, *standin_figures(r["path"], r["body"], self.user))
                    for r in upstream]
        assert [(r["route"], r["streamed"], r["input_tokens"], r["output_tokens"]) for r in records] == expected
        assert all((r["outcome"], r["status"]) == ("ok", 200) for r in records)
        return upstream


def calls_of(message: Any) -> list[tuple[str, Any]]:
    return [(call.function.name, json.loads(call.function.arguments)) for call in message.tool_calls or []]


EXPECTED_CALLS = [("weather", schema_instance(WEATHER)), ("time", schema_instance(TIME))]


# --- openai-py ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("front", FRONTS)
def test_openai_py_chat_tool_calls_whole_and_streamed_and_the_tool_result_turn(dev: DevProcess, front: str) -> None:
    caller = Caller(dev, front, "chat-tools")
    sdk = caller.openai()

    whole = sdk.chat.completions.create(model="behest-default", messages=ASK, tools=CHAT_TOOLS)
    with sdk.chat.completions.stream(model="behest-default", messages=ASK, tools=CHAT_TOOLS,
                                     stream_options={"include_usage": True}) as stream:
        streamed = stream.get_final_completion()
    follow_up = [*ASK, whole.choices[0].message.model_dump(exclude_none=True),
                 *({"role": "tool", "tool_call_id": call.id, "content": f"{call.function.name} fine"}  # type: ignore[union-attr]
                   for call in whole.choices[0].message.tool_calls or [])]
    answer = sdk.chat.completions.create(model="behest-default", messages=follow_up, tools=CHAT_TOOLS)
    # No include_usage: the relay still asks Behest for usage, records it, and drops it on the way back.
    plain = list(sdk.chat.completions.create(model="behest-default", messages=ASK, tools=CHAT_TOOLS, stream=True))

    assert calls_of(whole.choices[0].message) == calls_of(streamed.choices[0].message) == EXPECTED_CALLS
    assert [c.id for c in whole.choices[0].message.tool_calls or []] == \
        [c.id for c in streamed.choices[0].message.tool_calls or []]
    assert whole.choices[0].finish_reason == streamed.choices[0].finish_reason == "tool_calls"
    assert answer.choices[0].message.content == f"Hello {caller.user}! The tools said: weather fine | time fine"
    assert all(chunk.usage is None for chunk in plain) and plain[-1].choices[0].finish_reason == "tool_calls"
    upstream = caller.assert_usage_records_match_the_stand_in(4)
    assert streamed.usage is not None
    assert streamed.usage.model_dump(exclude_none=True) == usage_for(CHAT_PATH, upstream[1]["body"], caller.user)


@pytest.mark.parametrize("front", FRONTS)
def test_openai_py_parses_structured_chat_and_responses_answers_into_pydantic_models(
    dev: DevProcess, front: str,
) -> None:
    caller = Caller(dev, front, "parse")
    sdk = caller.openai()

    chat = sdk.chat.completions.parse(model="behest-default", messages=ASK, response_format=Weather)
    with sdk.chat.completions.stream(model="behest-default", messages=ASK, response_format=Weather) as stream:
        streamed_chat = stream.get_final_completion()
    response = sdk.responses.parse(model="behest-default", input="weather?", text_format=Weather)
    with sdk.responses.stream(model="behest-default", input="weather?", text_format=Weather) as events:
        streamed_response = events.get_final_response()

    expected = Weather(city="city", days=7)
    assert chat.choices[0].message.parsed == streamed_chat.choices[0].message.parsed == expected
    assert response.output_parsed == streamed_response.output_parsed == expected
    upstream = caller.assert_usage_records_match_the_stand_in(4)
    assert upstream[0]["body"]["response_format"]["type"] == "json_schema"
    assert upstream[2]["body"]["text"]["format"]["type"] == "json_schema"


@pytest.mark.parametrize("front", FRONTS)
def test_openai_py_responses_function_calls_whole_and_streamed_then_function_call_outputs(
    dev: DevProcess, front: str,
) -> None:
    caller = Caller(dev, front, "responses-tools")
    sdk = caller.openai()

    whole = sdk.responses.create(model="behest-default", input=ASK, tools=RESPONSES_TOOLS)
    with sdk.responses.stream(model="behest-default", input=ASK, tools=RESPONSES_TOOLS) as stream:
        kinds = [event.type for event in stream]
        streamed = stream.get_final_response()
    calls = [item for item in whole.output if item.type == "function_call"]
    follow_up = [*ASK, *(item.model_dump(exclude_none=True) for item in calls),
                 *({"type": "function_call_output", "call_id": c.call_id, "output": f"{c.name} fine"} for c in calls)]
    answer = sdk.responses.create(model="behest-default", input=follow_up, tools=RESPONSES_TOOLS)

    assert [(c.name, json.loads(c.arguments)) for c in calls] == EXPECTED_CALLS
    assert [(i.name, i.arguments, i.call_id) for i in streamed.output if i.type == "function_call"] == \
        [(c.name, c.arguments, c.call_id) for c in calls]
    assert kinds.count("response.function_call_arguments.done") == 2 and kinds[-1] == "response.completed"
    assert answer.output_text == f"Hello {caller.user}! The tools said: weather fine | time fine"
    caller.assert_usage_records_match_the_stand_in(3)

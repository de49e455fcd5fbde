"""Function calling and structured output through `make dev`'s local API (buffered) and its local Function URL
(streamed), as real Python clients use them: openai-py, LangChain, the OpenAI Agents SDK and pydantic-ai.

Each test is one user on one front. Whatever the client does, every request it made reached the
stand-in Behest for that user, and every answer left one usage record whose figures equal the
stand-in's own for that request (`usage_for` of the body it received), streamed or not.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, Iterator

import openai
import pytest

from devstack.standin import CHAT_PATH, RESPONSES_PATH, schema_instance, usage_for
from tests.dev_process import DevProcess
from tests.support import standin_figures
from tests.tools import ASK, CHAT_TOOLS, RESPONSES_TOOLS, TIME, WEATHER, Weather

FRONTS = ["api", "stream"]
ROUTES = {CHAT_PATH: "chat", RESPONSES_PATH: "responses"}


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


# --- LangChain ---------------------------------------------------------------------------------------------------

def weather(city: str, days: int) -> str:
    """The weather in a city for the next days."""
    return f"{city}: sunny for {days} days"


def time_in(zone: str) -> str:
    """The time in a zone."""
    return f"{zone}: 14:05"


TOOL_ARGUMENTS = [("weather", {"city": "city", "days": 7}), ("time_in", {"zone": "zone"})]


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_langchain_binds_tools_streams_their_calls_and_reads_structured_output(
    dev: DevProcess, front: str, api: str,
) -> None:
    from langchain_core.messages import AIMessageChunk, HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    caller = Caller(dev, front, f"langchain-{api}")
    llm = ChatOpenAI(model="behest-default", base_url=caller.base_url, api_key=caller.token,  # type: ignore[arg-type]
                     max_retries=0, timeout=20, use_responses_api=api == "responses")
    bound = llm.bind_tools([weather, time_in])
    ask = [HumanMessage(ASK[0]["content"])]

    called = bound.invoke(ask)
    streamed: Any = None
    for chunk in bound.stream(ask):
        streamed = chunk if streamed is None else streamed + chunk
    results = [ToolMessage(content=f"{call['name']} fine", tool_call_id=call["id"]) for call in called.tool_calls]  # type: ignore[attr-defined]
    answer = bound.invoke([*ask, called, *results])
    structured = llm.with_structured_output(Weather).invoke(ask)

    assert [(c["name"], c["args"]) for c in called.tool_calls] == TOOL_ARGUMENTS  # type: ignore[attr-defined]
    assert isinstance(streamed, AIMessageChunk) and [(c["name"], c["args"]) for c in streamed.tool_calls] == TOOL_ARGUMENTS
    assert answer.text == f"Hello {caller.user}! The tools said: weather fine | time_in fine"
    assert structured == Weather(city="city", days=7)
    upstream = caller.assert_usage_records_match_the_stand_in(4)
    assert [r["path"] for r in upstream] == [CHAT_PATH if api == "chat" else RESPONSES_PATH] * 4


# --- the OpenAI Agents SDK ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("api", ["responses", "chat"])
def test_an_openai_agent_runs_its_function_tools_whole_and_streamed(dev: DevProcess, front: str, api: str) -> None:
    from agents import (
        Agent,
        OpenAIChatCompletionsModel,
        OpenAIResponsesModel,
        Runner,
        function_tool,
        set_tracing_disabled,
    )

    set_tracing_disabled(True)  # traces would go to OpenAI's servers: nothing leaves loopback
    caller = Caller(dev, front, f"agents-{api}")
    client = caller.async_openai()
    model = (OpenAIResponsesModel if api == "responses" else OpenAIChatCompletionsModel)(
        model="behest-default", openai_client=client)
    agent = Agent(name="forecaster", instructions="Answer with the tools.", model=model,
                  tools=[function_tool(weather), function_tool(time_in)])

    async def both() -> tuple[Any, Any, list[str]]:
        whole = await Runner.run(agent, ASK[0]["content"])
        streamed = Runner.run_streamed(agent, ASK[0]["content"])
        kinds = [event.type async for event in streamed.stream_events()]
        await client.close()
        return whole, streamed, kinds

    whole, streamed, kinds = asyncio.run(both())

    reply = f"Hello {caller.user}! The tools said: city: sunny for 7 days | zone: 14:05"
    assert whole.final_output == streamed.final_output == reply
    assert "run_item_stream_event" in kinds and "raw_response_event" in kinds
    upstream = caller.assert_usage_records_match_the_stand_in(4)
    assert [r["body"].get("stream") is True for r in upstream] == [False, False, True, True]


@pytest.mark.parametrize("front", FRONTS)
def test_an_openai_agent_with_an_output_type_answers_in_its_schema_after_its_tools(dev: DevProcess, front: str) -> None:
    from agents import Agent, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled

    set_tracing_disabled(True)
    caller = Caller(dev, front, "agents-output")
    client = caller.async_openai()
    agent = Agent(name="forecaster", model=OpenAIResponsesModel(model="behest-default", openai_client=client),
                  tools=[function_tool(weather)], output_type=Weather)

    async def run() -> Any:
        result = await Runner.run(agent, ASK[0]["content"])
        await client.close()
        return result.final_output

    output = asyncio.run(run())

    assert output == Weather(city="city", days=7)
    first, second = caller.assert_usage_records_match_the_stand_in(2)
    assert first["body"]["text"]["format"]["type"] == second["body"]["text"]["format"]["type"] == "json_schema"
    assert second["body"]["input"][-1]["type"] == "function_call_output"


# --- pydantic-ai ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("api", ["chat", "responses"])
def test_a_pydantic_ai_agent_calls_its_tools_then_returns_its_output_type(dev: DevProcess, front: str, api: str) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel, OpenAIResponsesModel
    from pydantic_ai.providers.openai import OpenAIProvider

    caller = Caller(dev, front, f"pydantic-ai-{api}")
    client = caller.async_openai()
    model = (OpenAIChatModel if api == "chat" else OpenAIResponsesModel)(
        "behest-default", provider=OpenAIProvider(openai_client=client))
    # One call a turn: the tools run first, the output tool (final_result) last, when the others are done.
    agent = Agent(model, output_type=Weather, tools=[weather, time_in], model_settings={"parallel_tool_calls": False})

    async def both() -> tuple[Weather, Weather]:
        whole = await agent.run(ASK[0]["content"])
        async with agent.run_stream(ASK[0]["content"]) as streamed:
            output = await streamed.get_output()
        await client.close()
        return whole.output, output

    whole, streamed = asyncio.run(both())

    assert whole == streamed == Weather(city="city", days=7)
    upstream = caller.assert_usage_records_match_the_stand_in(6)
    tools = [r["body"]["tools"] for r in upstream]
    assert all(len(offered) == 3 for offered in tools)


# --- instructor ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("front", FRONTS)
def test_instructor_in_tools_mode_reads_the_model_from_a_named_tool_call_whole_and_streamed(
    dev: DevProcess, front: str,
) -> None:
    import instructor

    caller = Caller(dev, front, "instructor")
    client = instructor.from_openai(caller.openai(), mode=instructor.Mode.TOOLS)

    whole = client.chat.completions.create(model="behest-default", response_model=Weather, messages=ASK, max_retries=0)
    partials = list(client.chat.completions.create_partial(model="behest-default", response_model=Weather,
                                                           messages=ASK, max_retries=0))

    assert whole.model_dump() == partials[-1].model_dump() == {"city": "city", "days": 7}
    assert len(partials) > 1  # filled in as the argument fragments arrived
    upstream = caller.assert_usage_records_match_the_stand_in(2)
    # Tools mode: one tool, the model's schema, named in tool_choice.
    for request in upstream:
        [offered] = request["body"]["tools"]
        assert request["body"]["tool_choice"] == {"type": "function", "function": {"name": offered["function"]["name"]}}

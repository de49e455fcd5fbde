"""The stand-in Behest calls tools and answers in structured formats as OpenAI's API does, whole and streamed,
read by OpenAI's Python SDK straight from the stand-in."""

from __future__ import annotations

import json
from typing import Any, Iterator

import openai
import pytest
from openai.lib.streaming.chat import ChunkEvent

from devstack.standin import CHAT_PATH, RESPONSES_PATH, Fault, StandinGateway, schema_instance, usage_for
from tests.tools import ASK, CHAT_TOOLS, RESPONSES_TOOLS, TIME, WEATHER, Weather

UID = "tess"


@pytest.fixture
def sdk(standin: StandinGateway) -> Iterator[openai.OpenAI]:
    token = standin.mint("tenant", "project", UID)
    with openai.OpenAI(base_url=standin.url + "/v1", api_key=token, max_retries=0, timeout=5) as client:
        yield client


def last_body(standin: StandinGateway) -> dict[str, Any]:
    body: dict[str, Any] = standin.requests[-1].body
    return body


def test_a_chat_answer_calls_every_offered_tool_with_arguments_that_fit_their_schemas(
    sdk: openai.OpenAI, standin: StandinGateway,
) -> None:
    answer = sdk.chat.completions.create(model="m", messages=ASK, tools=CHAT_TOOLS)
    [choice] = answer.choices
    calls = choice.message.tool_calls or []

    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert [(c.type, c.function.name) for c in calls] == [("function", "weather"), ("function", "time")]  # type: ignore[union-attr]
    assert [json.loads(c.function.arguments) for c in calls] == [schema_instance(WEATHER), schema_instance(TIME)]  # type: ignore[union-attr]
    assert answer.usage is not None
    assert answer.usage.model_dump(exclude_none=True) == usage_for(CHAT_PATH, last_body(standin), UID)


def test_a_streamed_chat_answer_carries_the_same_calls_in_indexed_deltas_and_its_usage(
    sdk: openai.OpenAI, standin: StandinGateway,
) -> None:
    whole = sdk.chat.completions.create(model="m", messages=ASK, tools=CHAT_TOOLS)
    chunks = list(sdk.chat.completions.create(model="m", messages=ASK, tools=CHAT_TOOLS, stream=True,
                                              stream_options={"include_usage": True}))
    deltas = [call for chunk in chunks if chunk.choices for call in chunk.choices[0].delta.tool_calls or []]
    built: dict[int, dict[str, str]] = {}
    for delta in deltas:
        slot = built.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
        slot["id"] += delta.id or ""
        slot["name"] += delta.function.name or "" if delta.function else ""
        slot["arguments"] += delta.function.arguments or "" if delta.function else ""

    assert [d.index for d in deltas if d.id] == [0, 1]
    assert all(d.id is None and d.function and d.function.name is None for d in deltas if not d.id)
    assert len(deltas) > 4  # the arguments come in fragments
    assert [{"id": c.id, "name": c.function.name, "arguments": c.function.arguments}  # type: ignore[union-attr]
            for c in whole.choices[0].message.tool_calls or []] == [built[0], built[1]]
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(exclude_none=True) == usage_for(CHAT_PATH, last_body(standin), UID)


def test_the_sdks_stream_helper_assembles_a_streamed_tool_call(sdk: openai.OpenAI) -> None:
    with sdk.chat.completions.stream(model="m", messages=ASK, tools=CHAT_TOOLS, parallel_tool_calls=False) as stream:
        kinds = {event.type for event in stream if not isinstance(event, ChunkEvent)}
        final = stream.get_final_completion()

    assert "tool_calls.function.arguments.done" in kinds
    [call] = final.choices[0].message.tool_calls or []
    assert (call.function.name, json.loads(call.function.arguments)) == ("weather", schema_instance(WEATHER))  # type: ignore[union-attr]


def test_a_role_tool_message_gets_a_plain_answer_that_uses_the_result(sdk: openai.OpenAI) -> None:
    first = sdk.chat.completions.create(model="m", messages=ASK, tools=CHAT_TOOLS, parallel_tool_calls=False)
    message = first.choices[0].message
    [call] = message.tool_calls or []
    follow_up = [*ASK, message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"}]

    second = sdk.chat.completions.create(model="m", messages=follow_up, tools=CHAT_TOOLS)

    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    assert second.choices[0].message.content == f"Hello {UID}! The tools said: sunny, 21 C"


def test_chat_completions_parse_reads_a_json_schema_answer_into_the_model(sdk: openai.OpenAI) -> None:
    parsed = sdk.chat.completions.parse(model="m", messages=ASK, response_format=Weather)

    assert parsed.choices[0].message.parsed == Weather(city="city", days=7)


def test_a_responses_answer_is_function_call_items_and_a_function_call_output_gets_text(
    sdk: openai.OpenAI, standin: StandinGateway,
) -> None:
    first = sdk.responses.create(model="m", input=ASK, tools=RESPONSES_TOOLS)
    calls = [item for item in first.output if item.type == "function_call"]
    assert first.usage is not None
    assert first.usage.model_dump(exclude_none=True) == usage_for(RESPONSES_PATH, last_body(standin), UID)
    follow_up = [*ASK, *(item.model_dump(exclude_none=True) for item in first.output),
                 *({"type": "function_call_output", "call_id": c.call_id, "output": f"{c.name} ok"} for c in calls)]

    second = sdk.responses.create(model="m", input=follow_up, tools=RESPONSES_TOOLS)

    assert [(c.name, json.loads(c.arguments)) for c in calls] == [("weather", schema_instance(WEATHER)),
                                                                   ("time", schema_instance(TIME))]
    assert len({c.call_id for c in calls} | {c.id for c in calls}) == 4
    assert second.output_text == f"Hello {UID}! The tools said: weather ok | time ok"
    assert second.usage is not None
    assert second.usage.model_dump(exclude_none=True) == usage_for(RESPONSES_PATH, last_body(standin), UID)


def test_a_streamed_response_announces_fills_and_closes_each_function_call(sdk: openai.OpenAI) -> None:
    whole = sdk.responses.create(model="m", input=ASK, tools=RESPONSES_TOOLS)
    events = list(sdk.responses.create(model="m", input=ASK, tools=RESPONSES_TOOLS, stream=True))
    kinds = [event.type for event in events]
    completed = events[-1]

    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert kinds.count("response.output_item.added") == kinds.count("response.output_item.done") == 2
    assert kinds.count("response.function_call_arguments.done") == 2 and kinds[-1] == "response.completed"
    for index, item in enumerate(completed.response.output):  # type: ignore[union-attr]
        deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta"
                         and e.output_index == index)
        assert item.type == "function_call" and deltas == item.arguments
    assert [(i.name, i.arguments) for i in completed.response.output] == \
        [(i.name, i.arguments) for i in whole.output]  # type: ignore[union-attr]
    assert completed.response.usage == whole.usage  # type: ignore[union-attr]


def test_responses_parse_reads_a_json_schema_text_format_into_the_model(sdk: openai.OpenAI) -> None:
    parsed = sdk.responses.parse(model="m", input="weather?", text_format=Weather)

    assert parsed.output_parsed == Weather(city="city", days=7)


def test_an_endless_stream_of_function_call_arguments_runs_until_the_client_leaves(
    sdk: openai.OpenAI, standin: StandinGateway,
) -> None:
    standin.inject(Fault("endless", path="responses"))

    with sdk.responses.create(model="m", input=ASK, tools=RESPONSES_TOOLS, stream=True) as stream:
        kinds = [event.type for _, event in zip(range(12), stream, strict=False)]

    assert kinds[2] == "response.output_item.added"
    assert set(kinds[3:]) == {"response.function_call_arguments.delta"}

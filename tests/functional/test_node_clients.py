"""openai-node and the Vercel AI SDK, as a Node app uses them, through `make dev`'s local API and local Function URL.

`tests/node/clients.mjs` runs every scenario against both fronts in one Node process and prints one
JSON line each (what the client got, what it sent, when); these tests read those lines and what the
stand-in Behest recorded meanwhile. Clients and stand-in stamp times with the same wall clock, so a
scenario's upstream requests are those received inside its time window, and a stream's arrival
times compare with the moment the stand-in received the request. `make node-clients` installs the
pinned npm packages (tests/node/package-lock.json).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any, Iterator, Optional

import pytest

from devstack.standin import schema_instance, tools_reply_text, usage_for
from tests.dev_process import DevProcess
from tests.support import ROOT, standin_figures

NODE_DIR = ROOT / "tests" / "node"
SCRIPT = NODE_DIR / "clients.mjs"
CHUNK_DELAY = 0.03
USER = "nadia"
SPOOFED = "mallory"
FRONTS = ["api", "stream"]
RUN_TIMEOUT = 180
LONG_PROMPT = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
SHORT_ANSWER = f"Hello {USER}! You said: hi there"
LONG_ANSWER = f"Hello {USER}! You said: {LONG_PROMPT}"
# Upstream requests each scenario makes: exactly these, once each (no SDK retries, nothing lost).
UPSTREAM_CALLS = {
    "openai.models.list": [("GET", "/v1/models"), ("GET", "/v1/models/behest-default")],
    "openai.models.retrieve-unknown": [("GET", "/v1/models/no-such-model")],
    "openai.embeddings.create": [("POST", "/v1/embeddings")],
    "openai.responses.create": [("POST", "/v1/responses")],
    "openai.responses.stream": [("POST", "/v1/responses")],
    "openai.chat.stream": [("POST", "/v1/chat/completions")],
    "openai.responses.broken-stream": [("POST", "/v1/responses")],
    "openai.chat.broken-stream": [("POST", "/v1/chat/completions")],
    "openai.rate-limit.models": [("GET", "/v1/models")],
    "openai.rate-limit.embeddings": [("POST", "/v1/embeddings")],
    "openai.rate-limit.responses": [("POST", "/v1/responses")],
    "openai.rate-limit.chat": [("POST", "/v1/chat/completions")],
    "ai.responses.generateText": [("POST", "/v1/responses")],
    "ai.responses.streamText": [("POST", "/v1/responses")],
    "ai.chat.generateText": [("POST", "/v1/chat/completions")],
    "ai.chat.streamText": [("POST", "/v1/chat/completions")],
    "ai.responses.broken-stream": [("POST", "/v1/responses")],
    "ai.chat.broken-stream": [("POST", "/v1/chat/completions")],
    "ai.completion.generateText": [("POST", "/v1/completions")],
    "ai.completion.streamText": [("POST", "/v1/completions")],
    "ai.rate-limit.responses": [("POST", "/v1/responses")],
    "ai.rate-limit.chat": [("POST", "/v1/chat/completions")],
    "ai.rate-limit.responses-stream": [("POST", "/v1/responses")],
    "openai.chat.tools": [("POST", "/v1/chat/completions")] * 3,
    "openai.responses.tools": [("POST", "/v1/responses")] * 3,
    "openai.parse": [("POST", "/v1/chat/completions"), ("POST", "/v1/responses")],
    "ai.responses.tools.generateText": [("POST", "/v1/responses")] * 2,
    "ai.responses.tools.streamText": [("POST", "/v1/responses")] * 2,
    "ai.chat.tools.generateText": [("POST", "/v1/chat/completions")] * 2,
    "ai.chat.tools.streamText": [("POST", "/v1/chat/completions")] * 2,
    "ai.responses.object": [("POST", "/v1/responses")],
    "ai.chat.object": [("POST", "/v1/chat/completions")],
}
TOOL_SCENARIOS = sorted(name for name in UPSTREAM_CALLS if ".tools" in name or name.endswith((".parse", ".object")))
AI_TOOLS = ["ai.responses.tools.generateText", "ai.responses.tools.streamText", "ai.chat.tools.generateText",
            "ai.chat.tools.streamText"]
ROUTES = {"/v1/chat/completions": "chat", "/v1/responses": "responses"}
STREAMS = {  # scenario → the arrival type that carries text
    "openai.responses.stream": "response.output_text.delta",
    "openai.chat.stream": "chunk",
    "ai.responses.streamText": "text-delta",
    "ai.chat.streamText": "text-delta",
}
SPOOFING = ["openai.embeddings.create", "openai.responses.create", "openai.responses.stream", "openai.chat.stream",
            "ai.responses.generateText", "ai.responses.streamText", "ai.chat.generateText", "ai.chat.streamText"]


def node_clients_missing() -> Optional[str]:
    """Why the Node clients cannot run here, or None when they can."""
    if shutil.which("node") is None:
        return "node is not installed: the Node client tests need Node 20+ and npm (then `make node-clients`)"
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        return "the Node clients are not installed: run `make node-clients` (needs npm)"
    return None


pytestmark = pytest.mark.skipif(node_clients_missing() is not None, reason=str(node_clients_missing()))


@dataclass(frozen=True)
class NodeRun:
    """Every scenario's result line, by (front, scenario), and every request the stand-in received."""

    results: dict[tuple[str, str], dict[str, Any]]
    upstream: list[dict[str, Any]]
    dev: DevProcess

    def result(self, front: str, scenario: str) -> dict[str, Any]:
        """A scenario's result; it fails the test when the client threw what the scenario did not expect."""
        found = self.results[(front, scenario)]
        assert found["ok"], found["error"]
        return found

    def upstream_of(self, result: dict[str, Any]) -> list[dict[str, Any]]:
        """The requests the stand-in received while the scenario ran."""
        return [r for r in self.upstream if result["started_at"] <= r["received_at"] <= result["ended_at"]]

    def usage_records_of(self, upstream: list[dict[str, Any]], timeout: float = 5.0) -> list[dict[str, Any]]:
        """The usage record of each upstream request, found by the session id the relay minted it under."""
        sessions = [request["headers"]["x-session-id"] for request in upstream]
        deadline = time.monotonic() + timeout
        while True:
            by_session = {r["session_id"]: r for r in self.dev.records("usage") if r.get("session_id") in sessions}
            if len(by_session) == len(sessions) or time.monotonic() > deadline:
                return [by_session[session] for session in sessions if session in by_session]
            time.sleep(0.02)


@pytest.fixture(scope="module")
def run() -> Iterator[NodeRun]:
    dev = DevProcess(chunk_delay=CHUNK_DELAY)
    try:
        fronts = [arg for front in FRONTS for arg in ("--front", f"{front}={dev.urls[front]}")]
        # The token goes in the environment: argv shows in any process list.
        done = subprocess.run(["node", str(SCRIPT), *fronts, "--standin", dev.urls["behest"]],
                              env={**os.environ, "NODE_CLIENTS_TOKEN": dev.identity_token(USER)},
                              cwd=NODE_DIR, capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        lines = [json.loads(line) for line in done.stdout.splitlines()]
        yield NodeRun({(r["front"], r["scenario"]): r for r in lines}, dev.standin_requests(), dev)
    finally:
        dev.stop()


def test_every_scenario_ran_on_both_fronts(run: NodeRun) -> None:
    assert set(run.results) == {(front, scenario) for front in FRONTS for scenario in UPSTREAM_CALLS}


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("scenario", sorted(UPSTREAM_CALLS))
def test_the_stand_in_saw_each_call_once_for_the_verified_user(run: NodeRun, front: str, scenario: str) -> None:
    upstream = run.upstream_of(run.results[(front, scenario)])

    assert [(r["method"], r["path"]) for r in upstream] == UPSTREAM_CALLS[scenario]
    assert all(r["claims"]["uid"] == USER for r in upstream)
    assert all(r["body"]["user"] == USER for r in upstream if r["method"] == "POST")


@pytest.mark.parametrize("front", FRONTS)
def test_openai_node_lists_and_retrieves_models(run: NodeRun, front: str) -> None:
    result = run.result(front, "openai.models.list")

    assert "behest-default" in result["ids"]
    assert result["retrieved"] == {"id": result["ids"][0], "object": "model"}


@pytest.mark.parametrize("front", FRONTS)
def test_an_unknown_model_is_a_typed_not_found_error_in_openai_node(run: NodeRun, front: str) -> None:
    error = run.result(front, "openai.models.retrieve-unknown")["error"]

    assert (error["class"], error["status"], error["code"]) == ("NotFoundError", 404, "model_not_found")


@pytest.mark.parametrize("front", FRONTS)
def test_embeddings_in_openai_nodes_default_encoding_decode_to_floats(run: NodeRun, front: str) -> None:
    result = run.result(front, "openai.embeddings.create")
    upstream = run.upstream_of(result)[0]

    # The SDK asked for base64 on its own and decoded the answer: the relay passed both through intact.
    assert upstream["body"]["encoding_format"] == "base64"
    assert (result["count"], result["dimensions"], result["all_finite_numbers"]) == (1, 16, True)
    assert result["prompt_tokens"] == 2


@pytest.mark.parametrize("front", FRONTS)
def test_a_whole_response_comes_back_to_openai_node_with_policy_applied(run: NodeRun, front: str) -> None:
    result = run.result(front, "openai.responses.create")
    sent = run.upstream_of(result)[0]["body"]

    assert (result["output_text"], result["status"]) == (SHORT_ANSWER, "completed")
    assert result["usage"]["input_tokens"] == 2 and result["usage"]["output_tokens"] == 6
    assert (sent["user"], sent["safety_identifier"], sent["max_output_tokens"]) == (USER, USER, 4096)


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("scenario", sorted(STREAMS))
def test_every_stream_carries_the_whole_answer(run: NodeRun, front: str, scenario: str) -> None:
    result = run.result(front, scenario)

    assert result["text"] == LONG_ANSWER
    assert result.get("error") is None


@pytest.mark.parametrize("front", FRONTS)
def test_openai_node_reads_a_responses_stream_as_named_events(run: NodeRun, front: str) -> None:
    kinds = [a["type"] for a in run.result(front, "openai.responses.stream")["arrivals"]]

    assert kinds[0] == "response.created" and kinds[-1] == "response.completed"
    assert kinds.count("response.output_text.delta") == len(LONG_ANSWER.split(" "))


@pytest.mark.parametrize("scenario", sorted(STREAMS))
def test_the_first_delta_reaches_the_client_before_the_stand_in_sends_its_last_on_the_function_url(
    run: NodeRun, scenario: str,
) -> None:
    result = run.result("stream", scenario)
    deltas = text_arrivals(result, STREAMS[scenario])

    # The stand-in pauses CHUNK_DELAY between frames and sends at least one frame after the last delta,
    # so it cannot send its last frame before this moment; a client holding a delta then got it live.
    last_sent_earliest = run.upstream_of(result)[0]["received_at"] + len(deltas) * CHUNK_DELAY
    assert deltas[0] < last_sent_earliest
    assert deltas[-1] - deltas[0] >= (len(deltas) - 1) * CHUNK_DELAY * 0.5


@pytest.mark.parametrize("scenario", sorted(STREAMS))
def test_the_http_api_delivers_a_stream_only_once_the_stand_in_has_sent_it_all(run: NodeRun, scenario: str) -> None:
    result = run.result("api", scenario)
    deltas = text_arrivals(result, STREAMS[scenario])

    # An HTTP API buffers: nothing reaches the client before the stand-in's last frame.
    assert deltas[0] >= run.upstream_of(result)[0]["received_at"] + (len(deltas) - 1) * CHUNK_DELAY
    assert deltas[-1] - deltas[0] < 0.05


def text_arrivals(result: dict[str, Any], kind: str) -> list[float]:
    """When each piece of text reached the client (epoch seconds)."""
    arrivals = [a["at"] for a in result["arrivals"] if a["type"] == kind and a["delta"]]
    assert len(arrivals) == len(LONG_ANSWER.split(" "))
    return arrivals


@pytest.mark.parametrize("front", FRONTS)
def test_the_ai_sdks_completion_model_gets_legacy_completions_whole_and_streamed(run: NodeRun, front: str) -> None:
    whole = run.result(front, "ai.completion.generateText")
    streamed = run.result(front, "ai.completion.streamText")
    sent = run.upstream_of(whole)[0]["body"]

    # The AI SDK writes the prompt as a transcript; the stand-in echoes what it was sent.
    assert whole["text"] == f"Hello {USER}! You said: {sent['prompt']}" and whole["finish_reason"] == "stop"
    assert whole["usage"]["outputTokens"] == len(whole["text"].split())
    assert streamed["error"] is None and streamed["text"].startswith(f"Hello {USER}! You said:")
    assert run.upstream_of(streamed)[0]["body"]["stream_options"] == {"include_usage": True}


BROKE_OFF = "Behest's stream broke off"


@pytest.mark.parametrize("front", FRONTS)
def test_openai_node_reads_a_broken_responses_stream_as_its_error_event_with_the_real_message(
    run: NodeRun, front: str,
) -> None:
    result = run.result(front, "openai.responses.broken-stream")
    *passed, last = result["events"]

    assert result["error"] is None
    assert [e["type"] for e in passed] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert (last["type"], last["code"], last["sequence_number"]) == ("error", "upstream_error", 3)
    assert last["message"].startswith(BROKE_OFF)


@pytest.mark.parametrize("front", FRONTS)
def test_openai_node_raises_the_real_message_when_a_chat_stream_breaks(run: NodeRun, front: str) -> None:
    error = run.result(front, "openai.chat.broken-stream")["error"]

    assert error["class"] == "APIError" and error["message"].startswith(BROKE_OFF)
    assert error["code"] == "upstream_error"


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("scenario", ["ai.responses.broken-stream", "ai.chat.broken-stream"])
def test_the_ai_sdk_reports_a_broken_stream_with_the_real_message_not_a_schema_error(
    run: NodeRun, front: str, scenario: str,
) -> None:
    error = run.result(front, scenario)["error"]

    assert error is not None and error["message"].startswith(BROKE_OFF), error


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("route", ["models", "embeddings", "responses", "chat"])
def test_an_upstream_429_reaches_openai_node_as_a_rate_limit_error_with_its_retry_after(
    run: NodeRun, front: str, route: str,
) -> None:
    error = run.result(front, f"openai.rate-limit.{route}")["error"]

    assert (error["class"], error["status"], error["retry_after"]) == ("RateLimitError", 429, "7")
    assert error["type"] == "rate_limit_error"


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("scenario", ["ai.rate-limit.responses", "ai.rate-limit.chat", "ai.rate-limit.responses-stream"])
def test_an_upstream_429_reaches_the_ai_sdk_as_an_api_call_error_with_status_429(
    run: NodeRun, front: str, scenario: str,
) -> None:
    error = run.result(front, scenario)["error"]

    assert (error["class"], error["ai_sdk_api_call_error"], error["status"]) == ("APICallError", True, 429)
    assert (error["retry_after"], error["is_retryable"]) == ("7", True)
    assert set(error["body"]["error"]) == {"message", "type", "code"}


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize(("scenario", "path"), [("ai.responses.generateText", "/v1/responses"),
                                                ("ai.chat.generateText", "/v1/chat/completions")])
def test_the_ai_sdk_generates_text_with_its_default_responses_model_and_its_chat_model(
    run: NodeRun, front: str, scenario: str, path: str,
) -> None:
    result = run.result(front, scenario)

    assert (result["text"], result["finish_reason"]) == (SHORT_ANSWER, "stop")
    assert (result["usage"]["inputTokens"], result["usage"]["outputTokens"]) == (2, 6)
    assert [s["path"] for s in result["sent"]] == [path]


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("scenario", SPOOFING)
def test_a_spoofed_user_leaves_the_client_and_the_verified_one_reaches_behest(
    run: NodeRun, front: str, scenario: str,
) -> None:
    result = run.result(front, scenario)
    [sent] = result["sent"]
    [upstream] = run.upstream_of(result)

    assert sent["user"] == SPOOFED
    assert upstream["body"]["user"] == USER
    if sent["safety_identifier"] is not None:
        assert upstream["body"]["safety_identifier"] == USER


# --- function calling and structured output -------------------------------------------------------------------

def offered(upstream: dict[str, Any]) -> list[tuple[str, Any]]:
    """Each tool the client offered, by name, with the arguments the stand-in answers for its schema."""
    tools = upstream["body"]["tools"]
    functions = [tool.get("function", tool) for tool in tools]
    return [(f["name"], schema_instance(f["parameters"])) for f in functions]


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("scenario", TOOL_SCENARIOS)
def test_every_tool_and_structured_answer_leaves_a_usage_record_equal_to_the_stand_ins_figures(
    run: NodeRun, front: str, scenario: str,
) -> None:
    upstream = run.upstream_of(run.result(front, scenario))
    records = run.usage_records_of(upstream)

    expected = [(ROUTES[r["path"]], r["body"].get("stream") is True, *standin_figures(r["path"], r["body"], USER))
                for r in upstream]
    assert [(r["route"], r["streamed"], r["input_tokens"], r["output_tokens"]) for r in records] == expected
    assert all((r["user_id"], r["outcome"], r["status"]) == (USER, "ok", 200) for r in records)


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("scenario", ["openai.chat.tools", "openai.responses.tools"])
def test_openai_node_gets_parallel_tool_calls_whole_and_streamed_and_an_answer_to_their_results(
    run: NodeRun, front: str, scenario: str,
) -> None:
    result = run.result(front, scenario)
    first, streamed, follow_up = run.upstream_of(result)

    assert [tuple(call[:2]) for call in result["calls"]] == offered(first) and len(offered(first)) == 2
    assert result["streamed_calls"] == result["calls"] and streamed["body"]["stream"] is True
    assert result["text"] == tools_reply_text(USER, ["weather fine", "time fine"])
    if scenario == "openai.chat.tools":
        assert result["finish_reasons"] == ["tool_calls", "tool_calls", "stop"]
        assert [m["role"] for m in follow_up["body"]["messages"]] == ["user", "assistant", "tool", "tool"]
        assert result["streamed_usage"] == usage_for("/v1/chat/completions", streamed["body"], USER)
    else:
        assert [i.get("type", "message") for i in follow_up["body"]["input"]] == \
            ["message", "function_call", "function_call", "function_call_output", "function_call_output"]
        kinds = result["kinds"]
        assert kinds.count("response.function_call_arguments.delta") > 2 and kinds[-1] == "response.completed"


@pytest.mark.parametrize("front", FRONTS)
def test_openai_node_parses_json_schema_answers_with_its_zod_helpers(run: NodeRun, front: str) -> None:
    result = run.result(front, "openai.parse")
    chat, responses = run.upstream_of(result)

    assert result["chat"] == schema_instance(chat["body"]["response_format"]["json_schema"]["schema"])
    assert result["response"] == schema_instance(responses["body"]["text"]["format"]["schema"])


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("scenario", AI_TOOLS)
def test_the_ai_sdk_runs_its_tools_and_answers_with_their_results_on_both_models(
    run: NodeRun, front: str, scenario: str,
) -> None:
    result = run.result(front, scenario)
    first, second = run.upstream_of(result)
    calling, answering = result["steps"]
    outputs = [output for _, output in calling["results"]]

    assert result.get("error") is None
    assert [tuple(call) for call in calling["calls"]] == offered(first)
    assert (calling["finish_reason"], answering["finish_reason"]) == ("tool-calls", "stop")
    assert result["text"] == tools_reply_text(USER, outputs)
    for step, request in ((calling, first), (answering, second)):
        assert (step["usage"]["input"], step["usage"]["output"]) == standin_figures(request["path"], request["body"], USER)
    if scenario.endswith("streamText"):
        assert {"tool-input-delta", "tool-call", "tool-result", "text-delta"} <= set(result["kinds"])


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize("scenario", ["ai.responses.object", "ai.chat.object"])
def test_the_ai_sdk_reads_a_structured_output_object_on_both_models(run: NodeRun, front: str, scenario: str) -> None:
    result = run.result(front, scenario)
    [request] = run.upstream_of(result)
    body = request["body"]
    schema = body["text"]["format"]["schema"] if "text" in body else body["response_format"]["json_schema"]["schema"]

    assert result["output"] == schema_instance(schema) == {"city": "city", "days": 1}

"""Every relayed route as OpenAI's Python SDK uses it, through `make dev`'s local API and its local Function URL.

One `make dev` process serves both fronts; the stand-in Behest records what reached it, and the
process's log lines carry the usage records.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from typing import Any, Iterator

import openai
import pytest

from tests.dev_process import DevProcess

CHUNK_DELAY = 0.03
HI = [{"role": "user", "content": "hi"}]
FRONTS = ["api", "stream"]


@pytest.fixture(scope="module")
def dev() -> Iterator[DevProcess]:
    process = DevProcess(chunk_delay=CHUNK_DELAY)
    yield process
    process.stop()


@pytest.fixture(autouse=True)
def no_faults(dev: DevProcess) -> Iterator[None]:
    yield
    control(dev, "DELETE", "/_standin/faults")


def control(dev: DevProcess, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(dev.urls["behest"] + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def client(dev: DevProcess, front: str, user: str = "ada") -> openai.OpenAI:
    return openai.OpenAI(base_url=dev.urls[front] + "/v1", api_key=dev.identity_token(user), max_retries=0)


def last_upstream(dev: DevProcess, path: str) -> dict[str, Any]:
    return [r for r in dev.standin_requests() if r["path"] == path][-1]


def usage_records(dev: DevProcess, before: int, count: int = 1) -> list[dict[str, Any]]:
    return dev.wait_for_records("usage", before + count)[before:]


@pytest.mark.parametrize("front", FRONTS)
def test_models_list_and_retrieve_answer_for_the_verified_user(dev: DevProcess, front: str) -> None:
    sdk = client(dev, front, "bea")

    ids = [model.id for model in sdk.models.list()]
    one = sdk.models.retrieve(ids[0])

    assert "behest-default" in ids and one.id == ids[0] and one.object == "model"
    assert last_upstream(dev, "/v1/models")["claims"]["uid"] == "bea"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("no-such-model")


@pytest.mark.parametrize("front", FRONTS)
def test_embeddings_come_back_in_the_sdks_default_base64_and_as_floats(dev: DevProcess, front: str) -> None:
    sdk = client(dev, front)

    default = sdk.embeddings.create(model="behest-embed", input="hello world", user="mallory")
    floats = sdk.embeddings.create(model="behest-embed", input=["a", "b c"], encoding_format="float")
    tokens = sdk.embeddings.create(model="behest-embed", input=[[1, 2, 3]], encoding_format="float")

    assert len(default.data) == 1 and all(isinstance(x, float) for x in default.data[0].embedding)
    assert [d.index for d in floats.data] == [0, 1] and len(tokens.data) == 1
    sent = last_upstream(dev, "/v1/embeddings")
    assert sent["body"]["user"] == "ada" and sent["claims"]["uid"] == "ada"
    assert default.usage.prompt_tokens == 2


@pytest.mark.parametrize("front", FRONTS)
def test_a_whole_response_comes_back_with_policy_applied(dev: DevProcess, front: str) -> None:
    sdk = client(dev, front)

    response = sdk.responses.create(model="behest-default", input="hi there", user="mallory",
                                    safety_identifier="mallory", max_output_tokens=10**7)

    assert response.output_text == "Hello ada! You said: hi there"
    sent = last_upstream(dev, "/v1/responses")["body"]
    assert (sent["user"], sent["safety_identifier"], sent["max_output_tokens"]) == ("ada", "ada", 4096)


def test_a_streamed_response_arrives_event_by_event_on_the_function_url(dev: DevProcess) -> None:
    arrivals = streamed_response_arrivals(dev, "stream")
    deltas = [at for kind, at in arrivals if kind == "response.output_text.delta"]

    assert arrivals[0][0] == "response.created" and arrivals[-1][0] == "response.completed"
    assert len(deltas) >= 4
    # Live: the first delta is in the client's hands while the stand-in is still pacing the rest.
    assert arrivals[-1][1] - deltas[0] >= (len(deltas) - 1) * CHUNK_DELAY * 0.5


def test_the_http_api_buffers_a_streamed_response_but_the_sdk_still_reads_every_event(dev: DevProcess) -> None:
    arrivals = streamed_response_arrivals(dev, "api")

    assert [kind for kind, _ in arrivals][-1] == "response.completed"
    assert arrivals[-1][1] - arrivals[0][1] < 0.05  # all at once: an HTTP API buffers


def streamed_response_arrivals(dev: DevProcess, front: str) -> list[tuple[str, float]]:
    arrivals: list[tuple[str, float]] = []
    text = ""
    with client(dev, front).responses.create(model="behest-default", input="one two three four five",
                                             stream=True) as stream:
        for event in stream:
            arrivals.append((event.type, time.monotonic()))
            if event.type == "response.output_text.delta":
                text += event.delta
    assert text == "Hello ada! You said: one two three four five"
    return arrivals


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [({"kind": "status", "status": 429, "retry_after": 7}, openai.RateLimitError, 429),
     ({"kind": "status", "status": 401, "code": "invalid_token"}, openai.InternalServerError, 502),
     ({"kind": "status", "status": 503, "retry_after": 9}, openai.InternalServerError, 503),
     ({"kind": "status", "status": 503}, openai.InternalServerError, 502),
     ({"kind": "status", "status": 500}, openai.InternalServerError, 502)],
)
@pytest.mark.parametrize("route", ["models", "embeddings", "responses", "chat"])
def test_upstream_errors_reach_the_sdk_typed_on_every_route(dev: DevProcess, front: str, route: str,
                                                           fault: dict[str, Any], error: type, status: int) -> None:
    control(dev, "POST", "/_standin/faults", {**fault, "path": route})
    sdk = client(dev, front)
    calls = {
        "models": lambda: sdk.models.list(),
        "embeddings": lambda: sdk.embeddings.create(model="behest-embed", input="x"),
        "responses": lambda: sdk.responses.create(model="behest-default", input="x"),
        "chat": lambda: sdk.chat.completions.create(model="m", messages=HI),  # type: ignore[arg-type]
    }

    with pytest.raises(error) as caught:
        calls[route]()

    assert caught.value.status_code == status  # type: ignore[attr-defined]
    retry_after = caught.value.response.headers.get("retry-after")  # type: ignore[attr-defined]
    assert retry_after == (str(fault["retry_after"]) if "retry_after" in fault and status != 502 else None)


@pytest.mark.parametrize("front", FRONTS)
def test_unknown_paths_and_methods_get_openai_shaped_json(dev: DevProcess, front: str) -> None:
    token = dev.identity_token()
    for method, path, status in (("GET", "/v1/nope", 404), ("GET", "/v1/chat/completions", 405),
                                 ("DELETE", "/v1/models", 405), ("POST", "/", 404)):
        request = urllib.request.Request(dev.urls[front] + path, method=method, data=b"{}" if method == "POST" else None,
                                         headers={"Authorization": f"Bearer {token}"})
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=10)
        body = json.loads(caught.value.read())
        assert caught.value.code == status, (method, path)
        assert caught.value.headers["content-type"].startswith("application/json")
        assert set(body["error"]) == {"message", "type", "code"}, body


@pytest.mark.parametrize("front", FRONTS)
def test_a_chat_stream_shows_the_usage_chunk_only_when_the_client_asked_and_then_exactly_once(
    dev: DevProcess, front: str,
) -> None:
    sdk = client(dev, front)

    plain = list(sdk.chat.completions.create(model="m", messages=HI, stream=True))  # type: ignore[arg-type]
    asked = list(sdk.chat.completions.create(model="m", messages=HI, stream=True,  # type: ignore[arg-type]
                                             stream_options={"include_usage": True}))

    assert all(chunk.choices and chunk.usage is None for chunk in plain)
    with_usage = [chunk for chunk in asked if chunk.usage is not None]
    assert len(with_usage) == 1 and with_usage[0].choices == [] and asked[-1] is with_usage[0]
    assert last_upstream(dev, "/v1/chat/completions")["body"]["stream_options"] == {"include_usage": True}


def expected_usage(route: str, answer: Any) -> tuple[int, int]:
    usage = answer["usage"]
    if route == "responses":
        return usage["input_tokens"], usage["output_tokens"]
    return usage["prompt_tokens"], usage.get("completion_tokens", 0)


@pytest.mark.parametrize("front", FRONTS)
def test_the_usage_record_of_every_route_equals_behests_own_figures(dev: DevProcess, front: str) -> None:
    sdk = client(dev, front, "cyd")
    before = len(dev.records("usage"))
    answers: list[tuple[str, bool, tuple[int, int]]] = []

    chat = sdk.chat.completions.create(model="m", messages=HI)  # type: ignore[arg-type]
    answers.append(("chat", False, expected_usage("chat", chat.model_dump())))
    streamed = [c for c in sdk.chat.completions.create(model="m", messages=HI, stream=True,  # type: ignore[arg-type]
                                                       stream_options={"include_usage": True})]
    answers.append(("chat", True, expected_usage("chat", streamed[-1].model_dump())))
    whole = sdk.responses.create(model="behest-default", input="a b c")
    answers.append(("responses", False, expected_usage("responses", whole.model_dump())))
    with sdk.responses.create(model="behest-default", input="a b c d", stream=True) as stream:
        completed = [e for e in stream if e.type == "response.completed"][0]
    answers.append(("responses", True, expected_usage("responses", completed.response.model_dump())))
    vectors = sdk.embeddings.create(model="behest-embed", input=["x y", "z"])
    answers.append(("embeddings", False, expected_usage("embeddings", vectors.model_dump())))

    # A record is printed after its answer has gone out: wait for all five of this test's own.
    records = [r for r in usage_records(dev, before, len(answers)) if r["user_id"] == "cyd"]
    # Powertools leaves out fields that are None: embeddings have no output tokens.
    assert [(r["route"], r["streamed"], (r["input_tokens"], r.get("output_tokens", 0))) for r in records] == answers
    for record in records:
        assert record["outcome"] == "ok" and record["status"] == 200 and record["session_id"]
        assert 0 <= record["first_byte_ms"] <= record["duration_ms"]
        assert "content" not in json.dumps(record) and "Hello" not in json.dumps(record)


def test_a_stream_cut_short_still_leaves_a_usage_record_that_says_so(dev: DevProcess) -> None:
    control(dev, "POST", "/_standin/faults", {"kind": "reset_after", "chunks": 2, "path": "chat"})
    before = len(dev.records("usage"))

    with pytest.raises(openai.APIError):
        for _ in client(dev, "stream", "dee").chat.completions.create(model="m", messages=HI,  # type: ignore[arg-type]
                                                                      stream=True):
            pass

    record = usage_records(dev, before)[0]
    assert (record["user_id"], record["outcome"], record["streamed"]) == ("dee", "broken_off", True)


def test_base64_embeddings_decode_to_the_same_vector_as_floats(dev: DevProcess) -> None:
    token = dev.identity_token()
    vectors = []
    for encoding in ("float", "base64"):
        request = urllib.request.Request(
            dev.urls["api"] + "/v1/embeddings", method="POST",
            data=json.dumps({"model": "behest-embed", "input": "same", "encoding_format": encoding}).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            vectors.append(json.loads(response.read())["data"][0]["embedding"])
    import array

    decoded = array.array("f", base64.b64decode(vectors[1])).tolist()
    assert decoded == pytest.approx(vectors[0], rel=1e-6)


@pytest.mark.parametrize("front", FRONTS)
def test_a_broken_responses_stream_ends_with_a_responses_error_event_that_openai_py_reads_as_one(
    dev: DevProcess, front: str,
) -> None:
    control(dev, "POST", "/_standin/faults", {"kind": "reset_after", "chunks": 3, "path": "responses"})

    with client(dev, front).responses.create(model="behest-default", input="a b c", stream=True) as stream:
        events = list(stream)

    *passed, last = events
    assert [e.type for e in passed] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert last.type == "error" and last.code == "upstream_error"  # type: ignore[union-attr]
    assert last.message.startswith("Behest's stream broke off")  # type: ignore[union-attr]
    assert last.sequence_number == passed[-1].sequence_number + 1


@pytest.mark.parametrize("front", FRONTS)
def test_a_broken_chat_stream_still_ends_with_the_error_frame_openai_py_raises(dev: DevProcess, front: str) -> None:
    control(dev, "POST", "/_standin/faults", {"kind": "reset_after", "chunks": 2, "path": "chat"})

    with pytest.raises(openai.APIError) as caught:
        for _ in client(dev, front).chat.completions.create(model="m", messages=HI, stream=True):  # type: ignore[arg-type]
            pass

    assert caught.value.message.startswith("Behest's stream broke off")
    assert caught.value.code == "upstream_error"


@pytest.mark.parametrize("front", FRONTS)
def test_legacy_completions_come_back_whole_and_streamed_with_chats_policy_and_usage_records(
    dev: DevProcess, front: str,
) -> None:
    sdk = client(dev, front, "lin")
    before = len(dev.records("usage"))

    whole = sdk.completions.create(model="behest-default", prompt="tell me", user="mallory", max_tokens=10**7)
    sent = last_upstream(dev, "/v1/completions")
    chunks = list(sdk.completions.create(model="behest-default", prompt="one two three", stream=True))
    streamed_sent = last_upstream(dev, "/v1/completions")

    assert whole.object == "text_completion" and whole.choices[0].text == "Hello lin! You said: tell me"
    assert (sent["body"]["user"], sent["body"]["max_tokens"], sent["claims"]["uid"]) == ("lin", 4096, "lin")
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "Hello lin! You said: one two three"
    assert all(c.usage is None for c in chunks)  # the client did not ask for the usage chunk
    assert streamed_sent["body"]["stream_options"] == {"include_usage": True}  # but Behest was asked
    records = [r for r in usage_records(dev, before, 2) if r["user_id"] == "lin"]
    assert [(r["route"], r["streamed"], r["input_tokens"], r["output_tokens"]) for r in records] == [
        ("completions", False, whole.usage.prompt_tokens, whole.usage.completion_tokens),  # type: ignore[union-attr]
        ("completions", True, 3, 7)]


@pytest.mark.parametrize("front", FRONTS)
def test_legacy_completions_refuse_what_chat_refuses(dev: DevProcess, front: str) -> None:
    sdk = client(dev, front)

    with pytest.raises(openai.BadRequestError) as too_many:
        sdk.completions.create(model="behest-default", prompt="x", n=99)
    with pytest.raises(openai.BadRequestError) as no_prompt:
        sdk.completions.create(model="behest-default", prompt=[])

    assert too_many.value.code == "n_too_large" and no_prompt.value.code == "invalid_request"


@pytest.mark.parametrize("front", FRONTS)
def test_each_users_prompt_cache_key_reaches_behest_in_that_users_own_namespace(dev: DevProcess, front: str) -> None:
    sent: dict[str, list[str]] = {}
    for user in ("ada", "bea", "ada"):
        sdk = client(dev, front, user)
        sdk.chat.completions.create(model="m", messages=HI, prompt_cache_key="shared")  # type: ignore[arg-type]
        sent.setdefault(user, []).append(last_upstream(dev, "/v1/chat/completions")["body"]["prompt_cache_key"])
        sdk.responses.create(model="behest-default", input="hi", prompt_cache_key="shared")
        sent[user].append(last_upstream(dev, "/v1/responses")["body"]["prompt_cache_key"])

    ada, bea = set(sent["ada"]), set(sent["bea"])
    assert len(ada) == len(bea) == 1 and ada != bea  # stable per user, never shared between users
    assert all(key.endswith(".shared") and len(key) <= 64 for key in ada | bea)


@pytest.mark.parametrize("front", FRONTS)
def test_a_costlier_service_tier_is_refused_before_behest_is_asked(dev: DevProcess, front: str) -> None:
    before = len(dev.standin_requests())

    with pytest.raises(openai.BadRequestError) as caught:
        client(dev, front).responses.create(model="behest-default", input="hi", service_tier="priority")

    assert caught.value.code == "service_tier_not_allowed"
    assert len(dev.standin_requests()) == before

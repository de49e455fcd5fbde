"""Load on loopback, bounded in time: concurrent clients against the whole local stack, and memory over
thousands of warm invocations of each handler.

The stack is `make dev`'s DevStack (all ports 0) in its own process, so clients and functions do not
share an interpreter: identity provider → local HTTP API (JWT authorizer) → the real handlers → moto's
Secrets Manager and the stand-in Behest gateway. Nothing is lost: every relayed message reaches the
stand-in exactly once, for the right user, and every answer and log line is accounted for.
"""

from __future__ import annotations

import base64
import gc
import http.client
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import pytest

from behest_lambda.app import Service
from behest_lambda.routes import RELAY_FUNCTION, TOKEN_FUNCTION
from behest_lambda.telemetry import Telemetry
from tests.figures import Figures, ms_summary
from tests.log_hygiene import TOKEN, LeakScanner
from tests.reliability.suite import event_for, sized
from tests.support import KEYS, KID, ROOT, sign_env

TOPIC = "Load and memory (loopback)"
CLIENTS = 8
RSS_BOUND_MB = 5.0
TRACED_BOUND_MB = 1.0


@dataclass
class Stack:
    api: str
    identity: str
    behest: str
    process: subprocess.Popen[str]
    output: list[str]


def start(command: list[str], ready: str) -> tuple[subprocess.Popen[str], list[str]]:
    """Start a process, wait for a line containing `ready`, then keep draining its output on a thread."""
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "functions"), str(ROOT)])})
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if ready in line:
            break
    else:
        raise AssertionError("".join(lines))
    drain = threading.Thread(target=lambda: lines.extend(process.stdout or ()), daemon=True)
    drain.start()
    DRAINS[process.pid] = drain
    return process, lines


DRAINS: dict[int, threading.Thread] = {}


def stop(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    DRAINS.pop(process.pid).join(5)
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    process, lines = start([sys.executable, "-m", "devstack", "--api-port", "0", "--stream-port", "0",
                            "--identity-port", "0", "--behest-port", "0", "--secrets-port", "0", "--service-port", "0",
                            "--chunk-delay", "0"],
                           "Ctrl-C stops everything")
    banner = "".join(lines)
    urls = [re.search(pattern, banner) for pattern in (r"API \(token \+ chat relay\)\s+(\S+)",
                                                       r"identity provider\s+(\S+)", r"Behest stand-in\s+(\S+)")]
    assert all(urls), banner
    api, identity, behest = (match.group(1) for match in urls if match)
    yield Stack(api, identity, behest, process, lines)
    stop(process)


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listen queue was full (each costs a ≥ 1 s SYN retry)."""
    try:
        with open("/proc/net/netstat") as netstat:
            names, values = [line.split() for line in netstat if line.startswith("TcpExt:")][:2]
    except (OSError, ValueError):
        return 0
    return int(dict(zip(names, values, strict=True)).get("ListenOverflows", 0))


def post_json(url: str, body: Any) -> Any:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@dataclass
class Call:
    kind: str  # mint, relay, stream
    seconds: float
    ok: bool
    detail: str = ""


def client(api: str, user: str, id_token: str, until: float, calls: list[Call], sent: list[str]) -> None:
    """One caller on a kept-alive connection: mint, relay, mint, stream relay, … until the deadline."""
    host, port = api.removeprefix("http://").split(":")
    headers = {"Authorization": f"Bearer {id_token}", "Content-Type": "application/json"}
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    number = 0
    while time.monotonic() < until:
        number += 1
        kind = ("mint", "relay", "mint", "stream")[number % 4]
        message = f"ping {user} {number}"
        if kind == "mint":
            path, body = "/api/behest/token", {"ttl": 600}
        else:
            path, body = "/v1/chat/completions", {"messages": [{"role": "user", "content": message}],
                                                  "stream": kind == "stream"}
        started = time.monotonic()
        try:
            connection.request("POST", path, json.dumps(body), headers)
            quick_ack(connection)
            response = connection.getresponse()
            data = response.read().decode()
            status = response.status
        except (OSError, http.client.HTTPException) as e:
            calls.append(Call(kind, time.monotonic() - started, False, f"{type(e).__name__}: {e}"))
            connection.close()
            connection = http.client.HTTPConnection(host, int(port), timeout=30)
            continue
        seconds = time.monotonic() - started
        if kind != "mint":
            sent.append(message)
        ok = status == 200 and answered_for(kind, data, user, message)
        calls.append(Call(kind, seconds, ok, f"{status} {data[:200]}"))
    connection.close()


def quick_ack(connection: http.client.HTTPConnection) -> None:
    """ACK at once: the local API sends headers and body in two writes without TCP_NODELAY, and Nagle's
    algorithm against a delayed ACK would add ~40 ms to every answer on a kept-alive connection, measuring
    the dev server instead of the functions."""
    if hasattr(socket, "TCP_QUICKACK") and connection.sock is not None:
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)


def answered_for(kind: str, data: str, user: str, message: str) -> bool:
    expected = f"Hello {user}! You said: {message}"
    if kind == "mint":
        payload = json.loads(data)["token"].split(".")[1]
        return bool(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["uid"] == user)
    if kind == "relay":
        return bool(json.loads(data)["choices"][0]["message"]["content"] == expected)
    events = [block.removeprefix("data: ") for block in data.strip().split("\n\n")]
    chunks = [json.loads(event) for event in events[:-1]]
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks if chunk["choices"])
    return events[-1] == "[DONE]" and text == expected


@sized(short=5.0, long=60.0)
def test_concurrent_clients_on_the_dev_stack_get_every_answer_and_lose_nothing(
    size: float, stack: Stack, figures: Figures, log_hygiene: LeakScanner,
) -> None:
    users = [f"load-user-{index}" for index in range(CLIENTS)]
    tokens = {user: post_json(stack.identity + "/token", {"user": user, "plan": "pro"})["id_token"] for user in users}
    urllib.request.urlopen(urllib.request.Request(stack.behest + "/_standin/requests", method="DELETE"), timeout=10).read()
    logged_before = len(stack.output)
    calls: list[Call] = []
    sent: list[str] = []
    overflows = listen_overflows()
    until = time.monotonic() + size
    threads = [threading.Thread(target=client, args=(stack.api, user, tokens[user], until, calls, sent)) for user in users]
    begun = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - begun
    overflows = listen_overflows() - overflows

    failures = [c for c in calls if not c.ok]
    assert not failures, f"{len(failures)} failed calls, first: {failures[0]}"
    with urllib.request.urlopen(stack.behest + "/_standin/requests", timeout=30) as response:
        upstream = [r for r in json.loads(response.read())["requests"] if r["path"] == "/v1/chat/completions"]
    received = sorted(r["body"]["messages"][0]["content"] for r in upstream)
    assert received == sorted(sent), "a relayed message was lost or duplicated on its way to Behest"
    assert all(r["claims"]["uid"] == r["body"]["user"] == r["body"]["messages"][0]["content"].split()[1] for r in upstream)
    time.sleep(0.2)  # the drain thread catches up with the stack's last log lines
    server_log = stack.output[logged_before:]
    log_hygiene.scan_all(server_log, "the local stack's output under load")
    records = [json.loads(line) for line in server_log if line.startswith("{")]
    mints = [c for c in calls if c.kind == "mint"]
    relays = [c for c in calls if c.kind != "mint"]
    assert sum(r.get("message") == "token minted" for r in records) == len(mints)
    usage = [r for r in records if r.get("message") == "usage"]  # one usage record per relayed answer
    assert len(usage) == len(relays)
    assert all(r["outcome"] == "ok" and r["route"] == "chat" for r in usage)
    assert not any(TOKEN.search(line) for line in server_log)

    relayed_ms = [r["duration_ms"] / 1000 for r in usage]
    figures(TOPIC, f"{CLIENTS} concurrent clients × {size:g} s on DevStack (own process): {len(calls)} requests "
                   f"({len(calls) / elapsed:.0f}/s), 0 errors; {len(sent)} messages relayed, {len(received)} received "
                   "by the stand-in (none lost or duplicated); every answer and log line accounted for")
    figures(TOPIC, f"  mint, client-side:            {ms_summary([c.seconds for c in mints])}")
    figures(TOPIC, f"  relay JSON, client-side:      {ms_summary([c.seconds for c in calls if c.kind == 'relay'])}")
    figures(TOPIC, f"  relay stream, client-side:    {ms_summary([c.seconds for c in calls if c.kind == 'stream'])}")
    figures(TOPIC, f"  relay, in the function (log): {ms_summary(relayed_ms)}")
    figures(TOPIC, f"  (one Python process serves API, handlers, moto and stand-in on 2 cores, so p50 is mostly queueing; "
                   f"listen-queue overflows during the run: {overflows}, each a ≥ 1 s SYN retry — see max)")


def rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass(frozen=True)
class Growth:
    traced_mb: float  # Python objects still alive (tracemalloc): blind to allocator reuse, sees every Python leak
    rss_mb: float  # the process (RSS): sees native leaks too (OpenSSL, sockets), but free heap hides small ones
    seconds_each: float


def growth_over(call: Callable[[], None], count: int) -> Growth:
    """What `count` more calls leave behind, measured after a warm-up and a collection."""
    for _ in range(min(500, count)):
        call()
    gc.collect()
    rss_before = rss_mb()
    tracemalloc.start(1)
    traced_before = tracemalloc.get_traced_memory()[0]
    started = time.perf_counter()
    for _ in range(count):
        call()
    seconds = time.perf_counter() - started
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - traced_before
    tracemalloc.stop()
    return Growth(traced / 2**20, rss_mb() - rss_before, seconds / count)


class Discard:
    """A log stream that keeps nothing (the session's hygiene scan still sees every line)."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@pytest.fixture(scope="module")
def standin_process() -> Iterator[str]:
    """A stand-in in its own process, so its records do not count against the relay's memory."""
    process, lines = start([sys.executable, "-m", "devstack.standin", "--port", "0", "--quiet",
                            "--register-key", f"{KID}={KEYS / 'tenant_public.pem'}"], "listening on")
    url = re.search(r"listening on (\S+)", "".join(lines))
    assert url
    yield url.group(1)
    stop(process)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS is read from /proc")
@sized(short=2_000, long=10_000)
def test_memory_stays_flat_over_thousands_of_warm_invocations_of_each_handler(
    size: int, standin_process: str, monkeypatch: pytest.MonkeyPatch, figures: Figures,
) -> None:
    telemetry = Telemetry("memory", stream=Discard())  # type: ignore[arg-type]
    # pytest's log capture keeps every record that reaches the root logger, which would count as the handlers' growth;
    # in Lambda, Powertools filters its own records out of the root's handlers instead.
    monkeypatch.setattr(logging.getLogger(telemetry.logger.name), "propagate", False)
    token = Service.from_env(TOKEN_FUNCTION, telemetry, sign_env())
    relay = Service.from_env(RELAY_FUNCTION, telemetry, sign_env(BEHEST_BASE_URL=standin_process))
    mint_event = event_for("token_mint")
    chat_event = event_for("chat_completion", body={"messages": [{"role": "user", "content": "hi"}]})

    def mint() -> None:
        assert token.handle(mint_event)["statusCode"] == 200

    def chat() -> None:
        assert relay.handle(chat_event)["statusCode"] == 200

    for name, call in (("token", mint), ("relay", chat)):
        growth = growth_over(call, size)

        assert growth.traced_mb < TRACED_BOUND_MB and growth.rss_mb < RSS_BOUND_MB, f"{name}: {growth}"
        figures(TOPIC, f"{name} handler: {size} warm invocations in-process: Python heap {growth.traced_mb:+.3f} MB "
                       f"(bound {TRACED_BOUND_MB:g}), RSS {growth.rss_mb:+.2f} MB (bound {RSS_BOUND_MB:g}); "
                       f"{growth.seconds_each * 1000:.2f} ms each under tracemalloc")


def test_the_memory_measure_sees_a_leak_of_one_kilobyte_per_call() -> None:
    kept: list[bytearray] = []

    growth = growth_over(lambda: kept.append(bytearray(1024)), 2_000)

    assert growth.traced_mb > TRACED_BOUND_MB

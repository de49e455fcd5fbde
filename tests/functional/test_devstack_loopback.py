"""Every local front answers malformed HTTP as a deployed front would: JSON, no traceback, no silent drop.

The local API, the local Function URL, the identity provider and the Behest stand-in are driven
over raw sockets with what real clients and scanners send: bad Content-Length, chunked bodies,
methods nobody routes, connections reset while idle.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import pytest

from devstack.identity import LocalIdentityProvider
from devstack.local_api import JwtAuthorizer, LocalHttpApi
from devstack.standin import StandinGateway
from devstack.stream_url import StreamFunctionUrl

ECHO = b'{"user": "ada", "plan": "pro"}'


class EchoFunction:
    """A Lambda handler that answers 200 with the body it was handed, and keeps the events."""

    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []

    def __call__(self, event: Mapping[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        return {"statusCode": 200, "headers": {"content-type": "application/json"},
                "body": json.dumps({"echo": event.get("body")})}


class EchoStreamFunction:
    """The streaming function's `respond`, answering with the body it was handed."""

    def respond(self, event: Mapping[str, Any], context: Any = None) -> tuple[dict[str, Any], Iterator[bytes]]:
        body = json.dumps({"echo": event.get("body")}).encode()
        return {"statusCode": 200, "headers": {"content-type": "application/json"}}, (part for part in [body])


@dataclass
class Front:
    """One running dev server, and a POST it answers 200 (echoing the body when `echoes`)."""

    name: str
    host: str
    port: int
    post_path: str
    stop: Callable[[], None]
    body: bytes = ECHO
    echoes: bool = field(default=True)


def start_front(name: str, provider: LocalIdentityProvider) -> Front:
    if name == "local api":
        function = EchoFunction()
        api = LocalHttpApi({"TokenFunction": function, "RelayFunction": function},
                           JwtAuthorizer(provider.issuer, [provider.audience], provider.jwks_url)).start()
        return Front(name, "127.0.0.1", api._server.server_address[1], "/not/routed", api.stop)
    if name == "function url":
        url = StreamFunctionUrl(EchoStreamFunction()).start()
        return Front(name, "127.0.0.1", url._server.server_address[1], "/v1/chat/completions", url.stop)
    if name == "identity provider":
        idp = LocalIdentityProvider().start()
        return Front(name, "127.0.0.1", idp._server.server_address[1], "/token", idp.stop, echoes=False)
    gateway = StandinGateway().start()
    return Front(name, gateway.host, gateway.port, "/_standin/faults", gateway.stop,
                 body=b'{"kind": "delay", "seconds": 0, "path": "mint"}', echoes=False)


FRONTS = ["local api", "function url", "identity provider", "behest stand-in"]


@pytest.fixture(scope="module")
def provider() -> Iterator[LocalIdentityProvider]:
    with LocalIdentityProvider() as idp:
        yield idp


@pytest.fixture(params=FRONTS)
def front(request: pytest.FixtureRequest, provider: LocalIdentityProvider) -> Iterator[Front]:
    started = start_front(request.param, provider)
    yield started
    started.stop()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def exchange(front: Front, *requests: bytes, method: str = "POST") -> list[Answer]:
    """Send each raw request in turn on one connection; each answer read whole."""
    answers = []
    with socket.create_connection((front.host, front.port), timeout=5) as sock:
        for raw in requests:
            sock.sendall(raw)
            response = http.client.HTTPResponse(sock, method=method)
            response.begin()
            answers.append(Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()))
    return answers


def post(front: Front, headers: str, body: bytes = b"") -> bytes:
    return f"POST {front.post_path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{headers}\r\n".encode() + body


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%X\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


def assert_json_error(answer: Answer, status: int) -> None:
    assert answer.status == status, answer
    assert answer.headers["content-type"].startswith("application/json"), answer.headers
    assert isinstance(answer.json(), dict)


@pytest.mark.parametrize("content_length", [
    "Content-Length: eleven\r\n", "Content-Length: -5\r\n", "Content-Length: 3\r\nContent-Length: 30\r\n",
    "Content-Length: 0x10\r\n",
])
def test_a_malformed_content_length_gets_a_json_400_and_no_traceback(
    front: Front, content_length: str, capfd: pytest.CaptureFixture[str]
) -> None:
    [answer] = exchange(front, post(front, content_length, ECHO))

    assert_json_error(answer, 400)
    assert "Traceback" not in capfd.readouterr().err


def test_a_chunked_body_is_read_as_the_same_body_sent_with_a_length(front: Front) -> None:
    body = front.body
    whole, pieces = exchange(front, post(front, f"Content-Length: {len(body)}\r\n", body),
                             post(front, "Transfer-Encoding: chunked\r\n", chunked(body[:7], body[7:])))

    assert whole.status == pieces.status == 200
    if front.echoes:
        assert pieces.json() == whole.json() == {"echo": body.decode()}


@pytest.mark.parametrize("body", [b"zz\r\nhello\r\n0\r\n\r\n", b"5\r\nhello!!!0\r\n\r\n"])
def test_malformed_chunking_gets_a_json_400(front: Front, body: bytes) -> None:
    [answer] = exchange(front, post(front, "Transfer-Encoding: chunked\r\n", body))

    assert_json_error(answer, 400)


def test_a_chunked_body_over_the_cap_is_refused_without_reading_it(front: Front) -> None:
    [answer] = exchange(front, post(front, "Transfer-Encoding: chunked\r\n", b"FFFFFFFF\r\n"))

    assert_json_error(answer, 413)


@pytest.mark.parametrize("method", ["PUT", "DELETE", "PATCH", "TRACE", "BREW"])
def test_a_method_nobody_routes_gets_a_json_answer(front: Front, method: str) -> None:
    [answer] = exchange(front, f"{method} /v1/whatever HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())

    assert answer.headers["content-type"].startswith("application/json")
    if front.echoes:  # the local API and the Function URL hand it to the function, which answers for itself
        assert answer.json() == {"echo": None}
    else:
        assert answer.status in (404, 405)
        assert isinstance(answer.json(), dict)


def test_a_head_request_gets_headers_only_and_the_connection_stays_usable(front: Front) -> None:
    head = b"HEAD /v1/whatever HTTP/1.1\r\nHost: x\r\n\r\n"
    get = b"GET /v1/whatever HTTP/1.1\r\nHost: x\r\n\r\n"

    [headed] = exchange(front, head, method="HEAD")
    first, second = exchange(front, get, get, method="GET")

    assert headed.body == b""
    assert headed.headers["content-type"].startswith("application/json")
    assert first.status == second.status


def test_a_garbled_request_line_gets_a_json_400(front: Front) -> None:
    [answer] = exchange(front, b"THIS IS NOT HTTP\r\n\r\n")

    assert_json_error(answer, 400)


def test_a_client_resetting_an_idle_keep_alive_connection_leaves_no_traceback(
    front: Front, capfd: pytest.CaptureFixture[str]
) -> None:
    sock = socket.create_connection((front.host, front.port), timeout=5)
    sock.sendall(b"GET /v1/whatever HTTP/1.1\r\nHost: x\r\n\r\n")
    response = http.client.HTTPResponse(sock, method="GET")
    response.begin()
    response.read()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()  # a reset, as a browser tab or a load balancer drops an idle connection
    time.sleep(0.3)

    assert "Traceback" not in capfd.readouterr().err

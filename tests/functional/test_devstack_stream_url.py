"""The local Function URL hands every method and path to the function, as a real Function URL does."""

from __future__ import annotations

import http.client
from typing import Any, Iterator, Mapping

import pytest

from devstack.stream_url import StreamFunctionUrl

PAGE = "http://127.0.0.1:3000"


class RecordingFunction:
    """The streaming function's `respond`: a 404 for everything, the events kept."""

    def __init__(self) -> None:
        self.events: list[Mapping[str, Any]] = []

    def respond(self, event: Mapping[str, Any], context: Any = None) -> tuple[dict[str, Any], Iterator[bytes]]:
        self.events.append(event)
        return ({"statusCode": 404, "headers": {"content-type": "application/json"}},
                (part for part in [b'{"error": {"code": "not_found"}}']))


@pytest.fixture
def function() -> RecordingFunction:
    return RecordingFunction()


@pytest.fixture
def url(function: RecordingFunction) -> Iterator[StreamFunctionUrl]:
    with StreamFunctionUrl(function, allowed_origins=[PAGE]) as started:
        yield started


def request(url: StreamFunctionUrl, method: str, path: str,
            headers: dict[str, str] | None = None) -> http.client.HTTPResponse:
    host, port = url.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=5)
    connection.request(method, path, headers=headers or {})
    response = connection.getresponse()
    response.read()
    connection.close()
    return response


@pytest.mark.parametrize("method, path", [("GET", "/v1/models"), ("GET", "/v1/models/behest-mini?x=1"),
                                          ("DELETE", "/v1/chat/completions"), ("PATCH", "/anything/at/all"),
                                          ("OPTIONS", "/v1/models")])
def test_every_method_and_path_reaches_the_function(
    url: StreamFunctionUrl, function: RecordingFunction, method: str, path: str
) -> None:
    response = request(url, method, path)

    assert response.status == 404
    [event] = function.events
    assert (event["requestContext"]["http"]["method"], event["rawPath"]) == (method, path.split("?")[0])
    assert event["routeKey"] == "$default"


def test_a_preflight_is_answered_by_the_url_itself_allowing_get_and_post(
    url: StreamFunctionUrl, function: RecordingFunction
) -> None:
    response = request(url, "OPTIONS", "/v1/models", {"Origin": PAGE, "Access-Control-Request-Method": "GET"})

    assert response.status == 204
    assert response.getheader("access-control-allow-origin") == PAGE
    assert {m.strip() for m in (response.getheader("access-control-allow-methods") or "").split(",")} == {"GET", "POST"}
    assert function.events == []

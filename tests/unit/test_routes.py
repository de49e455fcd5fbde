"""The route table's matcher: literal paths, `{param}` segments, 404 and 405, one function's routes."""

from __future__ import annotations

import pytest

from behest_lambda import routes
from behest_lambda.errors import MethodNotAllowedError, NotFoundError
from behest_lambda.routes import FUNCTION_URL, HTTP_API, RELAY_FUNCTION, TOKEN_FUNCTION, match, routes_for


def test_a_literal_path_matches_itself_alone() -> None:
    found = match("POST", "/v1/chat/completions")

    assert (found.route.core, found.params) == ("chat", {})
    for near in ("/v1/chat/completions/", "/v1/chat/completion", "/V1/chat/completions", "/v1/chat/completions?x"):
        with pytest.raises(NotFoundError):
            match("POST", near)


def test_a_parameter_is_one_whole_segment() -> None:
    assert match("GET", "/v1/models/gpt-4o-mini").params == {"model": "gpt-4o-mini"}
    assert match("GET", "/v1/models").route.core == "models"
    for outside in ("/v1/models/a/b", "/v1/models/", "/v1/modelsx/a"):
        with pytest.raises(NotFoundError):
            match("GET", outside)


def test_a_known_path_with_another_method_is_405_naming_the_allowed_ones() -> None:
    with pytest.raises(MethodNotAllowedError) as refused:
        match("DELETE", "/v1/models/m")

    assert refused.value.allow == ("GET",)


def test_a_function_matches_only_its_own_routes() -> None:
    token_routes = routes_for(HTTP_API, TOKEN_FUNCTION)

    assert match("POST", "/api/behest/token", token_routes).route.function == TOKEN_FUNCTION
    with pytest.raises(NotFoundError):
        match("POST", "/v1/chat/completions", token_routes)
    with pytest.raises(NotFoundError):
        match("POST", "/api/behest/token", routes_for(FUNCTION_URL))
    assert match("GET", "/v1/models/m", routes_for(HTTP_API, RELAY_FUNCTION)).params == {"model": "m"}


def test_only_templates_with_a_parameter_are_compiled_and_only_once_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "_PATTERNS", {})
    match("POST", "/api/behest/token", routes_for(HTTP_API, TOKEN_FUNCTION))
    assert routes._PATTERNS == {}

    match("GET", "/v1/models/m")
    match("GET", "/v1/models/n")
    assert [route.path for route in routes._PATTERNS] == ["/v1/models/{model}"]

"""The stand-in's schema instances: every one satisfies its schema (checked by jsonschema), and repeats."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, Optional

import jsonschema
import pytest
from openai.lib._pydantic import to_strict_json_schema
from pydantic import BaseModel, Field

from devstack.standin import schema_instance


class Unit(StrEnum):
    celsius = "celsius"
    fahrenheit = "fahrenheit"


class Place(BaseModel):
    city: str
    country: Optional[str] = None
    lat: float = Field(ge=-90, le=90)


class Forecast(BaseModel):
    place: Place
    unit: Unit
    days: list[int] = Field(min_length=2, max_length=3)
    kind: Literal["daily", "hourly"]
    warnings: Optional[list[str]]
    confident: bool


class Tree(BaseModel):
    name: str
    children: list[Tree]
    parent: Optional[Tree]


SCHEMAS: dict[str, dict[str, Any]] = {
    "an object with required properties of every scalar type": {
        "type": "object",
        "properties": {"s": {"type": "string"}, "n": {"type": "number"}, "i": {"type": "integer"},
                       "b": {"type": "boolean"}, "z": {"type": "null"}},
        "required": ["s", "n", "i", "b", "z"], "additionalProperties": False,
    },
    "strings with formats and lengths": {
        "type": "object",
        "properties": {"when": {"type": "string", "format": "date-time"}, "day": {"type": "string", "format": "date"},
                       "mail": {"type": "string", "format": "email"}, "id": {"type": "string", "format": "uuid"},
                       "long": {"type": "string", "minLength": 40}, "short": {"type": "string", "maxLength": 2}},
        "required": ["when", "day", "mail", "id", "long", "short"],
    },
    "numbers held inside their bounds": {
        "type": "object",
        "properties": {"low": {"type": "integer", "minimum": 10}, "high": {"type": "number", "maximum": 1},
                       "open": {"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 5},
                       "under": {"type": "number", "exclusiveMaximum": 0}},
        "required": ["low", "high", "open", "under"],
    },
    "enums, consts and nullable types": {
        "type": "object",
        "properties": {"unit": {"type": "string", "enum": ["c", "f"]}, "fixed": {"const": 3},
                       "maybe": {"type": ["string", "null"]}},
        "required": ["unit", "fixed", "maybe"],
    },
    "arrays with item counts and tuples": {
        "type": "object",
        "properties": {"some": {"type": "array", "items": {"type": "integer"}, "minItems": 3},
                       "none": {"type": "array", "items": {"type": "string"}, "maxItems": 0},
                       "pair": {"type": "array", "prefixItems": [{"type": "string"}, {"type": "boolean"}],
                                "minItems": 2, "maxItems": 2}},
        "required": ["some", "none", "pair"],
    },
    "nested objects in arrays": {
        "type": "object",
        "properties": {"rows": {"type": "array", "items": {
            "type": "object", "properties": {"cells": {"type": "array", "items": {"type": "number"}}},
            "required": ["cells"]}}},
        "required": ["rows"],
    },
    "a bare string": {"type": "string"},
    "an object with no properties": {"type": "object", "properties": {}},
    "a pydantic model with refs, enums, literals, optionals and bounds": Forecast.model_json_schema(),
    "the same model made strict by the OpenAI SDK": to_strict_json_schema(Forecast),
    "a recursive pydantic model": Tree.model_json_schema(),
    "allOf parts merged": {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                                     {"properties": {"b": {"type": "integer", "minimum": 2}}, "required": ["b"]}]},
}


@pytest.mark.parametrize("schema", SCHEMAS.values(), ids=list(SCHEMAS))
def test_every_instance_satisfies_its_schema(schema: dict[str, Any]) -> None:
    instance = schema_instance(schema)

    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(instance)


@pytest.mark.parametrize("schema", SCHEMAS.values(), ids=list(SCHEMAS))
def test_the_same_schema_always_gives_the_same_instance(schema: dict[str, Any]) -> None:
    assert schema_instance(schema) == schema_instance(schema)


def test_an_object_gets_every_property_and_strings_are_named_after_theirs() -> None:
    schema = SCHEMAS["an object with required properties of every scalar type"]

    assert schema_instance(schema) == {"s": "s", "n": 2.5, "i": 7, "b": True, "z": None}


def test_a_pydantic_model_parses_its_own_instance() -> None:
    forecast = Forecast.model_validate(schema_instance(to_strict_json_schema(Forecast)))

    assert (forecast.unit, forecast.kind, len(forecast.days), forecast.place.city) == (Unit.celsius, "daily", 2, "city")

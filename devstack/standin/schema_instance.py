"""A deterministic instance of a JSON schema: the arguments of a tool call, the content of a structured answer.

Covers what function parameters and structured-output schemas use: objects (every property given),
strings (a `format`, min/max length), numbers and integers (bounds), booleans, null, `enum`,
`const`, arrays (min/max items, `prefixItems`), `anyOf`/`oneOf` (the first non-null choice),
`allOf` (merged) and local `$ref`s. `pattern` is not honoured. The same schema always gives
the same instance, so a test computes what the stand-in answers without reading it back.
"""

from __future__ import annotations

from typing import Any, Optional

DEFAULT_INTEGER = 7
DEFAULT_NUMBER = 2.5
# A recursive schema ($ref to itself) stops growing here: optional parts become null, arrays as short as allowed.
MAX_DEPTH = 8
FORMATS = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "00:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "192.0.2.1",
}


def schema_instance(schema: Any, name: str = "value") -> Any:
    """A value that satisfies `schema`; strings are named after their property (`name` at the top)."""
    return _instance(schema, schema, name, 0)


def _instance(schema: Any, root: Any, name: str, depth: int) -> Any:
    if not isinstance(schema, dict):
        return name  # `true` or a malformed schema: anything goes
    schema = _resolved(schema, root)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    choices = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(choices, list) and choices:
        return _instance(_choice(choices, root, depth), root, name, depth + 1)
    kind = _kind(schema)
    if kind == "object":
        properties = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        return {key: _instance(value, root, key, depth + 1) for key, value in properties.items()}
    if kind == "array":
        return _array(schema, root, name, depth)
    if kind == "string":
        return _string(schema, name)
    if kind == "integer":
        return _number(schema, DEFAULT_INTEGER, 1)
    if kind == "number":
        return _number(schema, DEFAULT_NUMBER, 0.5)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return name


def _resolved(schema: dict[str, Any], root: Any) -> dict[str, Any]:
    """The schema with its `$ref` followed and its `allOf` merged in."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#"):
        target: Any = root
        for step in ref[1:].split("/")[1:]:
            target = target.get(step.replace("~1", "/").replace("~0", "~")) if isinstance(target, dict) else None
        merged = {**(_resolved(target, root) if isinstance(target, dict) else {}), **schema}
        merged.pop("$ref")
        schema = merged
    parts = schema.get("allOf")
    if isinstance(parts, list):
        merged = {key: value for key, value in schema.items() if key != "allOf"}
        for part in parts:
            if isinstance(part, dict):
                part = _resolved(part, root)
                properties = {**merged.get("properties", {}), **part.get("properties", {})}
                merged = {**part, **merged, **({"properties": properties} if properties else {})}
        schema = merged
    return schema


def _choice(choices: list[Any], root: Any, depth: int) -> Any:
    """The first choice that is not null; past MAX_DEPTH, null when there is one (it ends a recursion)."""
    def is_null(choice: Any) -> bool:
        return isinstance(choice, dict) and _kind(_resolved(choice, root)) == "null"

    if depth >= MAX_DEPTH:
        nulls = [choice for choice in choices if is_null(choice)]
        if nulls:
            return nulls[0]
    return next((choice for choice in choices if not is_null(choice)), choices[0])


def _kind(schema: dict[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"] or kind
        kind = kinds[0] if kinds else None
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema or "prefixItems" in schema:
        return "array"
    return ""


def _array(schema: dict[str, Any], root: Any, name: str, depth: int) -> list[Any]:
    fewest = _whole(schema, "minItems") or 0
    most = _whole(schema, "maxItems")
    prefix: list[Any] = schema["prefixItems"] if isinstance(schema.get("prefixItems"), list) else []
    count = max(fewest if depth >= MAX_DEPTH else max(fewest, 1), len(prefix))
    if most is not None:
        count = min(count, most)
    items = schema.get("items", {})
    return [_instance(prefix[index] if index < len(prefix) else items, root, name, depth + 1) for index in range(count)]


def _string(schema: dict[str, Any], name: str) -> str:
    text = FORMATS.get(str(schema.get("format")), name)
    shortest, longest = _whole(schema, "minLength"), _whole(schema, "maxLength")
    if shortest is not None and len(text) < shortest:
        text += "x" * (shortest - len(text))
    if longest is not None and len(text) > longest:
        text = text[:longest]
    return text


def _number(schema: dict[str, Any], default: float, step: float) -> Any:
    """The least allowed value when there is a lower bound, else the default held under any upper bound."""
    low, high = _bound(schema, "minimum"), _bound(schema, "maximum")
    low_open, high_open = _bound(schema, "exclusiveMinimum"), _bound(schema, "exclusiveMaximum")
    if low_open is not None:
        value = low_open + step
    elif low is not None:
        value = low
    else:
        value = default
        if high_open is not None and value >= high_open:
            value = high_open - step
        if high is not None and value > high:
            value = high
    return int(value) if step == 1 else value


def _whole(schema: dict[str, Any], key: str) -> Optional[int]:
    value = schema.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _bound(schema: dict[str, Any], key: str) -> Optional[float]:
    value = schema.get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None

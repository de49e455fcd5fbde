"""Function calling: which offered tools a turn calls, with arguments that satisfy their schemas.

The rule is deterministic, so that a test knows what the stand-in answers:
- `tool_choice: "none"`, or no tools: no call.
- a named tool (`{"type": "function", ...}`): that tool alone.
- a turn that answers tool results (the conversation ends with them): no call under `auto`; under
  `required`, the tools the conversation has not called yet (or the first, when all have been).
- otherwise: the tools not called yet in the conversation (all of them, when all have been), in
  the order offered: every one at once (parallel calls) unless `parallel_tool_calls` is false,
  then only the first.
Chat and the Responses API spell tools, choices and calls differently; `chat_tools` and
`responses_tools` read both into the same `Tool`s.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, NamedTuple

from .answers import text_of
from .errors import Refusal
from .schema_instance import schema_instance

# Each argument delta of a stream carries this many characters, as a model's tokens would.
ARGUMENT_FRAGMENT = 8


class Tool(NamedTuple):
    """An offered function: its name and its parameters' JSON schema."""

    name: str
    parameters: dict[str, Any]


class Call(NamedTuple):
    """A call the assistant makes: its id, the function's name and its arguments as JSON text."""

    call_id: str
    name: str
    arguments: str


class Offer(NamedTuple):
    """What a request offers: tools, the choice among them, and whether calls may run in parallel."""

    tools: list[Tool]
    choice: Any
    parallel: bool


def chat_tools(body: dict[str, Any]) -> Offer:
    """The function tools of a chat request (`{"type": "function", "function": {...}}`); other tool types are not used."""
    tools = []
    for index, tool in enumerate(_list(body, "tools")):
        if not isinstance(tool, dict):
            raise Refusal(400, "validation_error", f"tools[{index}] must be an object")
        if tool.get("type", "function") != "function":
            continue
        function = tool.get("function")
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise Refusal(400, "validation_error", f"tools[{index}] must be a function with a name")
        tools.append(Tool(function["name"], _parameters(function.get("parameters"))))
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        function = choice.get("function")
        choice = function.get("name") if isinstance(function, dict) else None
    return _offer(tools, choice, body)


def responses_tools(body: dict[str, Any]) -> Offer:
    """The function tools of a Responses request (`{"type": "function", "name": ...}`); other tool types are not used."""
    tools = []
    for index, tool in enumerate(_list(body, "tools")):
        if not isinstance(tool, dict):
            raise Refusal(400, "validation_error", f"tools[{index}] must be an object")
        if tool.get("type") != "function":
            continue
        if not isinstance(tool.get("name"), str):
            raise Refusal(400, "validation_error", f"tools[{index}] must have a name")
        tools.append(Tool(tool["name"], _parameters(tool.get("parameters"))))
    choice = body.get("tool_choice")
    if isinstance(choice, dict):
        choice = choice.get("name")
    return _offer(tools, choice, body)


def calls_for(offer: Offer, called: list[str], answers_results: bool, seed: str) -> list[Call]:
    """The calls this turn makes (see the module's rule); `called` names the conversation's earlier calls."""
    if offer.choice == "none" or not offer.tools:
        return []
    by_name = {tool.name: tool for tool in offer.tools}
    if offer.choice not in ("auto", "required"):
        chosen = [by_name[offer.choice]]
    elif answers_results and offer.choice == "auto":
        return []
    else:
        fresh = [tool for tool in offer.tools if tool.name not in called]
        chosen = fresh or (offer.tools[:1] if answers_results else offer.tools)
        if not offer.parallel:
            chosen = chosen[:1]
    return [Call(call_id(seed, index), tool.name, json.dumps(schema_instance(tool.parameters)))
            for index, tool in enumerate(chosen)]


def call_id(seed: str, index: int) -> str:
    """A call id derived from the conversation, so that the same request gets the same ids."""
    return "call_" + hashlib.sha256(f"{seed}:{index}".encode()).hexdigest()[:24]


def fragments(arguments: str) -> list[str]:
    """The argument text in the pieces a stream sends; joined they give it back."""
    return [arguments[at:at + ARGUMENT_FRAGMENT] for at in range(0, len(arguments), ARGUMENT_FRAGMENT)] or [""]


# --- chat shapes ------------------------------------------------------------------------------------------------

def chat_tool_calls(calls: list[Call]) -> list[dict[str, Any]]:
    """The `tool_calls` of a whole assistant message."""
    return [{"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in calls]


def chat_tool_call_deltas(calls: list[Call]) -> list[dict[str, Any]]:
    """The streamed deltas: per call, one with index, id, type and name, then its argument fragments."""
    deltas = []
    for index, call in enumerate(calls):
        deltas.append({"tool_calls": [{"index": index, "id": call.call_id, "type": "function",
                                       "function": {"name": call.name, "arguments": ""}}]})
        deltas += [{"tool_calls": [{"index": index, "function": {"arguments": piece}}]}
                   for piece in fragments(call.arguments) if piece]
    return deltas


def chat_history(messages: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The names the conversation has called so far, and the results that end it (role: tool messages)."""
    called = [call["function"]["name"] for message in messages if message.get("role") == "assistant"
              for call in _list(message, "tool_calls")
              if isinstance(call, dict) and isinstance(call.get("function"), dict)
              and isinstance(call["function"].get("name"), str)]
    results: list[str] = []
    for message in reversed(messages):
        if message.get("role") != "tool":
            break
        results.insert(0, text_of(message.get("content")))
    return called, results


def responses_history(items: list[dict[str, Any]]) -> tuple[list[str], list[str]]:
    """The names called so far (`function_call` items), and the `function_call_output`s that end the input."""
    called = [item["name"] for item in items if item.get("type") == "function_call" and isinstance(item.get("name"), str)]
    results: list[str] = []
    for item in reversed(items):
        if item.get("type") != "function_call_output":
            break
        results.insert(0, text_of(item.get("output")))
    return called, results


def _offer(tools: list[Tool], choice: Any, body: dict[str, Any]) -> Offer:
    if choice is None:
        choice = "auto"
    if not isinstance(choice, str) or (choice not in ("none", "auto", "required")
                                       and choice not in {tool.name for tool in tools}):
        raise Refusal(400, "validation_error", "tool_choice must be none, auto, required or an offered function")
    return Offer(tools, choice, body.get("parallel_tool_calls") is not False)


def _parameters(parameters: Any) -> dict[str, Any]:
    if parameters is None:
        return {"type": "object", "properties": {}}
    if not isinstance(parameters, dict):
        raise Refusal(400, "validation_error", "a function's parameters must be a JSON schema object")
    return parameters


def _list(document: dict[str, Any], name: str) -> list[Any]:
    value = document.get(name)
    if value is None:
        return []
    if not isinstance(value, list):
        raise Refusal(400, "validation_error", f"{name} must be an array")
    return value


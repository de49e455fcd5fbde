"""The tools and the structured-output model the tool tests offer, in chat's and the Responses API's shapes."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

WEATHER = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
           "required": ["city", "days"], "additionalProperties": False}
TIME = {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"], "additionalProperties": False}
CHAT_TOOLS: list[Any] = [{"type": "function", "function": {"name": "weather", "parameters": WEATHER, "strict": True}},
                         {"type": "function", "function": {"name": "time", "parameters": TIME, "strict": True}}]
RESPONSES_TOOLS: list[Any] = [{"type": "function", "name": "weather", "parameters": WEATHER, "strict": True},
                              {"type": "function", "name": "time", "parameters": TIME, "strict": True}]
ASK: list[Any] = [{"role": "user", "content": "weather and time in Oslo"}]


class Weather(BaseModel):
    """What a structured answer about the weather holds."""

    city: str
    days: int

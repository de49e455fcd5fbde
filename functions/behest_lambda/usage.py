"""Per-user usage: what each relayed answer cost, read from Behest's own usage fields as the answer passes.

One `UsageMeter` watches one answer (whole JSON, or SSE events one by one) and ends as one
usage record: who, which model, how many tokens, how it ended. Never any message content.
"""

from __future__ import annotations

import time
from typing import Any, Optional

OK = "ok"
BROKEN = "broken_off"  # the stream broke after its first byte (reset, stall, deadline, garbled event)
CLIENT_GONE = "client_closed"  # the client left before the end
MAX_MODEL_CHARS = 128


class UsageMeter:
    """Counts as the answer passes; `record()` is the usage record."""

    __slots__ = ("route", "user_id", "session_id", "tier", "model_requested", "streamed", "started", "model",
                 "input_tokens", "output_tokens", "cached_tokens", "reasoning_tokens", "first_byte_at", "status",
                 "caller")

    def __init__(self, route: str, user_id: str, session_id: Optional[str], tier: Optional[int],
                 model_requested: Optional[str], streamed: bool) -> None:
        self.route = route
        self.user_id = user_id
        self.session_id = session_id
        self.tier = tier
        self.model_requested = model_requested
        self.streamed = streamed
        self.started = time.monotonic()
        self.model: Optional[str] = None
        self.input_tokens: Optional[int] = None
        self.output_tokens: Optional[int] = None
        self.cached_tokens: Optional[int] = None
        self.reasoning_tokens: Optional[int] = None
        self.first_byte_at: Optional[float] = None
        self.status = 200
        self.caller: Optional[str] = None  # the trusted role acting for the user (server-to-server front)

    def first_byte(self) -> None:
        if self.first_byte_at is None:
            self.first_byte_at = time.monotonic()

    def observe(self, document: Any) -> None:
        """Take the model and usage from a whole answer, a chat chunk, or a Responses event."""
        if not isinstance(document, dict):
            return
        response = document.get("response")
        if isinstance(response, dict):  # Responses API events carry the response object
            document = response
        model = document.get("model")
        if isinstance(model, str) and model:
            self.model = model[:MAX_MODEL_CHARS]
        usage = document.get("usage")
        if isinstance(usage, dict):
            self._usage(usage)

    def _usage(self, usage: dict[str, Any]) -> None:
        # Chat and embeddings say prompt/completion; the Responses API says input/output.
        self.input_tokens = _count(usage, "prompt_tokens", "input_tokens")
        # Embeddings report no output: zero of them, so that per-user sums add up.
        self.output_tokens = _count(usage, "completion_tokens", "output_tokens")
        if self.output_tokens is None and self.input_tokens is not None:
            self.output_tokens = 0
        details_in = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
        details_out = usage.get("completion_tokens_details") or usage.get("output_tokens_details")
        self.cached_tokens = _count(details_in, "cached_tokens") if isinstance(details_in, dict) else None
        self.reasoning_tokens = _count(details_out, "reasoning_tokens") if isinstance(details_out, dict) else None

    def record(self, outcome: str = OK) -> dict[str, Any]:
        """The usage record's fields (see README, "Usage and cost")."""
        now = time.monotonic()
        return {
            "route": self.route,
            "user_id": self.user_id,
            "caller": self.caller,
            "session_id": self.session_id,
            "tier": self.tier,
            "model_requested": self.model_requested,
            "model": self.model,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "status": self.status,
            "outcome": outcome,
            "streamed": self.streamed,
            "first_byte_ms": None if self.first_byte_at is None else round((self.first_byte_at - self.started) * 1000, 1),
            "duration_ms": round((now - self.started) * 1000, 1),
        }


def _count(document: Any, *names: str) -> Optional[int]:
    for name in names:
        value = document.get(name) if isinstance(document, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**12:
            return value
    return None

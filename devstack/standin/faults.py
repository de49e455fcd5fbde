"""The fault model: misbehaviours queued on the stand-in, each used up by the next request it applies to."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal, Optional, get_args

from .errors import Refusal

CHAT_PATH = "/v1/chat/completions"
RESPONSES_PATH = "/v1/responses"
EMBEDDINGS_PATH = "/v1/embeddings"
MODELS_PATH = "/v1/models"
MINT_PATH = "/v1/auth/mint"

FaultKind = Literal["status", "delay", "reset_after", "garbage", "endless"]
FAULT_KINDS: frozenset[str] = frozenset(get_args(FaultKind))
PATH_ALIASES = {"chat": CHAT_PATH, "mint": MINT_PATH, "responses": RESPONSES_PATH, "embeddings": EMBEDDINGS_PATH,
                "models": MODELS_PATH, "completions": "/v1/completions"}
GARBAGE = b"\x00\xff<html>502 Bad Gateway</html> {not: json,,, \xfe\xfd"


@dataclass(frozen=True)
class Fault:
    """One misbehaviour, applied to the next request on `path` (an alias in PATH_ALIASES, a full path, or any when None).

    A path covers the paths below it: "models" applies to /v1/models and /v1/models/<id>.

    status: answer `status` (with `code`, `message`, `retry_after`) in Behest's error shape.
    delay: wait `seconds`, then answer normally.
    reset_after: send `chunks` stream events (for a buffered answer: half the body when `chunks` > 0),
        then reset the connection.
    garbage: answer 200 with bytes that are not JSON (inside the SSE for a stream).
    endless: a stream that never ends, an event every `seconds` (else the gateway's chunk_delay).
    """

    kind: FaultKind
    status: int = 500
    code: Optional[str] = None
    message: Optional[str] = None
    retry_after: Optional[int] = None
    seconds: float = 0.0
    chunks: int = 0
    path: Optional[str] = None

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {sorted(FAULT_KINDS)}")
        if not is_int(self.status) or not 400 <= self.status <= 599:
            raise ValueError("status must be a whole number from 400 to 599")
        if self.retry_after is not None and (not is_int(self.retry_after) or self.retry_after < 0):
            raise ValueError("retry_after must be a whole number of seconds")
        if isinstance(self.seconds, bool) or not isinstance(self.seconds, (int, float)) or self.seconds < 0:
            raise ValueError("seconds must be a non-negative number")
        if not is_int(self.chunks) or self.chunks < 0:
            raise ValueError("chunks must be a non-negative whole number")
        for name in ("code", "message"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string")
        if self.path is not None:
            path = PATH_ALIASES.get(self.path, self.path) if isinstance(self.path, str) else None
            if path is None or not path.startswith("/"):
                raise ValueError(f"path must be one of {sorted(PATH_ALIASES)} or a path starting with /")
            object.__setattr__(self, "path", path)

    @classmethod
    def from_json(cls, value: Any) -> Fault:
        """A fault from its JSON form, e.g. {"kind": "status", "status": 429, "retry_after": 2, "path": "chat"}."""
        if not isinstance(value, dict):
            raise ValueError("a fault must be a JSON object")
        unknown = set(value) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        if "kind" not in value:
            raise ValueError("a fault needs a kind")
        return cls(**value)

    def to_json(self) -> dict[str, Any]:
        """The JSON form."""
        return asdict(self)

    def applies_to(self, path: str) -> bool:
        """Whether a request on `path` takes this fault."""
        return self.path is None or path == self.path or path.startswith(self.path.rstrip("/") + "/")

    def refusal(self) -> Refusal:
        """The answer of a `status` fault."""
        retry_after = self.retry_after if self.retry_after is not None else (1 if self.status == 429 else None)
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        refusal = Refusal.for_status(self.status, self.message or f"injected fault: status {self.status}", headers)
        if self.code:
            refusal.code = self.code
        return refusal


def faults_from_json(value: Any) -> list[Fault]:
    """Faults from `{"faults": [...]}`, a list, or one fault object."""
    if isinstance(value, dict) and "faults" in value:
        value = value["faults"]
    items = value if isinstance(value, list) else [value]
    return [Fault.from_json(item) for item in items]


def is_int(value: Any) -> bool:
    """A JSON whole number (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool)

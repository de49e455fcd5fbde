"""The stand-in's refusals, in Behest's error shape: `{"error": {"code", "message"}}` with a status."""

from __future__ import annotations

from typing import Mapping, Optional

ERROR_CODES = {
    400: "validation_error",
    401: "invalid_token",
    402: "quota_exceeded",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "validation_error",
    422: "validation_error",
    429: "rate_limited",
    451: "content_blocked",
}


class Refusal(Exception):
    """An answer in Behest's error shape, raised to end a request early."""

    def __init__(self, status: int, code: str, message: str, headers: Optional[Mapping[str, str]] = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})

    @classmethod
    def for_status(cls, status: int, message: str, headers: Optional[Mapping[str, str]] = None) -> Refusal:
        """A refusal with the gateway's usual code for `status`."""
        code = ERROR_CODES.get(status, "server_error" if status >= 500 else "request_failed")
        return cls(status, code, message, headers)

    def body(self) -> dict[str, dict[str, str]]:
        """The JSON body."""
        return {"error": {"code": self.code, "message": self.message}}

"""Structured JSON logs and CloudWatch Embedded Metric Format lines, on the stdlib alone.

Powertools' Logger and Metrics cost ~45 ms of import at every cold start (see README,
"Cold start"); one JSON line per event on stdout gives CloudWatch the same records.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, Optional, TextIO

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40}


class Telemetry:
    """One JSON object per log line and per metric, tagged with the service and request id."""

    def __init__(
        self,
        service: str,
        *,
        level: str = "INFO",
        namespace: str = "BehestLambda",
        stream: Optional[TextIO] = None,
    ) -> None:
        self.service = service
        self.threshold = _LEVELS.get(level.upper(), 20)
        self.namespace = namespace
        self._stream = stream
        self.request_id: Optional[str] = None
        self.cold_start = True

    def configure(self, level: str, namespace: str) -> None:
        """Apply the configured log level and metrics namespace."""
        self.threshold = _LEVELS.get(level.upper(), 20)
        self.namespace = namespace

    def start_invocation(self, context: Any) -> None:
        """Tag what follows with this invocation's request id; the first invocation is the cold one."""
        if self.request_id is not None:
            self.cold_start = False
        self.request_id = getattr(context, "aws_request_id", None) or "-"

    def debug(self, message: str, **fields: Any) -> None:
        self._log("DEBUG", message, fields)

    def info(self, message: str, **fields: Any) -> None:
        self._log("INFO", message, fields)

    def warning(self, message: str, **fields: Any) -> None:
        self._log("WARNING", message, fields)

    def error(self, message: str, **fields: Any) -> None:
        self._log("ERROR", message, fields)

    def metric(self, name: str, value: float = 1, unit: str = "Count", **dimensions: str) -> None:
        """Emit one EMF record; CloudWatch turns it into a metric with the service (+ given) dimensions."""
        record: dict[str, Any] = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [
                    {
                        "Namespace": self.namespace,
                        "Dimensions": [["service", *dimensions]],
                        "Metrics": [{"Name": name, "Unit": unit}],
                    }
                ],
            },
            "service": self.service,
            **dimensions,
            name: value,
        }
        self._write(record)

    def _log(self, level: str, message: str, fields: dict[str, Any]) -> None:
        if _LEVELS[level] < self.threshold:
            return
        now = time.time()
        record: dict[str, Any] = {
            "level": level,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z",
            "service": self.service,
            "message": message,
            "request_id": self.request_id,
            "cold_start": self.cold_start,
            **fields,
        }
        self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        stream = self._stream or sys.stdout
        stream.write(json.dumps(record, default=str, separators=(",", ":")) + "\n")
        stream.flush()

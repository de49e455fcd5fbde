"""Logs and metrics through Powertools: JSON log lines with the Lambda context, EMF metrics flushed per invocation.

`Telemetry` is the one object the functions log and count through. It keeps Powertools'
record format (so Lambda teams' queries and dashboards read it), adds `cold_start` and the
API Gateway / Function URL request id as `correlation_id`, and groups metrics by dimension
set so that each invocation ends with one EMF record per set (`flush`, called on every path).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import sys
from typing import IO, Any, Mapping, Optional

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import EphemeralMetrics

from . import settings as names

DEFAULT_NAMESPACE = "BehestLambda"
# Library loggers whose records come out as the same JSON lines (never at DEBUG: botocore would log wire data).
LIBRARY_LOGGERS = {"botocore", "boto3", "urllib3"}
MAX_DIMENSION_CHARS = 64


class _Output:
    """Where the lines go: the given stream, or whatever sys.stdout is at the time of writing."""

    def __init__(self, stream: Optional[IO[str]]) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        target = self.stream or sys.stdout
        written = target.write(text)
        target.flush()
        return written

    def flush(self) -> None:
        (self.stream or sys.stdout).flush()


class _OwnLogger(Logger):
    """A Powertools Logger on a stdlib logger of its own, so that each Telemetry writes where it was told."""

    # Never id(self): a collected logger's address comes back, and with it the old stdlib logger and its handler.
    _numbers = itertools.count(1)

    def _get_logger(self) -> logging.Logger:
        return logging.getLogger(f"{self.service}.telemetry-{next(self._numbers)}")


class Telemetry:
    """JSON logs and EMF metrics for one function (tests pass a `stream` to read them back)."""

    def __init__(self, service: str, *, stream: Optional[IO[str]] = None, level: Optional[str] = None,
                 environ: Optional[Mapping[str, str]] = None) -> None:
        env = os.environ if environ is None else environ
        self.service = env.get(names.POWERTOOLS_SERVICE_NAME) or service
        self.namespace = env.get(names.POWERTOOLS_METRICS_NAMESPACE) or env.get(names.METRICS_NAMESPACE) or DEFAULT_NAMESPACE
        # Powertools reads POWERTOOLS_LOG_LEVEL (and Lambda's AWS_LAMBDA_LOG_LEVEL) itself; LOG_LEVEL is the older name.
        if level is None and not env.get(names.POWERTOOLS_LOG_LEVEL):
            level = env.get(names.LOG_LEVEL) or None
        self._output = _Output(stream)
        logger_class = Logger if stream is None else _OwnLogger
        self.logger = logger_class(service=self.service, level=level, stream=self._output)  # type: ignore[arg-type]
        self.cold_start = True
        self._invocations = 0
        self._emf: Optional[EphemeralMetrics] = None
        self._metrics: dict[tuple[tuple[str, str], ...], dict[str, tuple[str, float]]] = {}
        # The front this function serves (http_api, function_url, service_url), set when its routes are built.
        self.front: Optional[str] = None

    def adopt_library_loggers(self) -> None:
        """Write botocore's and urllib3's records as the same JSON lines (call once they are imported)."""
        copy_config_to_registered_loggers(source_logger=self.logger, include=LIBRARY_LOGGERS,
                                          log_level=max(self.logger.log_level, logging.INFO))

    def start_invocation(self, context: Any, request_id: Optional[str] = None) -> None:
        """Tag what follows with this invocation's context; the first invocation of a container is the cold one."""
        self._invocations += 1
        self.cold_start = self._invocations == 1
        keys: dict[str, Any] = {"cold_start": self.cold_start}
        for key, attribute in (("function_name", "function_name"), ("function_memory_size", "memory_limit_in_mb"),
                               ("function_arn", "invoked_function_arn"), ("function_request_id", "aws_request_id")):
            value = getattr(context, attribute, None)
            if value is not None:
                keys[key] = value
        self.logger.append_keys(**keys)
        self.logger.set_correlation_id(request_id)

    def after_restore(self) -> None:
        """A SnapStart restore: the next invocation is a cold start again."""
        self._invocations = 0

    def set_correlation_id(self, request_id: Optional[str]) -> None:
        """The API Gateway / Function URL request id, once the event is read."""
        self.logger.set_correlation_id(request_id)

    def debug(self, message: str, **fields: Any) -> None:
        self.logger.debug(message, extra=fields, stacklevel=3)

    def info(self, message: str, **fields: Any) -> None:
        self.logger.info(message, extra=fields, stacklevel=3)

    def warning(self, message: str, **fields: Any) -> None:
        self.logger.warning(message, extra=fields, stacklevel=3)

    def error(self, message: str, **fields: Any) -> None:
        self.logger.error(message, extra=fields, stacklevel=3)

    def metric(self, name: str, value: float = 1, unit: str = "Count", **dimensions: str) -> None:
        """Count `value` under `name` with the service (+ given) dimensions; written at `flush`."""
        key = tuple(sorted((k, _dimension_value(v)) for k, v in dimensions.items()))
        group = self._metrics.setdefault(key, {})
        previous = group.get(name)
        group[name] = (unit, value + (previous[1] if previous else 0))

    def flush(self) -> None:
        """Write the invocation's metrics: one EMF record per dimension set."""
        groups, self._metrics = self._metrics, {}
        if groups and self._emf is None:  # built once: its construction is most of a flush's cost
            self._emf = EphemeralMetrics(namespace=self.namespace, service=self.service)
        for dimensions, metrics in groups.items():
            emf = self._emf
            assert emf is not None
            for dimension, value in dimensions:
                emf.add_dimension(name=dimension, value=value)
            for name, (unit, total) in metrics.items():
                emf.add_metric(name=name, unit=unit, value=total)
            record = emf.serialize_metric_set()
            emf.clear_metrics()  # metrics, dimensions back to the service alone
            if self.front:
                # Each metric also under its dimension set plus `front`, in the same record: the sets that
                # alarms and dashboards read keep their identity, and no extra record is written.
                directive = record["_aws"]["CloudWatchMetrics"][0]
                directive["Dimensions"].append([*directive["Dimensions"][0], "front"])
                record["front"] = self.front  # type: ignore[typeddict-unknown-key]
            self._output.write(json.dumps(record, separators=(",", ":")) + "\n")


def _dimension_value(value: Any) -> str:
    text = str(value).strip()[:MAX_DIMENSION_CHARS]
    return text or "none"

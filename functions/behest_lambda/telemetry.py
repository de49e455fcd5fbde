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
import re
import sys
import threading
from typing import IO, Any, Mapping, Optional

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import EphemeralMetrics

from . import settings as names

DEFAULT_NAMESPACE = "BehestLambda"
# Library loggers whose records come out as the same JSON lines (never at DEBUG: botocore would log wire data).
LIBRARY_LOGGERS = {"botocore", "boto3", "urllib3"}
MAX_DIMENSION_CHARS = 64
# A logged value longer than this is cut, saying by how much: a caller's 1 MB `model` is not a 1 MB log line.
MAX_LOGGED_CHARS = 4096
# Characters a JSON line may hold raw but that break it on its way: lone surrogates cannot be encoded as
# UTF-8 at all; DEL, C1 controls and the Unicode line separators split or garble lines in some readers.
_UNSAFE = re.compile("[\ud800-\udfff\x7f-\x9f\u2028\u2029]")


def json_line(document: Any) -> str:
    """A log record as one JSON line that any UTF-8 stream takes, whatever the values hold.

    Powertools writes non-ASCII text as it is (readable in CloudWatch); only a line holding an
    unsafe character is written with every non-ASCII character escaped instead, which JSON readers
    decode back to the same value.
    """
    text = json.dumps(document, default=str, separators=(",", ":"), ensure_ascii=False)
    if not text.isascii() and _UNSAFE.search(text):
        text = json.dumps(document, default=str, separators=(",", ":"))
    return text


def bounded(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields with every string longer than MAX_LOGGED_CHARS cut, saying how much was cut."""
    for name, value in fields.items():
        if isinstance(value, str) and len(value) > MAX_LOGGED_CHARS:
            fields[name] = f"{value[:MAX_LOGGED_CHARS]}…[{len(value) - MAX_LOGGED_CHARS} more characters]"
    return fields


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


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Powertools' stream handler, except that a line it cannot write is never lost without a word.

    The stdlib would print a "Logging error" traceback to stderr and drop the line (a usage record,
    say). Here the line is written again, every value that is not plain JSON as its repr and every
    character escaped; if even that fails, one JSON line on stderr says which line was lost and why.
    """

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - the stdlib's name
        failure = sys.exc_info()[1]
        fields = {name: value for name, value in record.__dict__.items() if name not in _RECORD_ATTRIBUTES}
        try:
            rescued = {"level": record.levelname, "message": record.getMessage(), "log_write_failed": type(failure).__name__,
                       **{name: value if isinstance(value, _PLAIN) else repr(value) for name, value in fields.items()}}
            self.stream.write(json.dumps(bounded(rescued), separators=(",", ":")) + self.terminator)
            self.flush()
        except Exception:  # noqa: BLE001 - the last resort must not raise into the caller's request
            try:
                sys.stderr.write(json.dumps({"level": "ERROR", "message": "a log line could not be written",
                                             "lost": repr(record.msg)[:200], "error": type(failure).__name__}) + "\n")
            except Exception:  # noqa: BLE001, S110 - nowhere left to write
                pass


_PLAIN = (str, int, float, bool, type(None))
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


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
        # Powertools configures a service's stdlib logger once per process and skips a later Logger's handler,
        # which would then have no formatter: a second Telemetry of the service (make dev's stacks) shares the first's.
        shared = getattr(logging.getLogger(self.service), "powertools_handler", None) if stream is None else None
        self.logger = logger_class(service=self.service, level=level, logger_handler=shared or _Handler(self._output),
                                   json_serializer=json_line)
        self.cold_start = True
        self._invocations = 0
        self._emf: Optional[EphemeralMetrics] = None
        self._metrics: dict[tuple[tuple[str, str], ...], dict[str, tuple[str, float]]] = {}
        # Lambda runs one invocation at a time per container; make dev's local fronts run several at once through
        # one function, sharing these metrics and the EMF builder.
        self._metrics_lock = threading.Lock()
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
        self.logger.debug(message, extra=bounded(fields), stacklevel=3)

    def info(self, message: str, **fields: Any) -> None:
        self.logger.info(message, extra=bounded(fields), stacklevel=3)

    def warning(self, message: str, **fields: Any) -> None:
        self.logger.warning(message, extra=bounded(fields), stacklevel=3)

    def error(self, message: str, **fields: Any) -> None:
        self.logger.error(message, extra=bounded(fields), stacklevel=3)

    def metric(self, name: str, value: float = 1, unit: str = "Count", **dimensions: str) -> None:
        """Count `value` under `name` with the service (+ given) dimensions; written at `flush`."""
        key = tuple(sorted((k, _dimension_value(v)) for k, v in dimensions.items()))
        with self._metrics_lock:
            group = self._metrics.setdefault(key, {})
            previous = group.get(name)
            group[name] = (unit, value + (previous[1] if previous else 0))

    def flush(self) -> None:
        """Write the invocation's metrics: one EMF record per dimension set."""
        with self._metrics_lock:
            self._flush()

    def _flush(self) -> None:
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

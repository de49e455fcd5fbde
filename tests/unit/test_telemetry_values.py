"""Every logged value is written, whatever it holds, on a stream that encodes UTF-8 strictly as Lambda's stdout does."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from behest_lambda.telemetry import MAX_LOGGED_CHARS, Telemetry


class Utf8Stream(io.TextIOWrapper):
    """A text stream over bytes, strict UTF-8: what a lone surrogate meets on a real stdout."""

    def __init__(self) -> None:
        super().__init__(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)

    def lines(self) -> list[str]:
        self.flush()
        raw = self.buffer.getvalue()  # type: ignore[attr-defined]
        return [line.decode("utf-8") for line in raw.split(b"\n") if line]


class BrokenStream(Utf8Stream):
    """A stream whose writes fail once `broken` is set (a closed pipe, a full disk)."""

    broken = False

    def write(self, text: str) -> int:
        if self.broken:
            raise OSError("the pipe is gone")
        return super().write(text)


def telemetry_on(stream: io.TextIOBase) -> Telemetry:
    return Telemetry("test", stream=stream, level="INFO", environ={})  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["ada\ud800", "\udfff", "a\x00\x07\x1b[2Jb", "x\x7f\x85\u2028\u2029y", "Zoë 漢字"])
def test_a_usage_record_with_any_text_is_one_json_line_with_the_value_intact(
    value: str, capsys: pytest.CaptureFixture[str],
) -> None:
    stream = Utf8Stream()

    telemetry_on(stream).info("usage", user_id=value, model_requested=value, session_id=value)

    [line] = stream.lines()
    record = json.loads(line)
    assert (record["message"], record["user_id"], record["model_requested"]) == ("usage", value, value)
    assert "Logging error" not in capsys.readouterr().err


def test_readable_text_stays_readable_and_unsafe_text_is_escaped() -> None:
    stream = Utf8Stream()
    telemetry = telemetry_on(stream)

    telemetry.info("usage", user_id="Zoë")
    telemetry.info("usage", user_id="Zoë\u2028")

    readable, escaped = stream.lines()
    assert '"user_id":"Zoë"' in readable
    assert '"user_id":"Zo\\u00eb\\u2028"' in escaped and escaped.isascii()


def test_a_huge_value_is_cut_and_says_by_how_much() -> None:
    stream = Utf8Stream()

    telemetry_on(stream).info("usage", model_requested="m" * 1_000_000, route="chat")

    record = json.loads(stream.lines()[0])
    assert record["model_requested"] == "m" * MAX_LOGGED_CHARS + f"…[{1_000_000 - MAX_LOGGED_CHARS} more characters]"
    assert record["route"] == "chat"


def test_a_line_that_cannot_be_written_is_rescued_as_a_safe_json_line() -> None:
    stream = Utf8Stream()
    telemetry = telemetry_on(stream)

    class Unprintable:
        def __str__(self) -> str:
            raise RuntimeError("no text for this")

        def __repr__(self) -> str:
            return "<Unprintable>"

    telemetry.info("usage", user_id="ada", odd=Unprintable(), input_tokens=7)

    [line] = stream.lines()
    record: dict[str, Any] = json.loads(line)
    assert (record["message"], record["log_write_failed"]) == ("usage", "RuntimeError")
    assert (record["user_id"], record["odd"], record["input_tokens"]) == ("ada", "<Unprintable>", 7)


def test_when_even_the_rescue_cannot_be_written_stderr_says_which_line_was_lost(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = BrokenStream()
    telemetry = telemetry_on(stream)
    stream.broken = True

    telemetry.info("usage", user_id="ada")

    err = capsys.readouterr().err
    assert "Traceback" not in err and "Logging error" not in err
    assert json.loads(err) == {"level": "ERROR", "message": "a log line could not be written", "lost": "'usage'",
                               "error": "OSError"}


def test_a_second_telemetry_of_the_same_service_in_one_process_logs_too(capsys: pytest.CaptureFixture[str]) -> None:
    """make dev and the tests build several stacks in one process: each Telemetry of a service keeps a formatter."""
    first = Telemetry("behest-telemetry-twice")
    second = Telemetry("behest-telemetry-twice")
    for telemetry in (first, second):
        telemetry.set_correlation_id("req-1")
        telemetry.info("usage", model="m")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["correlation_id"] for line in lines if line.get("message") == "usage"] == ["req-1", "req-1"]


def test_concurrent_invocations_sharing_one_telemetry_lose_no_metric_and_raise_nothing() -> None:
    """make dev's local fronts serve threads concurrently through one function's Telemetry (Lambda never does)."""
    import threading

    stream = io.StringIO()
    telemetry = Telemetry("behest-telemetry-threads", stream=stream)
    failures: list[BaseException] = []

    def invocations() -> None:
        try:
            for _ in range(1500):
                telemetry.metric("Requests", route="chat", model="m")
                telemetry.metric("InputTokens", 3, route="chat", model="m")
                telemetry.flush()
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=invocations) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert failures == []
    records = [json.loads(line) for line in stream.getvalue().splitlines() if '"_aws"' in line]
    # Powertools writes each metric's values as a list.
    assert sum(sum(record.get("Requests", [])) for record in records) == 4 * 1500
    assert sum(sum(record.get("InputTokens", [])) for record in records) == 4 * 1500 * 3

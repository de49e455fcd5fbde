"""A Telemetry given a stream writes there and only there, however many came and went before it."""

from __future__ import annotations

import gc

from tests.support import CapturedTelemetry


def test_each_new_telemetry_writes_to_its_own_stream_after_earlier_ones_were_collected() -> None:
    # CPython hands a freed object's address to the next one: a logger named after id() was found again,
    # with the handler of a dead Telemetry still on it, and that Telemetry's lines went nowhere a test looked.
    for attempt in range(40):
        telemetry = CapturedTelemetry()
        telemetry.info("key secret unavailable", attempt=attempt)
        assert [r["attempt"] for r in telemetry.logs()] == [attempt]
        del telemetry
        gc.collect()

"""Repeated failures are logged when new, then on the 10th, 100th, ... repeat; a recovery
reports how many there were."""

from __future__ import annotations

import asyncio
import logging

import pytest

from agent.repeats import Repeats
from agent.scheduler import BusScheduler, ScheduledMeter
from protocols.clock import ClockSetting


def test_a_new_text_is_logged_and_repeats_only_at_powers_of_ten() -> None:
    repeats = Repeats()
    lines = [repeats.note("m1", "meter m1: no answer") for _ in range(1000)]
    logged = [(i + 1, line) for i, line in enumerate(lines) if line is not None]
    assert [n for n, _ in logged] == [1, 10, 100, 1000]
    assert logged[1][1] == "meter m1: no answer (repeated, 10 times in a row)"
    assert repeats.note("m1", "meter m1: CRC error") == "meter m1: CRC error"  # a new text
    assert repeats.note("m2", "meter m1: CRC error") == "meter m1: CRC error"  # another key
    assert repeats.clear("m1") == 1 and repeats.clear("m1") == 0


def test_the_scheduler_thins_a_failing_meters_warnings_and_logs_its_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Flaky:
        meter_id = "m-x"
        fail = True

        async def read(self) -> object:
            if self.fail:
                raise ConnectionError("meter m-x: no answer within 1s")
            return type("Outcome", (), {"values": (), "errors": []})()

    driver = Flaky()
    scheduled = ScheduledMeter("m-x", 60 * 10**9, driver)
    scheduler = BusScheduler("bus", [scheduled], ClockSetting.system(), lambda item: None)
    caplog.set_level(logging.INFO, logger="agent.scheduler")
    for _ in range(25):
        asyncio.run(scheduler._poll(scheduled))
    driver.fail = False
    asyncio.run(scheduler._poll(scheduled))
    texts = [r.getMessage() for r in caplog.records if r.name == "agent.scheduler"]
    failures = [t for t in texts if "no answer" in t]
    assert failures == [
        "meter m-x: no answer within 1s",
        "meter m-x: no answer within 1s (repeated, 10 times in a row)",
    ]
    assert "meter m-x: read again after 25 failure(s)" in texts
    assert scheduled.errors == 25  # every failure is still counted

"""Scheduler: slots on the virtual clock, RESTARTED first, overruns skipped and counted."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from decimal import Decimal

from agent.buffer import Capture, ReadError
from agent.drivers.modbus_tcp import ReadOutcome
from agent.scheduler import BusScheduler, ScheduledMeter, next_slot
from protocols.clock import ClockSetting
from protocols.record import Quality
from tests.agent._helpers import capture

INTERVAL_NS = 60 * 10**9  # one virtual minute: 100 ms real at speed 600


class SlowOnce:
    meter_id = "m1"

    def __init__(self) -> None:
        self.calls = 0

    async def read(self) -> ReadOutcome:
        self.calls += 1
        if self.calls == 2:
            await asyncio.sleep(0.45)  # 4.5 virtual minutes: overruns several slots
        return ReadOutcome(capture("m1", 0).values)


def test_next_slot_is_the_ceiling_boundary() -> None:
    assert next_slot(120, 60) == 120
    assert next_slot(121, 60) == 180


def test_captures_aligned_restarted_first_and_overrun_counted() -> None:
    clock = ClockSetting.accelerated(datetime(2026, 6, 1, tzinfo=UTC), time.time_ns(), Decimal(600))
    out: list[Capture | ReadError] = []
    driver = SlowOnce()
    meter = ScheduledMeter("m1", INTERVAL_NS, driver)
    sched = BusScheduler("test-bus", [meter], clock, out.append)

    async def scenario() -> None:
        task = asyncio.create_task(sched.run())
        deadline = time.monotonic() + 10
        while sum(isinstance(o, Capture) for o in out) < 5:
            assert time.monotonic() < deadline, out
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(scenario())
    captures = [o for o in out if isinstance(o, Capture)]
    skips = [o for o in out if isinstance(o, ReadError) and o.skipped_slots]
    assert captures[0].flags & Quality.RESTARTED
    assert not any(c.flags & Quality.RESTARTED for c in captures[1:])
    for cap in captures:
        assert cap.captured_ms * 10**6 % INTERVAL_NS < 10 * 10**9  # within 10 virtual s of a slot
    assert len(skips) == 1 and skips[0].skipped_slots >= 2
    assert meter.skipped == skips[0].skipped_slots and sched.overruns == 1
    slots = [c.captured_ms * 10**6 // INTERVAL_NS for c in captures]
    assert slots[2] - slots[1] == skips[0].skipped_slots + 1  # no burst to catch up

"""The per-bus scheduler: one task per connection, captures aligned to virtual-clock slots.

Each meter has an interval in virtual time. Its slots are the multiples of the interval on
the virtual clock (``ceil(now / interval) * interval``); the task sleeps the *real* time until
the earliest slot of its meters (``clock.real_ns(slot) - time.time_ns()``) and then reads the
meters that are due, one after the other (they share the bus). A capture's timestamp is the
virtual clock's reading when its first request was sent (ms, clock source GATEWAY).

With an end instant (``agent run --until``), the task returns once the next slot is at or
after it: a run over a fixed window of virtual time, as demos and test rigs need.

A DLMS read may bring load-profile entries (the backfill since the last stored entry):
each becomes its own capture, stamped with the meter's time of the entry, before the
cycle's register capture.

If a cycle overruns so that whole slots pass, the missed slots are skipped (never read in a
burst to catch up: the values would carry wrong timestamps), logged once per occurrence with
their number, and counted in the meter's stats.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from protocols.clock import ClockSetting
from protocols.obis import Obis
from protocols.record import ClockSource, Quality, Value

from .buffer import Capture, ReadError
from .repeats import Repeats

__all__ = ["BusScheduler", "MeterDriver", "ScheduledMeter", "next_slot"]

log = logging.getLogger("agent.scheduler")


class MeterDriver(Protocol):
    meter_id: str

    async def read(self) -> object:  # returns a ReadOutcome (values, errors)
        ...


@dataclass(slots=True)
class ScheduledMeter:
    meter_id: str
    interval_ns: int
    driver: MeterDriver
    next_slot: int = 0
    first: bool = True
    captures: int = 0
    errors: int = 0
    skipped: int = 0
    profile_entries: int = 0  # load-profile entries captured (DLMS backfill)


def next_slot(now_ns: int, interval_ns: int) -> int:
    """The first slot boundary at or after ``now_ns``: ``ceil(now / interval) * interval``."""
    return -(-now_ns // interval_ns) * interval_ns


class BusScheduler:
    """Polls the meters of one connection in slot order; hands results to ``sink``."""

    def __init__(
        self,
        name: str,
        meters: Sequence[ScheduledMeter],
        clock: ClockSetting,
        sink: Callable[[Capture | ReadError], None],
        wall_ns: Callable[[], int] = time.time_ns,
        until_ns: int | None = None,
    ) -> None:
        self.name = name
        self.until_ns = until_ns  # no slot at or after this virtual instant is polled
        self.meters = list(meters)
        self.clock = clock
        self.sink = sink
        self.wall_ns = wall_ns
        self.overruns = 0
        self.repeats = Repeats()  # thins repeated failure lines per meter
        self.cycles = 0  # polls of a set of due meters, one after the other
        self.last_cycle_s = 0.0  # real seconds the last cycle took
        self.max_cycle_s = 0.0
        #: real seconds between the slots of the bus's shortest interval (its cycle period)
        speed = float(getattr(clock, "speed", 1) or 1)
        self.period_s = min((m.interval_ns for m in self.meters), default=0) / 1e9 / speed

    def virtual_now(self) -> int:
        return self.clock.virtual_ns(self.wall_ns())

    async def run(self) -> None:
        now = self.virtual_now()
        for meter in self.meters:
            meter.next_slot = next_slot(now, meter.interval_ns)
        while True:
            due = min(m.next_slot for m in self.meters)
            if self.until_ns is not None and due >= self.until_ns:
                return
            delay = (self.clock.real_ns(due) - self.wall_ns()) / 1e9
            if delay > 0:
                await asyncio.sleep(delay)
            cycle_start = time.monotonic()
            for meter in self.meters:
                if meter.next_slot <= due:
                    await self._poll(meter)
            self.last_cycle_s = time.monotonic() - cycle_start
            self.max_cycle_s = max(self.max_cycle_s, self.last_cycle_s)
            self.cycles += 1

    async def _poll(self, meter: ScheduledMeter) -> None:
        slot = meter.next_slot
        started = self.virtual_now()
        captured_ms = started // 1_000_000
        outcome: object | None = None
        try:
            outcome = await meter.driver.read()
        except Exception as exc:  # a failing meter never stops the bus: counted, logged
            meter.errors += 1
            text = str(exc) if str(exc).startswith("meter ") else f"meter {meter.meter_id}: {exc!r}"
            line = self.repeats.note(meter.meter_id, text)
            if line is not None:
                log.warning("%s", line)
            self.sink(ReadError(meter.meter_id, captured_ms, str(exc) or repr(exc)))
        else:
            if getattr(outcome, "unchanged", False):
                # a push meter's reading already captured (DSMR M-Bus values are updated
                # every 5 minutes or every hour): nothing new, no error
                outcome = None
        if outcome is not None:
            flags = Quality.NONE
            values = outcome.values  # type: ignore[attr-defined]
            errors: list[str] = outcome.errors  # type: ignore[attr-defined]
            if not errors:
                failed = self.repeats.clear(meter.meter_id)
                if failed:
                    log.info("meter %s: read again after %d failure(s)", meter.meter_id, failed)
            if errors:
                flags |= Quality.PARTIAL
                meter.errors += 1
                line = self.repeats.note(meter.meter_id, "; ".join(errors))
                if line is not None:
                    log.warning("%s (capture is partial)", line)
                self.sink(ReadError(meter.meter_id, captured_ms, "; ".join(errors)))
            if meter.first:
                flags |= Quality.RESTARTED
            meter.first = False
            meter.captures += 1
            # A meter with a clock (DLMS) reports when it took the values: that is the
            # capture's time, from the meter; otherwise the gateway's clock at the request.
            # A clock beyond its limit comes without meter_ms but with CLOCK_SUSPECT.
            source = ClockSource.GATEWAY
            meter_ms = getattr(outcome, "meter_ms", None)
            if meter_ms is not None and meter_ms >= 0:
                captured_ms, source = meter_ms, ClockSource.METER
            clock_flags = getattr(outcome, "clock_flags", Quality.NONE)
            flags |= clock_flags
            kept = self._profile(meter, outcome, clock_flags, captured_ms, values)
            if kept or not values:  # not when profile entries carry every value
                self.sink(Capture(meter.meter_id, captured_ms, tuple(kept), flags, source))
        now = self.virtual_now()
        following = max(slot + meter.interval_ns, next_slot(now, meter.interval_ns))
        skipped = (following - slot) // meter.interval_ns - 1
        if skipped > 0:
            meter.skipped += skipped
            self.overruns += 1
            log.warning(
                "meter %s on %s: poll of slot %d overran, %d slot(s) skipped (interval %gs)",
                meter.meter_id,
                self.name,
                slot // 1_000_000,
                skipped,
                meter.interval_ns / 1e9,
            )
            self.sink(ReadError(meter.meter_id, now // 1_000_000, "", skipped_slots=skipped))
        meter.next_slot = following

    def _profile(
        self,
        meter: ScheduledMeter,
        outcome: object,
        clock_flags: Quality,
        captured_ms: int,
        values: Sequence[Value],
    ) -> Sequence[Value]:
        """Hand the read's load-profile entries (DLMS) to the sink, each its own capture in
        time order with the meter's timestamp and the entry's flags (plus CLOCK_SUSPECT when
        the meter's clock is suspect now), marked as entries of their profile so the buffer
        advances that profile's cursor in the same transaction. Returns the register values
        to capture: a value whose (OBIS, timestamp) an entry already carries is left out, so
        that a register read and a profile entry never share an identity at the head-end."""
        entries = getattr(outcome, "profile", None)
        if not entries:
            return values
        obis = getattr(outcome, "profile_obis", None)
        suspect = clock_flags & Quality.CLOCK_SUSPECT
        taken: set[tuple[int, Obis]] = set()
        for entry in sorted(entries, key=lambda e: e.captured_ms):
            self.sink(
                Capture(
                    meter.meter_id,
                    entry.captured_ms,
                    tuple(entry.values),
                    entry.flags | suspect,
                    ClockSource.METER,
                    profile=obis,
                )
            )
            taken.update((entry.captured_ms, v.obis) for v in entry.values)
        meter.profile_entries += len(entries)
        return [v for v in values if (captured_ms, v.obis) not in taken]

"""DSMR P1: a push stream. One reader task per P1 port keeps the latest good telegram of
each meter on it; each slot captures that meter's latest values.

The port pushes a telegram every second (DSMR 5, e-MUCS) or every 10 seconds (older). The
reader task (:class:`P1Port`) cuts the stream with ``protocols.dsmr.TelegramReader``
(CRC checked where the version has one, resync at the next ``/``), counts what is not a
good telegram, and splits each good one by ``protocols.dsmr.meter_readings`` into the
electricity meter (channel 0) and its M-Bus devices (channels 1..4, gas, water, heat with
their own capture times). A meter's read (:class:`DsmrMeter`) takes the latest of its
channel:

* captured at the meter's time stamp (``0-0:1.0.0``, or the M-Bus value's own time);
  DSMR 2.2/3 electricity has none: the gateway's clock at the slot; an ambiguous local time
  (the autumn hour) makes the capture CLOCK_SUSPECT;
* the same time stamp as the capture before (an M-Bus value that is updated every 5 minutes
  or every hour, read each minute) is no new reading: nothing is captured, no error;
* no good telegram within ``max_age`` (real time): a read error that says what the port
  got instead (nothing, bad CRCs, garbage).

The reader reopens the port after an error (a USB adapter unplugged) once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field

from agent.config import SerialSettings
from agent.repeats import Repeats
from agent.serial_port import SerialPort
from protocols import dsmr
from protocols.record import Quality, Value

from .modbus_tcp import MeterReadError

__all__ = ["DsmrMeter", "DsmrOutcome", "P1Port"]

log = logging.getLogger("agent.dsmr")

REOPEN_S = 1.0


@dataclass(slots=True)
class DsmrOutcome:
    values: tuple[Value, ...]
    errors: list[str] = field(default_factory=list)
    meter_ms: int | None = None  # the telegram's (or the M-Bus value's) time stamp
    clock_flags: Quality = Quality.NONE
    unchanged: bool = False  # the same reading as the capture before: capture nothing

    @property
    def partial(self) -> bool:
        return bool(self.errors)


@dataclass(slots=True)
class _Latest:
    reading: dsmr.MeterReading
    received: float  # monotonic
    number: int  # telegram number on this port


class P1Port:
    """The reader task of one P1 port and the latest reading of each channel."""

    def __init__(self, settings: SerialSettings) -> None:
        self.settings = settings
        self.device = settings.device
        self.reader = dsmr.TelegramReader()
        self.latest: dict[int, _Latest] = {}
        self.telegrams = 0
        self.last_problem = ""  # the last bad telegram or port error, for messages
        self.repeats = Repeats()  # thins the log of repeated bad telegrams
        self.last_good: float | None = None
        self.channels: tuple[int, ...] = ()  # the meters in the last good telegram
        self.started: float | None = None
        self.busy_s = 0.0  # line time of the bytes received at the baud rate
        self._received_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._port: SerialPort | None = None
        self._changed = asyncio.Event()

    @property
    def name(self) -> str:
        return f"{self.device} (P1 DSMR {self.settings.version}, {self.settings.setting})"

    @property
    def bad_telegrams(self) -> int:
        c = self.reader.counts
        return c["crc"] + c["invalid"] + c["truncated"] + c["too long"]

    def utilisation(self) -> float:
        if self.started is None:
            return 0.0
        elapsed = time.monotonic() - self.started
        bits = 1 + self.settings.bytesize + (self.settings.parity != "N") + self.settings.stopbits
        line_s = self._received_bytes * bits / self.settings.baud
        return line_s / elapsed if elapsed > 0 else 0.0

    def start(self) -> None:
        if self._task is None or self._task.done():
            self.started = time.monotonic()
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"p1 {self.device}"
            )

    async def _run(self) -> None:
        s = self.settings
        while True:
            port = SerialPort(s.device, s.baud, s.bytesize, s.parity, s.stopbits)
            self._port = port
            try:
                await port.open()
                while True:
                    try:
                        chunk = await port.read(1.0)
                    except TimeoutError:
                        continue
                    self._received_bytes += len(chunk)
                    self._feed(chunk)
            except ConnectionError as exc:
                if str(exc) != self.last_problem:
                    log.warning("P1 %s: %s", self.device, exc)
                self.last_problem = str(exc)
            finally:
                await port.close()
            await asyncio.sleep(REOPEN_S)

    def _feed(self, chunk: bytes) -> None:
        self.reader.receive_data(chunk)
        while True:
            event = self.reader.next_event()
            if event is dsmr.NEED_DATA:
                return
            if isinstance(event, dsmr.BadTelegram):
                self.last_problem = f"bad telegram ({event.reason}): {event.message}"
                line = self.repeats.note(event.reason, f"bad telegram ({event.reason})")
                if line is not None:  # every one is counted; the log is thinned
                    log.warning("P1 %s: %s; last: %s", self.device, line, event.message)
                continue
            if isinstance(event, dsmr.TelegramReceived):
                self.telegrams += 1
                now = time.monotonic()
                self.last_good = now
                try:
                    readings = dsmr.meter_readings(event.telegram)
                except dsmr.DsmrError as exc:
                    self.last_problem = f"telegram {self.telegrams}: {exc}"
                    continue
                self.channels = tuple(r.channel for r in readings)
                for reading in readings:
                    self.latest[reading.channel] = _Latest(reading, now, self.telegrams)
                self._changed.set()

    async def wait_telegram(self, timeout: float) -> None:
        """Until a good telegram arrives (or ``timeout``)."""
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout)

    def describe_problem(self, max_age: float) -> str:
        if self.last_good is None and not self.last_problem and not self._received_bytes:
            return f"no telegram within {max_age:g}s (nothing received)"
        what = []
        if self.last_good is None:
            what.append("no good telegram yet")
        else:
            what.append(f"last good telegram {time.monotonic() - self.last_good:.1f}s ago")
        if self.bad_telegrams:
            what.append(f"{self.bad_telegrams} bad telegram(s)")
        if self.last_problem:
            what.append(f"last problem: {self.last_problem}")
        return ", ".join(what)

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._port is not None:
            await self._port.close()


class DsmrMeter:
    """One meter (electricity, or an M-Bus channel) behind a P1 port."""

    def __init__(self, meter_id: str, settings: SerialSettings, port: P1Port) -> None:
        self.meter_id = meter_id
        self.settings = settings
        self.channel = settings.channel
        self.port = port
        self.max_age = settings.max_age_ns / 1e9
        self._last: tuple[int | None, int] | None = None  # (captured_ms, telegram) taken

    def describe(self) -> str:
        what = "electricity" if self.channel == 0 else f"M-Bus channel {self.channel}"
        return f"dsmr-p1 {what} on {self.port.name}"

    async def read(self) -> DsmrOutcome:
        self.port.start()
        latest = self.port.latest.get(self.channel)
        if latest is None or time.monotonic() - latest.received > self.max_age:
            assert self.port.started is not None
            waited = time.monotonic() - self.port.started
            if latest is None and waited < self.max_age:
                await self.port.wait_telegram(self.max_age - waited)  # just started
                latest = self.port.latest.get(self.channel)
        port_fresh = (
            self.port.last_good is not None
            and time.monotonic() - self.port.last_good <= self.max_age
        )
        if latest is None and port_fresh and self.channel not in self.port.channels:
            seen = ", ".join(str(c) for c in self.port.channels)
            raise MeterReadError(
                f"meter {self.meter_id}: {self.describe()}: the telegrams carry no M-Bus "
                f"channel {self.channel} (channels in them: {seen}): check channel"
            )
        if latest is None or time.monotonic() - latest.received > self.max_age:
            where = "" if self.channel == 0 else f" with channel {self.channel}"
            raise MeterReadError(
                f"meter {self.meter_id}: {self.describe()}: no good telegram{where} within "
                f"{self.max_age:g}s: {self.port.describe_problem(self.max_age)}"
            )
        reading = latest.reading
        stamp = reading.captured_ms
        # with the meter's time stamp: a reading is new when its stamp is; without one
        # (DSMR 2.2/3 electricity) each telegram is new
        identity = (stamp, 0 if stamp is not None else latest.number)
        if identity == self._last:
            return DsmrOutcome((), [], stamp, unchanged=True)
        self._last = identity
        values = tuple(Value(r.obis, r.value, r.unit) for r in reading.values)
        errors = [f"meter {self.meter_id}: {p}" for p in reading.problems]
        if not values:
            raise MeterReadError(
                f"meter {self.meter_id}: {self.describe()}: no values in the telegram"
                + (f" ({'; '.join(reading.problems)})" if reading.problems else "")
            )
        flags = Quality.CLOCK_SUSPECT if reading.clock_ambiguous else Quality.NONE
        return DsmrOutcome(values, errors, stamp, flags)

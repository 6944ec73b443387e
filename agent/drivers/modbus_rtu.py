"""Modbus RTU on a serial line (RS-485): one bus per port, one transaction at a time.

Every meter (unit) on a port shares one :class:`RtuBus`: its lock keeps exactly one
request/answer on the line, and before each request the line has been quiet for 3.5
characters (``SerialLine.t3_5``, counted from the last byte received or sent). Before a
request, bytes nobody asked for (a late answer to the previous request, line noise) are
thrown away, so that one meter's late answer is never taken for the next meter's.

The answer is cut by :class:`protocols.modbus.rtu.FrameReader` (function-code length rules,
echo of our own request skipped) and checked by ``rtu.check_answer``: unit, function, byte
count and CRC. A well-formed frame from another unit (a late answer to the previous request)
is dropped and the wait for the right unit goes on. A partial frame followed by
``SILENCE_S`` without a byte is a truncated frame. ``SILENCE_S`` is longer than the
standard's 3.5 characters because USB serial adapters and ptys deliver bytes in bursts up
to ~16 ms apart.

Retries (``retries`` per meter) are for damaged answers (CRC, truncated, wrong unit, a busy
exception): line noise. A unit that gives no byte at all within its time-out is not asked
again in the same cycle: a meter that is off or unplugged costs the bus one time-out per
cycle, and the other meters keep their cycle.

``RtuBus.busy_s`` adds up the time each transaction holds the line at the port's baud rate
(request, answer, the 3.5-character silence after each, computed from frame sizes):
bus utilisation = busy_s / elapsed time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from agent.config import SerialSettings
from agent.serial_port import SerialPort
from protocols.modbus import Profile, ReadRequest, rtu

from .modbus_tcp import (
    MeterReadError,
    ModbusExceptionResponse,
    ModbusTcpMeter,
    ReadOutcome,
    describe,
)

__all__ = ["SILENCE_S", "RtuBus", "RtuLineError", "RtuMeter", "RtuReadError"]

log = logging.getLogger("agent.modbus_rtu")

SILENCE_S = 0.05  # a partial frame then this long without a byte: truncated


class RtuLineError(Exception):
    """An answer that is not a usable frame; ``kind``: ``crc``, ``truncated``, ``garbage``,
    ``wrong-unit``, ``malformed``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class RtuReadError(MeterReadError):
    """A block read that failed after its attempts; ``kinds`` what each attempt got
    (``silent``, ``crc``, ``truncated``, ``garbage``, ``wrong-unit``, ``malformed``,
    ``exception``, ``port``), for ``agent check``'s hints."""

    def __init__(self, message: str, kinds: list[str], *, answered: bool = False) -> None:
        super().__init__(message, answered=answered)
        self.kinds = kinds


@dataclass(slots=True)
class BusCounters:
    requests: int = 0
    answers: int = 0
    silent: int = 0
    bad_frames: int = 0
    exceptions: int = 0
    stray: int = 0  # well-formed frames from another unit than the one asked (dropped)
    busy_s: float = 0.0  # line time of the transactions at the baud rate (frame sizes)
    held_s: float = 0.0  # real time the bus was held (includes time-outs)


class RtuBus:
    """One serial port carrying Modbus RTU; opened on first use, reopened after an error."""

    def __init__(self, settings: SerialSettings) -> None:
        self.settings = settings
        self.device = settings.device
        self.line = rtu.SerialLine(settings.baud, 8, settings.parity, settings.stopbits)
        self.port = SerialPort(
            settings.device, settings.baud, 8, settings.parity, settings.stopbits
        )
        self.lock = asyncio.Lock()
        self.counters = BusCounters()
        self.started = time.monotonic()
        self._quiet_since = 0.0  # monotonic time of the last byte on the line

    @property
    def name(self) -> str:
        return f"{self.device} ({self.settings.setting})"

    def utilisation(self) -> float:
        """Share of the elapsed time the line carried our frames (at its baud rate)."""
        elapsed = time.monotonic() - self.started
        return self.counters.busy_s / elapsed if elapsed > 0 else 0.0

    async def read(self, request: ReadRequest, unit: int, timeout: float) -> list[int]:
        """One block read of one unit, serialised with every other unit on the port."""
        frame = rtu.read_request(unit, request.function, request.address, request.count)
        async with self.lock:
            c = self.counters
            if not self.port.is_open:
                await self.port.open()  # ConnectionError names the device
            gap = self.line.t3_5 - (time.monotonic() - self._quiet_since)
            if gap > 0:
                await asyncio.sleep(gap)
            self.port.discard_input()
            reader = rtu.FrameReader()
            reader.expect_echo(frame)
            started = time.monotonic()
            c.requests += 1
            try:
                await self.port.write(frame)
                raw = await self._answer(reader, timeout, unit)
            except ConnectionError:
                await self.port.close()
                raise
            finally:
                self._quiet_since = time.monotonic()
                c.held_s += self._quiet_since - started
            c.busy_s += (
                self.line.frame_time(len(frame))
                + self.line.frame_time(len(raw))
                + 2 * self.line.t3_5
            )
            try:
                registers = rtu.check_answer(raw, unit, request.function, request.count)
            except rtu.ExceptionAnswer as exc:
                c.exceptions += 1
                raise ModbusExceptionResponse(exc.code) from None
            except rtu.RtuError as exc:
                c.bad_frames += 1
                raise RtuLineError("malformed", str(exc)) from None
            c.answers += 1
            return registers

    async def _answer(self, reader: rtu.FrameReader, timeout: float, unit: int) -> bytes:
        """The frame from ``unit``; a well-formed frame from another unit (a late answer to
        an earlier request, a second meter with the same id answering) is never taken:
        it is dropped and the wait goes on until the time-out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        received = 0
        stray = ""
        while True:
            event = reader.next_event()
            if isinstance(event, rtu.Frame):
                if event.unit == unit:
                    return event.raw
                self.counters.stray += 1
                stray = f"answer from unit {event.unit} to a request for unit {unit}"
                log.info("rtu %s: %s: dropped", self.device, stray)
                received = 0
                continue
            if isinstance(event, rtu.BadFrame):
                await self._until_silence(deadline)
                self.counters.bad_frames += 1
                raise RtuLineError(event.reason, f"{_KIND_TEXT[event.reason]}: {event.message}")
            remaining = deadline - loop.time()
            if remaining <= 0:
                return self._timed_out(reader, received, timeout, stray)
            wait = min(remaining, SILENCE_S) if received else remaining
            try:
                chunk = await self.port.read(wait)
            except TimeoutError:
                if received:
                    bad = reader.silence()
                    if bad is not None:
                        self.counters.bad_frames += 1
                        raise RtuLineError(
                            "truncated", f"{_KIND_TEXT['truncated']}: {bad.message}"
                        ) from None
                    received = 0  # only our echo came: wait on for the answer
                    continue
                return self._timed_out(reader, received, timeout, stray)
            received += len(chunk)
            reader.receive_data(chunk)

    def _timed_out(
        self, reader: rtu.FrameReader, received: int, timeout: float, stray: str
    ) -> bytes:
        bad = reader.silence()
        if bad is not None:
            self.counters.bad_frames += 1
            raise RtuLineError("truncated", f"{_KIND_TEXT['truncated']}: {bad.message}")
        if stray:
            self.counters.bad_frames += 1
            raise RtuLineError("wrong-unit", f"{stray}, none from it within {timeout:g}s")
        self.counters.silent += 1
        raise TimeoutError(f"no answer within {timeout:g}s")

    async def _until_silence(self, deadline: float) -> None:
        """After a bad frame: read and drop until the line is quiet (or the time-out)."""
        loop = asyncio.get_running_loop()
        while (remaining := deadline - loop.time()) > 0:
            try:
                await self.port.read(min(remaining, SILENCE_S))
            except TimeoutError:
                return

    async def close(self) -> None:
        await self.port.close()


_KIND_TEXT = {
    "crc": "answer with a bad CRC",
    "truncated": "answer cut short",
    "garbage": "bytes that are no Modbus frame",
}


class RtuMeter(ModbusTcpMeter):
    """One unit on an RTU bus, read by the same block plan as over TCP."""

    def __init__(
        self,
        meter_id: str,
        unit: int,
        profile: Profile,
        bus: RtuBus,
        timeout: float,
        retries: int,
    ) -> None:
        super().__init__(meter_id, unit, profile, bus, timeout, retries)  # type: ignore[arg-type]
        self.bus = bus
        self.kinds: list[str] = []  # what each failed attempt of the last read got

    async def read(self) -> ReadOutcome:
        """Every planned block (``ModbusTcpMeter.read``); a read without any value raises
        :class:`RtuReadError` with the kinds of its failed attempts."""
        self.kinds = []
        try:
            return await super().read()
        except RtuReadError:
            raise
        except MeterReadError as exc:
            raise RtuReadError(str(exc), list(self.kinds), answered=exc.answered) from None

    async def _read_block(self, request: ReadRequest) -> list[int]:
        reasons: list[str] = []
        kinds: list[str] = []
        last: Exception | None = None
        for _attempt in range(self.retries + 1):
            try:
                return await self.bus.read(request, self.unit, self.timeout)
            except (ModbusExceptionResponse, TimeoutError, RtuLineError, OSError) as exc:
                last = exc
                kind = (
                    exc.kind
                    if isinstance(exc, RtuLineError)
                    else "exception"
                    if isinstance(exc, ModbusExceptionResponse)
                    else "silent"
                    if isinstance(exc, TimeoutError)
                    else "port"
                )
                kinds.append(kind)
                self.kinds.append(kind)
                if str(exc) not in reasons:
                    reasons.append(str(exc))
                if kind in ("silent", "port"):
                    break  # no answer at all: one time-out per cycle, not retries of it
                if isinstance(exc, ModbusExceptionResponse) and exc.code not in (5, 6):
                    break  # the request itself is wrong: retrying cannot help
        attempts = len(kinds)
        raise RtuReadError(
            f"meter {self.meter_id}: {describe(request, self.unit)} on {self.bus.name}: "
            f"{'; then '.join(reasons)} ({attempts} attempt{'s' if attempts > 1 else ''})",
            kinds,
            answered=isinstance(last, ModbusExceptionResponse),
        )

"""A simulated RS-485 bus of Modbus RTU slaves on a serial pty.

One :class:`RtuBus` is one pty (``--rtu PTY-LINK``) with several unit ids on it, each its own
meter: a :class:`~firmware_sim.model.MeterModel` and a device profile (units of one bus may
have different profiles). Registers are encoded by ``modbus_server.registers_for``, the
function the Modbus TCP simulator uses, so a model shows the same registers over TCP and RTU.

Framing is ``protocols.modbus.rtu``: requests are cut from the byte stream by its
:class:`FrameReader` (server role); a partial frame followed by 3.5 characters of silence is
dropped (``truncated``), a frame with a bad CRC or bytes that cannot start a frame make the
slaves ignore the line until the next silence, as real slaves do.

Timing on the answer side, from the configured line (``SerialLine``: baud, parity, stop
bits): a slave answers no sooner than 3.5 characters after the request's last byte (the
silence that ends a frame). With ``pace`` (the default) the answer is written whole at the
moment it would be complete on a real line: the request's time on the wire, the silence,
the answer's time on the wire (a pty passes bytes at memory speed and enforces no baud
rate), so a master measures the bus time the standard gives for the same frames. One
request is answered at a time, in order.

What a master sees (the same rules as the TCP simulator, docs/simulator.md):

* FC03/FC04 as the unit's profile says (both with ``both_functions``); the other one and
  FC01/FC02 answer exception 01; writes (FC05/06/15/16) exception 02 (read-only); other
  function codes cannot be framed by the codec's reader (their length is unknown to it):
  they are line noise, dropped until the next silence, and get no answer;
* addresses past the last mapped register, or unmapped with ``unmapped = "illegal"``:
  exception 02; a count outside 1..125: exception 03;
* broadcast (unit 0) and units that are not on the bus: no answer (nobody is there).

Faults per unit (``firmware_sim.serial.faults``): ``silent``, ``late:MS``, ``corrupt``,
``truncated``, ``wrong-unit[:U]``, ``exception:C``, ``garbage``.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from protocols.clock import ClockSetting
from protocols.errors import EncodeError
from protocols.modbus import MAX_READ_COUNT, ModbusValueError, Profile
from protocols.modbus.rtu import (
    BadFrame,
    Frame,
    FrameReader,
    Role,
    SerialLine,
    answer,
    exception_answer,
    parse_read_request,
    with_crc,
)

from ..modbus_server import registers_for
from ..model import MeterModel
from ..pty import PtyLine
from .faults import RTU_KINDS, FaultState, LineFault, fault_command, parse_line_fault

__all__ = ["RtuBus", "RtuUnit", "parse_unit_faults", "read_exception"]

log = logging.getLogger(__name__)

ILLEGAL_FUNCTION = 0x01
ILLEGAL_ADDRESS = 0x02
ILLEGAL_VALUE = 0x03
DEVICE_FAILURE = 0x04
_WRITES = (5, 6, 15, 16)


@dataclass(slots=True)
class RtuUnit:
    """One meter on the bus."""

    unit: int
    profile: Profile
    model: MeterModel
    faults: FaultState = field(default_factory=FaultState)
    requests: int = 0


def read_exception(profile: Profile, function: int, address: int, count: int) -> int | None:
    """The exception code a unit with ``profile`` answers to a read, or None (the access
    rules of the TCP simulator, which pymodbus' datastore applies there)."""
    functions = {3, 4} if profile.both_functions else {s.function for s in profile.registers}
    if function not in functions:
        return ILLEGAL_FUNCTION
    if not 1 <= count <= MAX_READ_COUNT:
        return ILLEGAL_VALUE
    end = max(spec.address + spec.count for spec in profile.registers)
    if address + count > end:
        return ILLEGAL_ADDRESS
    if profile.unmapped == "illegal":
        covered = set()
        for spec in profile.registers:
            covered.update(range(spec.address, spec.address + spec.count))
        if any(a not in covered for a in range(address, address + count)):
            return ILLEGAL_ADDRESS
    return None


class RtuBus:
    """Modbus RTU slaves ``units`` on a pty with a symlink at ``link``."""

    def __init__(
        self,
        link: Path,
        units: list[RtuUnit],
        clock: ClockSetting,
        *,
        line: SerialLine | None = None,
        now_ns: Callable[[], int] = time.time_ns,
        seed: int = 0,
        pace: bool = True,
    ) -> None:
        if not units:
            raise ValueError("an RTU bus needs at least one unit")
        self.units: dict[int, RtuUnit] = {}
        for u in units:
            if not 1 <= u.unit <= 247:
                raise ValueError(f"unit id {u.unit} not in 1..247")
            if u.unit in self.units:
                raise ValueError(f"unit id {u.unit} twice on one bus")
            self.units[u.unit] = u
        self.clock = clock
        self.serial = line or SerialLine(9600)
        self.pty = PtyLine(link)
        self.pace = pace
        self._now_ns = now_ns
        self._rng = random.Random(f"rtu:{seed}")
        self._reader = FrameReader(Role.REQUESTS)
        self._queue: asyncio.Queue[tuple[Frame, float]] = asyncio.Queue()
        self._silence: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()
        self.counts: dict[str, int] = {
            "requests": 0, "answers": 0, "broadcasts": 0, "not-ours": 0, "bad": 0,
        }  # fmt: skip

    # -- the sans-IO core ---------------------------------------------------------------
    def respond(self, frame: Frame, virtual_ns: int, as_unit: int | None = None) -> bytes | None:
        """The correct answer to ``frame`` (None: nobody answers); ``as_unit`` answers with
        that unit's registers and id instead (the wrong-unit fault)."""
        if frame.unit == 0 or frame.unit not in self.units:
            return None
        target = self.units.get(as_unit or frame.unit, self.units[frame.unit])
        unit_id = as_unit or frame.unit
        function = frame.function
        if function in _WRITES:
            return exception_answer(unit_id, function, ILLEGAL_ADDRESS)
        if function not in (3, 4):
            return exception_answer(unit_id, function, ILLEGAL_FUNCTION)
        request = parse_read_request(frame.raw)
        code = read_exception(target.profile, function, request.address, request.count)
        if code is not None:
            return exception_answer(unit_id, function, code)
        try:
            registers = registers_for(
                target.profile, target.model, request.address, request.count, virtual_ns
            )
            return answer(unit_id, function, registers)
        except (ModbusValueError, EncodeError) as exc:
            log.error("rtu unit %d (%s): %s", target.unit, target.model.meter_id, exc)
            return exception_answer(unit_id, function, DEVICE_FAILURE)

    def _faulty(self, frame: Frame, fault: LineFault, virtual_ns: int) -> bytes | None:
        if fault.kind == "silent":
            return None
        if fault.kind == "exception":
            return exception_answer(frame.unit, frame.function & 0x7F, fault.arg or 4)
        if fault.kind == "garbage":
            return self._rng.randbytes(self._rng.randint(1, 40))
        if fault.kind == "wrong-unit":
            other = fault.arg or self._next_unit(frame.unit)
            good = self.respond(frame, virtual_ns, as_unit=other)
            if good is None or other in self.units:
                return good
            return with_crc(bytes([other]) + good[1:-2])  # our registers, their id
        good = self.respond(frame, virtual_ns)
        if good is None:
            return None
        if fault.kind == "corrupt":
            at = 3 if len(good) > 5 else 2
            return good[:at] + bytes([good[at] ^ 0x01]) + good[at + 1 :]
        if fault.kind == "truncated":
            return good[: len(good) // 2]
        return good  # late: the right answer (the delay is the bus's job)

    def _next_unit(self, unit: int) -> int:
        others = sorted(u for u in self.units if u != unit)
        if not others:
            return unit % 247 + 1
        later = [u for u in others if u > unit]
        return later[0] if later else others[0]

    # -- I/O --------------------------------------------------------------------------------
    async def start(self) -> None:
        self.pty.open()
        self.pty.start_reading(self._on_data)
        self._spawn(self._worker())

    async def stop(self) -> None:
        if self._silence is not None:
            self._silence.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        self.pty.close()

    def _spawn(self, coro: object) -> None:
        task = asyncio.ensure_future(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_data(self, chunk: bytes) -> None:
        loop = asyncio.get_running_loop()
        self._reader.receive_data(chunk)
        self._drain()
        if self._silence is not None:
            self._silence.cancel()
        self._silence = loop.call_later(self.serial.t3_5, self._on_silence)

    def _on_silence(self) -> None:
        self._silence = None
        bad = self._reader.silence()
        if bad is not None:
            self._bad(bad)

    def _drain(self) -> None:
        now = asyncio.get_running_loop().time()
        while True:
            event = self._reader.next_event()
            if isinstance(event, Frame):
                self._queue.put_nowait((event, now))
            elif isinstance(event, BadFrame):
                self._bad(event)
            else:
                return

    def _bad(self, event: BadFrame) -> None:
        self.counts["bad"] += 1
        log.info("rtu %s: %s: %s", self.pty.link, event.reason, event.message)

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame, arrived = await self._queue.get()
            self.counts["requests"] += 1
            if frame.unit == 0:
                self.counts["broadcasts"] += 1
                continue
            unit = self.units.get(frame.unit)
            if unit is None:
                self.counts["not-ours"] += 1
                continue
            unit.requests += 1
            virtual_ns = self.clock.virtual_ns(self._now_ns())
            fault = unit.faults.take()
            try:
                if fault.kind == "none":
                    reply = self.respond(frame, virtual_ns)
                else:
                    reply = self._faulty(frame, fault, virtual_ns)
            except Exception:  # one bad request never stops the bus
                log.exception("rtu unit %d: request %s", frame.unit, frame.raw.hex(" "))
                continue
            if reply is None:
                continue
            # the silence that ends the request, then the answer's time on the wire
            due = arrived + self.serial.t3_5
            if self.pace:  # both frames' time on the wire
                due += self.serial.frame_time(len(frame.raw) + len(reply))
            if fault.kind == "late":
                self._spawn(self._send_at(due + (fault.arg or 0) / 1000, reply))
                continue
            await asyncio.sleep(max(0.0, due - loop.time()))
            await self._send(reply)

    async def _send_at(self, due: float, reply: bytes) -> None:
        await asyncio.sleep(max(0.0, due - asyncio.get_running_loop().time()))
        await self._send(reply)

    async def _send(self, reply: bytes) -> None:
        async with self._write_lock:
            await self.pty.write(reply)
        self.counts["answers"] += 1

    # -- control and reporting ------------------------------------------------------------
    def models(self) -> list[MeterModel]:
        return [u.model for u in self.units.values()]

    def command(self, words: list[str]) -> str:
        """``fault UNIT KIND[:ARG] [COUNT]`` (``fault 3 silent``, ``fault 3 none``), ``status``."""
        if words[:1] == ["status"]:
            faults = " ".join(f"{u}:{s.faults.describe()}" for u, s in sorted(self.units.items()))
            counts = " ".join(f"{k}={v}" for k, v in self.counts.items())
            return f"OK {counts} faults {faults}"
        if words[:1] != ["fault"] or len(words) < 2:
            return "ERROR rtu bus: expected 'fault UNIT KIND[:ARG] [COUNT]' or 'status'"
        if not words[1].isdigit() or int(words[1]) not in self.units:
            return f"ERROR fault: unit {words[1]!r} is not on this bus ({self.unit_list()})"
        return self.unit_command(int(words[1]), ["fault", *words[2:]])

    def unit_command(self, unit: int, words: list[str]) -> str:
        """A command for one unit (named by its meter id): ``fault KIND[:ARG] [COUNT]``,
        ``status``."""
        member = self.units[unit]
        if words[:1] == ["status"]:
            return f"OK unit={unit} requests={member.requests} fault={member.faults.describe()}"
        if words[:1] != ["fault"]:
            return "ERROR rtu meter: expected 'fault KIND[:ARG] [COUNT]' or 'status'"
        return fault_command(member.faults, words[1:], RTU_KINDS)

    def targets(self) -> dict[str, Callable[[list[str]], str]]:
        """Names the control channel knows: the link (the bus) and each meter id."""
        out: dict[str, Callable[[list[str]], str]] = {str(self.pty.link): self.command}
        for unit, u in self.units.items():
            out[u.model.meter_id] = lambda words, unit=unit: self.unit_command(unit, words)
        return out

    def unit_list(self) -> str:
        return ",".join(str(u) for u in sorted(self.units))

    def ready_line(self) -> str:
        ordered = [self.units[u] for u in sorted(self.units)]
        names = [u.profile.name for u in ordered]
        profile = names[0] if len(set(names)) == 1 else ",".join(names)
        line = (
            f"READY rtu pty:{self.pty.link} profile={profile} units={self.unit_list()} "
            f"meters={','.join(u.model.meter_id for u in ordered)} device={self.pty.device} "
            f"baud={self.serial.baud} parity={self.serial.parity} "
            f"stop_bits={self.serial.stop_bits}"
        )
        faulty = [
            f"{u.unit}:{u.faults.describe()}" for u in ordered if u.faults.fault.kind != "none"
        ]
        if faulty:
            line += " faults=" + ",".join(faulty)
        return line


def parse_unit_faults(texts: list[str], units: Mapping[int, object]) -> dict[int, LineFault]:
    """``--fault UNIT:KIND[:ARG]`` (repeatable) for the units of one bus."""
    out: dict[int, LineFault] = {}
    for text in texts:
        unit_text, _, rest = text.partition(":")
        if not unit_text.isdigit() or not rest:
            raise ValueError(f"--fault {text!r}: expected UNIT:KIND[:ARG], e.g. 3:silent")
        unit = int(unit_text)
        if unit not in units:
            raise ValueError(f"--fault {text!r}: unit {unit} is not on the bus")
        try:
            out[unit] = parse_line_fault(rest, RTU_KINDS)
        except ValueError as exc:
            raise ValueError(f"--fault {text!r}: {exc}") from None
    return out

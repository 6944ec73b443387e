"""Simulated IEC 62056-21 mode C meters on a serial pty (an optical probe's line, or a bus of
meters told apart by their device address).

The exchange (``protocols.iec62056_21`` builds and parses every message):

1. the client's sign-on ``/?!`` or ``/?ADDRESS!`` (300 baud 7E1); the meter whose address
   matches answers, others keep quiet; ``/?!`` (no address) is answered by the line's first
   meter (on a real shared line every meter would answer at once);
2. the identification ``/MLk Z ident``: manufacturer ``MLk`` (lower-case third letter: 20 ms
   reaction time), ``Z`` the meter's highest baud rate (``5`` = 9600 by default);
3. the client's option select ``ACK 0 Z 0`` (readout at baud Z, Z at most the offer); the meter
   "switches" (a pty does not enforce baud rates, so the bytes just carry on);
4. the data message ``STX data ! CR LF ETX BCC`` with the registers of its model at that
   moment (virtual time), then the meter is back at the sign-on.

Anything else while waiting for the option select (programming mode ``ACK 0 Z 1``, HDLC
``ACK 2 Z 2``, garbage), or no option select within 1.5 s, puts the meter back at the sign-on
without data; a break ``SOH B0 ETX BCC`` too. A new sign-on always restarts. Each answer is sent
20 ms (the reaction time) after the client's message.

The data block (values of ``MeterModel.values_at``; energies truncated to Wh, others rounded
half-even; tariffs by ``tariffs.TariffSplit``)::

    0.0.0(ADDRESS)          C.1.0(meter id)         0.9.1(hhmmss)  0.9.2(YYMMDD)  (meter clock, UTC)
    1.8.0 1.8.1 1.8.2 2.8.0 2.8.1 2.8.2 (kWh)       3.8.0 4.8.0 (kvarh)
    1.7.0 2.7.0 (kW)        32.7.0 52.7.0 72.7.0 (V)    31.7.0 51.7.0 71.7.0 (A)
    14.7.0 (Hz)             F.F(00000000)

Faults per meter (``serial.faults``), taken once per sign-on: ``silent`` (no identification),
``late:MS`` (the identification MS later), ``corrupt`` (a digit of the data changed: the BCC
does not match), ``truncated`` (the first half of the data message, then silence).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from pathlib import Path

from protocols import iec62056_21 as iec
from protocols.clock import ClockSetting
from protocols.errors import DecodeError, EncodeError
from protocols.obis import Obis

from ..model import MeterModel
from ..pty import PtyLine
from .faults import IEC_KINDS, FaultState, LineFault, fault_command
from .tariffs import TariffSplit

__all__ = ["MANUFACTURER", "IecLine", "IecMeter", "readout_lines"]

log = logging.getLogger(__name__)

MANUFACTURER = "MLk"
REACTION_S = 0.02
OPTION_TIMEOUT_S = 1.5
_NS = 1_000_000_000


@dataclass(slots=True)
class IecMeter:
    """One meter on the line."""

    model: MeterModel
    address: str = ""
    ident: str = ""  # identification text (default: the meter id)
    baud: int = 9600  # the highest rate offered
    clock_offset_ms: int = 0
    faults: FaultState = field(default_factory=FaultState)
    readouts: int = 0
    split: TariffSplit | None = None

    def __post_init__(self) -> None:
        self.ident = self.ident or self.model.meter_id
        self.split = TariffSplit(self.model)
        # checked here: a bad address or ident fails at start, not at the first sign-on
        try:
            iec.sign_on(self.address)
            self.identification()
        except EncodeError as exc:
            raise ValueError(f"iec62056 meter {self.model.meter_id}: {exc}") from None

    def identification(self) -> bytes:
        return iec.identification(MANUFACTURER, iec.baud_char_for(self.baud), self.ident)


def _energy(mwh: int) -> str:
    kwh = (Decimal(mwh) / 1_000_000).quantize(Decimal("0.001"), ROUND_FLOOR)
    return f"{kwh:010.3f}"


def _fixed(value: Decimal, places: str, width: int) -> str:
    q = value.quantize(Decimal(places), ROUND_HALF_EVEN)
    return f"{q:0{width}f}"


def readout_lines(meter: IecMeter, virtual_ns: int) -> list[str]:
    """The data block's lines of ``meter`` at ``virtual_ns`` (pure)."""
    model = meter.model
    values = model.values_at(virtual_ns)
    imp, exp, rimp, rexp = model.energies_mwh(virtual_ns)
    assert meter.split is not None
    imp1, imp2, exp1, exp2 = meter.split.split_mwh(virtual_ns)
    stamp = datetime.fromtimestamp((virtual_ns // 1_000_000 + meter.clock_offset_ms) // 1000, UTC)

    def get(code: str) -> Decimal:
        return values[Obis.parse(f"1-0:{code}")]

    lines = [
        f"0.0.0({meter.address or model.meter_id[:16]})",
        f"C.1.0({model.meter_id[:16]})",
        f"0.9.1({stamp:%H%M%S})",
        f"0.9.2({stamp:%y%m%d})",
        f"1.8.0({_energy(imp)}*kWh)",
        f"1.8.1({_energy(imp1)}*kWh)",
        f"1.8.2({_energy(imp2)}*kWh)",
        f"2.8.0({_energy(exp)}*kWh)",
        f"2.8.1({_energy(exp1)}*kWh)",
        f"2.8.2({_energy(exp2)}*kWh)",
        f"3.8.0({_energy(rimp)}*kvarh)",
        f"4.8.0({_energy(rexp)}*kvarh)",
        f"1.7.0({_fixed(get('1.7.0') / 1000, '0.001', 6)}*kW)",
        f"2.7.0({_fixed(get('2.7.0') / 1000, '0.001', 6)}*kW)",
    ]
    for c in ("32", "52", "72"):
        lines.append(f"{c}.7.0({_fixed(get(f'{c}.7.0'), '0.1', 5)}*V)")
    for c in ("31", "51", "71"):
        lines.append(f"{c}.7.0({_fixed(get(f'{c}.7.0'), '0.01', 6)}*A)")
    lines.append(f"14.7.0({_fixed(get('14.7.0'), '0.01', 5)}*Hz)")
    lines.append("F.F(00000000)")
    return lines


def corrupt_message(message: bytes) -> bytes:
    """The data message with one digit of its first value changed (the BCC then fails)."""
    at = message.index(b"(", message.index(b"1.8.0")) + 1
    return message[:at] + bytes([message[at] ^ 0x01]) + message[at + 1 :]


class IecLine:
    """Mode C meters on one pty with a symlink at ``link``."""

    def __init__(
        self,
        link: Path,
        meters: list[IecMeter],
        clock: ClockSetting,
        *,
        now_ns: Callable[[], int] = time.time_ns,
        reaction_s: float = REACTION_S,
        option_timeout_s: float = OPTION_TIMEOUT_S,
    ) -> None:
        if not meters:
            raise ValueError("an IEC 62056-21 line needs at least one meter")
        addresses = [m.address for m in meters]
        if len(set(addresses)) != len(addresses):
            raise ValueError(f"two meters with one address on a line: {addresses}")
        self.meters = meters
        self.clock = clock
        self.pty = PtyLine(link)
        self.reaction_s = reaction_s
        self.option_timeout_s = option_timeout_s
        self._now_ns = now_ns
        self._buffer = bytearray()
        self.selected: IecMeter | None = None  # waiting for its option select
        self._fault = LineFault()
        self.baud = 300
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._generation = 0  # a new sign-on cancels answers still to come
        self.counts: dict[str, int] = {"sign-ons": 0, "readouts": 0, "ignored": 0}

    async def start(self) -> None:
        self.pty.open()
        self.pty.start_reading(self._on_data)

    async def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.pty.close()

    # -- input --------------------------------------------------------------------------
    def _on_data(self, chunk: bytes) -> None:
        self._buffer += chunk
        if len(self._buffer) > 4096:  # no message is that long: line noise
            del self._buffer[:-64]
        while self._step():
            pass

    def _step(self) -> bool:
        """Handle one message from the buffer; False when more bytes are needed."""
        buf = self._buffer
        soh = buf.find(b"\x01B0\x03")
        if soh >= 0 and len(buf) >= soh + 5:  # break: back to the sign-on
            del buf[: soh + 5]
            self._idle()
            return True
        end = buf.find(b"\n")
        if end < 0:
            return False
        line = bytes(buf[: end + 1])
        del buf[: end + 1]
        start = line.rfind(b"/?")
        if start >= 0:
            self._sign_on(line[start:])
            return True
        ack = line.rfind(b"\x06")
        if self.selected is not None and ack >= 0:
            self._option(line[ack:])
            return True
        self.counts["ignored"] += 1
        self._idle()
        return True

    def _idle(self) -> None:
        self.selected = None
        self.baud = 300
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sign_on(self, line: bytes) -> None:
        self._idle()
        self._generation += 1
        try:
            address = iec.parse_sign_on(line)
        except DecodeError as exc:
            log.info("iec62056 %s: %s", self.pty.link, exc)
            self.counts["ignored"] += 1
            return
        self.counts["sign-ons"] += 1
        if address:
            meter = next((m for m in self.meters if m.address == address), None)
        else:
            meter = self.meters[0]
        if meter is None:
            return  # not one of ours: keep quiet
        fault = meter.faults.take()
        if fault.kind == "silent":
            return
        self.selected = meter
        self._fault = fault
        delay = (fault.arg or 0) / 1000 if fault.kind == "late" else 0.0
        self._send_later(self.reaction_s + delay, meter.identification())
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.option_timeout_s + delay, self._idle)

    def _option(self, line: bytes) -> None:
        meter, fault = self.selected, self._fault
        self._idle()
        assert meter is not None
        try:
            option = iec.parse_ack_option(line)
        except DecodeError as exc:
            log.info("iec62056 %s: %s", self.pty.link, exc)
            self.counts["ignored"] += 1
            return
        if option.protocol != "0" or option.mode != "0":
            log.info("iec62056 %s: option %s not supported (readout only)", self.pty.link, option)
            return
        if option.baud > meter.baud:
            log.info(
                "iec62056 %s: %d baud asked, %d offered", self.pty.link, option.baud, meter.baud
            )
        self.baud = option.baud  # not enforced on a pty
        virtual_ns = self.clock.virtual_ns(self._now_ns())
        message = iec.data_message(readout_lines(meter, virtual_ns))
        if fault.kind == "corrupt":
            message = corrupt_message(message)
        elif fault.kind == "truncated":
            message = message[: len(message) // 2]
        meter.readouts += 1
        self.counts["readouts"] += 1
        self._send_later(self.reaction_s, message, after=self._idle)  # then back at 300 baud

    # -- output -------------------------------------------------------------------------
    def _send_later(
        self, delay: float, data: bytes, after: Callable[[], None] | None = None
    ) -> None:
        generation = self._generation

        async def send() -> None:
            await asyncio.sleep(delay)
            if generation == self._generation:
                await self.pty.write(data)
                if after is not None:
                    after()

        task = asyncio.ensure_future(send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- control and reporting ------------------------------------------------------------
    def models(self) -> list[MeterModel]:
        return [m.model for m in self.meters]

    def meter_command(self, meter: IecMeter, words: list[str]) -> str:
        """``fault KIND[:ARG] [COUNT]``, ``clock-offset SECONDS``, ``status``."""
        if words[:1] == ["fault"]:
            return fault_command(meter.faults, words[1:], IEC_KINDS)
        if words[:1] == ["clock-offset"] and len(words) == 2:
            try:
                meter.clock_offset_ms = int(Decimal(words[1]) * 1000)
            except ArithmeticError:
                return f"ERROR clock-offset: {words[1]!r} is not a number of seconds"
            return f"OK clock-offset {Decimal(meter.clock_offset_ms) / 1000}"
        if words[:1] == ["status"]:
            return (
                f"OK readouts={meter.readouts} fault={meter.faults.describe()} "
                f"clock-offset={Decimal(meter.clock_offset_ms) / 1000}"
            )
        return "ERROR iec62056: expected 'fault KIND[:ARG] [COUNT]', 'clock-offset S' or 'status'"

    def targets(self) -> dict[str, Callable[[list[str]], str]]:
        out: dict[str, Callable[[list[str]], str]] = {}
        for meter in self.meters:
            out[meter.model.meter_id] = lambda words, m=meter: self.meter_command(m, words)
        if len(self.meters) == 1:
            out[str(self.pty.link)] = out[self.meters[0].model.meter_id]
        return out

    def ready_line(self) -> str:
        addresses = ",".join(m.address or "-" for m in self.meters)
        return (
            f"READY iec62056 pty:{self.pty.link} meters="
            f"{','.join(m.model.meter_id for m in self.meters)} addresses={addresses} "
            f"baud={','.join(str(m.baud) for m in self.meters)} device={self.pty.device}"
        )

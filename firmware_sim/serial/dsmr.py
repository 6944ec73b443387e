"""A simulated DSMR P1 port on a serial pty: the meter pushes a telegram at a fixed pace.

One :class:`P1Port` is one electricity meter (a :class:`~firmware_sim.model.MeterModel`) and
its M-Bus devices: gas on channel 1 (``gas``), water on channel 2 (``water``), each with a
model of its own. Telegrams are built with ``protocols.dsmr.encode_telegram`` (CRC-16 where
the version has one); what each version sends is data (:data:`VERSIONS`), not branches.

Pace and time: the port sends one telegram every ``every`` *real* seconds (default 1 s for
DSMR 5 and e-MUCS, 10 s for DSMR 2.2, 3 and 4), like the meter's own P1 clock; each telegram
carries the virtual time at which it is sent (whole seconds). So at ``--speed 60`` telegrams
are 60 virtual seconds apart, and a slow test can ask ``--every 0.2``.

Values: the model's import/export split into tariffs 1/2 by ``tariffs.TariffSplit`` (tariff 1
low in the Netherlands; e-MUCS counts the other way round: tariff 1 is the day rate, so its
1.8.1 is the split's normal part), truncated to Wh; powers kW (per phase: import in x1.7.0
and export in x2.7.0 by the sign of the phase's net power); voltages; currents. M-Bus values:
the device's model at its last capture time (hourly for DSMR 2.2/3/4, every 5 minutes for
DSMR 5 and e-MUCS), in m3 (gas: the model's kWh / 10; water: kWh / 100), truncated to dm3.
Time stamps are Dutch/Belgian local time with the DST flag (``S``/``W``; none in 2.2/3).
Equipment ids are the meter ids, hex-coded as DSMR does.

Faults (``serial.faults``), taken once per telegram: ``silent`` (this telegram is not sent:
the cable is unplugged), ``late:MS`` (sent MS later; the next one a period after it),
``corrupt`` (a digit of 1-0:1.8.1 changed, so the CRC fails; versions without CRC get the
byte 0x7F there, which no telegram holds), ``truncated`` (the first half only; the next
``/`` starts the next telegram), ``garbage`` (1..40 random bytes, never ``/``, before the
telegram).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, ROUND_HALF_EVEN, Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

from protocols.clock import ClockSetting
from protocols.dsmr import encode_telegram
from protocols.obis import Obis

from ..model import MeterModel
from ..pty import PtyLine
from .faults import DSMR_KINDS, FaultState, LineFault, fault_command
from .tariffs import TariffSplit, tariff_at

__all__ = ["VERSIONS", "DsmrVersion", "P1Port", "telegram_lines"]

log = logging.getLogger(__name__)
_NS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class DsmrVersion:
    """What a DSMR version sends and how it writes it."""

    name: str
    crc: bool
    every_s: Decimal  # default real seconds between telegrams
    version_line: str  # "" or the version object line
    timestamp: bool  # 0-0:1.0.0 and DST flags
    energy_digits: tuple[int, int]  # integer, decimal digits of kWh
    power_digits: tuple[int, int]  # of kW
    phases: bool  # per-phase powers, voltages, currents
    current_places: int  # decimals of A (0: whole amperes)
    mbus_style: str  # "24.3.0" (2.2/3: value on its own line) or "24.2.1"
    gas_object: str  # "24.2.1" or "24.2.3" (e-MUCS: not temperature corrected)
    capture_s: int  # M-Bus capture period
    low_is_tariff: int  # the tariff number of the low rate
    zone: str
    equipment_obis: str  # M-Bus equipment id object


VERSIONS: dict[str, DsmrVersion] = {
    v.name: v
    for v in (
        DsmrVersion("2.2", False, Decimal(10), "", False, (5, 3), (4, 2), False, 0,
                    "24.3.0", "24.2.1", 3600, 1, "Europe/Amsterdam", "96.1.0"),
        DsmrVersion("3", False, Decimal(10), "", False, (5, 3), (3, 2), False, 0,
                    "24.3.0", "24.2.1", 3600, 1, "Europe/Amsterdam", "96.1.0"),
        DsmrVersion("4", True, Decimal(10), "1-3:0.2.8(42)", True, (6, 3), (2, 3), True, 0,
                    "24.2.1", "24.2.1", 3600, 1, "Europe/Amsterdam", "96.1.0"),
        DsmrVersion("5", True, Decimal(1), "1-3:0.2.8(50)", True, (6, 3), (2, 3), True, 0,
                    "24.2.1", "24.2.1", 300, 1, "Europe/Amsterdam", "96.1.0"),
        DsmrVersion("fluvius", True, Decimal(1), "0-0:96.1.4(50217)", True, (6, 3), (2, 3),
                    True, 2, "24.2.1", "24.2.3", 300, 2, "Europe/Brussels", "96.1.1"),
    )
}  # fmt: skip

GAS_MWH_PER_M3 = 10_000_000  # the gas model's kWh / 10
WATER_MWH_PER_M3 = 100_000_000  # the water model's kWh / 100
_P_IMPORT, _P_EXPORT = Obis.parse("1-0:1.7.0"), Obis.parse("1-0:2.7.0")


def _num(value: Decimal, digits: tuple[int, int], rounding: str = ROUND_HALF_EVEN) -> str:
    whole, places = digits
    q = value.quantize(Decimal(1).scaleb(-places), rounding)
    return f"{q:0{whole + places + (1 if places else 0)}.{places}f}"


def _kwh(mwh: int, digits: tuple[int, int]) -> str:
    return _num(Decimal(mwh).scaleb(-6), digits, ROUND_FLOOR)


def _hex(text: str) -> str:
    return text.encode("ascii").hex().upper()[:96]


def _stamp(version: DsmrVersion, ns: int) -> str:
    local = datetime.fromtimestamp(ns // _NS, UTC).astimezone(ZoneInfo(version.zone))
    flag = ("S" if local.dst() else "W") if version.timestamp else ""
    return f"{local:%y%m%d%H%M%S}{flag}"


@dataclass(slots=True)
class MbusDevice:
    channel: int
    device_type: int  # 3 gas, 7 water
    model: MeterModel
    mwh_per_m3: int


def telegram_lines(
    version: DsmrVersion,
    meter: MeterModel,
    split: TariffSplit,
    devices: list[MbusDevice],
    virtual_ns: int,
) -> list[str]:
    """The object lines of a telegram of ``meter`` at ``virtual_ns`` (pure)."""
    ns = virtual_ns - virtual_ns % _NS
    values = meter.values_at(ns)
    imp1, imp2, exp1, exp2 = split.split_mwh(ns)
    if version.low_is_tariff == 2:  # e-MUCS: tariff 1 is the day (normal) rate
        imp1, imp2, exp1, exp2 = imp2, imp1, exp2, exp1
    now_tariff = tariff_at(ns) if version.low_is_tariff == 1 else 3 - tariff_at(ns)
    e, p = version.energy_digits, version.power_digits
    lines = [version.version_line] if version.version_line else []
    if version.timestamp:
        lines.append(f"0-0:1.0.0({_stamp(version, ns)})")
    lines += [
        f"0-0:96.1.1({_hex(meter.meter_id)})",
        f"1-0:1.8.1({_kwh(imp1, e)}*kWh)",
        f"1-0:1.8.2({_kwh(imp2, e)}*kWh)",
        f"1-0:2.8.1({_kwh(exp1, e)}*kWh)",
        f"1-0:2.8.2({_kwh(exp2, e)}*kWh)",
        f"0-0:96.14.0({now_tariff:04d})",
        f"1-0:1.7.0({_num(values[_P_IMPORT] / 1000, p)}*kW)",
        f"1-0:2.7.0({_num(values[_P_EXPORT] / 1000, p)}*kW)",
    ]
    if version.phases:
        lines += ["0-0:96.7.21(00000)", "0-0:96.7.9(00000)"]
        for c_imp, c_v, c_i in ((21, 32, 31), (41, 52, 51), (61, 72, 71)):
            net = values[Obis.parse(f"1-0:{c_imp}.7.0")]
            volts = values[Obis.parse(f"1-0:{c_v}.7.0")]
            amps = values[Obis.parse(f"1-0:{c_i}.7.0")]
            lines.append(f"1-0:{c_v}.7.0({_num(volts, (4, 1))}*V)")
            lines.append(f"1-0:{c_i}.7.0({_num(amps, (3, version.current_places))}*A)")
            lines.append(f"1-0:{c_imp}.7.0({_num(max(net, Decimal(0)) / 1000, p)}*kW)")
            lines.append(f"1-0:{c_imp + 1}.7.0({_num(max(-net, Decimal(0)) / 1000, p)}*kW)")
    else:
        lines += ["0-0:17.0.0(0999.00*kW)", "0-0:96.3.10(1)", "0-0:96.13.1()"]
    lines.append("0-0:96.13.0()")
    for device in devices:
        lines += _mbus_lines(version, device, ns)
    return lines


def _mbus_lines(version: DsmrVersion, device: MbusDevice, ns: int) -> list[str]:
    b = device.channel
    captured = ns - ns % (version.capture_s * _NS)
    volume = _num(
        Decimal(device.model.energies_mwh(captured)[0]) / device.mwh_per_m3, (5, 3), ROUND_FLOOR
    )
    stamp = _stamp(version, captured)
    gas = device.device_type == 3
    obj = version.gas_object if gas else "24.2.1"
    lines = [
        f"0-{b}:24.1.0({device.device_type:03d})",
        f"0-{b}:{version.equipment_obis}({_hex(device.model.meter_id)})",
    ]
    if version.mbus_style == "24.3.0":
        lines.append(f"0-{b}:24.3.0({stamp})(00)(60)(1)(0-{b}:24.2.1)(m3)")
        lines.append(f"({volume})")
    else:
        lines.append(f"0-{b}:{obj}({stamp})({volume}*m3)")
    if gas:
        lines.append(f"0-{b}:24.4.0(1)")
    return lines


def corrupt_telegram(telegram: bytes, crc: bool) -> bytes:
    """One byte of the 1-0:1.8.1 value changed (a digit flipped; 0x7F without a CRC)."""
    at = telegram.index(b"(", telegram.index(b"1-0:1.8.1")) + 1
    byte = telegram[at] ^ 0x01 if crc else 0x7F
    return telegram[:at] + bytes([byte]) + telegram[at + 1 :]


class P1Port:
    """A P1 port on a pty with a symlink at ``link``."""

    def __init__(
        self,
        link: Path,
        version: DsmrVersion,
        meter: MeterModel,
        clock: ClockSetting,
        *,
        gas: MeterModel | None = None,
        water: MeterModel | None = None,
        every_s: Decimal | None = None,
        fault: LineFault | None = None,
        now_ns: Callable[[], int] = time.time_ns,
        seed: int = 0,
    ) -> None:
        self.version = version
        self.meter = meter
        self.split = TariffSplit(meter)
        self.devices: list[MbusDevice] = []
        if gas is not None:
            self.devices.append(MbusDevice(1, 3, gas, GAS_MWH_PER_M3))
        if water is not None:
            self.devices.append(MbusDevice(2, 7, water, WATER_MWH_PER_M3))
        self.clock = clock
        self.every_s = every_s if every_s is not None else version.every_s
        if not self.every_s > 0:
            raise ValueError(f"dsmr: every {self.every_s}: must be > 0 seconds")
        self.pty = PtyLine(link)
        self.faults = FaultState(fault or LineFault())
        self._now_ns = now_ns
        self._rng = random.Random(f"dsmr:{seed}")
        self._task: asyncio.Task[None] | None = None
        self.telegrams = 0  # sent (whole or not)

    def telegram(self, virtual_ns: int) -> bytes:
        """The telegram at ``virtual_ns`` (header ``/MLK5\\2MLP1-VERSION``)."""
        lines = telegram_lines(self.version, self.meter, self.split, self.devices, virtual_ns)
        return encode_telegram(f"MLK5\\2MLP1-{self.version.name}", lines, crc=self.version.crc)

    async def start(self) -> None:
        self.pty.open()
        self.pty.start_reading(lambda _chunk: None)  # P1 is one-way; input is dropped
        self._task = asyncio.create_task(self._run(), name="p1-port")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self.pty.close()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        period = float(self.every_s)
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            try:
                delay, data = self._next_telegram()
            except Exception:  # one bad telegram never stops the port
                log.exception("dsmr %s: telegram", self.pty.link)
                delay, data = 0.0, b""
            if delay:  # a late telegram holds up the stream; the pace resumes after it
                await asyncio.sleep(delay)
                due = loop.time()
            if data:
                await self.pty.write(data)
                self.telegrams += 1
            due += period

    def _next_telegram(self) -> tuple[float, bytes]:
        """The seconds to wait and the bytes to send at this tick."""
        fault = self.faults.take()
        if fault.kind == "silent":
            return 0.0, b""
        data = self.telegram(self.clock.virtual_ns(self._now_ns()))
        if fault.kind == "corrupt":
            data = corrupt_telegram(data, self.version.crc)
        elif fault.kind == "truncated":
            data = data[: len(data) // 2]
        elif fault.kind == "garbage":
            noise = bytes(b for b in self._rng.randbytes(self._rng.randint(1, 40)) if b != 0x2F)
            data = noise + data
        return ((fault.arg or 0) / 1000 if fault.kind == "late" else 0.0), data

    # -- control and reporting ------------------------------------------------------------
    def models(self) -> list[MeterModel]:
        return [self.meter, *(d.model for d in self.devices)]

    def command(self, words: list[str]) -> str:
        """``fault KIND[:ARG] [COUNT]``, ``status``."""
        if words[:1] == ["fault"]:
            return fault_command(self.faults, words[1:], DSMR_KINDS)
        if words[:1] == ["status"]:
            return f"OK telegrams={self.telegrams} fault={self.faults.describe()}"
        return "ERROR dsmr: expected 'fault KIND[:ARG] [COUNT]' or 'status'"

    def targets(self) -> dict[str, Callable[[list[str]], str]]:
        names = [str(self.pty.link), *(m.meter_id for m in self.models())]
        return dict.fromkeys(names, self.command)

    def ready_line(self) -> str:
        return (
            f"READY dsmr pty:{self.pty.link} version={self.version.name} "
            f"meters={','.join(m.meter_id for m in self.models())} every={self.every_s} "
            f"device={self.pty.device}"
        )

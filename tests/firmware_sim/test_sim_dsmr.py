"""The DSMR P1 simulator on a pty, read through the device node with pyserial: telegrams of
every version parsed by ``protocols.dsmr`` AND by dsmr-parser (independent), values against
the model, virtual-time stamps, the M-Bus channels, faults, and ``sim dsmr`` as a process
with its control channel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pytest
import serial
from dsmr_parser import telegram_specifications as specs
from dsmr_parser.exceptions import InvalidChecksumError
from dsmr_parser.parsers import TelegramParser

from firmware_sim.model import MeterModel, ModelParams
from firmware_sim.serial.dsmr import VERSIONS, P1Port
from firmware_sim.serial.faults import LineFault, parse_line_fault
from firmware_sim.serial.tariffs import TariffSplit
from meterlink.procs import Proc
from protocols.clock import ClockSetting
from protocols.dsmr import (
    NEED_DATA,
    BadTelegram,
    Skipped,
    TelegramReader,
    TelegramReceived,
    meter_readings,
)
from protocols.obis import Obis

REPO = Path(__file__).resolve().parents[2]
START_NS = 1_780_315_200 * 10**9  # 2026-06-01T12:00:00Z (14:00 CEST)
ANCHOR_NS = 1_700_000_000 * 10**9
THEIR_SPECS = {
    "2.2": specs.V2_2, "3": specs.V3, "4": specs.V4, "5": specs.V5,
    "fluvius": specs.BELGIUM_FLUVIUS,
}  # fmt: skip


class StepClock:
    """Real time that moves one second per telegram (each call): with speed 60 the
    telegrams are exactly one virtual minute apart, whatever the machine's pace."""

    def __init__(self) -> None:
        self.now = ANCHOR_NS - 10**9

    def __call__(self) -> int:
        self.now += 10**9
        return self.now


def _port_for(link: Path, version: str, **kw: Any) -> P1Port:
    origin = START_NS - 86_400 * 10**9
    meter = MeterModel("p1-e", 9, ModelParams(pv_peak_w=4000), origin_ns=origin)
    gas = MeterModel("p1-e-gas", 9, ModelParams(base_load_w=1200), origin_ns=origin)
    water = MeterModel("p1-e-water", 9, origin_ns=origin)
    clock = ClockSetting(START_NS, ANCHOR_NS, Decimal(60))
    return P1Port(link, VERSIONS[version], meter, clock, gas=gas, water=water,
                  every_s=Decimal("0.05"), now_ns=StepClock(), **kw)  # fmt: skip


def _with_port(port: P1Port, work: Callable[[], Any]) -> Any:
    async def main() -> Any:
        await port.start()
        try:
            return await asyncio.wait_for(asyncio.to_thread(work), 60)
        finally:
            await port.stop()

    return asyncio.run(main())


def _serial(link: Path, timeout: float = 5.0) -> serial.Serial:
    return serial.Serial(str(link), baudrate=115200, timeout=timeout)


def _events(port: serial.Serial, count: int) -> list[Any]:
    """Events of the P1 stream until ``count`` telegrams arrived."""
    reader = TelegramReader()
    out: list[Any] = []
    while sum(isinstance(e, TelegramReceived) for e in out) < count:
        chunk = port.read(port.in_waiting or 1)
        if not chunk:
            raise TimeoutError(f"P1 stream stalled after {out}")
        reader.receive_data(chunk)
        while (event := reader.next_event()) is not NEED_DATA:
            out.append(event)
    return out


@pytest.mark.parametrize("version", sorted(VERSIONS))
def test_telegrams_of_every_version_parse_with_both_parsers(tmp_path: Path, version: str) -> None:
    link = tmp_path / "p1"
    port = _port_for(link, version)

    def work() -> list[Any]:
        with _serial(link) as line:
            return _events(line, 3)

    events = _with_port(port, work)
    telegrams = [e.telegram for e in events if isinstance(e, TelegramReceived)]
    assert len(telegrams) == 3 and all(isinstance(e, TelegramReceived) for e in events[1:])
    first = telegrams[0]
    assert (first.crc is not None) == VERSIONS[version].crc
    theirs = TelegramParser(THEIR_SPECS[version]).parse(first.raw.decode("ascii"), throw_ex=True)
    meters = meter_readings(first)
    assert [m.kind for m in meters] == ["electricity", "gas", "water"]
    assert [m.equipment_id for m in meters] == ["p1-e", "p1-e-gas", "p1-e-water"]
    electricity = {r.obis: r.value for r in meters[0].values}
    # the first telegram is at START (virtual), the next ones a virtual minute apart
    virtual = START_NS
    imp1, imp2, _e1, _e2 = TariffSplit(port.meter).split_mwh(virtual)
    kwh = [Decimal(v).scaleb(-6).quantize(Decimal("0.001"), ROUND_FLOOR) for v in (imp1, imp2)]
    if version == "fluvius":
        kwh.reverse()  # e-MUCS: tariff 1 is the day rate
    assert [electricity[Obis.parse("1-0:1.8.1")], electricity[Obis.parse("1-0:1.8.2")]] == kwh
    assert theirs.ELECTRICITY_USED_TARIFF_1.value == kwh[0]
    assert theirs.ELECTRICITY_USED_TARIFF_2.value == kwh[1]
    power = port.meter.values_at(virtual)[Obis.parse("1-0:1.7.0")] / 1000
    assert abs(electricity[Obis.parse("1-0:1.7.0")] - power) <= Decimal("0.005")
    gas = meters[1]
    capture = VERSIONS[version].capture_s * 10**9
    captured = virtual - virtual % capture
    m3 = Decimal(port.devices[0].model.energies_mwh(captured)[0]) / 10_000_000
    assert gas.values[0].value == m3.quantize(Decimal("0.001"), ROUND_FLOOR)
    assert gas.values[0].obis == Obis.parse("7-0:3.0.0") and gas.values[0].unit == "m3"
    assert gas.captured_ms == captured // 10**6
    if VERSIONS[version].timestamp:
        stamps = [meter_readings(t)[0].captured_ms for t in telegrams]
        assert stamps == [virtual // 10**6 + k * 60_000 for k in range(3)]
        assert meters[0].clock_flag == "S"  # June: summer time
        assert theirs.P1_MESSAGE_TIMESTAMP.value.timestamp() * 1000 == stamps[0]


def test_default_pace_per_version() -> None:
    assert {name: v.every_s for name, v in VERSIONS.items()} == {
        "2.2": 10, "3": 10, "4": 10, "5": 1, "fluvius": 1,
    }  # fmt: skip


def test_faults_corrupt_truncated_garbage_silent(tmp_path: Path) -> None:
    link = tmp_path / "p1"
    port = _port_for(link, "5")

    def work() -> list[Any]:
        with _serial(link) as line:
            _events(line, 1)
            port.faults.set(LineFault("corrupt"), count=1)
            events = _events(line, 1)
            port.faults.set(LineFault("truncated"), count=1)
            events += _events(line, 1)
            port.faults.set(LineFault("garbage"), count=1)
            events += _events(line, 1)
            return events

    events = _with_port(port, work)
    bad = [e for e in events if isinstance(e, BadTelegram)]
    assert [b.reason for b in bad] == ["crc", "truncated"]
    assert any(isinstance(e, Skipped) for e in events)  # the garbage before a telegram
    crc = bad[0].raw
    with pytest.raises(InvalidChecksumError):
        TelegramParser(specs.V5).parse(crc.decode("ascii"))
    assert port.faults.applied == 3


@pytest.mark.parametrize(
    ("fault", "count", "at_least"), [("silent", 3, 0.15), ("late:300", 1, 0.3)]
)
def test_silent_and_late_faults_hold_up_the_first_telegram(
    tmp_path: Path, fault: str, count: int, at_least: float
) -> None:
    """Lower bounds only: three silent periods of 0.05 s; one telegram 0.3 s late."""
    link = tmp_path / "p1"
    port = _port_for(link, "4", fault=parse_line_fault(fault))
    port.faults.remaining = count

    def work() -> float:
        with _serial(link) as line:
            _events(line, 2)
            return time.monotonic() - begin

    begin = time.monotonic()
    elapsed = _with_port(port, work)
    assert elapsed >= at_least and port.faults.applied == count
    assert port.faults.fault.kind == "none"


@pytest.mark.integration
def test_sim_dsmr_process_and_control_channel(tmp_path: Path) -> None:
    link = tmp_path / "p1"
    sim = Proc.python(
        "meterlink", "sim", "dsmr", "--pty-link", str(link), "--version", "e-mucs", "--gas",
        "--meter-id", "be-1", "--every", "0.1", "--speed", "60", cwd=REPO, name="sim",
        stdin_pipe=True,
    )  # fmt: skip
    try:
        ready = sim.wait_line(lambda text: text.startswith("READY dsmr"))
        words = ready.split()
        assert words[2:6] == [f"pty:{link}", "version=fluvius", "meters=be-1,be-1-gas", "every=0.1"]
        with _serial(link) as line:
            (first,) = [e for e in _events(line, 1) if isinstance(e, TelegramReceived)]
            theirs = TelegramParser(specs.BELGIUM_FLUVIUS).parse(first.telegram.raw.decode())
            assert theirs.BELGIUM_VERSION_INFORMATION.value == "50217"
            assert [m.kind for m in meter_readings(first.telegram)] == ["electricity", "gas"]
            sim.send_line("be-1-gas fault corrupt 1")
            sim.wait_line(lambda text: text == "OK fault corrupt x1")
            events: list[Any] = []
            while not any(isinstance(e, BadTelegram) for e in events):
                events += _events(line, 1)
            events = _events(line, 2)  # good again after one bad telegram
            assert not any(isinstance(e, BadTelegram) for e in events)
            sim.send_line("status")
            sim.wait_line(lambda text: text.startswith("OK telegrams="))
    finally:
        assert sim.stop() == 0, sim.output


def test_tariff_split_is_exact_monotone_and_follows_the_rule() -> None:
    """Tariff 1 + tariff 2 == the total (mWh) at every instant, both only grow, and only
    tariff 1 grows in the low windows (nights, weekends)."""
    from firmware_sim.serial.tariffs import tariff_at

    model = MeterModel("t", 1, ModelParams(pv_peak_w=3000), origin_ns=START_NS)
    split = TariffSplit(model)
    hour = 3_600 * 10**9
    previous = None
    for k in range(-30, 24 * 9):  # from before the origin to a week and more after it
        ns = START_NS + k * hour // 2
        imp1, imp2, exp1, exp2 = split.split_mwh(ns)
        imp, exp, _ri, _re = model.energies_mwh(ns)
        assert (imp1 + imp2, exp1 + exp2) == (imp, exp)
        if previous is not None:
            assert all(a >= b for a, b in zip((imp1, imp2, exp1, exp2), previous, strict=True))
            grew = (
                imp1 + exp1 > previous[0] + previous[2],
                imp2 + exp2 > previous[1] + previous[3],
            )
            if tariff_at(ns - 1) == tariff_at(ns - hour // 2) == 1:
                assert not grew[1]
            if tariff_at(ns - 1) == tariff_at(ns - hour // 2) == 2:
                assert not grew[0]
        previous = (imp1, imp2, exp1, exp2)
    saturday = 1_780_704_000 * 10**9 + 12 * hour  # 2026-06-06T12:00Z
    assert tariff_at(saturday) == 1 and tariff_at(START_NS) == 2
    assert tariff_at(START_NS - 6 * hour) == 1  # 06:00 on a Monday: still the night rate

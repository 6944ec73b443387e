"""The serial drivers against the serial simulators' line code on real ptys (in-process:
the simulators' classes on a pty pair, the drivers open the pty's device node with pyserial):
Modbus RTU (a bus of units of two profiles, a silent unit, a damaged answer, an exception),
IEC 62056-21 mode C (two meters on one line by address, baud switch), DSMR P1 (electricity
and gas on M-Bus, an unchanged M-Bus value, a port that goes quiet)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

import pytest

from agent.config import SerialSettings
from agent.drivers.dsmr_p1 import DsmrMeter, P1Port
from agent.drivers.iec62056 import Iec62056Meter, IecLine, IecReadError
from agent.drivers.modbus_rtu import RtuBus, RtuMeter, RtuReadError
from agent.drivers.modbus_tcp import MeterReadError
from firmware_sim.model import MeterModel
from firmware_sim.serial import dsmr as sim_dsmr
from firmware_sim.serial import iec62056 as sim_iec
from firmware_sim.serial import rtu as sim_rtu
from protocols.clock import ClockSetting
from protocols.modbus import load_profile
from protocols.modbus.rtu import SerialLine
from protocols.obis import Obis

REPO = Path(__file__).resolve().parents[2]
SDM = load_profile(REPO / "config/profiles/eastron_sdm630.toml")
EM24 = load_profile(REPO / "config/profiles/carlo_gavazzi_em24_e1.toml")
T = TypeVar("T")
ORIGIN_NS = time.time_ns()  # the models' registers start now (no history to integrate)


def _model(meter_id: str, seed: int) -> MeterModel:
    return MeterModel(meter_id, seed, origin_ns=ORIGIN_NS)


def _run(coro_fn: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coro_fn())  # type: ignore[arg-type]


def _rtu_sim(link: Path, units: dict[int, object], pace: bool = True) -> sim_rtu.RtuBus:
    return sim_rtu.RtuBus(
        link,
        [sim_rtu.RtuUnit(u, p, _model(f"m{u}", u)) for u, p in units.items()],  # type: ignore[arg-type]
        ClockSetting.system(),
        line=SerialLine(9600),
        pace=pace,
    )


def _rtu_settings(link: Path) -> SerialSettings:
    return SerialSettings(str(link), 9600, 8, "E", 1)


def test_rtu_bus_reads_units_of_two_profiles_with_planned_blocks(tmp_path: Path) -> None:
    async def main() -> list[tuple[str, int, int]]:
        link = tmp_path / "rs485"
        sim = _rtu_sim(link, {1: SDM, 2: SDM, 3: EM24, 4: EM24, 5: SDM})
        await sim.start()
        bus = RtuBus(_rtu_settings(link))
        try:
            out = []
            for unit in range(1, 6):
                profile = SDM if unit in (1, 2, 5) else EM24
                meter = RtuMeter(f"m{unit}", unit, profile, bus, timeout=1.0, retries=0)
                outcome = await meter.read()
                assert outcome.errors == []
                assert {v.obis for v in outcome.values} == {s.obis for s in profile.registers}
                out.append((profile.name, len(outcome.values), len(meter.plan)))
            assert bus.counters.requests == sum(o[2] for o in out)
            assert bus.counters.answers == bus.counters.requests
            assert bus.counters.busy_s > 0
            return out
        finally:
            await bus.close()
            await sim.stop()

    rows = _run(main)
    # the same planned block reads as over TCP: fewer requests than values
    assert all(plan < values for _name, values, plan in rows)


def test_rtu_silent_unit_costs_one_timeout_while_the_others_answer(tmp_path: Path) -> None:
    async def main() -> tuple[RtuReadError, float, int]:
        link = tmp_path / "rs485"
        sim = _rtu_sim(link, {1: SDM, 2: SDM, 3: SDM})
        await sim.start()
        assert sim.command(["fault", "2", "silent"]).startswith("OK")
        bus = RtuBus(_rtu_settings(link))
        try:
            meters = [RtuMeter(f"m{u}", u, SDM, bus, timeout=0.3, retries=2) for u in (1, 2, 3)]
            assert (await meters[0].read()).errors == []
            started = time.monotonic()
            with pytest.raises(RtuReadError) as exc:
                await meters[1].read()
            took = time.monotonic() - started
            assert (await meters[2].read()).errors == []
            return exc.value, took, bus.counters.silent
        finally:
            await bus.close()
            await sim.stop()

    error, took, silent = _run(main)
    assert error.kinds == ["silent"]  # not retried, and its other blocks not asked for
    assert "meter m2:" in str(error) and "no answer within 0.3s (1 attempt)" in str(error)
    assert silent == 1
    assert took >= 0.3


def test_rtu_damaged_answers_are_retried_and_named(tmp_path: Path) -> None:
    async def main() -> tuple[str, list[str], str, list[str]]:
        link = tmp_path / "rs485"
        sim = _rtu_sim(link, {1: SDM, 2: SDM})
        await sim.start()
        bus = RtuBus(_rtu_settings(link))
        try:
            # one corrupted answer: the retry reads it
            assert sim.command(["fault", "1", "corrupt", "1"]).startswith("OK")
            ok = await RtuMeter("m1", 1, SDM, bus, timeout=0.5, retries=1).read()
            assert ok.errors == []
            assert bus.counters.bad_frames == 1
            sim.command(["fault", "1", "corrupt"])
            with pytest.raises(RtuReadError) as crc:
                await RtuMeter("m1", 1, SDM, bus, timeout=0.5, retries=1).read()
            sim.command(["fault", "2", "exception:2"])
            with pytest.raises(RtuReadError) as exc:
                await RtuMeter("m2", 2, SDM, bus, timeout=0.5, retries=3).read()
            return str(crc.value), crc.value.kinds, str(exc.value), exc.value.kinds
        finally:
            await bus.close()
            await sim.stop()

    crc_text, crc_kinds, exc_text, exc_kinds = _run(main)
    assert crc_kinds == ["crc", "crc"] and "bad CRC" in crc_text and "(2 attempts)" in crc_text
    # not retried (the request is wrong), but the meter answered: its other blocks are asked
    assert exc_kinds == ["exception"] * len(SDM.plan())
    assert "exception response 2 (illegal data address)" in exc_text


def test_rtu_wrong_unit_answer_is_never_taken(tmp_path: Path) -> None:
    async def main() -> RtuReadError:
        link = tmp_path / "rs485"
        sim = _rtu_sim(link, {1: SDM, 2: SDM})
        await sim.start()
        sim.command(["fault", "1", "wrong-unit:2"])
        bus = RtuBus(_rtu_settings(link))
        try:
            with pytest.raises(RtuReadError) as exc:
                await RtuMeter("m1", 1, SDM, bus, timeout=0.5, retries=0).read()
            return exc.value
        finally:
            await bus.close()
            await sim.stop()

    error = _run(main)
    assert error.kinds == ["wrong-unit"]
    assert "answer from unit 2 to a request for unit 1, none from it within 0.5s" in str(error)


def test_rtu_late_answer_is_never_taken_for_the_next_units(tmp_path: Path) -> None:
    """Unit 1 answers 500 ms late, after its 200 ms time-out; unit 2, asked next, answers
    800 ms late (within its time-out): unit 1's answer arrives while the driver waits for
    unit 2 and is dropped, unit 2's own answer is taken. (Margins of 300 ms each way.)"""

    async def main() -> tuple[RtuReadError, list[Decimal], list[Decimal], int]:
        link = tmp_path / "rs485"
        sim = _rtu_sim(link, {1: SDM, 2: EM24}, pace=False)
        await sim.start()
        bus = RtuBus(_rtu_settings(link))
        try:
            unit2 = RtuMeter("m2", 2, EM24, bus, timeout=2.0, retries=0)
            unit2.plan = unit2.plan[:1]  # one block: the one the late answer lands in
            plain = await unit2.read()
            sim.command(["fault", "1", "late:500", "1"])
            sim.command(["fault", "2", "late:800", "1"])
            with pytest.raises(RtuReadError) as late:
                await RtuMeter("m1", 1, SDM, bus, timeout=0.2, retries=0).read()
            again = await unit2.read()
            return (
                late.value,
                [v.value for v in plain.values],
                [v.value for v in again.values],
                bus.counters.stray,
            )
        finally:
            await bus.close()
            await sim.stop()

    late, plain, again, stray = _run(main)
    assert late.kinds == ["silent"]
    assert stray == 1  # unit 1's late answer, dropped
    # unit 2's values (its voltages: the model moves slowly), not unit 1's float registers
    assert len(plain) == len(again)
    assert all(abs(a - b) < 5 for a, b in zip(plain, again, strict=True)), (plain, again)


def _iec_sim(link: Path) -> sim_iec.IecLine:
    meters = [
        sim_iec.IecMeter(_model("iec-a", 1), address="1001", baud=9600),
        sim_iec.IecMeter(_model("iec-b", 2), address="1002", baud=4800),
    ]
    return sim_iec.IecLine(link, meters, ClockSetting.system())


def test_iec62056_readouts_by_address_with_baud_switch(tmp_path: Path) -> None:
    async def main() -> list[tuple[str, int, dict[Obis, tuple[Decimal, str]]]]:
        link = tmp_path / "optical"
        sim = _iec_sim(link)
        await sim.start()
        line = IecLine(str(link))
        try:
            out = []
            for meter_id, address in (("iec-a", "1001"), ("iec-b", "1002")):
                settings = SerialSettings(str(link), 300, 7, "E", 1, address=address)
                meter = Iec62056Meter(meter_id, settings, line, timeout=2.0, retries=0)
                outcome = await meter.read()
                assert outcome.errors == []
                assert outcome.identification is not None
                got = {v.obis: (v.value, v.unit) for v in outcome.values}
                out.append((outcome.identification.ident, outcome.baud, got))
            return out
        finally:
            await line.close()
            await sim.stop()

    (ident_a, baud_a, a), (ident_b, baud_b, b) = _run(main)
    assert (ident_a, baud_a) == ("iec-a", 9600)
    assert (ident_b, baud_b) == ("iec-b", 4800)  # the meter's offer
    energy = Obis.parse("1-0:1.8.0")
    assert a[energy][1] == "kWh" and b[energy][1] == "kWh"


def test_iec62056_unknown_address_is_silent(tmp_path: Path) -> None:
    async def main() -> IecReadError:
        link = tmp_path / "optical"
        sim = _iec_sim(link)
        await sim.start()
        line = IecLine(str(link))
        try:
            settings = SerialSettings(str(link), 300, 7, "E", 1, address="9999")
            meter = Iec62056Meter("iec-x", settings, line, timeout=0.5, retries=2)
            with pytest.raises(IecReadError) as exc:
                await meter.read()
            return exc.value
        finally:
            await line.close()
            await sim.stop()

    error = _run(main)
    assert error.kind == "silent"
    assert "no identification within 0.5s" in str(error) and "(1 attempt)" in str(error)


def test_dsmr5_electricity_and_gas_with_their_own_time_stamps(tmp_path: Path) -> None:
    async def main() -> tuple[object, object, object, str]:
        link = tmp_path / "p1"
        sim = sim_dsmr.P1Port(
            link,
            sim_dsmr.VERSIONS["5"],
            _model("e-1", 1),
            ClockSetting.system(),
            gas=_model("g-1", 2),
            every_s=Decimal("0.2"),
        )
        await sim.start()
        settings = SerialSettings(str(link), 115200, 8, "N", 1, version="5", max_age_ns=2 * 10**9)
        port = P1Port(settings)
        try:
            power = DsmrMeter("e-1", settings, port)
            gas_settings = SerialSettings(
                str(link), 115200, 8, "N", 1, channel=1, version="5", max_age_ns=2 * 10**9
            )
            gas = DsmrMeter("g-1", gas_settings, port)
            e = await power.read()
            g = await gas.read()
            again = await gas.read()  # the gas value is stamped every 5 minutes
            await sim.stop()
            await asyncio.sleep(2.5)  # past max_age with the port quiet
            with pytest.raises(MeterReadError) as exc:
                await power.read()
            return e, g, again, str(exc.value)
        finally:
            await port.close()
            await sim.stop()

    e, g, again, quiet = _run(main)
    assert e.meter_ms is not None and e.meter_ms % 1000 == 0  # type: ignore[attr-defined]
    assert Obis.parse("1-0:1.8.1") in {v.obis for v in e.values}  # type: ignore[attr-defined]
    [gas_value] = g.values  # type: ignore[attr-defined]
    assert (gas_value.obis, gas_value.unit) == (Obis.parse("7-0:3.0.0"), "m3")
    assert g.meter_ms % 300_000 == 0  # type: ignore[attr-defined]
    assert again.unchanged and again.values == ()  # type: ignore[attr-defined]
    assert "meter e-1:" in quiet and "no good telegram within 2s" in quiet


def test_dsmr_bad_telegrams_are_counted_and_skipped_and_a_missing_channel_is_named(
    tmp_path: Path,
) -> None:
    async def main() -> tuple[int, int, object, str]:
        link = tmp_path / "p1"
        sim = sim_dsmr.P1Port(
            link,
            sim_dsmr.VERSIONS["5"],
            _model("e-2", 3),
            ClockSetting.system(),
            every_s=Decimal("0.1"),
        )
        await sim.start()
        settings = SerialSettings(str(link), 115200, 8, "N", 1, version="5", max_age_ns=2 * 10**9)
        port = P1Port(settings)
        try:
            sim.command(["fault", "corrupt", "3"])  # the next three telegrams: bad CRC
            meter = DsmrMeter("e-2", settings, port)
            port.start()
            while port.telegrams < 2:  # a good one after the bad ones
                await port.wait_telegram(2.0)
            outcome = await meter.read()
            water = SerialSettings(
                str(link), 115200, 8, "N", 1, channel=2, version="5", max_age_ns=2 * 10**9
            )
            with pytest.raises(MeterReadError) as exc:
                await DsmrMeter("w-2", water, port).read()
            return port.bad_telegrams, port.telegrams, outcome, str(exc.value)
        finally:
            await port.close()
            await sim.stop()

    bad, good, outcome, missing = _run(main)
    assert bad >= 2 and good >= 2  # the first may be joined mid-way: garbage, not counted
    assert outcome.values and outcome.errors == []  # type: ignore[attr-defined]
    assert "meter w-2:" in missing and "the telegrams carry no M-Bus channel 2" in missing

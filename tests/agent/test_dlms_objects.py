"""The agent reads value objects of every class a meter uses for them: Register (3),
Extended Register (4) and numeric Data (1), finding the class by asking (the config names
OBIS codes only), against the simulator in the same event loop."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from decimal import Decimal

from agent.config import DlmsSettings
from agent.drivers.dlms import DlmsMeter
from firmware_sim.dlms import DlmsMeterState, DlmsSimServer
from firmware_sim.dlms.extended import MaxDemandObject
from firmware_sim.model import MeterModel
from protocols.clock import ClockSetting
from protocols.obis import Obis
from protocols.record import Quality

START = datetime(2026, 6, 1, 13, 7, tzinfo=UTC)
START_NS = int(START.timestamp()) * 10**9
# stands at START until its anchor far in the future: the model's values are fixed
STANDING = ClockSetting.accelerated(START, 4_000_000_000 * 10**9, Decimal(1))

MAX_DEMAND = Obis.parse("1-0:1.6.0")
POWER_FAILURES = Obis.parse("0-0:96.7.21")
SERIAL = Obis.parse("0-0:96.1.0")
IMPORT = Obis.parse("1-0:1.8.0")


def _state() -> DlmsMeterState:
    model = MeterModel("dl-x", 5, origin_ns=START_NS - 86_400 * 10**9)
    return DlmsMeterState(model, STANDING)


def _read(state: DlmsMeterState, objects: tuple[Obis, ...]) -> tuple[object, DlmsMeter]:
    async def main() -> tuple[object, DlmsMeter]:
        async with DlmsSimServer(state) as server:
            meter = DlmsMeter(
                "dl-x", DlmsSettings(objects=objects), server.host, server.port, timeout=5
            )
            return await meter.read(), meter

    return asyncio.run(main())


def test_extended_register_and_data_are_found_by_asking_and_read_exactly() -> None:
    state = _state()
    outcome, meter = _read(state, (IMPORT, MAX_DEMAND, POWER_FAILURES))
    assert outcome.errors == []  # type: ignore[attr-defined]
    got = {v.obis: v for v in outcome.values}  # type: ignore[attr-defined]
    watts, _at = MaxDemandObject().maximum(state)
    assert watts > 0  # 13:07 UTC: the day's windows have ended, the model used energy
    assert (got[MAX_DEMAND].value, got[MAX_DEMAND].unit) == (Decimal(watts), "W")
    assert got[MAX_DEMAND].flags is Quality.NONE  # status 0
    assert (got[POWER_FAILURES].value, got[POWER_FAILURES].unit) == (Decimal(0), "")
    assert meter.registers.classes == {IMPORT: 3, MAX_DEMAND: 4, POWER_FAILURES: 1}


def test_the_class_found_is_asked_for_directly_on_the_next_read() -> None:
    state = _state()

    async def main() -> int:
        async with DlmsSimServer(state) as server:
            meter = DlmsMeter(
                "dl-x", DlmsSettings(objects=(POWER_FAILURES,)), server.host, server.port
            )
            await meter.read()
            first = state.gets
            await meter.read()
            return state.gets - first

    # second read: clock + the Data value, no class probing (3 and 4 were asked first time)
    gets_second_read = asyncio.run(main())
    assert gets_second_read == 2


def test_a_data_object_that_is_not_a_number_is_an_error_of_that_object_only() -> None:
    outcome, _meter = _read(_state(), (SERIAL, IMPORT))
    assert [v.obis for v in outcome.values] == [IMPORT]  # type: ignore[attr-defined]
    (error,) = outcome.errors  # type: ignore[attr-defined]
    assert error.startswith("meter dl-x: 0-0:96.1.0:")
    assert "octet_string, not a number" in error


def test_a_nonzero_extended_register_status_flags_the_value() -> None:
    state = _state()

    class AlarmedMaxDemand(MaxDemandObject):
        def get(self, meter, attribute, selector):  # type: ignore[no-untyped-def]
            if attribute == 4:
                from protocols.dlms.axdr import Data, Tag

                return Data(Tag.UNSIGNED, 0x80)
            return MaxDemandObject.get(self, meter, attribute, selector)

    state.objects[MAX_DEMAND] = AlarmedMaxDemand()
    outcome, _meter = _read(state, (MAX_DEMAND,))
    (value,) = outcome.values  # type: ignore[attr-defined]
    assert value.flags == Quality.METER_STATUS

"""The simulated meter's clock (SET, drift, status, control commands) and its Association
LN object list, the latter read by a third-party client (dlms-cosem 21.3.2)."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from dlms_cosem import cosem, enumerations
from dlms_cosem.clients.dlms_client import DlmsClient
from dlms_cosem.parsers import AssociationObjectListParser

from firmware_sim.dlms import DlmsMeterState, DlmsSimServer
from firmware_sim.dlms.association import OBIS_ASSOCIATION, object_list
from firmware_sim.dlms.clock import OBIS_CLOCK
from firmware_sim.model import MeterModel
from meterlink.procs import Proc
from protocols.clock import ClockSetting
from protocols.dlms.apdu import AccessResult
from protocols.dlms.axdr import Data, Tag, decode_data, encode_data
from protocols.dlms.cosem import CosemDateTime

REPO = Path(__file__).resolve().parents[2]
START_NS = 1_780_315_200 * 10**9  # 2026-06-01T12:00:00Z
START_MS = START_NS // 10**6


class FrozenClock:
    """The wall clock the simulator sees; a test moves it."""

    def __init__(self) -> None:
        self.now = 1_700_000_000 * 10**9

    def __call__(self) -> int:
        return self.now


def _state(real: FrozenClock, speed: int = 1, **kw: Any) -> DlmsMeterState:
    clock = ClockSetting(START_NS, real.now, Decimal(speed))
    return DlmsMeterState(MeterModel("dl-c", 3, origin_ns=START_NS), clock, wall_ns=real, **kw)


def _meter_ms(state: DlmsMeterState) -> int:
    raw = state.get(8, OBIS_CLOCK, 2)
    assert isinstance(raw, Data)
    return CosemDateTime.from_data(raw).to_unix_ms()


def _time(ms: int, deviation: int | None = 0, status: int | None = None) -> Data:
    """Clock attribute 2 showing instant ``ms`` at ``deviation`` (None: local time = UTC
    sent without a deviation)."""
    stamp = CosemDateTime.from_unix_ms(ms, deviation or 0)
    return Data.octet_string(replace(stamp, deviation=deviation, status=status).to_bytes())


def test_set_time_moves_the_meter_clock_and_records_the_adjustment() -> None:
    real = FrozenClock()
    state = _state(real, clock_offset_ms=300_000, deviation=-60)
    assert _meter_ms(state) == START_MS + 300_000
    target = START_MS + 1_230  # local time at the meter's deviation, status not specified
    assert state.set(8, OBIS_CLOCK, 2, _time(target, -60)) is AccessResult.SUCCESS
    assert _meter_ms(state) == target
    assert state.clock_offset_ms == 1_230 and state.clock_adjusted_ms == target
    assert state.clock_status == 0  # "not specified" keeps the meter's status
    real.now += 10 * 10**9
    assert _meter_ms(state) == target + 10_000
    # a date-time without a deviation is taken in the meter's own; a status replaces its bits
    assert state.set(8, OBIS_CLOCK, 2, _time(START_MS, None, 0x80)) is AccessResult.SUCCESS
    assert _meter_ms(state) == START_MS - 3_600_000  # UTC = local + deviation (-60 min)
    assert state.clock_status == 0x80


def test_set_time_refuses_what_is_not_an_instant() -> None:
    state = _state(FrozenClock())
    bad = [
        Data(Tag.LONG_UNSIGNED, 5),
        Data.octet_string(b"\x07\xea\x06"),
        Data.octet_string(bytes.fromhex("FFFF0601FF0C000000000000")),  # year not specified
        Data.octet_string(bytes.fromhex("07EA0D01FF0C000000000000")),  # month 13
    ]
    for value in bad:
        assert state.set(8, OBIS_CLOCK, 2, value) is AccessResult.TYPE_UNMATCHED, value
    assert state.clock_offset_ms == 0 and state.clock_adjusted_ms is None
    assert state.set(8, OBIS_CLOCK, 4, Data(Tag.UNSIGNED, 0)) is AccessResult.READ_WRITE_DENIED
    assert state.set(8, OBIS_CLOCK, 3, Data(Tag.LONG, -120)) is AccessResult.SUCCESS
    assert state.deviation == -120
    assert state.set(8, OBIS_CLOCK, 3, Data(Tag.LONG, 900)) is AccessResult.TYPE_UNMATCHED


def test_drift_ppm_gains_from_now_on_and_survives_a_set() -> None:
    real = FrozenClock()
    state = _state(real, speed=100)
    real.now += 10 * 10**9  # 1000 virtual seconds without drift
    assert _meter_ms(state) == START_MS + 1_000_000
    assert state.command(["drift-ppm", "500"]) == "OK drift-ppm 500"
    real.now += 100 * 10**9  # 10_000 virtual s at 500 ppm: +5 s
    assert _meter_ms(state) == START_MS + 11_000_000 + 5_000
    assert state.command(["drift-ppm", "-500"]) == "OK drift-ppm -500"
    real.now += 20 * 10**9  # 2000 virtual s at -500 ppm: -1 s
    assert _meter_ms(state) == START_MS + 13_000_000 + 4_000
    # a SET puts the clock right; it keeps losing at its rate from there
    now_ms = state.virtual_ns() // 10**6
    assert state.set(8, OBIS_CLOCK, 2, _time(now_ms)) is AccessResult.SUCCESS
    assert _meter_ms(state) == now_ms
    real.now += 20 * 10**9
    assert _meter_ms(state) == now_ms + 2_000_000 - 1_000
    assert state.command(["clock-offset", "-30"]) == "OK clock-offset -30"
    assert _meter_ms(state) == state.virtual_ns() // 10**6 - 30_000


def test_clock_commands_check_their_arguments() -> None:
    state = _state(FrozenClock())
    assert state.command(["clock-status", "0x08"]) == "OK clock-status 0x08"
    stamp = CosemDateTime.from_data(state.get(8, OBIS_CLOCK, 2))  # type: ignore[arg-type]
    assert stamp.status == 0x08 and state.get(8, OBIS_CLOCK, 4) == Data(Tag.UNSIGNED, 8)
    assert state.command(["clock-status", "0b10"]) == "OK clock-status 0x02"
    for words in (
        ["clock-status"],
        ["clock-status", "x"],
        ["clock-status", "300"],
        ["drift-ppm", "1.5"],
        ["drift-ppm", "2000000"],
        ["clock-offset", "a"],
    ):
        assert state.command(words).startswith(f"ERROR {words[0]}"), words
    assert state.clock_status == 0x02 and state.drift_ppm == 0


def test_object_list_names_every_object_with_its_rights() -> None:
    state = _state(FrozenClock())
    raw = encode_data(object_list(list(state.objects.values())))
    items = AssociationObjectListParser.parse_bytes(raw)  # an independent decoder
    listed = {(int(i.interface), i.logical_name.to_string()) for i in items}
    assert len(items) == len(state.objects)
    for obis, obj in state.objects.items():
        assert (obj.class_id, cosem.Obis(*obis.to_bytes()).to_string()) in listed
    by_name = {i.logical_name.to_string(): i for i in items}
    clock = by_name["0-0:1.0.0.255"]
    assert clock.version == 0 and set(clock.attribute_access_rights) == set(range(1, 10))
    assert clock.attribute_access_rights[2].access_rights == [0, 1]  # read and write
    assert clock.attribute_access_rights[4].access_rights == [0]  # read only
    assert clock.attribute_access_rights[9].access_rights == []  # not answered
    association = by_name["0-0:40.0.0.255"]
    assert (int(association.interface), association.version) == (15, 1)
    register = by_name["1-0:1.8.0.255"]
    assert {a: r.access_rights for a, r in register.attribute_access_rights.items()} == {
        1: [0],
        2: [0],
        3: [0],
    }


def test_third_party_client_reads_the_object_list_over_the_wire() -> None:
    state = _state(FrozenClock())

    def work(client: DlmsClient) -> bytes:
        client.associate()
        attribute = cosem.CosemAttribute(
            enumerations.CosemInterface.ASSOCIATION_LN, cosem.Obis(*OBIS_ASSOCIATION.to_bytes()), 2
        )
        try:
            return bytes(client.get(attribute))
        finally:
            client.release_association()

    async def main() -> bytes:
        async with DlmsSimServer(state) as server:

            def run() -> bytes:
                client = DlmsClient.with_tcp_transport("127.0.0.1", server.port, 16, 1, timeout=5)
                client.connect()
                try:
                    return work(client)
                finally:
                    client.disconnect()

            return await asyncio.wait_for(asyncio.to_thread(run), 30)

    raw = asyncio.run(main())
    assert decode_data(raw)[0] == object_list(list(state.objects.values()))
    names = {i.logical_name.to_string() for i in AssociationObjectListParser.parse_bytes(raw)}
    assert {"0-0:1.0.0.255", "1-0:1.8.0.255", "0-0:96.1.0.255", "0-0:40.0.0.255"} <= names
    assert state.get(15, OBIS_ASSOCIATION, 8) == Data(Tag.ENUM, 2)
    assert state.get(15, OBIS_ASSOCIATION, 3) is AccessResult.OBJECT_UNAVAILABLE


@pytest.mark.integration
def test_sim_dlms_process_takes_clock_commands_on_stdin() -> None:
    sim = Proc(
        [sys.executable, "-m", "meterlink", "sim", "dlms", "--port", "0", "--meter-id", "dl-p"],
        "sim",
        cwd=REPO,
        stdin_pipe=True,
    )
    try:
        sim.wait_line(lambda t: t.startswith("READY dlms"))
        for command, answer in (
            ("drift-ppm 250", "OK drift-ppm 250"),
            ("dl-p clock-status 0x02", "OK clock-status 0x02"),
            ("clock-offset 300", "OK clock-offset 300"),
            ("drift-ppm fast", "ERROR drift-ppm"),
        ):
            sim.send_line(command)
            sim.wait_line(lambda t, a=answer: t.startswith(a))  # type: ignore[misc]
    finally:
        assert sim.stop() == 0

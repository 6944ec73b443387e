"""The simulated meter's load profile (1.0.99.1.0.255), read by dlms-cosem 21.3.2's own
DlmsClient by range (its RangeDescriptor) and by entry; outages; the profile's attributes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from dlms_cosem import cosem, enumerations
from dlms_cosem.clients.dlms_client import DlmsClient
from dlms_cosem.cosem.capture_object import CaptureObject as DcCaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor as DcRangeDescriptor

from firmware_sim.dlms import DLMS_OBJECTS, DlmsMeterState, DlmsSimServer, register_integer
from firmware_sim.dlms.profile import OBIS_LOAD_PROFILE, LoadProfileObject
from firmware_sim.model import MeterModel
from protocols.clock import ClockSetting
from protocols.dlms.axdr import Data, Tag, decode_data
from protocols.dlms.cosem import CosemDateTime
from protocols.dlms.profile import (
    AMR_POWER_DOWN,
    CaptureObject,
    EntryDescriptor,
    RangeDescriptor,
    parse_capture_objects,
)
from protocols.obis import Obis

START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
START_NS = int(START.timestamp()) * 10**9
OFFSET_MS = 120_000  # the meter's clock is 2 minutes fast
PERIOD_MS = 900_000
CLOCK_COLUMN = CaptureObject(8, Obis(0, 0, 1, 0, 0, 255), 2)
ENERGY = [Obis.parse(c) for c in ("1.8.0", "2.8.0", "3.8.0", "4.8.0")]
PROFILE = cosem.CosemAttribute(
    enumerations.CosemInterface.PROFILE_GENERIC, cosem.Obis(1, 0, 99, 1, 0), 2
)


def _attr(attribute: int) -> cosem.CosemAttribute:
    return cosem.CosemAttribute(
        enumerations.CosemInterface.PROFILE_GENERIC, cosem.Obis(1, 0, 99, 1, 0), attribute
    )


def _state() -> DlmsMeterState:
    # a clock standing at START (its anchor far in the future): entries do not move under us
    clock = ClockSetting.accelerated(START, 4_000_000_000 * 10**9, Decimal(1))
    model = MeterModel("dlms-p", 3, origin_ns=START_NS - 90 * 86_400 * 10**9)
    return DlmsMeterState(model, clock, OFFSET_MS, deviation=-120)


def _expected(state: DlmsMeterState, t_ms: int) -> list[int]:
    """What the entry at meter time ``t_ms`` holds: the registers at the true instant."""
    values = state.model.values_at((t_ms - OFFSET_MS) * 10**6)
    return [register_integer(DLMS_OBJECTS[o], values[o]) for o in ENERGY]


def _read(state: DlmsMeterState, work: Callable[[DlmsClient], Any]) -> Any:
    async def main() -> Any:
        async with DlmsSimServer(state) as server:

            def run() -> Any:
                client = DlmsClient.with_tcp_transport("127.0.0.1", server.port, 16, 1, timeout=5)
                client.connect()
                try:
                    client.associate()
                    result = work(client)
                    client.release_association()
                    return result
                finally:
                    client.disconnect()

            return await asyncio.wait_for(asyncio.to_thread(run), 60)

    return asyncio.run(main())


def _rows(raw: bytes) -> list[tuple[Data, ...]]:
    buffer, end = decode_data(raw)
    assert end == len(raw)
    return [row.items for row in buffer.items]


def test_dlms_cosem_client_reads_the_profile_by_range_exactly() -> None:
    state = _state()
    now_ms = START_NS // 10**6 + OFFSET_MS  # the meter's clock: 12:02 UTC
    last = now_ms // PERIOD_MS * PERIOD_MS  # 12:00
    start = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)
    end = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
    clock_column = DcCaptureObject(
        cosem.CosemAttribute(enumerations.CosemInterface.CLOCK, cosem.Obis(0, 0, 1, 0, 0), 2)
    )

    def work(client: DlmsClient) -> dict[str, bytes]:
        return {
            "range": client.get(
                PROFILE, access_descriptor=DcRangeDescriptor(clock_column, start, end)
            ),
            # the last hour with our descriptor, from/to in the meter's local time
            "ours": client.get(
                PROFILE,
                access_descriptor=RangeDescriptor.by_time(  # type: ignore[arg-type]
                    CLOCK_COLUMN,
                    last - 3_600_000,
                    now_ms,
                    deviation=-120,
                ),
            ),
            "entries": client.get(
                PROFILE,
                access_descriptor=EntryDescriptor(5760 - 1, 0, 1, 3),  # type: ignore[arg-type]
            ),
            **{str(a): client.get(_attr(a)) for a in (3, 4, 5, 6, 7, 8)},
        }

    got = _read(state, work)
    rows = _rows(got["range"])
    first_ms = int(start.timestamp() * 1000)
    # from and to included: 06:00, 06:15, ... 09:00 = 13 entries
    assert len(rows) == 13
    for index, row in enumerate(rows):
        t = first_ms + index * PERIOD_MS
        stamp = CosemDateTime.from_bytes(row[0].octets)
        assert stamp.to_unix_ms() == t and stamp.deviation == -120
        assert row[1] == Data(Tag.UNSIGNED, 0)
        assert [cell.integer for cell in row[2:]] == _expected(state, t)
    ours = _rows(got["ours"])
    assert [CosemDateTime.from_bytes(r[0].octets).to_unix_ms() for r in ours] == [
        last - 3_600_000 + i * PERIOD_MS for i in range(5)
    ]
    # entries 5759..5760 (the two newest), columns 1..3
    newest = _rows(got["entries"])
    assert [len(r) for r in newest] == [3, 3]
    assert CosemDateTime.from_bytes(newest[-1][0].octets).to_unix_ms() == last
    assert newest[-1][2].integer == _expected(state, last)[0]
    columns = parse_capture_objects(decode_data(got["3"])[0])
    assert [(c.class_id, str(c.obis), c.attribute) for c in columns] == [
        (8, "0-0:1.0.0", 2),
        (1, "0-0:96.10.1", 2),
        (3, "1-0:1.8.0", 2),
        (3, "1-0:2.8.0", 2),
        (3, "1-0:3.8.0", 2),
        (3, "1-0:4.8.0", 2),
    ]
    assert decode_data(got["4"])[0] == Data(Tag.DOUBLE_LONG_UNSIGNED, 900)
    assert decode_data(got["5"])[0] == Data(Tag.ENUM, 1)  # FIFO
    assert decode_data(got["7"])[0] == Data(Tag.DOUBLE_LONG_UNSIGNED, 5760)
    assert decode_data(got["8"])[0] == Data(Tag.DOUBLE_LONG_UNSIGNED, 5760)


def test_an_outage_leaves_entries_out_and_flags_the_first_after_power_down() -> None:
    state = _state()
    answer = state.command(["outage", "2026-06-01T08:05:00Z", "2026-06-01T09:20:00Z"])
    assert answer.startswith("OK outage")
    assert state.command(["outage", "x"]).startswith("ERROR outage")
    assert state.command(["outage", "+10", "-10"]).startswith("ERROR outage: END")
    start = int(datetime(2026, 6, 1, 7, 45, tzinfo=UTC).timestamp() * 1000)
    access = RangeDescriptor.by_time(
        CLOCK_COLUMN,
        start,
        start + 2 * 3_600_000,
    )
    got = _read(state, lambda c: c.get(PROFILE, access_descriptor=access))  # type: ignore[arg-type]
    rows = _rows(got)
    times = [CosemDateTime.from_bytes(r[0].octets).to_unix_ms() for r in rows]
    hm = [datetime.fromtimestamp(t / 1000, UTC).strftime("%H:%M") for t in times]
    # meter off from 08:05 to 09:20: 08:15 .. 09:15 never captured
    assert hm == ["07:45", "08:00", "09:30", "09:45"]
    assert [r[1].integer for r in rows] == [0, 0, AMR_POWER_DOWN, 0]
    profile = state.objects[OBIS_LOAD_PROFILE]
    assert isinstance(profile, LoadProfileObject) and profile.outages


def test_a_bad_access_selection_is_refused_not_crashing_the_meter() -> None:
    state = _state()
    status = cosem.CosemAttribute(enumerations.CosemInterface.DATA, cosem.Obis(0, 0, 96, 10, 1), 2)

    class Garbage:
        def to_bytes(self) -> bytes:
            return b"\x01\x02\x01\x00"  # range selector with a structure of 1 element

    def work(client: DlmsClient) -> list[str]:
        out = []
        for access in (Garbage(), EntryDescriptor(1, 2, 7, 0)):
            try:
                out.append(str(len(client.get(PROFILE, access_descriptor=access))))  # type: ignore[arg-type]
            except Exception as exc:  # dlms-cosem's DataResultError
                out.append(type(exc).__name__ + str(exc))
        out.append(client.get(status).hex())
        return out

    garbage, no_columns, status_value = _read(state, work)
    assert "OTHER_REASON" in garbage
    assert no_columns.isdigit()  # columns 7.. of 6: rows without cells
    assert status_value == "1100"


def test_the_whole_buffer_without_access_comes_in_blocks() -> None:
    state = _state()
    rows = _rows(_read(state, lambda c: c.get(PROFILE)))
    now_ms = START_NS // 10**6 + OFFSET_MS
    last = now_ms // PERIOD_MS * PERIOD_MS
    assert len(rows) == 5760  # 60 days of quarter hours: the depth
    times = [CosemDateTime.from_bytes(r[0].octets).to_unix_ms() for r in rows]
    assert times == [last - (5759 - i) * PERIOD_MS for i in range(5760)]
    assert [c.integer for c in rows[100][2:]] == _expected(state, times[100])

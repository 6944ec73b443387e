"""Profile Generic codecs: capture objects, range/entry descriptors (against dlms-cosem's
bytes), buffer decoding with exact values, the AMR status -> quality mapping, fuzzing."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from dlms_cosem import cosem as dc_cosem
from dlms_cosem import enumerations as dc_enums
from dlms_cosem import time as dc_time
from dlms_cosem.cosem.capture_object import CaptureObject as DcCaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor as DcRangeDescriptor
from dlms_cosem.protocol.xdlms import GetRequestNormal
from hypothesis import given
from hypothesis import strategies as st

from protocols.dlms import DlmsDecodeError, DlmsEncodeError
from protocols.dlms.axdr import Data, Tag, decode_data, encode_data
from protocols.dlms.cosem import CosemDateTime, ScalerUnit
from protocols.dlms.profile import (
    AMR_CLOCK_ADJUSTED,
    AMR_CLOCK_INVALID,
    AMR_CRITICAL_ERROR,
    AMR_DATA_NOT_VALID,
    AMR_DST,
    AMR_POWER_DOWN,
    CaptureObject,
    EntryDescriptor,
    RangeDescriptor,
    decode_buffer,
    encode_capture_objects,
    parse_access,
    parse_capture_objects,
    status_quality,
)
from protocols.obis import Obis
from protocols.record import Quality, Value

CLOCK = CaptureObject(8, Obis(0, 0, 1, 0, 0, 255), 2)
STATUS = CaptureObject(1, Obis(0, 0, 96, 10, 1, 255), 2)
IMPORT = CaptureObject(3, Obis.parse("1-0:1.8.0"), 2)
EXPORT = CaptureObject(3, Obis.parse("1-0:2.8.0"), 2)
COLUMNS = (CLOCK, STATUS, IMPORT, EXPORT)
WH = ScalerUnit(0, 30)  # Wh
SCALERS = {IMPORT.obis: WH, EXPORT.obis: ScalerUnit(1, 30)}  # 2.8.0 in 10 Wh
T0 = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp()) * 1000


def _dc_clock() -> DcCaptureObject:
    return DcCaptureObject(
        dc_cosem.CosemAttribute(dc_enums.CosemInterface.CLOCK, dc_cosem.Obis(0, 0, 1, 0, 0), 2)
    )


def test_capture_object_bytes_are_dlms_cosems_and_parse_back() -> None:
    assert CLOCK.to_bytes() == _dc_clock().to_bytes()
    assert CLOCK.to_bytes().hex() == "020412000809060000010000ff0f02120000"
    listed = encode_capture_objects(COLUMNS)
    assert parse_capture_objects(decode_data(encode_data(listed))[0]) == COLUMNS
    assert str(IMPORT) == "1-0:1.8.0 (class 3) attribute 2"


def test_range_descriptor_bytes_are_dlms_cosems_and_the_server_parses_them() -> None:
    start = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)
    end = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
    theirs = DcRangeDescriptor(restricting_object=_dc_clock(), from_value=start, to_value=end)
    # dlms-cosem writes the day of week as "not specified"; otherwise the same fields
    ours = RangeDescriptor(
        CLOCK,
        CosemDateTime.from_bytes(dc_time.datetime_to_bytes(start)),
        CosemDateTime.from_bytes(dc_time.datetime_to_bytes(end)),
    )
    assert ours.to_bytes() == theirs.to_bytes()
    parsed = parse_access(theirs.to_bytes()[0], decode_data(theirs.to_bytes(), 1)[0])
    assert parsed == ours
    assert isinstance(parsed, RangeDescriptor)
    assert parsed.start.to_unix_ms() == int(start.timestamp() * 1000)
    assert parsed.end.to_unix_ms() == int(end.timestamp() * 1000)


def test_range_descriptor_by_time_writes_the_meters_local_time_and_selected_columns() -> None:
    access = RangeDescriptor.by_time(CLOCK, T0, T0 + 900_000, deviation=-60, selected=[IMPORT])
    assert (access.start.hour, access.start.deviation) == (1, -60)  # UTC+01:00
    assert access.start.to_unix_ms() == T0 and access.end.to_unix_ms() == T0 + 900_000
    raw = access.to_bytes()
    assert raw[0] == 1
    again = parse_access(1, decode_data(raw, 1)[0])
    assert again == access and again.selected == (IMPORT,)  # type: ignore[union-attr]


def test_our_descriptor_goes_into_dlms_cosems_get_request() -> None:
    access = RangeDescriptor.by_time(CLOCK, T0, T0 + 3_600_000)
    request = GetRequestNormal(
        dc_cosem.CosemAttribute(
            dc_enums.CosemInterface.PROFILE_GENERIC, dc_cosem.Obis(1, 0, 99, 1, 0), 2
        ),
        access_selection=access,
    )
    raw = request.to_bytes()
    # C0 01 invoke, class 7, LN, attribute 2, access present, selector 1 + parameters
    assert raw[:3] == bytes.fromhex("c001c1") and raw[3:5] == b"\x00\x07"
    assert raw[5:11] == bytes((1, 0, 99, 1, 0, 255)) and raw[11] == 2
    assert raw[12:] == b"\x01" + access.to_bytes()


def test_entry_descriptor_encoding_and_selection() -> None:
    access = EntryDescriptor(1, 0, 1, 0)
    # selector 2, structure {from_entry 1, to_entry 0, from_value 1, to_value 0}
    assert access.to_bytes().hex() == "02020406000000010600000000120001120000"
    assert parse_access(2, decode_data(access.to_bytes(), 1)[0]) == access
    assert list(EntryDescriptor(2, 3).selects(10)) == [1, 2]
    assert list(EntryDescriptor(5, 0).selects(6)) == [4, 5]
    assert list(EntryDescriptor(1, 99).selects(3)) == [0, 1, 2]
    with pytest.raises(DlmsEncodeError, match="from_entry"):
        EntryDescriptor(-1)


def test_parse_access_names_what_is_wrong() -> None:
    with pytest.raises(DlmsDecodeError, match="unknown access selector 3"):
        parse_access(3, Data(Tag.NULL))
    with pytest.raises(DlmsDecodeError, match="range_descriptor: expected a structure"):
        parse_access(1, Data.array())
    bad_time = Data.structure(CLOCK.to_data(), Data.octet_string(b"\x00"), Data.array())
    with pytest.raises(DlmsDecodeError, match="range_descriptor"):
        parse_access(1, Data.structure(*bad_time.items, Data.array()))
    with pytest.raises(DlmsDecodeError, match="entry_descriptor: expected"):
        parse_access(2, Data.structure(Data(Tag.UNSIGNED, 1)))
    with pytest.raises(DlmsDecodeError, match="capture object 1: logical name of 5 bytes"):
        parse_capture_objects(
            Data.array(
                Data.structure(
                    Data(Tag.LONG_UNSIGNED, 3),
                    Data.octet_string(b"\x01" * 5),
                    Data(Tag.INTEGER, 2),
                    Data(Tag.LONG_UNSIGNED, 0),
                )
            )
        )


def _row(ms: int | None, status: int | None, imp: int | None, exp: int) -> Data:
    clock = (
        Data(Tag.NULL)
        if ms is None
        else Data.octet_string(CosemDateTime.from_unix_ms(ms, -60).to_bytes())
    )
    return Data.structure(
        clock,
        Data(Tag.NULL) if status is None else Data(Tag.UNSIGNED, status),
        Data(Tag.NULL) if imp is None else Data(Tag.DOUBLE_LONG_UNSIGNED, imp),
        Data(Tag.DOUBLE_LONG_UNSIGNED, exp),
    )


def test_buffer_rows_become_entries_with_exact_values_and_status_flags() -> None:
    buffer = Data.array(
        _row(T0, 0, 1_234_567, 12),
        _row(T0 + 900_000, AMR_POWER_DOWN, 1_234_600, 13),
        _row(None, AMR_CLOCK_ADJUSTED, None, 14),  # compressed: previous + period
    )
    entries = decode_buffer(buffer, COLUMNS, SCALERS, capture_period_s=900)
    assert [e.captured_ms for e in entries] == [T0, T0 + 900_000, T0 + 1_800_000]
    assert [e.status for e in entries] == [0, AMR_POWER_DOWN, AMR_CLOCK_ADJUSTED]
    assert [e.flags for e in entries] == [
        Quality.NONE,
        Quality.METER_STATUS,
        Quality.CLOCK_SUSPECT,
    ]
    kwh = Obis.parse("1-0:1.8.0")
    assert entries[0].values == (
        Value(kwh, Decimal("1234.567"), "kWh"),
        Value(Obis.parse("1-0:2.8.0"), Decimal("0.120"), "kWh"),  # 12 x 10 Wh, exact
    )
    assert [v.obis for v in entries[2].values] == [Obis.parse("1-0:2.8.0")]  # null left out


def test_a_suspect_clock_cell_flags_its_entry() -> None:
    stamp = CosemDateTime.from_unix_ms(T0, 0, status=0x01)  # invalid value
    row = Data.structure(Data.octet_string(stamp.to_bytes()), Data(Tag.UNSIGNED, 0))
    (entry,) = decode_buffer(Data.array(row), (CLOCK, STATUS), {})
    assert entry.flags == Quality.CLOCK_SUSPECT and entry.values == ()


@pytest.mark.parametrize(
    ("status", "flags"),
    [
        (0, Quality.NONE),
        (AMR_CRITICAL_ERROR, Quality.METER_STATUS),
        (AMR_DATA_NOT_VALID, Quality.METER_STATUS),
        (AMR_POWER_DOWN, Quality.METER_STATUS),
        (AMR_CLOCK_INVALID | AMR_DATA_NOT_VALID, Quality.CLOCK_SUSPECT | Quality.METER_STATUS),
        (AMR_CLOCK_ADJUSTED, Quality.CLOCK_SUSPECT),
        (AMR_DST, Quality.NONE),  # the season, not a fault
        (0x10 | 0x40, Quality.NONE),  # reserved bits
    ],
)
def test_amr_profile_status_maps_to_quality(status: int, flags: Quality) -> None:
    assert status_quality(status) == flags


def test_buffer_errors_name_the_entry_and_column() -> None:
    with pytest.raises(DlmsDecodeError, match="buffer entry 2: 3 columns, the capture objects"):
        decode_buffer(
            Data.array(_row(T0, 0, 1, 1), Data.structure(*_row(T0, 0, 1, 1).items[:3])),
            COLUMNS,
            SCALERS,
        )
    with pytest.raises(DlmsDecodeError, match=r"no scaler_unit for column 3 \(1-0:1.8.0"):
        decode_buffer(Data.array(), COLUMNS, {})
    with pytest.raises(DlmsDecodeError, match="no clock column"):
        decode_buffer(Data.array(), (STATUS, IMPORT), SCALERS)
    with pytest.raises(DlmsDecodeError, match="entry 1: clock column null with no previous"):
        decode_buffer(Data.array(_row(None, 0, 1, 1)), COLUMNS, SCALERS, capture_period_s=900)
    row = Data.structure(*_row(T0, 0, 1, 1).items[:2], Data.visible_string("x"), Data(Tag.NULL))
    with pytest.raises(DlmsDecodeError, match=r"entry 1 column 3 \(1-0:1.8.0\)"):
        decode_buffer(Data.array(row), COLUMNS, SCALERS)
    with pytest.raises(DlmsDecodeError, match="expected an array of entries"):
        decode_buffer(Data(Tag.NULL), COLUMNS, SCALERS)


@given(st.binary(max_size=300))
def test_fuzz_profile_decoders_raise_only_decode_errors(raw: bytes) -> None:
    try:
        item, _end = decode_data(raw)
    except DlmsDecodeError:
        return
    for call in (
        lambda: parse_capture_objects(item),
        lambda: parse_access(1, item),
        lambda: parse_access(2, item),
        lambda: decode_buffer(item, COLUMNS, SCALERS, capture_period_s=900),
    ):
        with contextlib.suppress(DlmsDecodeError):
            call()


@given(
    st.lists(
        st.tuples(
            st.integers(0, 5000),  # quarter hours after T0
            st.integers(0, 255),
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**32 - 1),
        ),
        max_size=20,
    )
)
def test_fuzz_buffer_round_trip_keeps_every_value_exact(
    rows: list[tuple[int, int, int, int]],
) -> None:
    buffer = Data.array(*(_row(T0 + q * 900_000, s, i, e) for q, s, i, e in rows))
    decoded = decode_buffer(decode_data(encode_data(buffer))[0], COLUMNS, SCALERS)
    for (q, s, i, e), entry in zip(rows, decoded, strict=True):
        assert entry.captured_ms == T0 + q * 900_000 and entry.status == s
        assert entry.flags == status_quality(s)
        assert [v.value for v in entry.values] == [Decimal(i).scaleb(-3), Decimal(e).scaleb(-2)]

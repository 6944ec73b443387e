"""DLMS sans-IO codecs: wrapper frames, A-XDR, date-time, scaler_unit, server APDUs.

Known vectors come from the Green Book examples and from what dlms-cosem 21.3.2 (an
independent implementation) sends and accepts; every decoder fed arbitrary bytes raises
only DlmsDecodeError (a protocols.errors.DecodeError)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from dlms_cosem import cosem as dc_cosem
from dlms_cosem import enumerations as dc_enums
from dlms_cosem.connection import DlmsConnection
from dlms_cosem.protocol import acse as dc_acse
from dlms_cosem.protocol import xdlms as dc_xdlms
from dlms_cosem.time import datetime_from_bytes
from hypothesis import given
from hypothesis import strategies as st

from protocols.dlms import DlmsDecodeError, DlmsEncodeError
from protocols.dlms.apdu import (
    CONFORMANCE_GET,
    AccessResult,
    AcseDiagnostic,
    encode_aare,
    encode_get_response,
    encode_rlre,
    parse_aarq,
    parse_get_request,
    parse_rlrq,
)
from protocols.dlms.axdr import MAX_DEPTH, Data, Tag, decode_data, encode_data, encode_length
from protocols.dlms.cosem import CosemDateTime, ScalerUnit, exact_value
from protocols.dlms.wrapper import WrapperReader, decode_header, encode_frame
from protocols.errors import DecodeError
from protocols.obis import Obis
from protocols.record import Quality

GET_CLOCK = bytes.fromhex("c001c100080000010000ff0200")
# Green Book AARQ example: LN, no security, conformance 007E1F, max PDU 0x04B0
GREEN_BOOK_AARQ = bytes.fromhex("601DA109060760857405080101BE10040E01000000065F1F0400007E1F04B0")


# -- wrapper -------------------------------------------------------------------------------
def test_wrapper_frame_known_bytes() -> None:
    frame = encode_frame(16, 1, GET_CLOCK)
    assert frame[:8] == bytes.fromhex("0001 0010 0001 000d")
    assert decode_header(frame[:8]) == (16, 1, 13)


def test_wrapper_reader_reassembles_byte_by_byte_and_splits_two_frames() -> None:
    stream = encode_frame(16, 1, GET_CLOCK) + encode_frame(1, 16, b"\xc4\x01\xc1\x00\x00")
    reader = WrapperReader()
    frames = []
    for i in range(len(stream)):
        frames += reader.feed(stream[i : i + 1])
    assert [(f.source, f.destination, f.apdu) for f in frames] == [
        (16, 1, GET_CLOCK),
        (1, 16, b"\xc4\x01\xc1\x00\x00"),
    ]
    assert reader.pending == 0
    assert len(WrapperReader().feed(stream)) == 2


def test_wrapper_reader_refuses_an_oversized_frame_before_its_body() -> None:
    reader = WrapperReader(max_apdu=100)
    with pytest.raises(DlmsDecodeError, match="exceeds limit 100"):
        reader.feed(bytes.fromhex("0001 0010 0001 0065"))
    assert reader.pending == 0
    with pytest.raises(DlmsDecodeError, match="already broken"):
        reader.feed(encode_frame(16, 1, b"\x60"))


@pytest.mark.parametrize(
    ("header", "message"),
    [("0002 0010 0001 0001", "version 2"), ("0001 0010 0001 0000", "empty"), ("0001", "need 8")],
)
def test_wrapper_bad_headers(header: str, message: str) -> None:
    with pytest.raises(DlmsDecodeError, match=message):
        decode_header(bytes.fromhex(header))


def test_wrapper_refuses_to_encode_out_of_range() -> None:
    with pytest.raises(DlmsEncodeError):
        encode_frame(70000, 1, b"x")
    with pytest.raises(DlmsEncodeError):
        encode_frame(16, 1, bytes(70000))


# -- A-XDR ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("item", "hex_bytes"),
    [
        (Data(Tag.DOUBLE_LONG_UNSIGNED, 42), "060000002a"),
        (Data(Tag.DOUBLE_LONG, -1), "05ffffffff"),
        (Data(Tag.LONG_UNSIGNED, 2301), "1208fd"),
        (Data(Tag.LONG64, -(2**63)), "148000000000000000"),
        (Data(Tag.LONG64_UNSIGNED, 2**64 - 1), "15ffffffffffffffff"),
        (Data(Tag.INTEGER, -3), "0ffd"),
        (Data(Tag.ENUM, 30), "161e"),
        (Data(Tag.BOOLEAN, True), "03ff"),
        (Data(Tag.NULL), "00"),
        (Data.octet_string(b"\x00\x00\x01\x00\x00\xff"), "0906000001 0000ff"),
        (Data.visible_string("ABC"), "0a03414243"),
        # Green Book: scaler_unit {-1, Wh}
        (Data.structure(Data(Tag.INTEGER, -1), Data(Tag.ENUM, 30)), "02020fff161e"),
        (Data.array(Data(Tag.UNSIGNED, 1), Data(Tag.UNSIGNED, 2)), "0102110111 02"),
    ],
)
def test_axdr_known_vectors_both_ways(item: Data, hex_bytes: str) -> None:
    raw = bytes.fromhex(hex_bytes)
    assert encode_data(item) == raw
    assert decode_data(raw) == (item, len(raw))


def test_axdr_long_lengths() -> None:
    assert encode_length(127) == b"\x7f"
    assert encode_length(128) == b"\x81\x80"
    assert encode_length(300) == b"\x82\x01\x2c"
    item = Data.octet_string(bytes(300))
    assert decode_data(encode_data(item))[0] == item


_INT_TYPES = {
    Tag.INTEGER: (-(2**7), 2**7 - 1),
    Tag.LONG: (-(2**15), 2**15 - 1),
    Tag.UNSIGNED: (0, 255),
    Tag.LONG_UNSIGNED: (0, 2**16 - 1),
    Tag.DOUBLE_LONG: (-(2**31), 2**31 - 1),
    Tag.DOUBLE_LONG_UNSIGNED: (0, 2**32 - 1),
    Tag.LONG64: (-(2**63), 2**63 - 1),
    Tag.LONG64_UNSIGNED: (0, 2**64 - 1),
    Tag.ENUM: (0, 255),
}


@given(st.sampled_from(sorted(_INT_TYPES)), st.data())
def test_axdr_integers_round_trip(tag: Tag, data: st.DataObject) -> None:
    low, high = _INT_TYPES[tag]
    value = data.draw(st.integers(low, high))
    item = Data(tag, value)
    assert decode_data(encode_data(item)) == (item, len(encode_data(item)))
    with pytest.raises(DlmsEncodeError):
        encode_data(Data(tag, high + 1))


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "data ends"),
        ("07", "unknown type tag 7"),
        ("0600", "needs 4 bytes"),
        ("01 05 11 01", "cannot fit"),
        ("09 05 0102", "needs 5 bytes"),
        ("09 85 0000000001", "bad length prefix"),
        ("0a 02 ff ff", "bad characters"),
    ],
)
def test_axdr_decode_errors_name_the_problem(raw: str, message: str) -> None:
    with pytest.raises(DlmsDecodeError, match=message):
        decode_data(bytes.fromhex(raw))


def test_axdr_nesting_is_bounded() -> None:
    with pytest.raises(DlmsDecodeError, match="nesting"):
        decode_data(b"\x02\x01" * (MAX_DEPTH + 2) + b"\x00")


@given(st.binary(max_size=200))
def test_axdr_decode_fuzz_raises_only_decode_errors(raw: bytes) -> None:
    try:
        item, _end = decode_data(raw)
    except DecodeError:
        return
    # what was accepted re-encodes to a canonical form that decodes to the same value
    # (bit-strings are re-encoded whole bytes, so only compare the others)
    if Tag.BIT_STRING.value not in raw:
        again = encode_data(item)
        assert decode_data(again) == (item, len(again))


# -- date-time -----------------------------------------------------------------------------
def test_datetime_known_bytes_cet() -> None:
    # 2026-11-26 15:00:00 local at UTC+01:00 (deviation -60) is 14:00:00 UTC; Thursday
    ms = int(datetime(2026, 11, 26, 14, 0, tzinfo=UTC).timestamp()) * 1000
    raw = CosemDateTime.from_unix_ms(ms, deviation=-60).to_bytes()
    assert raw == bytes.fromhex("07ea0b1a040f000000ffc400")
    assert CosemDateTime.from_bytes(raw).to_unix_ms() == ms
    # dlms-cosem reads the same instant from our bytes
    theirs, _status = datetime_from_bytes(raw)
    assert int(theirs.timestamp() * 1000) == ms


@given(st.integers(0, 253402300799999 - 720 * 60_000), st.integers(-720, 720))
def test_datetime_round_trip_to_the_hundredth(ms: int, deviation: int) -> None:
    stamp = CosemDateTime.from_unix_ms(ms, deviation)
    back = CosemDateTime.from_bytes(stamp.to_bytes())
    assert back == stamp
    if 1970 <= back.year <= 9999:  # type: ignore[operator]
        assert back.to_unix_ms() == ms - ms % 10


def test_datetime_out_of_range_instant_is_an_encode_error() -> None:
    with pytest.raises(DlmsEncodeError, match="out of range"):
        CosemDateTime.from_unix_ms(253402300799999, deviation=-720)


def test_datetime_status_bits_map_to_clock_suspect() -> None:
    base = CosemDateTime.from_unix_ms(0, 0, 0)
    assert base.quality is Quality.NONE
    for status in (0x01, 0x02, 0x08, 0x81):
        stamp = CosemDateTime.from_bytes(base.to_bytes()[:11] + bytes((status,)))
        assert stamp.quality is Quality.CLOCK_SUSPECT
    dst = CosemDateTime.from_bytes(base.to_bytes()[:11] + b"\x80")
    assert dst.quality is Quality.NONE
    unspecified = CosemDateTime.from_bytes(base.to_bytes()[:9] + b"\x80\x00\x00")
    assert unspecified.deviation is None
    assert unspecified.quality is Quality.CLOCK_SUSPECT
    with pytest.raises(DlmsDecodeError, match="deviation not specified"):
        unspecified.to_unix_ms()
    assert unspecified.to_unix_ms(assume_deviation=0) == 0


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("07ea 02 1e ff 00000000 0000 00", "no day 30"),
        ("ffff 02 01 ff 00000000 0000 00", "year not specified"),
        ("07ea 0d 01 ff 00000000 0000 00", "month 13"),
        ("07ea 01 01 ff 18000000 0000 00", "hour 24"),
        ("07ea 01 01 ff 00000000 0400 00", "deviation 1024"),
    ],
)
def test_datetime_errors(raw: str, message: str) -> None:
    with pytest.raises(DlmsDecodeError, match=message):
        CosemDateTime.from_bytes(bytes.fromhex(raw)).to_unix_ms()


@given(st.binary(min_size=12, max_size=12))
def test_datetime_fuzz(raw: bytes) -> None:
    with contextlib.suppress(DecodeError):
        CosemDateTime.from_bytes(raw).to_unix_ms(assume_deviation=0)


# -- scaler_unit ---------------------------------------------------------------------------
def test_scaler_unit_gives_exact_decimals_in_our_units() -> None:
    energy = Obis.parse("1-0:1.8.0")
    su = ScalerUnit.from_data(decode_data(bytes.fromhex("02020ffd161e"))[0])
    assert su == ScalerUnit(-3, 30)
    assert exact_value(energy, Data(Tag.DOUBLE_LONG_UNSIGNED, 1234567), su) == (
        Decimal("1.234567"),
        "kWh",
    )
    volts = exact_value(Obis.parse("1-0:32.7.0"), Data(Tag.LONG_UNSIGNED, 2301), ScalerUnit(-1, 35))
    assert volts == (Decimal("230.1"), "V")
    assert str(volts[0]) == "230.1"
    big = exact_value(energy, Data(Tag.LONG64_UNSIGNED, 2**64 - 1), ScalerUnit(2, 30))
    assert big == (Decimal(2**64 - 1).scaleb(-1), "kWh")
    # an OBIS meterlink does not know keeps the meter's unit
    other = exact_value(Obis.parse("1-0:99.7.0"), Data(Tag.DOUBLE_LONG, -5), ScalerUnit(0, 27))
    assert other == (Decimal(-5), "W")


def test_scaler_unit_errors() -> None:
    with pytest.raises(DlmsDecodeError, match="unknown DLMS unit code 200"):
        ScalerUnit(0, 200).apply(Data(Tag.LONG, 1))
    with pytest.raises(DlmsDecodeError, match="floats are not accepted"):
        ScalerUnit(0, 30).apply(Data(Tag.FLOAT32, b"\x00" * 4))
    with pytest.raises(DlmsDecodeError, match="integer, enum"):
        ScalerUnit.from_data(Data.structure(Data(Tag.LONG, 1), Data(Tag.ENUM, 30)))
    with pytest.raises(DlmsDecodeError, match="expected an integer"):
        ScalerUnit(0, 30).apply(Data.octet_string(b"1"))


# -- APDUs ---------------------------------------------------------------------------------
def test_parse_green_book_aarq() -> None:
    aarq = parse_aarq(GREEN_BOOK_AARQ)
    assert aarq.context == 1 and aarq.mechanism is None
    assert aarq.initiate is not None
    assert aarq.initiate.dlms_version == 6
    assert aarq.initiate.conformance == 0x007E1F
    assert aarq.initiate.max_receive_pdu == 0x04B0


def test_parse_dlms_cosem_aarq_and_rlrq() -> None:
    conn = DlmsConnection(client_system_title=b"ABCDEFGH")
    aarq = parse_aarq(conn.get_aarq().to_bytes())
    assert aarq.calling_title == b"ABCDEFGH"
    assert aarq.initiate is not None and aarq.initiate.conformance & CONFORMANCE_GET
    assert parse_rlrq(conn.get_rlrq().to_bytes()).reason == 0


def test_aare_is_read_by_dlms_cosem() -> None:
    raw = encode_aare(accepted=True, conformance=CONFORMANCE_GET, max_receive_pdu=1024)
    # Green Book layout: context, result 0, diagnostic acse-service-user null, InitiateResponse
    assert raw == bytes.fromhex(
        "6129a109060760857405080101a203020100a305a103020100be10040e0800065f1f040000001004000007"
    )
    aare = dc_acse.ApplicationAssociationResponse.from_bytes(raw)
    assert aare.result is dc_enums.AssociationResult.ACCEPTED
    assert aare.user_information.content.negotiated_conformance.get
    assert aare.user_information.content.server_max_receive_pdu_size == 1024
    rejected = dc_acse.ApplicationAssociationResponse.from_bytes(
        encode_aare(accepted=False, diagnostic=AcseDiagnostic.AUTHENTICATION_REQUIRED)
    )
    assert rejected.result is dc_enums.AssociationResult.REJECTED_PERMANENT
    assert rejected.result_source_diagnostics.value == 14
    assert dc_acse.ReleaseResponse.from_bytes(encode_rlre()).reason.value == 0


def test_get_request_and_response() -> None:
    request = parse_get_request(GET_CLOCK)
    assert (request.invoke, request.class_id, request.obis, request.attribute) == (
        0xC1,
        8,
        Obis(0, 0, 1, 0, 0, 255),
        2,
    )
    ok = encode_get_response(0xC1, data=encode_data(Data(Tag.DOUBLE_LONG_UNSIGNED, 42)))
    assert ok == bytes.fromhex("c401c100060000002a")
    parsed = dc_xdlms.GetResponseFactory.from_bytes(ok)
    assert isinstance(parsed, dc_xdlms.GetResponseNormal) and parsed.data == bytes.fromhex(
        "060000002a"
    )
    error = encode_get_response(0xC1, error=AccessResult.OBJECT_UNDEFINED)
    assert error == bytes.fromhex("c401c10104")
    parsed_error = dc_xdlms.GetResponseFactory.from_bytes(error)
    assert parsed_error.error.value == 4
    theirs = dc_xdlms.GetRequestNormal(
        dc_cosem.CosemAttribute(
            dc_enums.CosemInterface.REGISTER, dc_cosem.Obis(1, 0, 1, 8, 0, 255), 3
        )
    ).to_bytes()
    assert parse_get_request(theirs).attribute == 3


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("c0", "expected tag"),
        ("c002c10000", "unsupported"),
        ("c001c10003", "at least 13"),
        ("c001c100030100010800ff020011", "trailing"),
    ],
)
def test_get_request_errors(raw: str, message: str) -> None:
    with pytest.raises(DlmsDecodeError, match=message):
        parse_get_request(bytes.fromhex(raw))


@given(st.binary(max_size=120))
def test_apdu_parsers_fuzz(raw: bytes) -> None:
    for parse in (parse_aarq, parse_get_request, parse_rlrq):
        with contextlib.suppress(DecodeError):
            parse(raw)
    with contextlib.suppress(DecodeError):
        parse_aarq(b"\x60" + bytes((len(raw),)) + raw if len(raw) < 128 else raw)

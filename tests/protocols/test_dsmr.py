"""DSMR P1: every fixture telegram parses, CRCs catch every changed byte, the stream reader
resynchronises, and the values agree with dsmr-parser (an independent implementation)."""

from __future__ import annotations

import contextlib
import random
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from dsmr_parser import telegram_specifications as specs
from dsmr_parser.parsers import TelegramParser
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.dsmr import (
    NEED_DATA,
    BadTelegram,
    DsmrCrcError,
    DsmrError,
    Skipped,
    TelegramReader,
    TelegramReceived,
    crc16,
    encode_telegram,
    meter_readings,
    parse_telegram,
    parse_timestamp,
)
from protocols.errors import DecodeError, EncodeError
from protocols.obis import Obis

#: real telegrams (dsmr-parser's test suite, MIT), copied from ../shared/fixtures/dsmr
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "dsmr"

#: fixture -> (dsmr-parser specification, version we report, has a CRC)
CASES = {
    "v2_2.txt": (specs.V2_2, "2.2/3", False),
    "v3.txt": (specs.V3, "2.2/3", False),
    "v4_2.txt": (specs.V4, "4.2", True),
    "v5.txt": (specs.V5, "5.0", True),
    "fluvius_v171.txt": (specs.BELGIUM_FLUVIUS, "e-MUCS 50217", True),
    # dsmr-parser's SAGEMCOM_T210_D_R spec expects the encrypted form; the plain one is V5
    "sagemcom_t210_d_r.txt": (specs.V5, "5.0", True),
}
CRC_FIXTURES = [name for name, (_, _, crc) in CASES.items() if crc]


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_every_fixture_in_the_folder_is_covered() -> None:
    assert sorted(p.name for p in FIXTURES.glob("*.txt")) == sorted(CASES)


def test_crc16_arc_check_value() -> None:
    assert crc16(b"123456789") == 0xBB3D  # CRC-16/ARC catalogue check value


@pytest.mark.parametrize("name", sorted(CASES))
def test_fixture_parses_completely(name: str) -> None:
    data = raw(name)
    telegram = parse_telegram(data)
    _, version, has_crc = CASES[name]
    assert telegram.version == version
    assert (telegram.crc is not None) == has_crc
    # every line between the header and '!' became part of an object
    lines = data.split(b"\r\n")
    objects_lines = {o.line for o in telegram.objects}
    for number, line in enumerate(lines[1:], 2):
        if line and not line.startswith((b"(", b"!")):
            assert number in objects_lines, line
    meters = meter_readings(telegram)
    assert meters[0].channel == 0 and meters[0].kind == "electricity"
    assert all(not m.problems for m in meters), [m.problems for m in meters]
    assert all(type(r.value) is Decimal for m in meters for r in m.values)
    assert len(meters[0].values) >= 7


def _line_texts(data: bytes) -> dict[int, str]:
    return {n: line.decode() + "\r\n" for n, line in enumerate(data.split(b"\r\n"), 1)}


@pytest.mark.parametrize("name", sorted(CASES))
def test_values_agree_with_dsmr_parser(name: str) -> None:
    data = raw(name)
    spec, _, _ = CASES[name]
    theirs = TelegramParser(spec).parse(data.decode("ascii"))
    patterns = dict(theirs.items())
    telegram = parse_telegram(data)
    texts = _line_texts(data)
    electricity, *mbus = meter_readings(telegram)
    compared = 0
    for reading in electricity.values:
        obj = next(o for o in telegram.objects if o.obis == reading.source)
        text = texts[obj.line]
        for pattern, their in patterns.items():
            if re.match(pattern, text, re.MULTILINE) and their.value is not None:
                if reading.unit:  # counters and tariff come back as text or int there
                    assert their.value == reading.value, (text, their.value)
                    assert their.unit == reading.unit
                else:
                    assert Decimal(their.value) == reading.value
                compared += 1
                break
    assert compared >= 7
    for meter in mbus:
        device = theirs.get_mbus_device_by_channel(meter.channel)
        their = _their_reading(device)
        (reading,) = meter.values
        assert (their.value, their.unit) == (reading.value, reading.unit)
        assert int(their.datetime.timestamp() * 1000) == meter.captured_ms
    assert [m.channel for m in mbus] == [
        d.channel_id for d in getattr(theirs, "MBUS_DEVICES", []) if _has(d)
    ]


_READING_NAMES = ("MBUS_METER_READING", "GAS_METER_READING", "HOURLY_GAS_METER_READING")


def _their_reading(device: object) -> object:
    return next(getattr(device, n) for n in _READING_NAMES if hasattr(device, n))


def _has(device: object) -> bool:
    return any(hasattr(device, n) for n in _READING_NAMES)


def test_electricity_spot_values_from_the_fixture_text() -> None:
    meters = meter_readings(parse_telegram(raw("v4_2.txt")))
    values = {str(r.obis): (r.value, r.unit) for r in meters[0].values}
    assert values["1-0:1.8.1"] == (Decimal("1581.123"), "kWh")
    assert values["1-0:1.8.2"] == (Decimal("1435.706"), "kWh")
    assert values["1-0:1.7.0"] == (Decimal("2.027"), "kW")
    assert values["1-0:51.7.0"] == (Decimal("6"), "A")
    assert values["0-0:96.14.0"] == (Decimal("2"), "")
    # 161113205757W: winter time, UTC+1
    assert (
        meters[0].captured_ms
        == int(datetime(2016, 11, 13, 19, 57, 57, tzinfo=UTC).timestamp()) * 1000
    )
    assert meters[0].clock_flag == "W"


def test_mbus_channels_become_meters_of_their_own() -> None:
    electricity, gas, water = meter_readings(parse_telegram(raw("fluvius_v171.txt")))
    assert electricity.equipment_id == "1SAG3101021605"
    assert (gas.channel, gas.kind, gas.device_type) == (1, "gas", 3)
    assert gas.equipment_id == "7FLO2119033733"
    (value,) = gas.values
    assert (value.obis, value.value, value.unit) == (Obis(7, 0, 3, 0, 0), Decimal("112.384"), "m3")
    assert value.source == Obis.parse("0-1:24.2.3")
    assert (water.kind, water.values[0].obis) == ("water", Obis(8, 0, 1, 0, 0))
    # own capture time: 200512134558S = 11:45:58 UTC, not the telegram's 11:54:09
    assert gas.captured_ms == int(datetime(2020, 5, 12, 11, 45, 58, tzinfo=UTC).timestamp()) * 1000
    assert electricity.captured_ms != gas.captured_ms


def test_dsmr_2_2_gas_multi_line_form() -> None:
    electricity, gas = meter_readings(parse_telegram(raw("v2_2.txt")))
    assert electricity.captured_ms is None  # no 0-0:1.0.0: the gateway's clock
    (value,) = gas.values
    assert (value.value, value.unit, str(value.source)) == (Decimal("1.001"), "m3", "0-1:24.3.0")
    # 161107190000, no flag: Amsterdam local time, CET in November
    assert gas.captured_ms == int(datetime(2016, 11, 7, 18, 0, tzinfo=UTC).timestamp()) * 1000
    assert gas.clock_flag == ""


@pytest.mark.parametrize(
    ("text", "utc", "flag"),
    [
        ("200512135409S", datetime(2020, 5, 12, 11, 54, 9, tzinfo=UTC), "S"),
        ("161113205757W", datetime(2016, 11, 13, 19, 57, 57, tzinfo=UTC), "W"),
        ("160327013000", datetime(2016, 3, 27, 0, 30, tzinfo=UTC), ""),  # CET, unambiguous
        ("160327023000", None, "?"),  # the skipped hour of the spring change: no such time
        ("161030023000", datetime(2016, 10, 30, 0, 30, tzinfo=UTC), "?"),  # repeated hour
    ],
)
def test_timestamps_with_and_without_dst_flag(text: str, utc: datetime | None, flag: str) -> None:
    ms, got_flag = parse_timestamp(text)
    assert got_flag == flag
    if utc is not None:
        assert ms == int(utc.timestamp()) * 1000


@pytest.mark.parametrize("text", ["2005121354S", "200532135409S", "200512135409X", ""])
def test_bad_timestamps_are_decode_errors(text: str) -> None:
    with pytest.raises(DsmrError, match="time stamp"):
        parse_timestamp(text)


# -- every single changed byte of a CRC-carrying telegram is rejected --------------------------


def _mutations(byte: int) -> set[int]:
    return {(byte + 1) % 256, byte ^ 0x20, byte ^ 0x80, *b"/!\r\n(0A"} - {byte}


@pytest.mark.parametrize("name", CRC_FIXTURES)
def test_every_single_byte_change_is_rejected(name: str) -> None:
    data = raw(name)
    tried = 0
    for pos in range(len(data)):
        for new in _mutations(data[pos]):
            bad = bytearray(data)
            bad[pos] = new
            with pytest.raises(DsmrError):
                parse_telegram(bytes(bad))
            reader = TelegramReader()
            reader.receive_data(bytes(bad) + b"\r\n")
            events = _drain(reader)
            assert not any(isinstance(e, TelegramReceived) for e in events), (pos, new)
            tried += 1
    assert tried > 6 * len(data)


def test_a_bad_crc_is_its_own_error_class() -> None:
    data = bytearray(raw("v5.txt"))
    data[50] ^= 1
    with pytest.raises(DsmrCrcError, match="CRC"):
        parse_telegram(bytes(data))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"/ISk5\\2MT382-1000\r\n\r\n1-3:0.2.8(50)\r\n!\r\n", "requires a CRC"),
        (b"/ISk5\\2MT382-1000\r\n\r\n1-0:1.8.1(1*kWh)\r\n!6eee\r\n", "not a CRC"),
        (b"/ISk5\\2MT382-1000\r\n\r\n1-0:1.8.1(1*kWh)\r\nnonsense\r\n!\r\n", "line 4"),
        (b"/ISk5\\2MT382-1000\r\n\r\n1-0:1.8.1(1*kWh)\n!\r\n", "offset 38"),
        (b"/ISk5\\2MT382-1000\r\n\r\n1-0:1.8.1(1*kWh)\n\r\n!\r\n", "line 3"),
        (b"/I\r\n\r\n!\r\n", "line 1"),
        (b"1-0:1.8.1(1*kWh)\r\n!\r\n", "offset 0"),
    ],
)
def test_malformed_telegrams_name_the_place(data: bytes, message: str) -> None:
    with pytest.raises(DsmrError, match=message):
        parse_telegram(data)


def test_a_bad_value_is_a_problem_of_its_meter_not_the_telegram() -> None:
    data = (
        b"/ISk5\\2MT382-1000\r\n\r\n1-0:1.8.1(12x.4*kWh)\r\n1-0:1.8.2(1.5*kWh)\r\n"
        b"0-1:24.1.0(003)\r\n0-1:24.2.1(170102161005W)(00000.107*GJ)\r\n"
        b"0-2:24.1.0(007)\r\n0-2:24.2.1(170102161005W)(00001.5*m3)\r\n!\r\n"
    )
    electricity, gas, water = meter_readings(parse_telegram(data))
    assert [str(r.obis) for r in electricity.values] == ["1-0:1.8.2"]
    assert electricity.problems and "line 3" in electricity.problems[0]
    assert gas.values == () and "unit 'GJ'" in gas.problems[0]
    assert water.values[0].value == Decimal("1.5")


# -- the stream reader -------------------------------------------------------------------------


def _drain(reader: TelegramReader) -> list[object]:
    events = []
    while (event := reader.next_event()) is not NEED_DATA:
        events.append(event)
    return events


STREAM = b"".join(raw(name) for name in sorted(CASES))


def test_stream_whole() -> None:
    reader = TelegramReader()
    reader.receive_data(STREAM)
    events = _drain(reader)
    assert [type(e) for e in events] == [TelegramReceived] * len(CASES)
    assert reader.counts["telegrams"] == len(CASES)


@pytest.mark.parametrize("seed", range(5))
def test_stream_in_random_chunks_with_garbage_between(seed: int) -> None:
    rng = random.Random(seed)
    stream = b""
    for name in sorted(CASES):
        stream += bytes(rng.choice(b"abc\r\n\x00\xff)") for _ in range(rng.randrange(20))) + raw(
            name
        )
    reader = TelegramReader()
    events: list[object] = []
    pos = 0
    while pos < len(stream):
        size = rng.choice([1, 2, 7, 64, 300, 5000])
        reader.receive_data(stream[pos : pos + size])
        pos += size
        events += _drain(reader)
    got = [e.telegram.raw for e in events if isinstance(e, TelegramReceived)]
    assert got == [raw(name) for name in sorted(CASES)]
    assert all(isinstance(e, TelegramReceived | Skipped) for e in events)


def test_stream_byte_by_byte() -> None:
    reader = TelegramReader()
    events: list[object] = []
    for byte in STREAM:
        reader.receive_data(bytes((byte,)))
        events += _drain(reader)
    assert len(events) == len(CASES)


def test_joining_mid_telegram_skips_to_the_next_slash() -> None:
    v5 = raw("v5.txt")
    reader = TelegramReader()
    reader.receive_data(v5[100:] + v5)
    events = _drain(reader)
    assert isinstance(events[0], Skipped) and events[0].size == len(v5) - 100
    assert isinstance(events[1], TelegramReceived)
    assert reader.counts["garbage bytes"] == len(v5) - 100


def test_bad_crc_is_counted_and_skipped() -> None:
    v5 = bytearray(raw("v5.txt"))
    v5[200] ^= 0x01
    reader = TelegramReader()
    reader.receive_data(bytes(v5) + raw("v4_2.txt"))
    first, second = _drain(reader)
    assert isinstance(first, BadTelegram) and first.reason == "crc"
    assert "stream offset 0" in first.message
    assert isinstance(second, TelegramReceived) and second.telegram.version == "4.2"
    assert reader.counts["crc"] == 1


def test_a_truncated_telegram_is_reported_and_the_next_one_taken() -> None:
    v5 = raw("v5.txt")
    reader = TelegramReader()
    reader.receive_data(v5[:400] + v5)
    first, second = _drain(reader)
    assert isinstance(first, BadTelegram) and first.reason == "truncated"
    assert isinstance(second, TelegramReceived)


def test_the_buffer_is_bounded() -> None:
    reader = TelegramReader(max_size=1000)
    reader.receive_data(b"/XXX5" + b"1-0:1.8.1(1*kWh)\r\n" * 100)
    (event,) = _drain(reader)
    assert isinstance(event, BadTelegram) and event.reason == "too long"
    assert len(reader._buffer) == 0
    reader.receive_data(raw("v5.txt"))
    assert isinstance(_drain(reader)[0], TelegramReceived)


def test_no_line_end_after_bang_is_invalid_and_resyncs() -> None:
    reader = TelegramReader()
    reader.receive_data(b"/ABC5x\r\n\r\n!1234567890" + raw("v5.txt"))
    events = _drain(reader)
    assert isinstance(events[0], BadTelegram) and events[0].reason == "invalid"
    assert isinstance(events[-1], TelegramReceived)


# -- fuzz ----------------------------------------------------------------------------------------

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=600))
def test_fuzz_telegram_and_meters_raise_only_decode_errors(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        meter_readings(parse_telegram(b"/ISk5\\2MT382-1000\r\n\r\n" + data + b"\r\n!\r\n"))
    with contextlib.suppress(DecodeError):
        parse_telegram(data)


@FAST
@given(st.lists(st.sampled_from([*CASES]), max_size=3), st.binary(max_size=200), st.integers(1, 50))
def test_fuzz_stream_never_raises(names: list[str], noise: bytes, step: int) -> None:
    stream = noise.join(raw(n) for n in names) + noise
    reader = TelegramReader(max_size=2048)
    for i in range(0, len(stream), step):
        reader.receive_data(stream[i : i + step])
        _drain(reader)


def test_heat_meter_in_gj_and_a_second_value_object_keep_their_own_codes() -> None:
    data = (
        b"/ISk5\\2MT382-1000\r\n\r\n1-0:1.8.1(1*kWh)\r\n"
        b"0-3:24.1.0(004)\r\n0-3:96.1.0(3232)\r\n0-3:24.2.1(101209112500W)(00012.345*GJ)\r\n"
        b"0-4:24.1.0(003)\r\n0-4:24.2.1(200512134558S)(00001.000*m3)\r\n"
        b"0-4:24.2.3(200512134558S)(00001.100*m3)\r\n!\r\n"
    )
    _, heat, gas = meter_readings(parse_telegram(data))
    assert (heat.channel, heat.kind, heat.equipment_id) == (3, "heat", "22")
    assert [(str(r.obis), r.value, r.unit) for r in heat.values] == [
        ("6-0:1.0.0", Decimal("12.345"), "GJ")
    ]
    assert [str(r.obis) for r in gas.values] == ["7-0:3.0.0", "0-4:24.2.3"]


def test_encode_telegram_round_trips_with_and_without_crc() -> None:
    lines = ["1-3:0.2.8(50)", "0-0:1.0.0(170102192002W)", "1-0:1.8.1(000004.426*kWh)"]
    with_crc = encode_telegram("ISk5\\2MT382-1000", lines)
    assert with_crc.endswith(f"!{crc16(with_crc[: with_crc.index(b'!') + 1]):04X}\r\n".encode())
    assert parse_telegram(with_crc).version == "5.0"
    plain = encode_telegram("ISk5\\2MT382-1000", lines[2:], crc=False)
    assert parse_telegram(plain).crc is None
    with pytest.raises(EncodeError):
        encode_telegram("ISk5", ["not a line"])


@pytest.mark.parametrize("seed", range(3))
def test_random_chunks_with_a_damaged_telegram_in_the_middle(seed: int) -> None:
    rng = random.Random(seed)
    damaged = bytearray(raw("v4_2.txt"))
    damaged[rng.randrange(1, len(damaged) - 8)] ^= 1 << rng.randrange(7)
    stream = raw("v5.txt") + b"\x00junk" + bytes(damaged) + raw("fluvius_v171.txt")
    reader = TelegramReader()
    events: list[object] = []
    pos = 0
    while pos < len(stream):
        size = rng.randint(1, 200)
        reader.receive_data(stream[pos : pos + size])
        pos += size
        events += _drain(reader)
    good = [e.telegram.version for e in events if isinstance(e, TelegramReceived)]
    assert good == ["5.0", "e-MUCS 50217"]
    assert sum(isinstance(e, BadTelegram) for e in events) >= 1
    assert reader.counts["telegrams"] == 2

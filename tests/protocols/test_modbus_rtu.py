"""Modbus RTU framing: CRC vectors, requests, checked answers, the stream reader, timing."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymodbus.framer import FramerRTU
from pymodbus.pdu import DecodePDU
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersRequest,
    ReadHoldingRegistersResponse,
    ReadInputRegistersRequest,
    ReadInputRegistersResponse,
)

from protocols.errors import DecodeError, EncodeError
from protocols.modbus.rtu import (
    NEED_DATA,
    BadFrame,
    ExceptionAnswer,
    Frame,
    FrameReader,
    Role,
    RtuError,
    SerialLine,
    check_answer,
    crc16_modbus,
    exception_answer,
    parse_read_request,
    read_request,
    with_crc,
)
from protocols.modbus.rtu import answer as answer_frame

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def answer(unit: int, function: int, registers: list[int]) -> bytes:
    body = struct.pack(f">BBB{len(registers)}H", unit, function, 2 * len(registers), *registers)
    return with_crc(body)


# -- CRC and requests ----------------------------------------------------------------------------


def test_crc_of_the_classic_read_request() -> None:
    # Modbus over Serial Line, and every RTU tutorial: 01 03 00 00 00 0A -> C5 CD on the wire
    assert read_request(1, 3, 0, 10) == bytes.fromhex("01 03 00 00 00 0A C5 CD")
    assert crc16_modbus(bytes.fromhex("01 03 00 00 00 0A")) == 0xCDC5


def test_crc_catalogue_check_value() -> None:
    assert crc16_modbus(b"123456789") == 0x4B37  # CRC-16/MODBUS check value


@pytest.mark.parametrize(
    ("frame", "crc"),
    [
        ("11 03 00 6B 00 03", "76 87"),  # Modbus application protocol spec example
        ("01 04 00 00 00 01", "31 CA"),
        ("01 06 00 01 00 03", "98 0B"),
    ],
)
def test_crc_known_vectors(frame: str, crc: str) -> None:
    assert with_crc(bytes.fromhex(frame))[-2:] == bytes.fromhex(crc)


@pytest.mark.parametrize(
    ("unit", "function", "address", "count"),
    [(1, 3, 0, 10), (247, 4, 65535, 1), (17, 3, 107, 125)],
)
def test_requests_match_pymodbus(unit: int, function: int, address: int, count: int) -> None:
    framer = FramerRTU(DecodePDU(False))
    pdu_class = ReadHoldingRegistersRequest if function == 3 else ReadInputRegistersRequest
    theirs = framer.buildFrame(pdu_class(address=address, count=count, dev_id=unit))
    assert read_request(unit, function, address, count) == theirs


@pytest.mark.parametrize(
    "args",
    [(0, 3, 0, 1), (248, 3, 0, 1), (1, 6, 0, 1), (1, 3, 0, 0), (1, 3, 0, 126), (1, 3, 65535, 2)],
)
def test_impossible_requests_are_refused(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(EncodeError):
        read_request(*args)


# -- answers -------------------------------------------------------------------------------------


@FAST
@given(
    st.integers(1, 247),
    st.sampled_from([3, 4]),
    st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=125),
)
def test_answers_round_trip_and_match_pymodbus(
    unit: int, function: int, registers: list[int]
) -> None:
    frame = answer(unit, function, registers)
    pdu_class = ReadHoldingRegistersResponse if function == 3 else ReadInputRegistersResponse
    assert (
        FramerRTU(DecodePDU(False)).buildFrame(pdu_class(registers=registers, dev_id=unit)) == frame
    )
    assert check_answer(frame, unit, function, len(registers)) == registers


def test_exception_answer() -> None:
    with pytest.raises(ExceptionAnswer) as info:
        check_answer(with_crc(bytes((5, 0x83, 2))), 5, 3, 10)
    assert info.value.code == 2


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (answer(2, 3, [1, 2]), "from unit 2 to a request for unit 1"),
        (answer(1, 4, [1, 2]), "function 0x04 to a request with 0x03"),
        (answer(1, 3, [1]), "byte count 2"),
        (answer(1, 3, [1, 2])[:-1] + b"\x00", "CRC"),
        (b"\x01\x03", "2 bytes"),
        (with_crc(bytes((1, 0x83, 2, 0))), "exception response of 6 bytes"),
    ],
)
def test_bad_answers_name_what_is_wrong(frame: bytes, message: str) -> None:
    with pytest.raises(RtuError, match=message):
        check_answer(frame, 1, 3, 2)
    assert issubclass(RtuError, DecodeError)


def test_every_single_byte_change_of_an_answer_is_rejected() -> None:
    frame = answer(9, 3, [0x1234, 0xABCD, 0, 0xFFFF])
    for pos in range(len(frame)):
        for delta in range(1, 256):
            bad = bytearray(frame)
            bad[pos] ^= delta
            with pytest.raises((RtuError, ExceptionAnswer)):
                check_answer(bytes(bad), 9, 3, 4)


# -- the frame reader ----------------------------------------------------------------------------


def _drain(reader: FrameReader) -> list[object]:
    events = []
    while (event := reader.next_event()) is not NEED_DATA:
        events.append(event)
    return events


def test_reader_frames_answers_fed_byte_by_byte() -> None:
    stream = answer(1, 3, [1, 2, 3]) + with_crc(bytes((2, 0x84, 11))) + answer(3, 4, [7])
    reader = FrameReader()
    events: list[object] = []
    for byte in stream:
        reader.receive_data(bytes((byte,)))
        events += _drain(reader)
    assert [(e.unit, e.function) for e in events] == [(1, 3), (2, 0x84), (3, 4)]
    assert all(isinstance(e, Frame) for e in events)
    assert check_answer(events[0].raw, 1, 3, 3) == [1, 2, 3]
    assert reader.counts["frames"] == 3


def test_reader_reports_a_crc_error_then_discards_until_silence() -> None:
    bad = bytearray(answer(1, 3, [1, 2]))
    bad[4] ^= 0xFF
    reader = FrameReader()
    reader.receive_data(bytes(bad) + b"\x01\x02")  # the tail of something else
    first, second = _drain(reader)
    assert isinstance(first, BadFrame) and first.reason == "crc"
    assert isinstance(second, BadFrame) and second.reason == "garbage"
    assert reader.silence() is None
    reader.receive_data(answer(1, 3, [5]))
    (good,) = _drain(reader)
    assert isinstance(good, Frame)
    assert reader.counts == {"frames": 1, "crc": 1, "truncated": 0, "garbage": 1, "echo": 0}


def test_silence_in_the_middle_of_a_frame_is_a_truncated_frame() -> None:
    reader = FrameReader()
    reader.receive_data(answer(1, 3, [1, 2, 3])[:6])
    assert _drain(reader) == []
    event = reader.silence()
    assert isinstance(event, BadFrame) and event.reason == "truncated"
    reader.receive_data(answer(1, 3, [1]))
    assert isinstance(_drain(reader)[0], Frame)


def test_bytes_that_cannot_start_a_frame_are_garbage() -> None:
    reader = FrameReader()
    reader.receive_data(b"\xff\xff\xff" + answer(1, 3, [1]))
    (event,) = _drain(reader)
    assert isinstance(event, BadFrame) and event.reason == "garbage"


def test_the_echo_of_our_own_request_is_skipped() -> None:
    request = read_request(1, 3, 0, 2)
    reader = FrameReader()
    reader.expect_echo(request)
    stream = request + answer(1, 3, [1, 2])
    events: list[object] = []
    for i in range(0, len(stream), 3):
        reader.receive_data(stream[i : i + 3])
        events += _drain(reader)
    (frame,) = events
    assert isinstance(frame, Frame) and frame.unit == 1
    assert reader.counts["echo"] == 1


def test_no_echo_when_the_adapter_does_not_echo() -> None:
    reader = FrameReader()
    reader.expect_echo(read_request(1, 3, 0, 2))
    reader.receive_data(answer(1, 3, [1, 2]))
    assert isinstance(_drain(reader)[0], Frame)


def test_server_side_reader_frames_requests() -> None:
    write = with_crc(bytes.fromhex("01 10 00 01 00 02 04 00 0A 01 02"))
    reader = FrameReader(Role.REQUESTS)
    reader.receive_data(
        read_request(1, 3, 0, 10) + write + with_crc(bytes.fromhex("00 06 00 01 00 03"))
    )
    frames = _drain(reader)
    assert [(f.unit, f.function, len(f.raw)) for f in frames] == [(1, 3, 8), (1, 16, 13), (0, 6, 8)]


@FAST
@given(st.binary(max_size=300), st.integers(1, 40), st.sampled_from(list(Role)))
def test_fuzz_reader_and_check_answer_raise_nothing_undocumented(
    data: bytes, step: int, role: Role
) -> None:
    reader = FrameReader(role)
    for i in range(0, len(data), step):
        reader.receive_data(data[i : i + step])
        for event in _drain(reader):
            assert isinstance(event, Frame | BadFrame)
            if isinstance(event, Frame):
                assert crc16_modbus(event.raw[:-2]) == int.from_bytes(event.raw[-2:], "little")
    reader.silence()
    with contextlib.suppress(RtuError, ExceptionAnswer):
        check_answer(data, 1, 3, 2)


# -- timing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "bits", "t35_ms", "t15_ms"),
    [
        (SerialLine(9600), 11, 4.0104, 1.7188),  # 8E1
        (SerialLine(9600, parity="N", stop_bits=2), 11, 4.0104, 1.7188),
        (SerialLine(9600, parity="N"), 10, 3.6458, 1.5625),
        (SerialLine(19200), 11, 2.0052, 0.8594),
        (SerialLine(38400), 11, 1.75, 0.75),  # fixed above 19200
        (SerialLine(115200, parity="N"), 10, 1.75, 0.75),
    ],
)
def test_silence_limits(line: SerialLine, bits: int, t35_ms: float, t15_ms: float) -> None:
    assert line.bits_per_char == bits
    assert line.t3_5 * 1000 == pytest.approx(t35_ms, abs=1e-4)
    assert line.t1_5 * 1000 == pytest.approx(t15_ms, abs=1e-4)


def test_bus_time_of_a_read() -> None:
    line = SerialLine(9600)  # 11 bits per character
    bus = line.transaction(10, turnaround=0.005)
    assert bus.request == pytest.approx(8 * 11 / 9600)
    assert bus.response == pytest.approx(25 * 11 / 9600)
    assert bus.silence == pytest.approx(2 * 3.5 * 11 / 9600)
    assert bus.total == pytest.approx((8 + 25 + 7) * 11 / 9600 + 0.005)


@pytest.mark.parametrize(
    "kwargs", [{"baud": 0}, {"baud": 9600, "parity": "X"}, {"baud": 9600, "stop_bits": 3}]
)
def test_impossible_serial_settings_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(EncodeError):
        SerialLine(**kwargs)  # type: ignore[arg-type]


# -- the server's side --------------------------------------------------------------------------


def test_server_side_round_trip() -> None:
    request = parse_read_request(read_request(17, 4, 107, 3))
    assert (request.unit, request.function, request.address, request.count) == (17, 4, 107, 3)
    frame = answer_frame(17, 4, [1, 2, 3])
    assert check_answer(frame, 17, 4, 3) == [1, 2, 3]
    with pytest.raises(ExceptionAnswer):
        check_answer(exception_answer(17, 4, 2), 17, 4, 3)


@pytest.mark.parametrize(
    "frame",
    [
        read_request(1, 3, 0, 1)[:-1] + b"\x00",
        read_request(1, 3, 0, 1)[:7],
        with_crc(b"\x01\x06\x00\x01\x00\x03"),
    ],
)
def test_server_side_refuses_what_is_not_a_read_request(frame: bytes) -> None:
    with pytest.raises(RtuError):
        parse_read_request(frame)


@pytest.mark.parametrize("args", [(0, 3, [1]), (1, 3, []), (1, 3, [0x10000]), (1, 3, [0] * 126)])
def test_answers_that_cannot_be_sent_are_refused(args: tuple[int, int, list[int]]) -> None:
    with pytest.raises(EncodeError):
        answer_frame(*args)


def test_bus_time_of_any_pair_counts_every_character() -> None:
    line = SerialLine(19200, parity="N")  # 10 bits per character
    bus = line.pair(13, 8)  # e.g. an FC16 write of two registers and its echo
    assert bus.request == pytest.approx(13 * 10 / 19200)
    assert bus.response == pytest.approx(8 * 10 / 19200)
    assert bus.total == pytest.approx(21 * 10 / 19200 + 2 * 3.5 * 10 / 19200)


def test_an_answer_from_the_broadcast_address_is_garbage() -> None:
    reader = FrameReader()
    reader.receive_data(with_crc(bytes.fromhex("00 03 02 00 01")))
    (event,) = _drain(reader)
    assert isinstance(event, BadFrame) and event.reason == "garbage"

"""IEC 62056-21: sign-on, identification, option select, mode C readout, data sets."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols.errors import DecodeError, EncodeError
from protocols.iec62056_21 import (
    NEED_DATA,
    DataReceived,
    Identified,
    Iec62056Error,
    ModeCReadout,
    ReadoutState,
    ack_option,
    baud_char_for,
    bcc,
    break_message,
    data_message,
    identification,
    obis_of,
    parse_ack_option,
    parse_data_block,
    parse_identification,
    parse_sign_on,
    readings,
    sign_on,
)
from protocols.obis import Obis


def test_sign_on_without_address_asks_any_meter() -> None:
    assert sign_on() == b"/?!\r\n"


def test_sign_on_with_device_address_picks_one_meter() -> None:
    assert sign_on("12345678") == b"/?12345678!\r\n"


@pytest.mark.parametrize("address", ["a!b", "x" * 33, "é", "1/2"])
def test_sign_on_refuses_an_address_the_standard_does_not_allow(address: str) -> None:
    with pytest.raises(EncodeError, match="device address"):
        sign_on(address)


def test_identification_of_a_mode_c_meter() -> None:
    ident = parse_identification(b"/LGZ5ZMD3104407.B32\r\n")
    assert ident.manufacturer == "LGZ"
    assert ident.baud_char == "5" and ident.baud == 9600
    assert ident.ident == "ZMD3104407.B32"
    assert not ident.mode_e and ident.protocol_mode == "C"
    assert not ident.short_reaction


def test_identification_with_hdlc_escape_is_mode_e() -> None:
    ident = parse_identification(b"/ISk5\\2MT382-1000\r\n")
    assert ident.mode_e and ident.protocol_mode == "E"
    assert ident.escapes == "2"
    assert ident.ident == "MT382-1000" and ident.baud == 9600
    assert ident.short_reaction  # lower-case third letter


@pytest.mark.parametrize(
    ("char", "baud", "mode"),
    [("0", 300, "C"), ("4", 4800, "C"), ("6", 19200, "C"), ("E", 9600, "B"), ("K", 300, "A")],
)
def test_identification_baud_rate_characters(char: str, baud: int, mode: str) -> None:
    ident = parse_identification(f"/ABC{char}meter\r\n".encode())
    assert (ident.baud, ident.protocol_mode) == (baud, mode)


@pytest.mark.parametrize(
    "line",
    [
        b"/LGZ5ZMD\n",  # no CR
        b"LGZ5ZMD\r\n",  # no slash
        b"/LG5ZMD\r\n",  # two manufacturer letters
        b"/LGZ5" + b"x" * 40 + b"\r\n",  # too long
        b"/LGZ5Z!D\r\n",
        b"/LGZ5\xdaMD\r\n",  # 8th bit set
        b"",
    ],
)
def test_bad_identification_is_a_decode_error(line: bytes) -> None:
    with pytest.raises(Iec62056Error, match="identification"):
        parse_identification(line)
    assert issubclass(Iec62056Error, DecodeError)


def test_eighth_bit_set_hints_at_the_port_setting() -> None:
    with pytest.raises(Iec62056Error, match="7E1"):
        parse_identification(b"/LGZ5\xdaMD\r\n")


def test_ack_option_for_mode_c_readout_and_mode_e() -> None:
    assert ack_option("0", "5", "0") == b"\x06050\r\n"
    assert ack_option("2", "5", "2") == b"\x06252\r\n"


@pytest.mark.parametrize(("args"), [("3", "5", "0"), ("0", "7", "0"), ("0", "5", "3")])
def test_ack_option_refuses_unknown_characters(args: tuple[str, str, str]) -> None:
    with pytest.raises(EncodeError):
        ack_option(*args)


def test_baud_char_for_rates() -> None:
    assert [baud_char_for(b) for b in (300, 2400, 9600, 19200)] == ["0", "3", "5", "6"]
    with pytest.raises(EncodeError):
        baud_char_for(115200)


def test_bcc_and_break_message() -> None:
    assert bcc(b"") == 0 and bcc(b"\x01\x02\x03") == 0
    assert break_message() == b"\x01B0\x03" + bytes((ord("B") ^ ord("0") ^ 3,))


LINES = [
    "0.0.0(12345678)",
    "1.8.0(001234.567*kWh)",
    "1.8.1(000100.5*kWh)(2301011200)",
    "F.F(00000000)",
    "C.1.0(87654321)",
    "32.7.0(230.1*V)31.7.0(1.23*A)",
    "1-0:2.8.0*255(000010.000*KWH)",
    "1.6.0(0.512*kW)(23-01-01 12:00)",
    "99.1.0(abc)",
]
FRAME = data_message(LINES)


def test_data_message_layout_and_bcc() -> None:
    assert FRAME[0] == 0x02 and FRAME[-2] == 0x03
    assert FRAME[1:-2].endswith(b"\r\n!\r\n")
    assert FRAME[-1] == bcc(FRAME[1:-1])


def test_data_block_parses_every_data_set_in_order() -> None:
    block = parse_data_block(FRAME)
    got = [(d.address, d.value, d.unit, d.line) for d in block.datasets]
    assert got == [
        ("0.0.0", "12345678", "", 1),
        ("1.8.0", "001234.567", "kWh", 2),
        ("1.8.1", "000100.5", "kWh", 3),
        ("F.F", "00000000", "", 4),
        ("C.1.0", "87654321", "", 5),
        ("32.7.0", "230.1", "V", 6),
        ("31.7.0", "1.23", "A", 6),
        ("1-0:2.8.0*255", "000010.000", "KWH", 7),
        ("1.6.0", "0.512", "kW", 8),
        ("99.1.0", "abc", "", 9),
    ]
    assert block.datasets[2].extra == ("2301011200",)


def test_readings_are_exact_decimals_with_meterlink_units() -> None:
    result = readings(parse_data_block(FRAME).datasets)
    got = {(str(r.obis), r.value, r.unit) for r in result.values}
    assert got == {
        ("1-0:1.8.0", Decimal("1234.567"), "kWh"),
        ("1-0:1.8.1", Decimal("100.5"), "kWh"),
        ("1-0:32.7.0", Decimal("230.1"), "V"),
        ("1-0:31.7.0", Decimal("1.23"), "A"),
        ("1-0:2.8.0", Decimal("10.000"), "kWh"),
        ("1-0:1.6.0", Decimal("0.512"), "kW"),
    }
    assert result.problems == ()
    assert all(type(r.value) is Decimal for r in result.values)


def test_known_quantity_without_unit_or_with_unknown_unit_is_a_problem_naming_the_line() -> None:
    block = parse_data_block(data_message(["1.8.0(001234.5)", "2.8.0(1*furlong)", "1.7.0(x*kW)"]))
    result = readings(block.datasets)
    assert result.values == ()
    assert [p.split(":")[0] for p in result.problems] == ["line 1", "line 2", "line 3"]


@pytest.mark.parametrize(
    ("address", "code"),
    [
        ("1.8.0", "1-0:1.8.0"),
        ("1-0:1.8.0*255", "1-0:1.8.0"),
        ("1.8.0*01", "1-0:1.8.0*1"),
        ("0-0:96.1.0", "0-0:96.1.0"),
        ("C.1.0", "0-0:96.1.0"),
        ("F.F", "0-0:97.97.0"),
        ("0.9.1", "1-0:0.9.1"),
    ],
)
def test_addresses_map_to_obis(address: str, code: str) -> None:
    assert obis_of(address) == Obis.parse(code)


def test_every_single_byte_change_of_a_data_message_is_rejected() -> None:
    for pos in range(len(FRAME)):
        for delta in (1, 0x20, 0x7F):
            bad = bytearray(FRAME)
            bad[pos] = (bad[pos] + delta) % 256
            with pytest.raises(Iec62056Error):
                parse_data_block(bytes(bad))


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (FRAME[:-1], "after ETX|BCC|no ETX"),
        (FRAME + b"x", "after ETX"),
        (FRAME[1:], "STX"),
        (FRAME[:-1] + bytes(((FRAME[-1] + 1) % 256,)), "BCC"),
    ],
)
def test_bad_data_messages_name_the_place(frame: bytes, message: str) -> None:
    with pytest.raises(Iec62056Error, match=message):
        parse_data_block(frame)


@pytest.mark.parametrize("line", ["1.8.0", "1.8.0(12", "1.8.0(1)x", "1.8.0(1*kWh*x)", "a(b)c(d"])
def test_malformed_data_lines_name_the_line(line: str) -> None:
    with pytest.raises(Iec62056Error, match="line 2"):
        parse_data_block(data_message(["1.8.0(1*kWh)", line]))


# -- the readout state machine --------------------------------------------------------------

IDENT = b"/LGZ5ZMD3104407.B32\r\n"


def _run(readout: ModeCReadout, incoming: bytes, step: int) -> list[object]:
    events: list[object] = []
    for i in range(0, len(incoming), step):
        readout.receive_data(incoming[i : i + step])
        while (event := readout.next_event()) is not NEED_DATA:
            events.append(event)
    return events


@pytest.mark.parametrize("step", [1, 3, 1000])
def test_mode_c_readout_whole_and_byte_by_byte(step: int) -> None:
    readout = ModeCReadout()
    assert readout.start() == b"/?!\r\n"
    assert readout.state is ReadoutState.AWAITING_IDENTIFICATION
    events = _run(readout, IDENT + FRAME, step)
    assert isinstance(events[0], Identified)
    assert events[0].reply == b"\x06050\r\n" and events[0].baud == 9600
    assert isinstance(events[1], DataReceived)
    assert events[1].raw == FRAME
    assert readout.state is ReadoutState.DONE


def test_readout_skips_the_echo_of_its_own_request_and_ack() -> None:
    readout = ModeCReadout("4711")
    request = readout.start()
    events = _run(readout, request + IDENT + b"\x06050\r\n" + FRAME, 7)
    assert [type(e) for e in events] == [Identified, DataReceived]


def test_readout_caps_the_baud_rate() -> None:
    readout = ModeCReadout(max_baud=2400)
    readout.start()
    (event,) = _run(readout, b"/ABC6meter\r\n", 100)
    assert event.reply == b"\x06030\r\n" and event.baud == 2400


@pytest.mark.parametrize(("ident", "baud"), [(b"/ABCEmeter\r\n", 9600), (b"/ABCKx\r\n", 300)])
def test_mode_b_and_a_meters_get_no_ack(ident: bytes, baud: int) -> None:
    readout = ModeCReadout()
    readout.start()
    (event,) = _run(readout, ident, 100)
    assert event.reply == b"" and event.baud == baud


def test_readout_error_sticks() -> None:
    readout = ModeCReadout()
    readout.start()
    readout.receive_data(IDENT)
    readout.next_event()
    readout.receive_data(FRAME[:-1] + b"\x00")
    with pytest.raises(Iec62056Error, match="BCC"):
        readout.next_event()
    assert readout.state is ReadoutState.ERROR
    with pytest.raises(Iec62056Error, match="failed before"):
        readout.receive_data(FRAME)


def test_readout_buffer_is_bounded() -> None:
    readout = ModeCReadout(max_size=1000)
    readout.start()
    readout.receive_data(IDENT + b"\x02" + b"1.8.0(1*kWh)\r\n" * 100)
    readout.next_event()
    with pytest.raises(Iec62056Error, match="more than 1000 bytes"):
        readout.next_event()


def test_garbage_instead_of_identification_is_an_error() -> None:
    readout = ModeCReadout()
    readout.start()
    readout.receive_data(b"hello\r\n")
    with pytest.raises(Iec62056Error, match="identification"):
        readout.next_event()


FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.binary(max_size=400))
def test_fuzz_readout_raises_only_decode_errors(data: bytes) -> None:
    readout = ModeCReadout()
    readout.start()
    with contextlib.suppress(DecodeError):
        _run(readout, IDENT + data, 17)


@FAST
@given(st.binary(max_size=400))
def test_fuzz_data_block_and_identification_raise_only_decode_errors(data: bytes) -> None:
    for parse in (parse_data_block, parse_identification):
        with contextlib.suppress(DecodeError):
            parse(data)
    with contextlib.suppress(DecodeError):
        readings(
            parse_data_block(
                b"\x02" + data + b"\r\n!\r\n\x03" + bytes((bcc(data + b"\r\n!\r\n\x03"),))
            ).datasets
        )


def test_anything_but_our_echo_before_stx_is_an_error() -> None:
    readout = ModeCReadout()
    readout.start()
    readout.receive_data(IDENT + b"\x06051\r\n" + FRAME)  # not the ACK we sent
    readout.next_event()
    with pytest.raises(Iec62056Error, match="before STX"):
        readout.next_event()


# -- the meter's side (simulators) ----------------------------------------------------------------


def test_meter_side_messages_round_trip() -> None:
    line = identification("MLK", "5", "sim-1", mode_e=True)
    assert line == b"/MLK5\\2sim-1\r\n"
    ident = parse_identification(line)
    assert ident.mode_e and ident.ident == "sim-1"
    assert parse_sign_on(sign_on("4711")) == "4711" and parse_sign_on(sign_on()) == ""
    option = parse_ack_option(ack_option("0", "6", "0"))
    assert (option.protocol, option.baud_char, option.mode, option.baud) == ("0", "6", "0", 19200)


@pytest.mark.parametrize("line", [b"/?!\n", b"/?a!b!\r\n", b"?!\r\n"])
def test_bad_sign_on_is_a_decode_error(line: bytes) -> None:
    with pytest.raises(Iec62056Error, match="request message"):
        parse_sign_on(line)


@pytest.mark.parametrize("line", [b"\x06050\n", b"\x06070\r\n", b"050\r\n", b"\x15"])
def test_bad_option_select_is_a_decode_error(line: bytes) -> None:
    with pytest.raises(Iec62056Error, match="option select"):
        parse_ack_option(line)


@pytest.mark.parametrize(
    ("maker", "char", "ident"), [("LG", "5", "x"), ("LGZ", "/", "x"), ("LGZ", "5", "a!")]
)
def test_identification_that_would_not_parse_is_refused(maker: str, char: str, ident: str) -> None:
    with pytest.raises(EncodeError):
        identification(maker, char, ident)


def test_readout_needs_at_least_300_baud() -> None:
    with pytest.raises(EncodeError):
        ModeCReadout(max_baud=200)


def test_a_data_message_read_as_8n1_hints_at_the_port_setting() -> None:
    with_parity = bytes(b | 0x80 if bin(b).count("1") % 2 else b for b in FRAME)  # even parity
    with pytest.raises(Iec62056Error, match="7E1"):
        parse_data_block(with_parity)


def test_readout_paired_in_memory_with_a_meter_built_from_the_meter_side_functions() -> None:
    """Both ends of a mode C readout, each speaking only through bytes."""
    meters = {"1111": ["1.8.0(000001.000*kWh)"], "2222": ["1.8.0(000002.000*kWh)"]}

    def meter(address: str, incoming: bytes) -> bytes:
        if incoming.startswith(b"/"):
            wanted = parse_sign_on(incoming)
            return identification("MLK", "5", address) if wanted in ("", address) else b""
        option = parse_ack_option(incoming)
        assert option.mode == "0" and option.baud == 9600
        return data_message(meters[address])

    for address in meters:
        readout = ModeCReadout(address)
        request = readout.start()
        # the other meter on the line stays silent: it was not addressed
        assert meter("1111" if address == "2222" else "2222", request) == b""
        readout.receive_data(meter(address, request))
        event = readout.next_event()
        assert isinstance(event, Identified) and event.identification.ident == address
        readout.receive_data(meter(address, event.reply))
        data = readout.next_event()
        assert isinstance(data, DataReceived)
        (value,) = readings(data.block.datasets).values
        assert value.value == Decimal(address[0]) and value.unit == "kWh"

"""IEC 62056-21: sign-on, identification, option select, mode C readout, data sets."""

from __future__ import annotations

import pytest

from protocols.errors import DecodeError, EncodeError
from protocols.iec62056_21 import (
    Iec62056Error,
    ack_option,
    baud_char_for,
    bcc,
    break_message,
    parse_identification,
    sign_on,
)


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

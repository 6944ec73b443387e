"""IEC 62056-21 (ex IEC 61107) direct local data exchange, sans-IO: mode C readout and the
mode E (HDLC) start.

The messages (IEC 62056-21:2002, clause 6.3), all 7-bit ASCII, sent at 300 baud 7E1 until the
baud rate is switched:

* request (sign-on): ``/ ? [device address] ! CR LF``; the address (up to 32 characters, digits,
  letters, space) picks one meter of several on one line, an empty address asks any meter;
* identification: ``/ X X X Z [\\W] Ident CR LF``: three manufacturer characters (the third
  in lower case means a 20 ms minimum reaction time), the baud rate character Z (mode C and E:
  ``0``..``6`` = 300..19200 baud; mode B: ``A``..``F``; anything else is mode A, 300 baud),
  an optional escape sequence ``\\W`` (``\\2``: binary mode HDLC available, i.e. mode E; the
  "enhanced identification character"), and the identification of up to 16 characters;
* acknowledgement / option select: ``ACK V Z Y CR LF``: V the protocol control character
  (``0`` normal, ``1`` secondary, ``2`` HDLC / mode E), Z the baud rate character, Y the mode
  control character (``0`` data readout, ``1`` programming mode, ``2`` binary mode HDLC);
* data message (readout): ``STX data-block ! CR LF ETX BCC``; the block check character is
  the XOR of every byte after STX up to and including ETX.

The readout itself is :class:`ModeCReadout`, a state machine in the style of h11: the driver
writes the bytes it is told to, switches the baud rate when told to, feeds what it reads to
``receive_data`` and takes events from ``next_event``. Timing (reaction times, the wait before
switching the baud rate) stays with the driver.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import DecodeError, EncodeError

__all__ = [
    "ACK",
    "BAUD_RATES",
    "ETX",
    "MODE_B_BAUD_RATES",
    "NAK",
    "SOH",
    "STX",
    "Identification",
    "Iec62056Error",
    "ack_option",
    "baud_char_for",
    "bcc",
    "break_message",
    "parse_identification",
    "sign_on",
]

SOH = 0x01
STX = 0x02
ETX = 0x03
ACK = 0x06
NAK = 0x15
CRLF = b"\r\n"

#: Baud rate characters of modes C and E (mode E uses the mode C table).
BAUD_RATES: dict[str, int] = {
    "0": 300,
    "1": 600,
    "2": 1200,
    "3": 2400,
    "4": 4800,
    "5": 9600,
    "6": 19200,
}
#: Mode B: the meter switches by itself to this rate after its identification (no ACK).
MODE_B_BAUD_RATES: dict[str, int] = {
    "A": 600,
    "B": 1200,
    "C": 2400,
    "D": 4800,
    "E": 9600,
    "F": 19200,
}
MAX_ADDRESS = 32
#: The standard allows 16 identification characters; some meters send more, so we take 32.
MAX_IDENT = 32
PROTOCOL_NORMAL = "0"
PROTOCOL_HDLC = "2"
MODE_READOUT = "0"
MODE_PROGRAMMING = "1"
MODE_HDLC = "2"


class Iec62056Error(DecodeError):
    """Bytes from a meter that are not a valid IEC 62056-21 message; the message says where."""


_ADDRESS_RE = re.compile(r"^[0-9A-Za-z ]{0,32}$")


def sign_on(address: str = "") -> bytes:
    """The request message ``/?{address}!\\r\\n`` (send at 300 baud 7E1)."""
    if not _ADDRESS_RE.match(address):
        raise EncodeError(
            f"IEC 62056-21 device address {address!r}: at most {MAX_ADDRESS} characters "
            "of 0-9 A-Z a-z and space"
        )
    return b"/?" + address.encode("ascii") + b"!" + CRLF


def break_message() -> bytes:
    """``SOH B 0 ETX BCC``: ends a session (the meter goes back to 300 baud, idle)."""
    body = b"B0\x03"
    return bytes((SOH,)) + body + bytes((bcc(body),))


def ack_option(protocol: str, baud_char: str, mode: str) -> bytes:
    """The acknowledgement / option select message ``ACK V Z Y CR LF``.

    ``ack_option("0", "5", "0")``: data readout at 9600 baud (mode C);
    ``ack_option("2", "5", "2")``: switch to HDLC at 9600 baud (mode E)."""
    if protocol not in ("0", "1", "2"):
        raise EncodeError(f"protocol control character {protocol!r}: one of 0, 1, 2")
    if baud_char not in BAUD_RATES:
        raise EncodeError(f"baud rate character {baud_char!r}: one of 0..6 (300..19200 baud)")
    if mode not in ("0", "1", "2"):
        raise EncodeError(f"mode control character {mode!r}: 0 readout, 1 programming, 2 HDLC")
    return bytes((ACK,)) + (protocol + baud_char + mode).encode("ascii") + CRLF


def baud_char_for(baud: int) -> str:
    """The mode C/E baud rate character for a rate (``9600`` -> ``"5"``)."""
    for char, rate in BAUD_RATES.items():
        if rate == baud:
            return char
    raise EncodeError(f"{baud} baud has no IEC 62056-21 mode C character (300..19200)")


def bcc(data: bytes) -> int:
    """Block check character: XOR of the bytes (give it those after STX/SOH through ETX)."""
    out = 0
    for byte in data:
        out ^= byte
    return out


# -- identification ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Identification:
    """A meter's identification message ``/XXXZ[\\W]Ident``."""

    manufacturer: str
    baud_char: str
    ident: str
    escapes: str = ""  # the characters W of the escape sequences ``\\W``, in order

    @property
    def mode_e(self) -> bool:
        """``\\2`` present: the meter offers binary mode HDLC (mode E)."""
        return "2" in self.escapes

    @property
    def protocol_mode(self) -> str:
        """``"C"`` (or ``"E"`` with ``\\2``) for 0..6, ``"B"`` for A..F, else ``"A"``."""
        if self.baud_char in BAUD_RATES:
            return "E" if self.mode_e else "C"
        if self.baud_char in MODE_B_BAUD_RATES:
            return "B"
        return "A"

    @property
    def baud(self) -> int:
        """The highest rate the meter offers (mode A: 300, it does not switch)."""
        return BAUD_RATES.get(self.baud_char) or MODE_B_BAUD_RATES.get(self.baud_char) or 300

    @property
    def short_reaction(self) -> bool:
        """Third manufacturer character in lower case: 20 ms minimum reaction time."""
        return self.manufacturer[2].islower()


_IDENT_RE = re.compile(rb"^/([A-Za-z]{3})([\x21-\x7e])((?:\\[\x21-\x7e])*)([\x20-\x7e]*)\r\n$")


def parse_identification(line: bytes) -> Identification:
    """Parse ``/XXXZ[\\W]Ident\\r\\n``; anything else raises :class:`Iec62056Error`."""
    _check_seven_bit(line, "identification")
    match = _IDENT_RE.match(line)
    if match is None:
        raise Iec62056Error(
            f"identification {line[:60]!r}: expected /XXXZ[\\W]Ident CR LF "
            "(3 manufacturer letters, a baud rate character, the identification)"
        )
    maker, baud_char, escapes, ident = (g.decode("ascii") for g in match.groups())
    if baud_char in "/!\\":
        raise Iec62056Error(f"identification {line[:60]!r}: baud rate character {baud_char!r}")
    if any(c in "/!" for c in ident):
        raise Iec62056Error(f"identification {line[:60]!r}: '/' or '!' in the identification")
    if len(ident) > MAX_IDENT:
        raise Iec62056Error(
            f"identification of {len(ident)} characters (at most {MAX_IDENT}): {line[:60]!r}"
        )
    return Identification(maker, baud_char, ident, escapes[1::2])


def _check_seven_bit(data: bytes, what: str) -> None:
    for offset, byte in enumerate(data):
        if byte > 0x7F:
            raise Iec62056Error(
                f"{what}, offset {offset}: byte {byte:#04x} has the 8th bit set "
                "(is the port set to 7E1?)"
            )

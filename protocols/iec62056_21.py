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
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from enum import Enum

from .errors import DecodeError, EncodeError
from .obis import Obis, ObisError, quantity_for
from .units import UNITS

__all__ = [
    "ACK",
    "BAUD_RATES",
    "ETX",
    "MODE_B_BAUD_RATES",
    "NAK",
    "NEED_DATA",
    "SOH",
    "STX",
    "TRANSITIONS",
    "DataBlock",
    "DataReceived",
    "DataSet",
    "Identification",
    "Identified",
    "Iec62056Error",
    "ModeCReadout",
    "OptionSelect",
    "Reading",
    "Readings",
    "ReadoutState",
    "ack_option",
    "baud_char_for",
    "bcc",
    "break_message",
    "data_message",
    "identification",
    "meter_unit",
    "obis_of",
    "parse_ack_option",
    "parse_data_block",
    "parse_data_lines",
    "parse_identification",
    "parse_sign_on",
    "readings",
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


# -- the meter's side (simulators) ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OptionSelect:
    """A parsed ``ACK V Z Y CR LF``."""

    protocol: str
    baud_char: str
    mode: str

    @property
    def baud(self) -> int:
        return BAUD_RATES[self.baud_char]


def identification(manufacturer: str, baud_char: str, ident: str, mode_e: bool = False) -> bytes:
    """The identification message a meter sends (``/XXXZ[\\2]Ident CR LF``)."""
    escape = "\\2" if mode_e else ""
    line = f"/{manufacturer}{baud_char}{escape}{ident}\r\n"
    try:
        parsed = parse_identification(line.encode("ascii"))
    except (Iec62056Error, UnicodeEncodeError) as exc:
        raise EncodeError(f"cannot build an identification from {line!r}: {exc}") from None
    if (parsed.manufacturer, parsed.baud_char, parsed.ident) != (manufacturer, baud_char, ident):
        raise EncodeError(f"identification {line!r} does not parse back as given")
    return line.encode("ascii")


_SIGN_ON_RE = re.compile(rb"^/\?([0-9A-Za-z ]{0,32})!\r\n$")
_OPTION_RE = re.compile(rb"^\x06([012])([0-6])([012])\r\n$")


def parse_sign_on(line: bytes) -> str:
    """The device address of a request message ``/?[address]!\\r\\n`` ("" = any meter)."""
    match = _SIGN_ON_RE.match(line)
    if match is None:
        raise Iec62056Error(f"request message {line[:48]!r}: expected /?[address]! CR LF")
    return match.group(1).decode("ascii")


def parse_ack_option(line: bytes) -> OptionSelect:
    """An acknowledgement / option select message ``ACK V Z Y CR LF``."""
    match = _OPTION_RE.match(line)
    if match is None:
        raise Iec62056Error(
            f"option select {line[:16]!r}: expected ACK, V 0-2, Z 0-6, Y 0-2, CR LF"
        )
    return OptionSelect(*(g.decode("ascii") for g in match.groups()))


# -- data message ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DataSet:
    """One data set ``address(value*unit)``; further ``(...)`` groups of the same address
    (a max demand's time stamp, a profile's entries) follow in ``extra``."""

    address: str
    value: str
    unit: str
    line: int  # 1-based line of the data block
    extra: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DataBlock:
    """A checked data message: its data sets, in order."""

    datasets: tuple[DataSet, ...]
    text: str  # the data block between STX and the closing ``!``


def data_message(lines: list[str] | tuple[str, ...]) -> bytes:
    """``STX lines ! CR LF ETX BCC`` (for simulators and tests); each line ends with CR LF."""
    body = "".join(line + "\r\n" for line in lines) + "!\r\n"
    try:
        raw = body.encode("ascii") + bytes((ETX,))
    except UnicodeEncodeError:
        raise EncodeError("IEC 62056-21 data lines must be ASCII") from None
    if any(b < 0x20 and b not in (0x0D, 0x0A) for b in raw[:-1]):
        raise EncodeError("IEC 62056-21 data lines must not hold control characters")
    return bytes((STX,)) + raw + bytes((bcc(raw),))


def parse_data_block(frame: bytes) -> DataBlock:
    """Check and parse a whole data message ``STX ... ! CR LF ETX BCC``."""
    _check_seven_bit(frame, "data message")  # first: a port read as 8N1 is named as such
    if len(frame) < 6 or frame[0] != STX:
        raise Iec62056Error(f"data message, offset 0: expected STX, got {frame[:8]!r}")
    end = frame.find(bytes((ETX,)), 1)
    if end < 0:
        raise Iec62056Error(f"data message of {len(frame)} bytes has no ETX")
    if end + 2 != len(frame):
        raise Iec62056Error(
            f"data message, offset {end + 1}: {len(frame) - end - 1} bytes after ETX "
            "(expected exactly the BCC)"
        )
    expected = bcc(frame[1 : end + 1])
    if frame[end + 1] != expected:
        raise Iec62056Error(
            f"data message, offset {end + 1}: BCC {frame[end + 1]:#04x}, computed {expected:#04x}"
        )
    body = frame[1:end]
    if not body.endswith(b"!\r\n"):
        raise Iec62056Error(
            f"data message, offset {end}: the data block must end with '!' CR LF before ETX"
        )
    text = body[:-3].decode("ascii")
    return DataBlock(tuple(parse_data_lines(text)), text)


def parse_data_lines(text: str) -> list[DataSet]:
    """The data sets of a data block's lines (CR LF or LF separated)."""
    out: list[DataSet] = []
    for number, line in enumerate(text.split("\n"), 1):
        out.extend(_parse_line(line.rstrip("\r"), number))
    return out


_FORBIDDEN_IN_VALUE = "()/!"


def _parse_line(line: str, number: int) -> list[DataSet]:
    sets: list[DataSet] = []
    pos = 0
    while pos < len(line):
        open_at = line.find("(", pos)
        if open_at < 0:
            raise Iec62056Error(
                f"data block line {number}, column {pos + 1}: {line[pos : pos + 20]!r} "
                "is not followed by '(' (expected address(value*unit))"
            )
        address = line[pos:open_at]
        if any(c in "()/!" for c in address) or len(address) > 16:
            raise Iec62056Error(
                f"data block line {number}, column {pos + 1}: bad address {address!r}"
            )
        groups: list[str] = []
        pos = open_at
        while pos < len(line) and line[pos] == "(":
            close = line.find(")", pos + 1)
            if close < 0:
                raise Iec62056Error(f"data block line {number}, column {pos + 1}: '(' without ')'")
            inner = line[pos + 1 : close]
            if any(c in _FORBIDDEN_IN_VALUE for c in inner):
                raise Iec62056Error(
                    f"data block line {number}, column {pos + 2}: bad character in {inner!r}"
                )
            groups.append(inner)
            pos = close + 1
        value, _, unit = groups[0].partition("*")
        if "*" in unit or len(value) > 128 or len(unit) > 16:
            raise Iec62056Error(
                f"data block line {number}: bad value or unit in {address}({groups[0]})"
            )
        if not address and sets:
            # a data set without address continues the previous one
            prev = sets.pop()
            sets.append(
                DataSet(prev.address, prev.value, prev.unit, prev.line, (*prev.extra, *groups))
            )
            continue
        sets.append(DataSet(address, value, unit, number, tuple(groups[1:])))
    return sets


# -- data sets -> readings -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """A numeric data set as a quantity: exact value, meterlink unit symbol."""

    obis: Obis
    value: Decimal
    unit: str
    line: int


@dataclass(frozen=True, slots=True)
class Readings:
    values: tuple[Reading, ...]
    problems: tuple[str, ...]  # data sets that look like quantities but could not be taken


#: Letters IEC 62056-21 meters use in value groups C/D (IEC 62056-61: C=96 general service,
#: F=97 error registers, L=98 lists, P=99 profiles).
_LETTER_GROUPS = {"C": "96", "F": "97", "L": "98", "P": "99"}
_UNIT_BY_LOWER = {symbol.lower(): symbol for symbol in UNITS if symbol}
_UNIT_ALIASES = {"m^3": "m3"}
_NUMBER_RE = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)$")


def obis_of(address: str) -> Obis:
    """The OBIS code of a data set address: ``1-0:1.8.0*255``, ``1.8.0``, ``1.8.0*01``,
    ``C.1.0`` (-> 0-0:96.1.0), ``F.F`` (-> 0-0:97.97.0). Short forms are electricity
    (A=1, B=0) except the abstract groups 96..99 (A=0)."""
    text = address.strip()
    groups = re.split(r"([-:.*&])", text)
    groups = [_LETTER_GROUPS.get(g, g) for g in groups]
    text = "".join(groups)
    if ":" not in text and text.count(".") == 1 and "*" not in text and "&" not in text:
        text += ".0"
    try:
        code = Obis.parse(text)
    except ObisError as exc:
        raise Iec62056Error(f"address {address!r} is not an OBIS code: {exc}") from None
    if ":" not in text and code.c >= 96:
        code = Obis(0, 0, code.c, code.d, code.e, code.f)
    return code


def meter_unit(unit: str) -> str:
    """A meter's unit text as a meterlink unit symbol (``KWH`` -> ``kWh``)."""
    key = unit.strip().lower()
    symbol = _UNIT_ALIASES.get(key) or _UNIT_BY_LOWER.get(key)
    if symbol is None:
        raise Iec62056Error(f"unit {unit!r} is not one meterlink knows")
    return symbol


def readings(datasets: tuple[DataSet, ...] | list[DataSet]) -> Readings:
    """Numeric data sets with a unit, as readings (exact Decimal, meterlink units).

    Data sets that are not quantities (identifiers, dates, error registers without a unit)
    are left out silently; a data set of a known quantity that cannot be taken (no unit,
    unknown unit, not a number) is a problem, named by line and address."""
    values: list[Reading] = []
    problems: list[str] = []
    for ds in datasets:
        try:
            code = obis_of(ds.address)
        except Iec62056Error:
            continue  # a manufacturer-specific address: not a quantity
        known = quantity_for(code) is not None
        numeric = bool(_NUMBER_RE.match(ds.value.strip()))
        if not ds.unit:
            if known:
                problems.append(f"line {ds.line}: {ds.address}({ds.value}) has no unit")
            continue
        if not numeric:
            problems.append(f"line {ds.line}: {ds.address} value {ds.value!r} is not a number")
            continue
        try:
            unit = meter_unit(ds.unit)
            value = Decimal(ds.value.strip())
        except (Iec62056Error, InvalidOperation) as exc:
            problems.append(f"line {ds.line}: {ds.address}: {exc}")
            continue
        values.append(Reading(code, value, unit, ds.line))
    return Readings(tuple(values), tuple(problems))


# -- the readout state machine -----------------------------------------------------------------


class ReadoutState(Enum):
    IDLE = "idle"
    AWAITING_IDENTIFICATION = "awaiting identification"
    AWAITING_DATA = "awaiting data"
    DONE = "done"
    ERROR = "error"


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@dataclass(frozen=True, slots=True)
class Identified:
    """The meter identified itself: write ``reply`` (may be empty: modes A and B) at the
    current rate, let it drain, then set the port to ``baud`` (7E1)."""

    identification: Identification
    reply: bytes
    baud: int


@dataclass(frozen=True, slots=True)
class DataReceived:
    block: DataBlock
    raw: bytes = field(repr=False)


#: (state, event type) -> next state: every transition of the readout lives here.
TRANSITIONS: dict[tuple[ReadoutState, type], ReadoutState] = {
    (ReadoutState.AWAITING_IDENTIFICATION, Identified): ReadoutState.AWAITING_DATA,
    (ReadoutState.AWAITING_DATA, DataReceived): ReadoutState.DONE,
}


class ModeCReadout:
    """One mode C data readout, sans-IO.

    ``start()`` gives the sign-on to write at 300 baud 7E1; then ``receive_data`` /
    ``next_event`` until :class:`DataReceived`. ``max_baud`` caps the rate asked for
    (the meter's offer otherwise). An echo of our own request (half-duplex optical heads,
    RS-485) is skipped. Errors raise :class:`Iec62056Error` and stick (state ``ERROR``).
    The buffer is bounded by ``max_size`` bytes."""

    def __init__(self, address: str = "", max_baud: int = 19200, max_size: int = 262_144):
        if max_baud < 300:
            raise EncodeError(f"max_baud {max_baud}: IEC 62056-21 starts at 300 baud")
        self.address = address
        self.max_baud = max_baud
        self.max_size = max_size
        self.state = ReadoutState.IDLE
        self.identification: Identification | None = None
        self._buffer = bytearray()
        self._request = sign_on(address)
        self._reply = b""

    def start(self) -> bytes:
        if self.state is not ReadoutState.IDLE:
            raise EncodeError(f"readout already started (state {self.state.value})")
        self.state = ReadoutState.AWAITING_IDENTIFICATION
        return self._request

    def receive_data(self, data: bytes) -> None:
        if self.state is ReadoutState.ERROR:
            raise Iec62056Error("readout failed before; start a new one")
        self._buffer += data

    def next_event(self) -> Identified | DataReceived | _NeedData:
        try:
            event = self._next_event()
        except Iec62056Error:
            self.state = ReadoutState.ERROR
            raise
        if event is not NEED_DATA:
            self.state = TRANSITIONS[(self.state, type(event))]
        return event

    def _next_event(self) -> Identified | DataReceived | _NeedData:
        if self.state is ReadoutState.ERROR:
            raise Iec62056Error("readout failed before; start a new one")
        if self.state is ReadoutState.AWAITING_IDENTIFICATION:
            return self._identification()
        if self.state is ReadoutState.AWAITING_DATA:
            return self._data()
        if self.state is ReadoutState.IDLE:
            raise EncodeError("call start() first")
        return NEED_DATA

    def _too_big(self, what: str) -> None:
        if len(self._buffer) > self.max_size:
            raise Iec62056Error(f"{what}: more than {self.max_size} bytes without an end")

    def _identification(self) -> Identified | _NeedData:
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                self._too_big("identification")
                return NEED_DATA
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            if line == self._request:
                continue  # our own request, echoed
            start = line.rfind(b"/")
            if start < 0:
                raise Iec62056Error(f"identification expected, got {line[:60]!r}")
            ident = parse_identification(line[start:])
            self.identification = ident
            reply, baud = self._option(ident)
            self._reply = reply
            return Identified(ident, reply, baud)

    def _option(self, ident: Identification) -> tuple[bytes, int]:
        mode = ident.protocol_mode
        if mode in ("C", "E"):
            offer = min(ident.baud, self.max_baud)
            char = max((c for c, rate in BAUD_RATES.items() if rate <= offer), key=BAUD_RATES.get)
            return ack_option(PROTOCOL_NORMAL, char, MODE_READOUT), BAUD_RATES[char]
        if mode == "B":
            return b"", ident.baud  # the meter switches by itself
        return b"", 300

    def _data(self) -> DataReceived | _NeedData:
        start = self._buffer.find(bytes((STX,)))
        preamble = bytes(self._buffer if start < 0 else self._buffer[:start])
        # before STX only the echo of our own option select may come
        if not self._reply.startswith(preamble):
            raise Iec62056Error(f"data message expected, got {preamble[:60]!r} before STX")
        if start < 0:
            return NEED_DATA
        del self._buffer[:start]
        end = self._buffer.find(bytes((ETX,)))
        if end < 0 or len(self._buffer) < end + 2:
            self._too_big("data message")
            return NEED_DATA
        raw = bytes(self._buffer[: end + 2])
        del self._buffer[: end + 2]
        return DataReceived(parse_data_block(raw), raw)

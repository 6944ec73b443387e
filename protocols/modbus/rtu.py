"""Modbus RTU (serial line) framing for the client side and the bus timing, sans-IO.

(The RTU sibling of ``mbap.py``: the agent's serial driver owns the port, the timeouts and
the bus lock; the simulator uses the same framing for its server side.)

An RTU frame is ``unit | PDU | CRC``: the unit (slave) address 1..247 (0 is broadcast), the
PDU (function code and data, at most 253 bytes), and CRC-16/MODBUS (reflected polynomial
0xA001, initial value 0xFFFF, no final XOR) over unit and PDU, sent low byte first.
Frames are delimited by silence: at least 3.5 character times between frames, at most 1.5
character times between the characters of one frame; above 19200 baud the spec fixes these
at 1.75 ms and 0.75 ms (Modbus over Serial Line V1.02, 2.5.1.1).

Every answer is checked against the request that asked for it, like ``mbap.check_answer``:
the unit must be the one asked (on a shared RS-485 bus another meter's late answer must never
be taken for this one's), the function the one sent or it with 0x80 (exception response), the
byte count twice the registers asked for, the CRC right.

:class:`FrameReader` cuts a byte stream into frames by the function code's length rules
(what every RTU master does, since a UART read loses the gaps) and reports what is not a frame
as events; after a bad frame it discards until the driver reports the 3.5-character silence.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum

from ..errors import DecodeError, EncodeError
from .errors import ModbusError
from .mbap import ExceptionAnswer
from .plan import FUNCTION_HOLDING, FUNCTION_INPUT, MAX_READ_COUNT

__all__ = [
    "MAX_FRAME",
    "NEED_DATA",
    "BadFrame",
    "BusTime",
    "ExceptionAnswer",
    "Frame",
    "FrameReader",
    "ReadRequestFrame",
    "Role",
    "RtuError",
    "SerialLine",
    "answer",
    "check_answer",
    "crc16_modbus",
    "exception_answer",
    "parse_read_request",
    "read_request",
    "response_size",
    "with_crc",
]

MAX_FRAME = 256  # unit (1) + PDU (253) + CRC (2)
MAX_UNIT = 247
_READ_FUNCTIONS = (FUNCTION_HOLDING, FUNCTION_INPUT)


class RtuError(ModbusError, DecodeError):
    """An RTU frame that is not a well-formed answer to the request it should answer."""


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc_table()


def crc16_modbus(data: bytes) -> int:
    """CRC-16/MODBUS; on the wire low byte first (``crc.to_bytes(2, "little")``).

    ``crc16_modbus(b"123456789") == 0x4B37``; ``01 03 00 00 00 0A`` -> ``C5 CD`` on the wire."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc


def with_crc(frame: bytes) -> bytes:
    """``unit | PDU`` with its CRC appended (low byte first)."""
    return frame + crc16_modbus(frame).to_bytes(2, "little")


def read_request(unit: int, function: int, address: int, count: int) -> bytes:
    """An FC03/FC04 read request frame (8 bytes)."""
    if not 1 <= unit <= MAX_UNIT:
        raise EncodeError(f"unit {unit}: a read goes to one unit 1..{MAX_UNIT}")
    if function not in _READ_FUNCTIONS:
        raise EncodeError(f"function {function}: reads are 3 (holding) or 4 (input)")
    if not 1 <= count <= MAX_READ_COUNT:
        raise EncodeError(f"count {count} not in 1..{MAX_READ_COUNT}")
    if address < 0 or address + count > 0x10000:
        raise EncodeError(f"registers {address}..{address + count - 1} beyond 0..65535")
    return with_crc(struct.pack(">BBHH", unit, function, address, count))


def response_size(function: int, count: int) -> int:
    """Bytes of a normal answer to a read of ``count`` registers (an exception is 5)."""
    del function  # FC03 and FC04 answers have the same layout
    return 5 + 2 * count


def check_answer(frame: bytes, unit: int, function: int, count: int) -> list[int]:
    """The registers of a well-formed answer to the read (unit, function, count) sent.

    Raises :class:`RtuError` for anything else and :class:`ExceptionAnswer` (shared with
    ``mbap``) for a well-formed exception response."""
    if len(frame) < 5:
        raise RtuError(f"RTU frame of {len(frame)} bytes (at least 5)")
    computed = crc16_modbus(frame[:-2])
    sent = int.from_bytes(frame[-2:], "little")
    if computed != sent:
        raise RtuError(
            f"RTU frame from unit {frame[0]}: CRC {sent:04X}, computed {computed:04X} "
            f"over {len(frame) - 2} bytes"
        )
    if frame[0] != unit:
        raise RtuError(f"answer from unit {frame[0]} to a request for unit {unit}")
    code = frame[1]
    if code == function | 0x80:
        if len(frame) != 5:
            raise RtuError(f"exception response of {len(frame)} bytes (expected 5)")
        raise ExceptionAnswer(frame[2])
    if code != function:
        raise RtuError(f"answer with function {code:#04x} to a request with {function:#04x}")
    if frame[2] != 2 * count or len(frame) != response_size(function, count):
        raise RtuError(
            f"byte count {frame[2]} in a frame of {len(frame)} bytes, expected {2 * count} "
            f"for {count} registers"
        )
    return list(struct.unpack(f">{count}H", frame[3:-2]))


# -- the server's side (simulators) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReadRequestFrame:
    unit: int
    function: int
    address: int
    count: int


def parse_read_request(frame: bytes) -> ReadRequestFrame:
    """An FC03/FC04 request frame (CRC checked); anything else raises :class:`RtuError`."""
    if len(frame) != 8:
        raise RtuError(f"read request of {len(frame)} bytes (expected 8)")
    if crc16_modbus(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
        raise RtuError(f"read request for unit {frame[0]}: CRC does not match")
    unit, function, address, count = struct.unpack(">BBHH", frame[:6])
    if function not in _READ_FUNCTIONS:
        raise RtuError(f"function {function:#04x} is not a register read")
    return ReadRequestFrame(unit, function, address, count)


def answer(unit: int, function: int, registers: list[int] | tuple[int, ...]) -> bytes:
    """A normal answer to a register read."""
    if not 1 <= len(registers) <= MAX_READ_COUNT or not 1 <= unit <= MAX_UNIT:
        raise EncodeError(f"answer of {len(registers)} registers from unit {unit}")
    try:
        body = struct.pack(f">BBB{len(registers)}H", unit, function, 2 * len(registers), *registers)
    except struct.error as exc:
        raise EncodeError(f"answer registers: {exc}") from None
    return with_crc(body)


def exception_answer(unit: int, function: int, code: int) -> bytes:
    """An exception response (function | 0x80, exception code)."""
    if not (1 <= unit <= MAX_UNIT and 1 <= function <= 0x7F and 1 <= code <= 0xFF):
        raise EncodeError(f"exception {code} for function {function} from unit {unit}")
    return with_crc(bytes((unit, function | 0x80, code)))


# -- the frame reader -----------------------------------------------------------------------


class Role(Enum):
    """Which frames a reader expects: answers (a master's reader) or requests (a server's)."""

    RESPONSES = "responses"
    REQUESTS = "requests"


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


@dataclass(frozen=True, slots=True)
class Frame:
    """A frame whose CRC checks out."""

    unit: int
    pdu: bytes  # function code and data
    raw: bytes = field(repr=False)

    @property
    def function(self) -> int:
        return self.pdu[0]


@dataclass(frozen=True, slots=True)
class BadFrame:
    """Bytes that are not a frame: ``crc`` (a frame-sized run whose CRC is wrong),
    ``truncated`` (silence in the middle of a frame), ``garbage`` (bytes that cannot start a
    frame, or that arrived while discarding after an error)."""

    reason: str
    message: str
    raw: bytes = field(repr=False)


def _frame_size(head: bytes, role: Role) -> int | None:
    """The size of the frame starting with ``head``; None: more bytes needed; 0: not a frame."""
    if len(head) < 2:
        return None
    unit, code = head[0], head[1]
    if unit > MAX_UNIT or (unit == 0 and role is Role.RESPONSES):  # 0: broadcast, no answer
        return 0
    if code & 0x80:
        return 5 if role is Role.RESPONSES and 1 <= code & 0x7F <= 0x7F else 0
    if role is Role.RESPONSES:
        if code in (1, 2, 3, 4):  # unit fc byte-count data crc
            if len(head) < 3:
                return None
            return 5 + head[2] if 1 <= head[2] <= 250 else 0
        if code in (5, 6, 15, 16):  # echo of address and value / quantity
            return 8
        return 0
    if code in (1, 2, 3, 4, 5, 6):
        return 8
    if code in (15, 16):  # unit fc address quantity byte-count data crc
        if len(head) < 7:
            return None
        return 9 + head[6] if 1 <= head[6] <= 246 else 0
    return 0


class FrameReader:
    """A byte stream -> :class:`Frame` / :class:`BadFrame` events, sans-IO.

    ``receive_data`` what the port gave, ``next_event`` until ``NEED_DATA``. Call
    ``silence()`` when the line has been quiet for 3.5 characters (the driver's read timeout
    of ``SerialLine.t3_5``): a partial frame is then ``truncated``, and after an error the
    reader stops discarding. ``counts`` tallies frames and errors for the driver's metrics."""

    def __init__(self, role: Role = Role.RESPONSES) -> None:
        self.role = role
        self.counts: dict[str, int] = {
            "frames": 0, "crc": 0, "truncated": 0, "garbage": 0, "echo": 0,
        }  # fmt: skip
        self._buffer = bytearray()
        self._discarding = False
        self._echo = b""

    def expect_echo(self, request: bytes) -> None:
        """The next bytes may be our own ``request`` echoed (RS-485 adapters that hear
        themselves, half-duplex optical heads): skip them if they come."""
        self._echo = request

    def receive_data(self, data: bytes) -> None:
        self._buffer += data

    def silence(self) -> BadFrame | None:
        """The line went quiet: a partial frame is reported (and dropped)."""
        self._discarding = False
        self._echo = b""
        if not self._buffer:
            return None
        raw = bytes(self._buffer)
        self._buffer.clear()
        self.counts["truncated"] += 1
        return BadFrame("truncated", f"silence after {len(raw)} bytes of a frame", raw)

    def _bad(self, reason: str, message: str, size: int) -> BadFrame:
        raw = bytes(self._buffer[:size])
        del self._buffer[:size]
        self.counts[reason] += 1
        self._discarding = True
        return BadFrame(reason, message, raw)

    def next_event(self) -> Frame | BadFrame | _NeedData:
        if not self._buffer:
            return NEED_DATA
        if self._echo:
            head = bytes(self._buffer[: len(self._echo)])
            if self._echo.startswith(head) and len(head) < len(self._echo):
                return NEED_DATA
            if head == self._echo:
                del self._buffer[: len(head)]
                self.counts["echo"] += 1
            self._echo = b""
            if not self._buffer:
                return NEED_DATA
        if self._discarding:
            return self._bad(
                "garbage",
                f"{len(self._buffer)} bytes before the silence that ends a bad frame",
                len(self._buffer),
            )
        size = _frame_size(bytes(self._buffer[:7]), self.role)
        if size is None:
            return NEED_DATA
        if size == 0:
            head = bytes(self._buffer[:3]).hex(" ")
            return self._bad(
                "garbage",
                f"{head}: cannot start a {self.role.value} frame; discarding until silence",
                len(self._buffer),
            )
        if len(self._buffer) < size:
            return NEED_DATA
        raw = bytes(self._buffer[:size])
        computed = crc16_modbus(raw[:-2])
        sent = int.from_bytes(raw[-2:], "little")
        if computed != sent:
            return self._bad(
                "crc",
                f"frame of {size} bytes from unit {raw[0]}: CRC {sent:04X}, "
                f"computed {computed:04X}",
                size,
            )
        del self._buffer[:size]
        self.counts["frames"] += 1
        return Frame(raw[0], raw[1:-2], raw)


# -- timing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SerialLine:
    """A serial setting, for the timing of characters and frames.

    Modbus RTU is 8 data bits with even parity and 1 stop bit by default (11 bits per
    character); without parity the spec asks for 2 stop bits, many devices use 1."""

    baud: int
    data_bits: int = 8
    parity: str = "E"  # "N", "E" or "O"
    stop_bits: int = 1

    def __post_init__(self) -> None:
        if self.baud <= 0:
            raise EncodeError(f"baud rate {self.baud} must be positive")
        if self.parity not in ("N", "E", "O"):
            raise EncodeError(f"parity {self.parity!r}: N, E or O")
        if self.stop_bits not in (1, 2):
            raise EncodeError(f"stop bits {self.stop_bits}: 1 or 2")
        if self.data_bits not in (7, 8):
            raise EncodeError(f"data bits {self.data_bits}: 7 or 8")

    @property
    def bits_per_char(self) -> int:
        return 1 + self.data_bits + (self.parity != "N") + self.stop_bits

    @property
    def char_time(self) -> float:
        """Seconds one character takes on the line."""
        return self.bits_per_char / self.baud

    @property
    def t3_5(self) -> float:
        """Minimum silence between frames, seconds (1.75 ms above 19200 baud)."""
        return 0.00175 if self.baud > 19200 else 3.5 * self.char_time

    @property
    def t1_5(self) -> float:
        """Maximum gap between characters of one frame, seconds (0.75 ms above 19200 baud)."""
        return 0.00075 if self.baud > 19200 else 1.5 * self.char_time

    def frame_time(self, size: int) -> float:
        return size * self.char_time

    def pair(self, request_size: int, answer_size: int, turnaround: float = 0.0) -> BusTime:
        """Bus time of a request/answer pair of these sizes (bytes)."""
        return BusTime(
            request=self.frame_time(request_size),
            response=self.frame_time(answer_size),
            silence=2 * self.t3_5,
            turnaround=turnaround,
        )

    def transaction(self, count: int, turnaround: float = 0.0) -> BusTime:
        """Bus time of one register read (request, silence, answer, silence)."""
        return self.pair(8, response_size(FUNCTION_HOLDING, count), turnaround)


@dataclass(frozen=True, slots=True)
class BusTime:
    """Seconds a request/response pair holds the bus, by part."""

    request: float
    response: float
    silence: float  # the 3.5-character gap after each frame
    turnaround: float = 0.0  # the device's own reaction time (measured, or 0)

    @property
    def total(self) -> float:
        return self.request + self.response + self.silence + self.turnaround

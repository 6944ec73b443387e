"""Modbus TCP (MBAP) framing for the client side, sans-IO: build a read request, check an answer.

(In ``protocols/`` because it is a codec: bytes in, a checked answer or an error out; the
agent's driver owns the socket, the timeouts and the reconnects.)

The agent does its own framing instead of using pymodbus' client so that every answer is
checked against the request that asked for it before a single value is taken from it:

* the transaction id must be the one sent (a late or stray frame is never taken for the
  answer to the next request, which may be another meter's);
* the protocol id must be 0 and the length field 2..254 (a Modbus PDU is at most 253 bytes);
* the unit id must be the one asked (a gateway answering with another unit's data is
  rejected: those values would be recorded under the wrong meter);
* the function code must be the one sent, or it with 0x80 (an exception response);
* a register answer's byte count must be twice the registers asked for, and the frame must
  end exactly there.

Any violation raises :class:`FrameError`; the caller then drops the connection, because the
byte stream can no longer be trusted to be in step with the requests.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .errors import ModbusError

__all__ = [
    "HEADER_SIZE",
    "MAX_LENGTH",
    "ExceptionAnswer",
    "FrameError",
    "Header",
    "check_answer",
    "parse_header",
    "read_request",
]

HEADER_SIZE = 7  # transaction id (2), protocol id (2), length (2), unit id (1)
MAX_LENGTH = 254  # unit id + PDU of at most 253 bytes


class FrameError(ModbusError, ValueError):
    """An answer that is not a well-formed reply to the request it should answer."""


@dataclass(frozen=True, slots=True)
class Header:
    transaction_id: int
    protocol_id: int
    length: int  # bytes after the length field: unit id + PDU
    unit: int

    @property
    def pdu_size(self) -> int:
        return self.length - 1


def read_request(transaction_id: int, unit: int, function: int, address: int, count: int) -> bytes:
    """An FC03/FC04 read request frame."""
    return struct.pack(">HHHBBHH", transaction_id, 0, 6, unit, function, address, count)


def parse_header(data: bytes) -> Header:
    """The 7-byte MBAP header; a protocol id other than 0 or an impossible length is an error."""
    if len(data) != HEADER_SIZE:
        raise FrameError(f"MBAP header of {len(data)} bytes")
    tid, pid, length, unit = struct.unpack(">HHHB", data)
    if pid != 0:
        raise FrameError(f"protocol id {pid} (not Modbus)")
    if not 2 <= length <= MAX_LENGTH:
        raise FrameError(f"MBAP length {length} out of range 2..{MAX_LENGTH}")
    return Header(tid, pid, length, unit)


class ExceptionAnswer(Exception):
    """A well-formed exception response (function | 0x80, code)."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(code)


def check_answer(
    header: Header, pdu: bytes, transaction_id: int, unit: int, function: int, count: int
) -> list[int]:
    """The registers of a well-formed answer to the read (tid, unit, function, count) sent.

    Raises :class:`FrameError` for anything else and :class:`ExceptionAnswer` for a
    well-formed exception response."""
    if header.transaction_id != transaction_id:
        raise FrameError(
            f"answer carries transaction id {header.transaction_id}, expected {transaction_id}"
        )
    if header.unit != unit:
        raise FrameError(f"answer from unit {header.unit} to a request for unit {unit}")
    if len(pdu) != header.pdu_size or not pdu:
        raise FrameError(f"PDU of {len(pdu)} bytes, MBAP length says {header.pdu_size}")
    code = pdu[0]
    if code == function | 0x80:
        if len(pdu) != 2:
            raise FrameError(f"exception response of {len(pdu)} bytes")
        raise ExceptionAnswer(pdu[1])
    if code != function:
        raise FrameError(f"answer with function {code:#04x} to a request with {function:#04x}")
    if len(pdu) < 2 or pdu[1] != 2 * count or len(pdu) != 2 + 2 * count:
        got = pdu[1] if len(pdu) > 1 else None
        raise FrameError(
            f"byte count {got} in a PDU of {len(pdu)} bytes, expected {2 * count} "
            f"for {count} registers"
        )
    return list(struct.unpack(f">{count}H", pdu[2:]))

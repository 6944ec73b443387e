"""Unsigned LEB128 varints and zigzag signed integers, as used by the record encoding."""

from __future__ import annotations

from .errors import DecodeError, EncodeError

__all__ = ["MAX_VARINT_BYTES", "Reader", "put_svarint", "put_uvarint"]

MAX_VARINT_BYTES = 10  # enough for 64 bits
_U64 = 1 << 64


def put_uvarint(out: bytearray, value: int) -> None:
    if not 0 <= value < _U64:
        raise EncodeError(f"unsigned varint out of range 0..2**64-1: {value}")
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def put_svarint(out: bytearray, value: int) -> None:
    if not -(1 << 63) <= value < (1 << 63):
        raise EncodeError(f"signed varint out of range for 64 bits: {value}")
    put_uvarint(out, (value << 1) ^ (value >> 63))


class Reader:
    """A cursor over bytes that raises DecodeError naming ``what`` is being read."""

    __slots__ = ("data", "pos", "where")

    def __init__(self, data: bytes, where: str = "") -> None:
        self.data = data
        self.pos = 0
        self.where = where

    def fail(self, message: str) -> DecodeError:
        prefix = f"{self.where}: " if self.where else ""
        return DecodeError(f"{prefix}{message} at byte {self.pos}")

    def uvarint(self, what: str) -> int:
        data, pos = self.data, self.pos
        result = shift = 0
        for count in range(MAX_VARINT_BYTES):
            if pos + count >= len(data):
                raise self.fail(f"truncated {what}")
            byte = data[pos + count]
            result |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if count and byte == 0:
                    raise self.fail(f"non-minimal varint in {what}")
                if result >= _U64:
                    raise self.fail(f"{what} exceeds 64 bits")
                self.pos = pos + count + 1
                return result
            shift += 7
        raise self.fail(f"varint longer than {MAX_VARINT_BYTES} bytes in {what}")

    def svarint(self, what: str) -> int:
        raw = self.uvarint(what)
        return (raw >> 1) ^ -(raw & 1)

    def take(self, size: int, what: str) -> bytes:
        end = self.pos + size
        if end > len(self.data):
            have = len(self.data) - self.pos
            raise self.fail(f"truncated {what} (need {size} bytes, have {have})")
        chunk = self.data[self.pos : end]
        self.pos = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def i8(self, what: str) -> int:
        value = self.u8(what)
        return value - 256 if value >= 128 else value

    def text(self, what: str, max_size: int = 255) -> str:
        size = self.u8(f"{what} length")
        if size > max_size:
            raise self.fail(f"{what} longer than {max_size} bytes")
        raw = self.take(size, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not UTF-8") from None

    def at_end(self) -> bool:
        return self.pos == len(self.data)

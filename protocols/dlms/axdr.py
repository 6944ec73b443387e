"""A-XDR encoding of COSEM data (IEC 62056-6-2 / Green Book 9.5), exact integers only.

A value is a :class:`Data`: its type tag and its Python value. Integers stay ``int``,
strings ``bytes`` (octet-string) or ``str`` (visible-string), arrays and structures a
tuple of ``Data``. Floating-point types are carried as their raw bytes (``value`` is the
big-endian IEEE 754 encoding); nothing here turns them into a float.

Decoding is bounded: lengths are checked against the bytes left before anything is
allocated, nesting is limited to ``MAX_DEPTH``, and every failure is a
:class:`~protocols.dlms.DlmsDecodeError` naming the offset.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from . import DlmsDecodeError, DlmsEncodeError

__all__ = [
    "MAX_DEPTH",
    "Data",
    "Tag",
    "decode_data",
    "decode_length",
    "encode_data",
    "encode_length",
]

MAX_DEPTH = 16


class Tag(IntEnum):
    NULL = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOLEAN = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5
    DOUBLE_LONG_UNSIGNED = 6
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    BCD = 13
    INTEGER = 15
    LONG = 16
    UNSIGNED = 17
    LONG_UNSIGNED = 18
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27


#: fixed-size integer types: (size in bytes, signed)
_INTEGERS: dict[Tag, tuple[int, bool]] = {
    Tag.BOOLEAN: (1, False),
    Tag.DOUBLE_LONG: (4, True),
    Tag.DOUBLE_LONG_UNSIGNED: (4, False),
    Tag.BCD: (1, False),
    Tag.INTEGER: (1, True),
    Tag.LONG: (2, True),
    Tag.UNSIGNED: (1, False),
    Tag.LONG_UNSIGNED: (2, False),
    Tag.LONG64: (8, True),
    Tag.LONG64_UNSIGNED: (8, False),
    Tag.ENUM: (1, False),
}
#: fixed-size types carried as raw bytes
_FIXED_BYTES: dict[Tag, int] = {
    Tag.FLOAT32: 4,
    Tag.FLOAT64: 8,
    Tag.DATE_TIME: 12,
    Tag.DATE: 5,
    Tag.TIME: 4,
}

Value = None | bool | int | bytes | str | tuple["Data", ...]


@dataclass(frozen=True, slots=True)
class Data:
    tag: Tag
    value: Value = None

    # -- constructors for what a server sends --------------------------------------------
    @classmethod
    def structure(cls, *items: Data) -> Data:
        return cls(Tag.STRUCTURE, tuple(items))

    @classmethod
    def array(cls, *items: Data) -> Data:
        return cls(Tag.ARRAY, tuple(items))

    @classmethod
    def octet_string(cls, value: bytes) -> Data:
        return cls(Tag.OCTET_STRING, bytes(value))

    @classmethod
    def visible_string(cls, value: str) -> Data:
        return cls(Tag.VISIBLE_STRING, value)

    @property
    def items(self) -> tuple[Data, ...]:
        if self.tag not in (Tag.ARRAY, Tag.STRUCTURE) or not isinstance(self.value, tuple):
            raise DlmsDecodeError(f"expected an array or structure, got {self.tag.name}")
        return self.value

    @property
    def integer(self) -> int:
        if self.tag not in _INTEGERS or self.tag is Tag.BOOLEAN or type(self.value) is not int:
            raise DlmsDecodeError(f"expected an integer type, got {self.tag.name}")
        return self.value

    @property
    def octets(self) -> bytes:
        if self.tag is not Tag.OCTET_STRING and self.tag not in _FIXED_BYTES:
            raise DlmsDecodeError(f"expected an octet-string, got {self.tag.name}")
        assert isinstance(self.value, bytes)
        return self.value


# -- lengths -------------------------------------------------------------------------------
def encode_length(length: int) -> bytes:
    """A-XDR/BER length: one byte below 128, else 0x8N followed by N big-endian bytes."""
    if length < 0:
        raise DlmsEncodeError(f"negative length {length}")
    if length < 0x80:
        return bytes((length,))
    raw = length.to_bytes((length.bit_length() + 7) // 8, "big")
    if len(raw) > 4:
        raise DlmsEncodeError(f"length {length} too large")
    return bytes((0x80 | len(raw),)) + raw


def decode_length(data: bytes, offset: int) -> tuple[int, int]:
    """(length, offset after it)."""
    if offset >= len(data):
        raise DlmsDecodeError(f"A-XDR: length expected at offset {offset}, data ends")
    first = data[offset]
    offset += 1
    if first < 0x80:
        return first, offset
    size = first & 0x7F
    if size == 0 or size > 4:
        raise DlmsDecodeError(f"A-XDR: bad length prefix 0x{first:02X} at offset {offset - 1}")
    if offset + size > len(data):
        raise DlmsDecodeError(f"A-XDR: length at offset {offset - 1} runs past the data")
    return int.from_bytes(data[offset : offset + size], "big"), offset + size


# -- encoding ------------------------------------------------------------------------------
def encode_data(item: Data) -> bytes:
    out = bytearray()
    _encode(out, item, 0)
    return bytes(out)


def _encode(out: bytearray, item: Data, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise DlmsEncodeError(f"A-XDR: nesting deeper than {MAX_DEPTH}")
    tag, value = item.tag, item.value
    out.append(int(tag))
    if tag is Tag.NULL:
        return
    if tag in (Tag.ARRAY, Tag.STRUCTURE):
        if not isinstance(value, tuple):
            raise DlmsEncodeError(f"A-XDR {tag.name}: value must be a tuple of Data")
        out += encode_length(len(value))
        for element in value:
            _encode(out, element, depth + 1)
        return
    if tag is Tag.BOOLEAN:
        if not isinstance(value, bool):
            raise DlmsEncodeError(f"A-XDR boolean: expected bool, got {value!r}")
        out.append(0xFF if value else 0x00)
        return
    if tag in _INTEGERS:
        size, signed = _INTEGERS[tag]
        if type(value) is not int:
            raise DlmsEncodeError(f"A-XDR {tag.name}: expected int, got {value!r}")
        try:
            out += value.to_bytes(size, "big", signed=signed)
        except OverflowError:
            raise DlmsEncodeError(f"A-XDR {tag.name}: {value} out of range") from None
        return
    if tag in _FIXED_BYTES:
        if not isinstance(value, bytes) or len(value) != _FIXED_BYTES[tag]:
            raise DlmsEncodeError(f"A-XDR {tag.name}: expected {_FIXED_BYTES[tag]} bytes")
        out += value
        return
    if tag is Tag.OCTET_STRING:
        if not isinstance(value, bytes):
            raise DlmsEncodeError(f"A-XDR octet-string: expected bytes, got {value!r}")
        raw = value
    elif tag in (Tag.VISIBLE_STRING, Tag.UTF8_STRING):
        if not isinstance(value, str):
            raise DlmsEncodeError(f"A-XDR {tag.name}: expected str, got {value!r}")
        try:
            raw = value.encode("ascii" if tag is Tag.VISIBLE_STRING else "utf-8")
        except UnicodeEncodeError:
            raise DlmsEncodeError(f"A-XDR visible-string: not ASCII: {value!r}") from None
    elif tag is Tag.BIT_STRING:
        if not isinstance(value, bytes):
            raise DlmsEncodeError("A-XDR bit-string: expected bytes (8 bits per byte)")
        out += encode_length(len(value) * 8)
        out += value
        return
    else:  # pragma: no cover - every Tag is handled above
        raise DlmsEncodeError(f"A-XDR: cannot encode {tag.name}")
    out += encode_length(len(raw))
    out += raw


# -- decoding ------------------------------------------------------------------------------
def decode_data(data: bytes, offset: int = 0) -> tuple[Data, int]:
    """Decode one value at ``offset``; returns it and the offset after it."""
    return _decode(bytes(data), offset, 0)


def _take(data: bytes, offset: int, size: int, what: str) -> bytes:
    if offset + size > len(data):
        raise DlmsDecodeError(
            f"A-XDR {what} at offset {offset}: needs {size} bytes, {len(data) - offset} left"
        )
    return data[offset : offset + size]


def _decode(data: bytes, offset: int, depth: int) -> tuple[Data, int]:
    if depth > MAX_DEPTH:
        raise DlmsDecodeError(f"A-XDR: nesting deeper than {MAX_DEPTH} at offset {offset}")
    if offset >= len(data):
        raise DlmsDecodeError(f"A-XDR: data ends at offset {offset}, a type tag expected")
    raw_tag = data[offset]
    try:
        tag = Tag(raw_tag)
    except ValueError:
        raise DlmsDecodeError(f"A-XDR: unknown type tag {raw_tag} at offset {offset}") from None
    offset += 1
    if tag is Tag.NULL:
        return Data(tag), offset
    if tag in (Tag.ARRAY, Tag.STRUCTURE):
        count, offset = decode_length(data, offset)
        if count > len(data) - offset:  # every element takes at least one byte
            raise DlmsDecodeError(
                f"A-XDR {tag.name} at offset {offset}: {count} elements cannot fit "
                f"in {len(data) - offset} bytes"
            )
        items = []
        for _ in range(count):
            element, offset = _decode(data, offset, depth + 1)
            items.append(element)
        return Data(tag, tuple(items)), offset
    if tag is Tag.BOOLEAN:
        raw = _take(data, offset, 1, tag.name)
        return Data(tag, raw[0] != 0), offset + 1
    if tag in _INTEGERS:
        size, signed = _INTEGERS[tag]
        raw = _take(data, offset, size, tag.name)
        return Data(tag, int.from_bytes(raw, "big", signed=signed)), offset + size
    if tag in _FIXED_BYTES:
        size = _FIXED_BYTES[tag]
        return Data(tag, _take(data, offset, size, tag.name)), offset + size
    length, offset = decode_length(data, offset)
    if tag is Tag.BIT_STRING:
        size = (length + 7) // 8
        return Data(tag, _take(data, offset, size, tag.name)), offset + size
    raw = _take(data, offset, length, tag.name)
    if tag is Tag.OCTET_STRING:
        return Data(tag, raw), offset + length
    try:
        text = raw.decode("ascii" if tag is Tag.VISIBLE_STRING else "utf-8")
    except UnicodeDecodeError:
        raise DlmsDecodeError(f"A-XDR {tag.name} at offset {offset}: bad characters") from None
    return Data(tag, text), offset + length

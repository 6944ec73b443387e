"""The signed record: one meter, one capture, all the values read in it.

A record is what the agent signs at capture and what the head-end verifies. Its byte layout
is specified in ``docs/wire-format.md``; the signature covers exactly the stored and sent
bytes, so a record is verified as it arrived and never re-serialised for checking.

Values are exact: a ``Decimal`` in the model and an integer mantissa with a power-of-ten
exponent on the wire (the DLMS "scaler"). No float is ever involved.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal
from enum import IntEnum, IntFlag

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import DecodeError, EncodeError
from .obis import Obis, quantity_for
from .units import UnitError, unit_by_code, unit_by_symbol
from .varint import Reader, put_svarint, put_uvarint

__all__ = [
    "KEY_ID_SIZE",
    "RECORD_VERSION",
    "SIGNATURE_CONTEXT",
    "SIGNATURE_SIZE",
    "ClockSource",
    "Quality",
    "Reading",
    "Record",
    "SignedRecord",
    "Value",
    "check_id",
    "decode_record",
    "key_id_of",
    "sign_record",
]

RECORD_VERSION = 1
SIGNATURE_SIZE = 64
KEY_ID_SIZE = 8
#: Prepended to the record body before signing (domain separation: a meterlink record
#: signature can never be mistaken for a signature over anything else the key signs).
SIGNATURE_CONTEXT = b"meterlink/v1/record\x00"


def key_id_of(public_key: Ed25519PublicKey) -> bytes:
    """A key's id: the first 8 bytes of SHA-256 over its raw 32 bytes (shown in hex)."""
    return hashlib.sha256(public_key.public_bytes_raw()).digest()[:KEY_ID_SIZE]


_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_id(kind: str, value: str) -> str:
    """Gateway and meter ids: 1..64 chars of ``A-Za-z0-9._-``, safe in MQTT topics and paths."""
    if not isinstance(value, str) or not _ID_RE.match(value):
        raise EncodeError(
            f"{kind} id {value!r} must be 1-64 characters of A-Z a-z 0-9 . _ - "
            "(starting with a letter or digit)"
        )
    return value


class ClockSource(IntEnum):
    """Whose clock gave the timestamp."""

    GATEWAY = 0
    METER = 1


class Quality(IntFlag):
    """Quality flags of a value or of a whole record (a record's flags apply to all its values)."""

    NONE = 0
    METER_STATUS = 0x01  # the meter reported an error or alarm status
    ESTIMATED = 0x02  # not measured: estimated (head-end VEE) or substituted
    CLOCK_SUSPECT = 0x04  # timestamp may be wrong (clock stepped, drift beyond limit, unsynced)
    OVERFLOW = 0x08  # value out of the register's range or saturated
    PARTIAL = 0x10  # the capture could not read every configured point
    RESTARTED = 0x20  # first capture after a (re)start of the agent


@dataclass(frozen=True, slots=True)
class Value:
    """One value of a record: a quantity, its exact value and unit, and its own flags."""

    obis: Obis
    value: Decimal
    unit: str
    flags: Quality = Quality.NONE


@dataclass(frozen=True, slots=True)
class Record:
    """One capture of one meter, before signing (or as decoded)."""

    gateway_id: str
    meter_id: str
    seq: int  # gap-free per gateway, starts at 1
    captured_ms: int  # Unix milliseconds, UTC
    clock_source: ClockSource
    flags: Quality
    values: tuple[Value, ...]
    key_id: bytes = b""  # which of the gateway's keys signs it; set by ``sign_record``

    def body(self) -> bytes:
        """The record's bytes without the signature (see docs/wire-format.md)."""
        if len(self.key_id) != KEY_ID_SIZE:
            raise EncodeError(f"key id must be {KEY_ID_SIZE} bytes (sign with sign_record)")
        out = bytearray((RECORD_VERSION,))
        out += self.key_id
        for kind, ident in (("gateway", self.gateway_id), ("meter", self.meter_id)):
            raw = check_id(kind, ident).encode("ascii")
            out.append(len(raw))
            out += raw
        if self.seq < 1:
            raise EncodeError(f"sequence numbers start at 1, got {self.seq}")
        put_uvarint(out, self.seq)
        if self.captured_ms < 0:
            raise EncodeError(f"capture time before 1970: {self.captured_ms}")
        put_uvarint(out, self.captured_ms)
        out.append(int(self.clock_source))
        put_uvarint(out, int(self.flags))
        put_uvarint(out, len(self.values))
        for value in self.values:
            _put_value(out, value, self.meter_id)
        return bytes(out)


def _put_value(out: bytearray, value: Value, meter_id: str) -> None:
    if not isinstance(value.value, Decimal) or not value.value.is_finite():
        raise EncodeError(f"meter {meter_id} {value.obis}: value must be a finite Decimal")
    try:
        unit = unit_by_symbol(value.unit)
    except UnitError as exc:
        raise EncodeError(f"meter {meter_id} {value.obis}: {exc}") from None
    sign, digits, exponent = value.value.as_tuple()
    mantissa = 0
    for digit in digits:
        mantissa = mantissa * 10 + digit
    if sign:
        mantissa = -mantissa
    exponent = int(exponent) + unit.power
    if not -128 <= exponent <= 127:
        raise EncodeError(f"meter {meter_id} {value.obis}: exponent {exponent} out of -128..127")
    out += value.obis.to_bytes()
    out.append(unit.code)
    out.append(exponent & 0xFF)
    put_svarint(out, mantissa)
    put_uvarint(out, int(value.flags))


@dataclass(frozen=True, slots=True)
class Reading:
    """One value with the identity and context of its record: what the head-end stores."""

    gateway_id: str
    meter_id: str
    obis: Obis
    value: Decimal
    unit: str
    captured_ms: int
    clock_source: ClockSource
    seq: int
    flags: Quality


@dataclass(frozen=True, slots=True)
class SignedRecord:
    """A record as bytes (``raw`` = body + signature) together with its decoded form."""

    raw: bytes
    record: Record

    @property
    def body(self) -> bytes:
        return self.raw[:-SIGNATURE_SIZE]

    @property
    def signature(self) -> bytes:
        return self.raw[-SIGNATURE_SIZE:]

    def verify(self, public_key: Ed25519PublicKey) -> bool:
        """True if the signature over the received bytes checks out with ``public_key``."""
        try:
            public_key.verify(self.signature, SIGNATURE_CONTEXT + self.body)
        except InvalidSignature:
            return False
        return True

    def readings(self) -> Iterator[Reading]:
        rec = self.record
        for value in rec.values:
            yield Reading(
                rec.gateway_id,
                rec.meter_id,
                value.obis,
                value.value,
                value.unit,
                rec.captured_ms,
                rec.clock_source,
                rec.seq,
                rec.flags | value.flags,
            )


def sign_record(
    record: Record, private_key: Ed25519PrivateKey, key_id: bytes | None = None
) -> SignedRecord:
    """Sign ``record`` with ``private_key``; ``key_id`` (``key_id_of`` its public key) may be
    passed in by a caller that signs many records, to save hashing the key each time."""
    if key_id is None:
        key_id = key_id_of(private_key.public_key())
    if record.key_id != key_id:
        record = replace(record, key_id=key_id)
    body = record.body()
    return SignedRecord(body + private_key.sign(SIGNATURE_CONTEXT + body), record)


def decode_record(raw: bytes, where: str = "record") -> SignedRecord:
    """Parse a record's bytes (does not verify the signature: see ``SignedRecord.verify``)."""
    if len(raw) < SIGNATURE_SIZE + 1:
        raise DecodeError(f"{where}: {len(raw)} bytes is too short for a record")
    reader = Reader(raw[:-SIGNATURE_SIZE], where)
    version = reader.u8("version")
    if version != RECORD_VERSION:
        raise reader.fail(f"unknown record version {version}")
    key_id = reader.take(KEY_ID_SIZE, "key id")
    gateway_id = reader.text("gateway id", 64)
    meter_id = reader.text("meter id", 64)
    try:
        check_id("gateway", gateway_id)
        check_id("meter", meter_id)
    except EncodeError as exc:
        raise reader.fail(str(exc)) from None
    reader.where = f"{where} (meter {meter_id})"
    seq = reader.uvarint("sequence number")
    if seq < 1:
        raise reader.fail("sequence number 0")
    captured_ms = reader.uvarint("capture time")
    source = reader.u8("clock source")
    try:
        clock_source = ClockSource(source)
    except ValueError:
        raise reader.fail(f"unknown clock source {source}") from None
    flags = _quality(reader.uvarint("record flags"))
    count = reader.uvarint("value count")
    values = []
    for index in range(count):
        values.append(_read_value(reader, index))
    if not reader.at_end():
        raise reader.fail(f"{len(reader.data) - reader.pos} bytes after the last value")
    record = Record(
        gateway_id, meter_id, seq, captured_ms, clock_source, flags, tuple(values), key_id
    )
    return SignedRecord(bytes(raw), record)


def _quality(bits: int) -> Quality:
    return Quality.NONE if bits == 0 else Quality(bits)


#: (OBIS bytes + unit code) -> (OBIS, unit symbol, exponent shift); bounded by what meters send
_VALUE_KINDS: dict[bytes, tuple[Obis, str, int]] = {}
_VALUE_KINDS_MAX = 4096


def _value_kind(key: bytes) -> tuple[Obis, str, int]:
    """Which quantity and unit a value's OBIS code and DLMS unit code stand for."""
    kind = _VALUE_KINDS.get(key)
    if kind is None:
        obis = Obis.from_bytes(key[:6])
        base = unit_by_code(key[6])
        kind = (obis, base.symbol, 0)
        quantity = quantity_for(obis)
        if quantity is not None and quantity.unit != base.symbol:
            canonical = unit_by_symbol(quantity.unit)
            if canonical.code == base.code:
                kind = (obis, canonical.symbol, -canonical.power)
        if len(_VALUE_KINDS) < _VALUE_KINDS_MAX:
            _VALUE_KINDS[key] = kind
    return kind


def _read_value(reader: Reader, index: int) -> Value:
    # Hot path of the head-end: labels for errors are built only when an error is raised.
    data, pos = reader.data, reader.pos
    if pos + 8 > len(data):
        raise reader.fail(f"truncated value {index}")
    try:
        obis, unit, shift = _value_kind(data[pos : pos + 7])
    except UnitError as exc:
        raise reader.fail(f"value {index}: {exc}") from None
    exponent = data[pos + 7]
    if exponent >= 128:
        exponent -= 256
    # fast path: a mantissa of up to 4 varint bytes and flags of one byte (nearly all values)
    mantissa = 0
    end = pos + 8
    for shift_bits in (0, 7, 14, 21):
        if end >= len(data):
            break
        byte = data[end]
        mantissa |= (byte & 0x7F) << shift_bits
        end += 1
        if not byte & 0x80:
            if end < len(data) and data[end] == 0 and (byte or shift_bits == 0):
                reader.pos = end + 1
                value = Decimal((mantissa >> 1) ^ -(mantissa & 1)).scaleb(exponent + shift)
                return Value(obis, value, unit, Quality.NONE)
            break
    reader.pos = pos + 8
    zigzag = reader.svarint("value mantissa")
    flags = _quality(reader.uvarint("value flags"))
    return Value(obis, Decimal(zigzag).scaleb(exponent + shift), unit, flags)

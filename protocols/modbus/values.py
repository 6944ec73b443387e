"""Register values: 16-bit Modbus registers <-> exact ``Decimal`` values.

Modbus itself only knows 16-bit registers; meters put 16, 32 and 64-bit integers and IEEE 754
floats into consecutive registers in one of four orders. The order names the bytes of the
big-endian value, most significant first, in the order they travel (for 32 bits):

* ``ABCD`` big-endian: high word first, high byte first in each word (Eastron, most meters);
* ``CDAB`` word-swapped: low word first, bytes big-endian in each word ("LSW first",
  Carlo Gavazzi);
* ``BADC`` byte-swapped within each word, high word first;
* ``DCBA`` little-endian: low word first, low byte first.

For 64 bits the same two choices apply (word order, byte order within a word); for 16-bit types
only the byte order matters (``BADC`` and ``DCBA`` swap the two bytes).

Values are never floats on the way out: float registers are turned into the shortest decimal
string that gives back the same bits (so a float32 holding 1234.56 decodes to
``Decimal("1234.56")``), then scaled with exact decimal arithmetic.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from decimal import ROUND_HALF_EVEN, Context, Decimal, DecimalException, Inexact, InvalidOperation
from enum import StrEnum

from .errors import ModbusValueError

__all__ = [
    "DataType",
    "Order",
    "bytes_to_registers",
    "decode",
    "encode",
    "register_count",
    "registers_to_bytes",
]


class DataType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"


class Order(StrEnum):
    ABCD = "ABCD"  # big-endian
    DCBA = "DCBA"  # little-endian
    BADC = "BADC"  # bytes swapped in each word, high word first
    CDAB = "CDAB"  # words swapped (low word first), bytes big-endian

    @property
    def words_swapped(self) -> bool:
        return self in (Order.CDAB, Order.DCBA)

    @property
    def bytes_swapped(self) -> bool:
        return self in (Order.BADC, Order.DCBA)


_SIZE: dict[DataType, int] = {
    DataType.INT16: 2,
    DataType.UINT16: 2,
    DataType.INT32: 4,
    DataType.UINT32: 4,
    DataType.INT64: 8,
    DataType.UINT64: 8,
    DataType.FLOAT32: 4,
    DataType.FLOAT64: 8,
}
_SIGNED = {DataType.INT16, DataType.INT32, DataType.INT64}
_FLOATS = {DataType.FLOAT32: ">f", DataType.FLOAT64: ">d"}

# Exact arithmetic: 100 digits is far beyond any 64-bit integer or float64 times a scale,
# and Inexact is trapped so that a silent rounding would be an error, not a wrong bill.
_EXACT = Context(prec=100, traps=[Inexact, InvalidOperation])


def register_count(dtype: DataType | str) -> int:
    """How many 16-bit registers a value of this type occupies."""
    return _SIZE[DataType(dtype)] // 2


def _where(name: str | None) -> str:
    return f"register {name}: " if name else ""


def registers_to_bytes(
    registers: Sequence[int], order: Order | str = Order.ABCD, *, name: str | None = None
) -> bytes:
    """The value's bytes, big-endian (most significant first), from registers in ``order``."""
    order = Order(order)
    words = []
    for reg in registers:
        if not isinstance(reg, int) or not 0 <= reg <= 0xFFFF:
            raise ModbusValueError(f"{_where(name)}not a 16-bit register value: {reg!r}")
        words.append(reg)
    if order.words_swapped:
        words.reverse()
    out = bytearray()
    for word in words:
        high, low = word >> 8, word & 0xFF
        out += bytes((low, high)) if order.bytes_swapped else bytes((high, low))
    return bytes(out)


def bytes_to_registers(data: bytes, order: Order | str = Order.ABCD) -> list[int]:
    """Registers in ``order`` for the big-endian bytes ``data`` (even length)."""
    order = Order(order)
    if len(data) % 2:
        raise ModbusValueError(f"odd number of bytes for registers: {len(data)}")
    words = []
    for i in range(0, len(data), 2):
        high, low = data[i], data[i + 1]
        words.append((low << 8) | high if order.bytes_swapped else (high << 8) | low)
    if order.words_swapped:
        words.reverse()
    return words


def _shortest_float32(raw: bytes) -> Decimal:
    (value,) = struct.unpack(">f", raw)
    for digits in range(1, 10):
        text = format(value, f".{digits}g")
        try:
            if struct.pack(">f", float(text)) == raw:
                return Decimal(text)
        except OverflowError:  # rounded up past the largest float32
            continue
    raise AssertionError("9 significant digits always round-trip a float32")  # pragma: no cover


def _plain(value: Decimal) -> Decimal:
    """``1E+3`` -> ``1000``: no positive exponent, so values print like a meter display
    (left alone beyond 28 digits, where the exponent form is the readable one)."""
    if value.as_tuple().exponent > 0 and value.adjusted() < 28:  # type: ignore[operator]
        return value.quantize(Decimal(1), context=_EXACT)
    return value


def _scale_factor(multiplier: Decimal | int, exponent: int) -> Decimal:
    factor = Decimal(multiplier)
    if not factor.is_finite() or factor == 0:
        raise ModbusValueError(f"scale multiplier must be finite and non-zero, got {multiplier}")
    try:
        return factor.scaleb(exponent, context=_EXACT)
    except DecimalException:
        raise ModbusValueError(f"scale {multiplier}e{exponent} out of range") from None


def decode(
    registers: Sequence[int],
    dtype: DataType | str,
    order: Order | str = Order.ABCD,
    *,
    multiplier: Decimal | int = 1,
    exponent: int = 0,
    name: str | None = None,
) -> Decimal:
    """Decode registers into an exact value: ``raw * multiplier * 10**exponent``.

    ``name`` (e.g. ``"1-0:1.8.0@0x0048"``) is put into error messages.
    Raises ModbusValueError for a wrong register count, NaN or infinity.
    """
    dtype = DataType(dtype)
    expected = register_count(dtype)
    if len(registers) != expected:
        raise ModbusValueError(
            f"{_where(name)}{dtype} needs {expected} registers, got {len(registers)}"
        )
    raw = registers_to_bytes(registers, order, name=name)
    if dtype in _FLOATS:
        (as_float,) = struct.unpack(_FLOATS[dtype], raw)
        if not math.isfinite(as_float):
            raise ModbusValueError(
                f"{_where(name)}{dtype} holds {as_float} (bytes {raw.hex()}), not a number"
            )
        value = _shortest_float32(raw) if dtype is DataType.FLOAT32 else Decimal(repr(as_float))
    else:
        value = Decimal(int.from_bytes(raw, "big", signed=dtype in _SIGNED))
    factor = _scale_factor(multiplier, exponent)
    try:
        if factor != 1:
            value = _EXACT.multiply(value, factor)
        return _plain(value)
    except DecimalException:  # a scale with more digits than exact arithmetic holds
        raise ModbusValueError(
            f"{_where(name)}{value} x {factor} is not exact in {_EXACT.prec} digits"
        ) from None


def _int_range(dtype: DataType) -> tuple[int, int]:
    bits = _SIZE[dtype] * 8
    if dtype in _SIGNED:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def encode(
    value: Decimal | int,
    dtype: DataType | str,
    order: Order | str = Order.ABCD,
    *,
    multiplier: Decimal | int = 1,
    exponent: int = 0,
    rounding: str | None = None,
    name: str | None = None,
) -> list[int]:
    """Encode a value into registers, the inverse of :func:`decode`.

    The raw register value is ``value / (multiplier * 10**exponent)``. For integer types it
    must be a whole number unless ``rounding`` (a ``decimal`` rounding mode such as
    ``ROUND_HALF_EVEN`` or ``ROUND_FLOOR``) says how to round it, as a meter rounds its
    display. Floats are rounded to the nearest float of the type. Values that do not fit
    the type raise ModbusValueError.
    """
    dtype = DataType(dtype)
    if isinstance(value, bool) or not isinstance(value, (int, Decimal)):
        raise ModbusValueError(f"{_where(name)}value must be Decimal or int, got {value!r}")
    value = Decimal(value)
    if not value.is_finite():
        raise ModbusValueError(f"{_where(name)}cannot encode {value}")
    factor = _scale_factor(multiplier, exponent)
    try:
        raw = _EXACT.divide(value, factor)
    except Inexact:
        # 1/3-like scales: the division does not terminate; only a float can hold it.
        raw = Context(prec=100).divide(value, factor)
    if dtype in _FLOATS:
        as_float = float(raw)
        try:
            data = struct.pack(_FLOATS[dtype], as_float)
        except OverflowError:
            raise ModbusValueError(f"{_where(name)}{value} does not fit {dtype}") from None
        if not math.isfinite(struct.unpack(_FLOATS[dtype], data)[0]):
            raise ModbusValueError(f"{_where(name)}{value} does not fit {dtype}")
        return bytes_to_registers(data, order)
    integral = raw.to_integral_value(rounding=rounding or ROUND_HALF_EVEN)
    if rounding is None and integral != raw:
        raise ModbusValueError(
            f"{_where(name)}{value} is not a whole number of steps of {factor} "
            f"(raw {raw}); pass rounding= to round it"
        )
    lowest, highest = _int_range(dtype)
    if not lowest <= integral <= highest:
        raise ModbusValueError(
            f"{_where(name)}{value} (raw {integral}) does not fit {dtype} [{lowest}, {highest}]"
        )
    data = int(integral).to_bytes(_SIZE[dtype], "big", signed=dtype in _SIGNED)
    return bytes_to_registers(data, order)

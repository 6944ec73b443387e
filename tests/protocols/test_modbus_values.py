"""Register value codecs: known vectors, every type x order, errors that name the register."""

from __future__ import annotations

import struct
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.modbus import DataType, ModbusError, ModbusValueError, Order, decode, encode
from protocols.modbus.values import register_count

INT_RANGES = {
    DataType.INT16: (-(2**15), 2**15 - 1),
    DataType.UINT16: (0, 2**16 - 1),
    DataType.INT32: (-(2**31), 2**31 - 1),
    DataType.UINT32: (0, 2**32 - 1),
    DataType.INT64: (-(2**63), 2**63 - 1),
    DataType.UINT64: (0, 2**64 - 1),
}


def test_float32_998_big_endian() -> None:
    assert decode([0x4479, 0x8000], "float32") == Decimal("998")


@pytest.mark.parametrize(
    ("order", "registers"),
    [
        ("ABCD", [0x4479, 0x8000]),
        ("CDAB", [0x8000, 0x4479]),
        ("BADC", [0x7944, 0x0080]),
        ("DCBA", [0x0080, 0x7944]),
    ],
)
def test_float32_998_in_every_order(order: str, registers: list[int]) -> None:
    assert decode(registers, "float32", order) == Decimal("998")
    assert encode(Decimal("998"), "float32", order) == registers


def test_float32_decodes_to_the_shortest_round_tripping_decimal() -> None:
    registers = encode(Decimal("1234.56"), "float32")
    assert decode(registers, "float32") == Decimal("1234.56")
    assert str(decode(registers, "float32")) == "1234.56"
    assert decode([0x3DCC, 0xCCCD], "float32") == Decimal("0.1")


def test_float64_uses_the_shortest_repr() -> None:
    registers = encode(Decimal("230.1"), "float64")
    assert decode(registers, "float64") == Decimal("230.1")


def test_em24_int32_lsw_first_examples() -> None:
    # 230.5 V as V*10 = 2305 = 0x00000901: low word first.
    assert decode([0x0901, 0x0000], "int32", "CDAB", multiplier=Decimal("0.1")) == Decimal("230.5")
    # -1234.5 W as W*10 = -12345 = 0xFFFFCFC7: low word 0xCFC7 first.
    assert decode([0xCFC7, 0xFFFF], "int32", "CDAB", multiplier=Decimal("0.1")) == Decimal(
        "-1234.5"
    )
    # 123456.7 kWh as kWh*10 = 1234567 = 0x0012D687.
    assert encode(Decimal("123456.7"), "int32", "CDAB", multiplier=Decimal("0.1")) == [
        0xD687,
        0x0012,
    ]


def test_exponent_scale_equals_the_multiplier() -> None:
    assert decode([0, 1234], "uint32", exponent=-2) == Decimal("12.34")
    assert decode([0, 1234], "uint32", multiplier=Decimal("0.01")) == Decimal("12.34")
    assert decode([12], "uint16", exponent=3) == Decimal(12000)


def test_int64_big_endian_vector() -> None:
    assert decode([0x0000, 0x0000, 0x0001, 0x0000], "int64") == Decimal(65536)
    assert decode([0xFFFF] * 4, "int64") == Decimal(-1)
    assert decode([0xFFFF] * 4, "uint64") == Decimal(2**64 - 1)


@pytest.mark.parametrize("bits", [0x7FC00000, 0x7F800000, 0xFF800000])
def test_nan_and_infinity_raise_naming_the_register(bits: int) -> None:
    with pytest.raises(ModbusValueError, match=r"1-0:1\.8\.0@0x0048"):
        decode([bits >> 16, bits & 0xFFFF], "float32", name="1-0:1.8.0@0x0048")


def test_errors_have_one_root() -> None:
    assert issubclass(ModbusValueError, ModbusError)
    with pytest.raises(TypeError):
        ModbusError("abstract")


def test_wrong_register_count_raises() -> None:
    with pytest.raises(ModbusValueError, match="needs 2 registers"):
        decode([1], "int32", name="x")


def test_register_out_of_16_bits_raises() -> None:
    with pytest.raises(ModbusValueError, match="16-bit"):
        decode([0x10000], "uint16")


def test_encode_rejects_values_that_do_not_fit() -> None:
    with pytest.raises(ModbusValueError, match="does not fit int16"):
        encode(40000, "int16", name="p")
    with pytest.raises(ModbusValueError, match="does not fit uint32"):
        encode(-1, "uint32")
    with pytest.raises(ModbusValueError, match="float32"):
        encode(Decimal("1e39"), "float32")


def test_encode_rejects_values_off_the_scale_unless_rounding() -> None:
    with pytest.raises(ModbusValueError, match="whole number"):
        encode(Decimal("230.05"), "int32", "CDAB", multiplier=Decimal("0.1"))
    assert encode(
        Decimal("230.05"), "int32", "CDAB", multiplier=Decimal("0.1"), rounding="ROUND_FLOOR"
    ) == [2300, 0]


def test_encode_rejects_floats() -> None:
    with pytest.raises(ModbusValueError, match="Decimal or int"):
        encode(1.5, "float32")  # type: ignore[arg-type]


def test_decode_never_returns_a_float() -> None:
    for dtype in DataType:
        value = decode([0x4000] * register_count(dtype), dtype)
        assert isinstance(value, Decimal)


ORDERS = list(Order)


@pytest.mark.parametrize("dtype", list(INT_RANGES))
@pytest.mark.parametrize("order", ORDERS)
def test_integer_extremes_round_trip(dtype: DataType, order: Order) -> None:
    for value in (*INT_RANGES[dtype], 0, 1):
        registers = encode(value, dtype, order)
        assert len(registers) == register_count(dtype)
        assert decode(registers, dtype, order) == value


@given(
    dtype=st.sampled_from(list(INT_RANGES)),
    order=st.sampled_from(ORDERS),
    data=st.data(),
    exponent=st.integers(-4, 2),
)
def test_integer_round_trip_property(dtype: DataType, order: Order, data, exponent: int) -> None:
    low, high = INT_RANGES[dtype]
    raw = data.draw(st.integers(low, high))
    value = Decimal(raw).scaleb(exponent)
    registers = encode(value, dtype, order, exponent=exponent)
    assert decode(registers, dtype, order, exponent=exponent) == value


@given(
    value=st.floats(width=32, allow_nan=False, allow_infinity=False),
    order=st.sampled_from(ORDERS),
)
def test_float32_bits_round_trip_property(value: float, order: Order) -> None:
    bits = struct.pack(">f", value)
    registers = [int.from_bytes(bits[:2], "big"), int.from_bytes(bits[2:], "big")]
    decoded = decode(encode(decode(registers, "float32"), "float32", order), "float32", order)
    assert struct.pack(">f", float(decoded)) == bits


@given(
    value=st.floats(allow_nan=False, allow_infinity=False),
    order=st.sampled_from(ORDERS),
)
def test_float64_round_trip_property(value: float, order: Order) -> None:
    exact = Decimal(repr(value))
    decoded = decode(encode(exact, "float64", order), "float64", order)
    assert float(decoded) == value


@given(
    value=st.decimals(min_value=-(10**6), max_value=10**6, places=3, allow_nan=False),
    order=st.sampled_from(ORDERS),
)
def test_scaled_int32_round_trip_property(value: Decimal, order: Order) -> None:
    registers = encode(value, "int32", order, multiplier=Decimal("0.001"))
    assert decode(registers, "int32", order, multiplier=Decimal("0.001")) == value

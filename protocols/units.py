"""Units and their codes on the wire.

The wire uses the DLMS/COSEM unit enumeration (IEC 62056-62, "unit" of a Register's
scaler_unit) so that a value read over DLMS keeps its own unit code. DLMS has no prefixed
units (kWh is Wh with a scaler of 3), so a symbol like ``kWh`` maps to a code plus a power
of ten, and the record encoding moves that power into the value's exponent. Conversions
are exact: ``Decimal.scaleb`` only moves the decimal point.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

__all__ = ["UNITS", "Unit", "UnitError", "convert", "unit_by_code", "unit_by_symbol"]


class UnitError(ValueError):
    """An unknown unit symbol or code, or a conversion between different dimensions."""


@dataclass(frozen=True, slots=True)
class Unit:
    symbol: str
    code: int  # DLMS unit enumeration value of the base unit
    power: int  # this unit = base unit * 10**power (kWh: Wh, 3)


# DLMS unit codes: 13 m3, 25 J, 27 W, 28 VA, 29 var, 30 Wh, 31 VAh, 32 varh, 33 A, 35 V,
# 44 Hz, 255 count/no unit.
UNITS: dict[str, Unit] = {
    u.symbol: u
    for u in (
        Unit("Wh", 30, 0),
        Unit("kWh", 30, 3),
        Unit("MWh", 30, 6),
        Unit("varh", 32, 0),
        Unit("kvarh", 32, 3),
        Unit("VAh", 31, 0),
        Unit("kVAh", 31, 3),
        Unit("W", 27, 0),
        Unit("kW", 27, 3),
        Unit("var", 29, 0),
        Unit("kvar", 29, 3),
        Unit("VA", 28, 0),
        Unit("kVA", 28, 3),
        Unit("V", 35, 0),
        Unit("A", 33, 0),
        Unit("Hz", 44, 0),
        Unit("m3", 13, 0),
        Unit("l", 13, -3),
        Unit("J", 25, 0),  # heat meters (DSMR M-Bus heat in GJ)
        Unit("kJ", 25, 3),
        Unit("MJ", 25, 6),
        Unit("GJ", 25, 9),
        Unit("", 255, 0),
    )
}

_BASE_BY_CODE: dict[int, Unit] = {u.code: u for u in UNITS.values() if u.power == 0}


def unit_by_symbol(symbol: str) -> Unit:
    try:
        return UNITS[symbol]
    except KeyError:
        raise UnitError(f"unknown unit {symbol!r}; known: {', '.join(sorted(UNITS))}") from None


def unit_by_code(code: int) -> Unit:
    """The base (unprefixed) unit for a DLMS unit code."""
    try:
        return _BASE_BY_CODE[code]
    except KeyError:
        raise UnitError(f"unknown DLMS unit code {code}") from None


def convert(value: Decimal, from_symbol: str, to_symbol: str) -> Decimal:
    """Convert exactly between units of one dimension (e.g. Wh -> kWh)."""
    src, dst = unit_by_symbol(from_symbol), unit_by_symbol(to_symbol)
    if src.code != dst.code:
        raise UnitError(f"cannot convert {from_symbol!r} to {to_symbol!r}")
    return value.scaleb(src.power - dst.power)

"""OBIS codes (IEC 62056-61) and the quantities meterlink knows by them.

An OBIS code names a quantity: ``1-0:1.8.0`` is active energy import (+A), ``1-0:2.8.0`` export.
The wire carries the six value groups A..F as six bytes; text uses ``A-B:C.D.E`` with ``*F``
when F is not 255.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["QUANTITIES", "Obis", "ObisError", "Quantity", "quantity_for"]


class ObisError(ValueError):
    """Text or bytes that are not an OBIS code."""


_OBIS_RE = re.compile(
    r"^(?:(\d{1,3})-(\d{1,3}):)?(\d{1,3})\.(\d{1,3})\.(\d{1,3})(?:[*.&](\d{1,3}))?$"
)


@dataclass(frozen=True, slots=True, order=True)
class Obis:
    """An OBIS code: six value groups, each 0..255."""

    a: int
    b: int
    c: int
    d: int
    e: int
    f: int = 255

    def __post_init__(self) -> None:
        for group in (self.a, self.b, self.c, self.d, self.e, self.f):
            if not 0 <= group <= 255:
                raise ObisError(f"OBIS value group out of range 0..255: {group}")

    @classmethod
    def parse(cls, text: str) -> Obis:
        """Parse ``A-B:C.D.E[*F]``; ``C.D.E`` alone means ``1-0:C.D.E`` (electricity)."""
        match = _OBIS_RE.match(text.strip())
        if match is None:
            raise ObisError(f"not an OBIS code: {text!r} (expected e.g. 1-0:1.8.0)")
        a, b, c, d, e, f = match.groups()
        return cls(
            int(a) if a is not None else 1,
            int(b) if b is not None else 0,
            int(c),
            int(d),
            int(e),
            int(f) if f is not None else 255,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Obis:
        if len(data) != 6:
            raise ObisError(f"an OBIS code is 6 bytes, got {len(data)}")
        return cls(*data)

    def to_bytes(self) -> bytes:
        return bytes((self.a, self.b, self.c, self.d, self.e, self.f))

    def __str__(self) -> str:
        text = f"{self.a}-{self.b}:{self.c}.{self.d}.{self.e}"
        return text if self.f == 255 else f"{text}*{self.f}"


@dataclass(frozen=True, slots=True)
class Quantity:
    """What a value means: its OBIS code, canonical unit, and whether it only ever grows."""

    obis: Obis
    name: str
    unit: str
    cumulative: bool  # a register that only grows (energy, volume); else an instantaneous value


def _q(code: str, name: str, unit: str, cumulative: bool) -> Quantity:
    return Quantity(Obis.parse(code), name, unit, cumulative)


#: The quantities meterlink knows, by OBIS code. Profiles may use others; they then carry
#: the unit the profile declares and are treated as instantaneous.
QUANTITIES: dict[Obis, Quantity] = {
    q.obis: q
    for q in (
        _q("1-0:1.8.0", "active energy import (+A)", "kWh", True),
        _q("1-0:2.8.0", "active energy export (-A)", "kWh", True),
        _q("1-0:3.8.0", "reactive energy import (+R)", "kvarh", True),
        _q("1-0:4.8.0", "reactive energy export (-R)", "kvarh", True),
        _q("1-0:1.8.1", "active energy import, tariff 1", "kWh", True),
        _q("1-0:1.8.2", "active energy import, tariff 2", "kWh", True),
        _q("1-0:2.8.1", "active energy export, tariff 1", "kWh", True),
        _q("1-0:2.8.2", "active energy export, tariff 2", "kWh", True),
        _q("1-0:1.7.0", "active power import", "W", False),
        _q("1-0:1.6.0", "maximum demand, active import", "W", False),
        _q("1-0:2.7.0", "active power export", "W", False),
        _q("1-0:16.7.0", "active power, sum (import - export)", "W", False),
        _q("1-0:21.7.0", "active power L1", "W", False),
        _q("1-0:41.7.0", "active power L2", "W", False),
        _q("1-0:61.7.0", "active power L3", "W", False),
        _q("1-0:32.7.0", "voltage L1", "V", False),
        _q("1-0:52.7.0", "voltage L2", "V", False),
        _q("1-0:72.7.0", "voltage L3", "V", False),
        _q("1-0:31.7.0", "current L1", "A", False),
        _q("1-0:51.7.0", "current L2", "A", False),
        _q("1-0:71.7.0", "current L3", "A", False),
        _q("1-0:14.7.0", "frequency", "Hz", False),
        _q("1-0:13.7.0", "power factor", "", False),
        _q("7-0:3.0.0", "gas volume", "m3", True),
        _q("8-0:1.0.0", "water volume", "m3", True),
    )
}


def quantity_for(obis: Obis) -> Quantity | None:
    return QUANTITIES.get(obis)

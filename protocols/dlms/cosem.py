"""COSEM values: date-time (Blue Book 4.1.6.1), clock status, Register scaler_unit.

Date-time is 12 bytes: year (2), month, day of month, day of week (1 = Monday), hour,
minute, second, hundredths, deviation (int16, minutes), clock status. 0xFF (0xFFFF for the
year, 0x8000 for the deviation) means "not specified". The deviation is the Blue Book's
"minutes from local time to UTC": ``UTC = local + deviation``, so UTC+01:00 is -60 (the same
reading as dlms-cosem 21.3.2's ``utc_offset_minutes``).

Clock status bits: 0x01 invalid value, 0x02 doubtful value, 0x04 different clock base,
0x08 invalid clock status, 0x80 daylight saving active. A timestamp whose status says
invalid, doubtful or invalid-status, or whose deviation is not specified (the agent then
assumes a configured offset), is flagged ``Quality.CLOCK_SUSPECT``.

Register values are exact: ``value * 10**scaler`` is ``Decimal(value).scaleb(scaler)``,
a move of the decimal point.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from ..obis import Obis, quantity_for
from ..record import Quality
from ..units import UnitError, convert, unit_by_code
from . import DlmsDecodeError, DlmsEncodeError
from .axdr import Data, Tag

__all__ = [
    "DEVIATION_UNSPECIFIED",
    "STATUS_DOUBTFUL",
    "STATUS_DST",
    "STATUS_INVALID",
    "STATUS_INVALID_STATUS",
    "CosemDateTime",
    "ScalerUnit",
    "exact_value",
]

DEVIATION_UNSPECIFIED = -0x8000
STATUS_INVALID = 0x01
STATUS_DOUBTFUL = 0x02
STATUS_DIFFERENT_BASE = 0x04
STATUS_INVALID_STATUS = 0x08
STATUS_DST = 0x80
STATUS_UNSPECIFIED = 0xFF
SUSPECT_BITS = STATUS_INVALID | STATUS_DOUBTFUL | STATUS_INVALID_STATUS
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class CosemDateTime:
    """The 12 fields as on the wire; ``None`` where the meter sent "not specified"."""

    year: int | None
    month: int | None
    day: int | None
    weekday: int | None  # 1 = Monday .. 7 = Sunday
    hour: int | None
    minute: int | None
    second: int | None
    hundredths: int | None
    deviation: int | None  # minutes, UTC = local + deviation
    status: int | None

    @classmethod
    def from_bytes(cls, raw: bytes) -> CosemDateTime:
        if len(raw) != 12:
            raise DlmsDecodeError(f"date-time: 12 bytes expected, got {len(raw)}")
        year = int.from_bytes(raw[0:2], "big")
        deviation = int.from_bytes(raw[9:11], "big", signed=True)

        def opt(byte: int) -> int | None:
            return None if byte == 0xFF else byte

        return cls(
            None if year == 0xFFFF else year,
            opt(raw[2]),
            opt(raw[3]),
            opt(raw[4]),
            opt(raw[5]),
            opt(raw[6]),
            opt(raw[7]),
            opt(raw[8]),
            None if deviation == DEVIATION_UNSPECIFIED else deviation,
            opt(raw[11]),
        )

    def to_bytes(self) -> bytes:
        def opt(value: int | None, name: str) -> int:
            if value is None:
                return 0xFF
            if not 0 <= value <= 0xFE:
                raise DlmsEncodeError(f"date-time {name} out of range: {value}")
            return value

        year = 0xFFFF if self.year is None else self.year
        if not 0 <= year <= 0xFFFF:
            raise DlmsEncodeError(f"date-time year out of range: {year}")
        deviation = DEVIATION_UNSPECIFIED if self.deviation is None else self.deviation
        if self.deviation is not None and not -720 <= self.deviation <= 720:
            raise DlmsEncodeError(f"date-time deviation out of range: {self.deviation}")
        status = 0xFF if self.status is None else self.status
        if not 0 <= status <= 0xFF:
            raise DlmsEncodeError(f"date-time status out of range: {status}")
        return (
            year.to_bytes(2, "big")
            + bytes(
                opt(v, n)
                for v, n in (
                    (self.month, "month"),
                    (self.day, "day"),
                    (self.weekday, "weekday"),
                    (self.hour, "hour"),
                    (self.minute, "minute"),
                    (self.second, "second"),
                    (self.hundredths, "hundredths"),
                )
            )
            + deviation.to_bytes(2, "big", signed=True)
            + bytes((status,))
        )

    @classmethod
    def from_unix_ms(cls, ms: int, deviation: int = 0, status: int = 0) -> CosemDateTime:
        """The meter's view of instant ``ms``: local time at ``deviation``."""
        if not -720 <= deviation <= 720:
            raise DlmsEncodeError(f"date-time deviation out of range: {deviation}")
        try:
            local = _EPOCH + timedelta(milliseconds=ms - deviation * 60_000)
        except OverflowError:
            raise DlmsEncodeError(f"date-time: instant {ms} ms out of range") from None
        return cls(
            local.year,
            local.month,
            local.day,
            local.isoweekday(),
            local.hour,
            local.minute,
            local.second,
            local.microsecond // 10_000,
            deviation,
            status,
        )

    def to_unix_ms(self, assume_deviation: int | None = None) -> int:
        """The instant, Unix ms UTC. A date-time with an unspecified deviation needs
        ``assume_deviation``; any other unspecified or out-of-range field is an error."""
        fields = (
            ("year", self.year, 1970, 9999),
            ("month", self.month, 1, 12),
            ("day", self.day, 1, 31),
            ("hour", self.hour, 0, 23),
            ("minute", self.minute, 0, 59),
            ("second", self.second, 0, 59),
        )
        for name, value, low, high in fields:
            if value is None:
                raise DlmsDecodeError(f"date-time: {name} not specified, not an instant")
            if not low <= value <= high:
                raise DlmsDecodeError(f"date-time: {name} {value} out of range {low}..{high}")
        assert self.year is not None and self.month is not None and self.day is not None
        if self.day > calendar.monthrange(self.year, self.month)[1]:
            raise DlmsDecodeError(f"date-time: no day {self.day} in {self.year}-{self.month:02d}")
        hundredths = self.hundredths or 0
        if hundredths > 99:
            raise DlmsDecodeError(f"date-time: hundredths {hundredths} out of range 0..99")
        deviation = self.deviation if self.deviation is not None else assume_deviation
        if deviation is None:
            raise DlmsDecodeError("date-time: deviation not specified and none assumed")
        if not -720 <= deviation <= 720:
            raise DlmsDecodeError(f"date-time: deviation {deviation} out of range -720..720")
        local = datetime(
            self.year,
            self.month,
            self.day,
            self.hour or 0,
            self.minute or 0,
            self.second or 0,
            tzinfo=UTC,
        )
        delta = local - _EPOCH
        seconds = delta.days * 86_400 + delta.seconds
        return seconds * 1000 + hundredths * 10 + deviation * 60_000

    @property
    def quality(self) -> Quality:
        """CLOCK_SUSPECT when the status says invalid/doubtful or the deviation is unknown."""
        suspect = self.status is not None and bool(self.status & SUSPECT_BITS)
        if suspect or self.deviation is None:
            return Quality.CLOCK_SUSPECT
        return Quality.NONE

    @classmethod
    def from_data(cls, item: Data) -> CosemDateTime:
        """From an octet-string of 12 bytes (the Clock's time) or a date-time value."""
        if item.tag not in (Tag.OCTET_STRING, Tag.DATE_TIME):
            raise DlmsDecodeError(f"date-time: expected an octet-string, got {item.tag.name}")
        return cls.from_bytes(item.octets)


@dataclass(frozen=True, slots=True)
class ScalerUnit:
    """A Register's attribute 3: ``structure { scaler integer, unit enum }``."""

    scaler: int
    unit_code: int

    @classmethod
    def from_data(cls, item: Data) -> ScalerUnit:
        parts = item.items if item.tag is Tag.STRUCTURE else None
        if parts is None or len(parts) != 2:
            raise DlmsDecodeError("scaler_unit: expected a structure of 2 elements")
        scaler, unit = parts
        if scaler.tag is not Tag.INTEGER or unit.tag is not Tag.ENUM:
            raise DlmsDecodeError(
                f"scaler_unit: expected (integer, enum), got ({scaler.tag.name}, {unit.tag.name})"
            )
        return cls(scaler.integer, unit.integer)

    def to_data(self) -> Data:
        return Data.structure(Data(Tag.INTEGER, self.scaler), Data(Tag.ENUM, self.unit_code))

    def apply(self, value: Data) -> tuple[Decimal, str]:
        """The exact value and its base unit symbol (``Wh``, ``W``, ``V``...)."""
        if value.tag in (Tag.FLOAT32, Tag.FLOAT64):
            raise DlmsDecodeError(f"register value is {value.tag.name}: floats are not accepted")
        raw = value.integer
        try:
            unit = unit_by_code(self.unit_code)
        except UnitError as exc:
            raise DlmsDecodeError(f"scaler_unit: {exc}") from None
        return Decimal(raw).scaleb(self.scaler), unit.symbol


def exact_value(obis: Obis, value: Data, scaler_unit: ScalerUnit) -> tuple[Decimal, str]:
    """A register's exact value, in the canonical unit of its quantity when meterlink knows
    the OBIS code and the dimensions agree (1.8.0 in Wh arrives as kWh), else in the unit
    the meter gave. Only the decimal point moves."""
    amount, symbol = scaler_unit.apply(value)
    quantity = quantity_for(obis)
    if quantity is not None and quantity.unit != symbol:
        try:
            return convert(amount, symbol, quantity.unit), quantity.unit
        except UnitError:
            pass  # another dimension than the quantity's: keep the meter's own unit
    return amount, symbol

"""A DSMR telegram's objects as readings of meters: the electricity meter itself and each
M-Bus device (gas, water, heat) behind it, each with its own capture time.

The mapping is data (tables below), not branches per version: DSMR 2.2, 3, 4.x, 5 and the
Belgian e-MUCS differ only in which objects they send and how an M-Bus value is written:

* DSMR 4/5, e-MUCS: ``0-n:24.2.1(YYMMDDhhmmssX)(00981.443*m3)`` (e-MUCS gas: ``0-n:24.2.3``);
* DSMR 2.2/3: ``0-n:24.3.0(YYMMDDhhmmss)(00)(60)(1)(0-n:24.2.1)(m3)`` with the value on the
  next line ``(00001.001)``.

Time stamps ``YYMMDDhhmmssX`` carry the DST flag X: ``S`` summer (UTC+2), ``W`` winter (UTC+1)
(DSMR and e-MUCS are Central European time). Without a flag (DSMR 2.2/3) the time is local
time in ``local_tz`` (default Europe/Amsterdam) and, in the repeated hour of the autumn
change, ambiguous: the reading then says so (``clock_ambiguous``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..obis import Obis
from .telegram import DataObject, DsmrError, Telegram

__all__ = [
    "DEVICE_TYPES",
    "DSMR_UNITS",
    "ELECTRICITY",
    "MeterReading",
    "Reading",
    "meter_readings",
    "parse_timestamp",
]


@dataclass(frozen=True, slots=True)
class Reading:
    obis: Obis  # the quantity (for M-Bus devices: the medium's code, e.g. 7-0:3.0.0 gas)
    value: Decimal
    unit: str
    source: Obis  # the object of the telegram it came from (e.g. 0-1:24.2.1)


@dataclass(frozen=True, slots=True)
class MeterReading:
    """The readings of one meter in one telegram.

    ``channel`` 0 is the electricity meter, 1..4 the M-Bus channels. ``captured_ms`` is the
    meter's own time stamp (UTC ms): for electricity ``0-0:1.0.0``, for an M-Bus device the
    time stamp of its value; None when the telegram carries none (DSMR 2.2/3 electricity):
    then the gateway's clock is the capture time."""

    channel: int
    kind: str  # electricity, gas, water, warm water, heat, cooling, or "m-bus type N"
    device_type: int | None
    equipment_id: str
    captured_ms: int | None
    clock_flag: str  # "S", "W", "" (local time, no flag) or "?" (ambiguous local time)
    values: tuple[Reading, ...]
    problems: tuple[str, ...] = ()

    @property
    def clock_ambiguous(self) -> bool:
        return self.clock_flag == "?"


_ELECTRICITY_CODES = (
    "1-0:1.8.0", "1-0:1.8.1", "1-0:1.8.2", "1-0:2.8.0", "1-0:2.8.1", "1-0:2.8.2",
    "1-0:3.8.0", "1-0:3.8.1", "1-0:3.8.2", "1-0:4.8.0", "1-0:4.8.1", "1-0:4.8.2",
    "1-0:1.7.0", "1-0:2.7.0", "1-0:3.7.0", "1-0:4.7.0",
    "1-0:21.7.0", "1-0:41.7.0", "1-0:61.7.0", "1-0:22.7.0", "1-0:42.7.0", "1-0:62.7.0",
    "1-0:32.7.0", "1-0:52.7.0", "1-0:72.7.0", "1-0:31.7.0", "1-0:51.7.0", "1-0:71.7.0",
    "1-0:14.7.0", "1-0:1.4.0",
)  # fmt: skip
#: Counters and the tariff indicator: no unit.
_UNITLESS_CODES = (
    "0-0:96.14.0", "0-0:96.7.21", "0-0:96.7.9",
    "1-0:32.32.0", "1-0:52.32.0", "1-0:72.32.0",
    "1-0:32.36.0", "1-0:52.36.0", "1-0:72.36.0",
)  # fmt: skip
#: Electricity objects taken as readings: OBIS -> index of the value among the ``( )``.
ELECTRICITY: dict[Obis, int] = {
    **{Obis.parse(code): 0 for code in _ELECTRICITY_CODES + _UNITLESS_CODES},
    Obis.parse("1-0:1.6.0"): 1,  # e-MUCS: (time of the peak)(peak demand this month*kW)
}
_UNITLESS = frozenset(Obis.parse(code) for code in _UNITLESS_CODES)
CLOCK = Obis(0, 0, 1, 0, 0)
EQUIPMENT_ID = Obis(0, 0, 96, 1, 1)

#: M-Bus device type (EN 13757-3) -> (kind, OBIS of the quantity, units accepted).
DEVICE_TYPES: dict[int, tuple[str, Obis, frozenset[str]]] = {
    2: ("electricity", Obis(1, 0, 1, 8, 0), frozenset({"kWh", "Wh"})),
    3: ("gas", Obis(7, 0, 3, 0, 0), frozenset({"m3"})),
    4: ("heat", Obis(6, 0, 1, 0, 0), frozenset({"GJ", "kWh", "MWh"})),
    6: ("warm water", Obis(9, 0, 1, 0, 0), frozenset({"m3"})),
    7: ("water", Obis(8, 0, 1, 0, 0), frozenset({"m3"})),
    10: ("cooling", Obis(5, 0, 1, 0, 0), frozenset({"GJ", "kWh", "MWh"})),
    11: ("cooling", Obis(5, 0, 1, 0, 0), frozenset({"GJ", "kWh", "MWh"})),
    12: ("heat", Obis(6, 0, 1, 0, 0), frozenset({"GJ", "kWh", "MWh"})),
}
#: M-Bus value objects (group C.D.E): 24.2.1 DSMR 4/5 and e-MUCS, 24.2.3 e-MUCS gas
#: (not temperature corrected), 24.3.0 DSMR 2.2/3.
_MBUS_VALUES = ((24, 2, 1), (24, 2, 3), (24, 3, 0))

#: Units as DSMR meters write them -> meterlink symbols.
DSMR_UNITS: dict[str, str] = {
    u: u
    for u in ("kWh", "Wh", "MWh", "kW", "W", "V", "A", "var", "varh", "kvar", "kvarh", "m3", "GJ")
}
DSMR_UNITS.update({"kVArh": "kvarh", "kVAr": "kvar", "m^3": "m3"})

_NUMBER_RE = re.compile(r"^[+-]?\d{1,24}(?:\.\d{1,12})?$")
_TIMESTAMP_RE = re.compile(r"^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)([SW]?)$")
_AMSTERDAM: tzinfo | None = None


def _default_tz() -> tzinfo:
    global _AMSTERDAM
    if _AMSTERDAM is None:
        try:
            _AMSTERDAM = ZoneInfo("Europe/Amsterdam")
        except ZoneInfoNotFoundError:  # pragma: no cover - no tz database on the host
            raise DsmrError(
                "time stamp without DST flag needs the Europe/Amsterdam time zone "
                "(install tzdata) or an explicit local_tz"
            ) from None
    return _AMSTERDAM


def parse_timestamp(text: str, local_tz: tzinfo | None = None) -> tuple[int, str]:
    """``YYMMDDhhmmss[S|W]`` -> (UTC ms, flag). Without a flag the time is ``local_tz``;
    the flag is then ``""``, or ``"?"`` for a local time that is ambiguous (the repeated hour
    of the autumn change; the earlier instant is taken) or does not exist (the skipped hour in
    spring)."""
    match = _TIMESTAMP_RE.match(text)
    if match is None:
        raise DsmrError(f"time stamp {text[:20]!r}: expected YYMMDDhhmmss and S or W")
    yy, mo, dd, hh, mi, ss = (int(g) for g in match.groups()[:6])
    flag = match.group(7)
    try:
        naive = datetime(2000 + yy, mo, dd, hh, mi, ss)
    except ValueError as exc:
        raise DsmrError(f"time stamp {text!r}: {exc}") from None
    if flag:
        utc = naive - timedelta(hours=2 if flag == "S" else 1)
        return int(utc.replace(tzinfo=UTC).timestamp()) * 1000, flag
    tz = local_tz or _default_tz()
    first, second = naive.replace(tzinfo=tz, fold=0), naive.replace(tzinfo=tz, fold=1)
    if first.utcoffset() != second.utcoffset():
        flag = "?"
    return int(first.timestamp()) * 1000, flag


def _quantity(text: str, where: str, units: frozenset[str] | None = None) -> tuple[Decimal, str]:
    value, star, unit = text.partition("*")
    if not _NUMBER_RE.match(value):
        raise DsmrError(f"{where}: {value[:24]!r} is not a number")
    if not star:
        unit = ""
    elif unit not in DSMR_UNITS:
        raise DsmrError(f"{where}: unit {unit[:16]!r} is not one meterlink knows")
    else:
        unit = DSMR_UNITS[unit]
    if units is not None and unit not in units:
        raise DsmrError(f"{where}: unit {unit!r}, expected one of {', '.join(sorted(units))}")
    return Decimal(value), unit


def _equipment_id(text: str) -> str:
    """Equipment ids are hex-coded ASCII (``4B38...`` -> ``K8...``); kept as sent otherwise."""
    if text and len(text) % 2 == 0 and re.fullmatch(r"[0-9A-Fa-f]+", text):
        decoded = bytes.fromhex(text)
        if all(0x20 <= b < 0x7F for b in decoded):
            return decoded.decode("ascii")
    return text


def _where(obj: DataObject) -> str:
    return f"telegram line {obj.line}, {obj.obis}"


def meter_readings(telegram: Telegram, local_tz: tzinfo | None = None) -> list[MeterReading]:
    """The electricity meter (channel 0) and every M-Bus channel that has a value.

    A value that cannot be taken (bad number, unit, time stamp) is left out and named in
    the meter's ``problems``; it never stops the other values or meters."""
    out = [_electricity(telegram, local_tz)]
    channels = sorted({o.obis.b for o in telegram.objects if o.obis.a == 0 and o.obis.b >= 1})
    for channel in channels:
        meter = _mbus(telegram, channel, local_tz)
        if meter is not None:
            out.append(meter)
    return out


def _electricity(telegram: Telegram, local_tz: tzinfo | None) -> MeterReading:
    values: list[Reading] = []
    problems: list[str] = []
    captured: int | None = None
    flag = ""
    equipment = ""
    for obj in telegram.objects:
        try:
            if obj.obis == CLOCK:
                captured, flag = parse_timestamp(obj.values[0], local_tz)
            elif obj.obis == EQUIPMENT_ID:
                equipment = _equipment_id(obj.values[0])
            elif obj.obis in ELECTRICITY:
                index = ELECTRICITY[obj.obis]
                if len(obj.values) <= index:
                    raise DsmrError(f"{_where(obj)}: {len(obj.values)} values")
                value, unit = _quantity(obj.values[index], _where(obj))
                if (unit == "") != (obj.obis in _UNITLESS):
                    raise DsmrError(f"{_where(obj)}: unexpected unit {unit!r}")
                values.append(Reading(obj.obis, value, unit, obj.obis))
        except DsmrError as exc:
            problems.append(str(exc))
    return MeterReading(
        0, "electricity", None, equipment, captured, flag, tuple(values), tuple(problems)
    )


def _mbus(telegram: Telegram, channel: int, local_tz: tzinfo | None) -> MeterReading | None:
    objects = {
        (o.obis.c, o.obis.d, o.obis.e): o
        for o in telegram.objects
        if o.obis.a == 0 and o.obis.b == channel
    }
    problems: list[str] = []
    device_type: int | None = None
    kind, quantity, units = f"m-bus channel {channel}", None, None
    type_obj = objects.get((24, 1, 0))
    if type_obj is not None:
        if type_obj.values[0].isdigit() and len(type_obj.values[0]) <= 3:
            device_type = int(type_obj.values[0])
            known = DEVICE_TYPES.get(device_type)
            if known is not None:
                kind, quantity, units = known
            else:
                kind = f"m-bus type {device_type}"
        else:
            problems.append(f"{_where(type_obj)}: device type {type_obj.values[0][:8]!r}")
    ident = objects.get((96, 1, 0)) or objects.get((96, 1, 1))
    equipment = _equipment_id(ident.values[0]) if ident is not None else ""
    values: list[Reading] = []
    captured: int | None = None
    flag = ""
    for key in _MBUS_VALUES:
        obj = objects.get(key)
        if obj is None:
            continue
        try:
            if key == (24, 3, 0):  # (time)(00)(60)(1)(0-n:24.2.1)(m3) (value)
                if len(obj.values) != 7:
                    raise DsmrError(f"{_where(obj)}: {len(obj.values)} values, expected 7")
                stamp, text = obj.values[0], f"{obj.values[6]}*{obj.values[5]}"
            else:  # (time)(value*unit)
                if len(obj.values) != 2:
                    raise DsmrError(f"{_where(obj)}: {len(obj.values)} values, expected 2")
                stamp, text = obj.values
            value, unit = _quantity(text, _where(obj), units)
            if unit == "":
                raise DsmrError(f"{_where(obj)}: value without unit")
            captured, flag = parse_timestamp(stamp, local_tz)
        except DsmrError as exc:
            problems.append(str(exc))
            continue
        code = quantity or obj.obis
        if any(r.obis == code for r in values):  # a second value object of this device
            code = obj.obis
        values.append(Reading(code, value, unit, obj.obis))
    if not values and not problems:
        return None
    return MeterReading(
        channel, kind, device_type, equipment, captured, flag, tuple(values), tuple(problems)
    )

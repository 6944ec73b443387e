"""VEE settings: defaults <- meter class <- meter, from the ``[vee]`` tables of the config.

```toml
[vee]                       # defaults for every meter (the rule settings below)
timezone = "Europe/Amsterdam"
interval = "15m"
[vee.max]                   # physical limits per OBIS (also [vee.min], [vee.units],
"1-0:1.7.0" = 23000         #  [vee.register_max])
[vee.class.residential]     # a meter class: the same keys, plus the meters in it
meters = ["em-1", "em-2"]
[vee.meter.em-1]            # one meter: the same keys
```

Values are exact (``Decimal``); durations are the collector's ``1d``/``6h``/``15m`` form.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from protocols.obis import Obis, ObisError, Quantity, quantity_for

from ..tomlfile import Section

__all__ = ["ALL_RULES", "MeterRules", "VeeSettings", "parse_vee"]

#: Every validation rule, in the order the engine runs them.
ALL_RULES = (
    "units",
    "limits",
    "timestamps",
    "monotonic",
    "negative",
    "sumcheck",
    "gaps",
    "spike",
    "zero",
    "history",
)

_MINUTE = 60_000
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR


@dataclass(frozen=True)
class MeterRules:
    """The effective settings of one meter (defaults, then its class, then its own table)."""

    rules: frozenset[str] = frozenset(ALL_RULES)
    timezone: str = "UTC"
    interval_ms: int = 15 * _MINUTE  # grid of the derived intervals (and the profile period)
    read_every_ms: int = 0  # expected spacing of reads (0: the interval); longer: a gap
    aligned: bool = True  # reads sit on the interval grid (a load profile): off it = drift
    short_gap_ms: int = _HOUR  # gaps up to this are interpolated; longer: like-day
    like_day_weeks: int = 4  # how many weeks back the like-day profile looks
    max_gap_ms: int = 35 * _DAY  # longer gaps are not estimated interval by interval
    future_ms: int = 5 * _MINUTE  # captured ahead of the collector's clock by more: flagged
    retention_ms: int = 400 * _DAY  # captured longer ago than this: flagged
    drift_ms: int = 2 * _MINUTE  # clock drift (off the grid, or ahead of arrival) beyond: flagged
    zero_ms: int = _DAY  # zero consumption for this long: flagged
    spike_factor: Decimal = Decimal(10)  # interval > factor x third-highest of the last 24 h
    day_high: Decimal = Decimal(3)  # a day above this x the usual same weekday: flagged
    day_low: Decimal = Decimal(3)  # a day below the usual / this: flagged
    rollover_share: Decimal = Decimal("0.1")  # a wrap must come from/to within this share
    sum_tolerance: Decimal = Decimal(0)  # sumcheck: |parts - whole| allowed
    units: dict[str, str] = field(default_factory=dict)  # OBIS -> unit (else the OBIS default)
    max: dict[str, Decimal] = field(default_factory=dict)  # OBIS -> highest physical value
    min: dict[str, Decimal] = field(default_factory=dict)  # OBIS -> lowest physical value
    register_max: dict[str, Decimal] = field(default_factory=dict)  # OBIS -> last before wrap
    # TOU check: total OBIS -> tariff OBIS whose sum must equal it
    tou: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # load profile vs register: register OBIS -> interval-energy OBIS summed between its reads
    profile_sum: dict[str, str] = field(default_factory=dict)
    serial_obis: str = "0-0:96.1.0"  # the meter's serial number: a change = a meter swap
    meter_class: str = ""

    @property
    def read_spacing_ms(self) -> int:
        return self.read_every_ms or self.interval_ms

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def expected_unit(self, obis: str) -> str | None:
        unit = self.units.get(obis)
        if unit is not None:
            return unit
        quantity = _quantity(obis)
        return None if quantity is None else quantity.unit

    def cumulative(self, obis: str) -> bool:
        """A register that only grows (energy, volume): its deltas are the consumption."""
        if obis in self.register_max:
            return True
        quantity = _quantity(obis)
        return quantity is not None and quantity.cumulative


_QUANTITY_CACHE: dict[str, Quantity | None] = {}


def _quantity(obis: str) -> Quantity | None:
    """The known quantity of an OBIS text (cached: this runs for every reading)."""
    try:
        return _QUANTITY_CACHE[obis]
    except KeyError:
        pass
    quantity = quantity_for(_obis(obis))
    if len(_QUANTITY_CACHE) < 4096:
        _QUANTITY_CACHE[obis] = quantity
    return quantity


_OBIS_CACHE: dict[str, Obis] = {}


def _obis(text: str) -> Obis:
    obis = _OBIS_CACHE.get(text)
    if obis is None:
        obis = _OBIS_CACHE[text] = Obis.parse(text)
    return obis


@dataclass(frozen=True)
class VeeSettings:
    """``[vee]``: whether it runs, the defaults, the classes and the meters' own tables."""

    enabled: bool = False
    defaults: MeterRules = field(default_factory=MeterRules)
    classes: dict[str, MeterRules] = field(default_factory=dict)
    meters: dict[str, MeterRules] = field(default_factory=dict)

    def for_meter(self, meter_id: str) -> MeterRules:
        return self.meters.get(meter_id, self.defaults)


_RULE_KEYS = {
    "rules",
    "timezone",
    "interval",
    "read_every",
    "aligned",
    "short_gap",
    "max_gap",
    "like_day_weeks",
    "future_tolerance",
    "retention",
    "clock_drift",
    "zero_after",
    "spike_factor",
    "day_high",
    "day_low",
    "rollover_share",
    "sum_tolerance",
    "units",
    "max",
    "min",
    "register_max",
    "tou",
    "profile_sum",
    "serial_obis",
}


def parse_vee(root: Section, parse_duration_ms: Callable[[str], int]) -> VeeSettings:
    """Read ``[vee]`` (absent: VEE off). Errors name the file, the line and the key."""
    if "vee" not in root.data:
        return VeeSettings()
    sec = root.table_of("vee")
    sec.check_keys(_RULE_KEYS | {"enabled", "class", "meter"})
    enabled = sec.data.get("enabled", True)
    if not isinstance(enabled, bool):
        raise sec.error("enabled", f"must be true or false, got {enabled!r}")
    defaults = _rules(sec, MeterRules(), parse_duration_ms)
    classes: dict[str, MeterRules] = {}
    members: dict[str, str] = {}
    if "class" in sec.data:
        table = sec.table_of("class")
        for name in table.data:
            csec = table.table_of(name)
            csec.check_keys(_RULE_KEYS | {"meters"})
            classes[name] = replace(_rules(csec, defaults, parse_duration_ms), meter_class=name)
            for meter in csec.str_list("meters") if "meters" in csec.data else []:
                if meter in members:
                    raise csec.error(
                        "meters", f"meter {meter!r} is already in class {members[meter]!r}"
                    )
                members[meter] = name
    meters = {meter: classes[name] for meter, name in members.items()}
    if "meter" in sec.data:
        table = sec.table_of("meter")
        for meter in table.data:
            msec = table.table_of(meter)
            msec.check_keys(_RULE_KEYS | {"class"})
            base = defaults
            if "class" in msec.data:
                name = msec.str("class")
                if name not in classes:
                    known = ", ".join(sorted(classes)) or "none"
                    raise msec.error("class", f"no [vee.class.{name}] (known: {known})")
                base = classes[name]
            elif meter in meters:
                base = meters[meter]
            meters[meter] = _rules(msec, base, parse_duration_ms)
    return VeeSettings(enabled, defaults, classes, meters)


def _rules(sec: Section, base: MeterRules, duration: Callable[[str], int]) -> MeterRules:
    out = base

    def dur(key: str, current: int) -> int:
        if key not in sec.data:
            return current
        try:
            return duration(sec.str(key))
        except ValueError as exc:
            raise sec.error(key, str(exc)) from None

    def dec(key: str, current: Decimal, low: Decimal) -> Decimal:
        if key not in sec.data:
            return current
        value = sec.decimal(key)
        assert value is not None
        if value < low:
            raise sec.error(key, f"must be at least {low}, got {value}")
        return value

    if "rules" in sec.data:
        rules = sec.str_list("rules")
        unknown = sorted(set(rules) - set(ALL_RULES))
        if unknown:
            raise sec.error("rules", f"unknown rule {unknown[0]!r} (known: {', '.join(ALL_RULES)})")
        out = replace(out, rules=frozenset(rules))
    if "timezone" in sec.data:
        tz = sec.str("timezone")
        try:
            ZoneInfo(tz)
        except (ZoneInfoNotFoundError, ValueError):
            raise sec.error("timezone", f"unknown time zone {tz!r}") from None
        out = replace(out, timezone=tz)
    interval = dur("interval", out.interval_ms)
    if _DAY % interval:
        raise sec.error("interval", "must divide a day evenly (e.g. 15m, 30m, 1h)")
    aligned = sec.data.get("aligned", out.aligned)
    if not isinstance(aligned, bool):
        raise sec.error("aligned", f"must be true or false, got {aligned!r}")
    out = replace(
        out,
        interval_ms=interval,
        read_every_ms=dur("read_every", out.read_every_ms),
        aligned=aligned,
        short_gap_ms=dur("short_gap", out.short_gap_ms),
        max_gap_ms=dur("max_gap", out.max_gap_ms),
        future_ms=dur("future_tolerance", out.future_ms),
        retention_ms=dur("retention", out.retention_ms),
        drift_ms=dur("clock_drift", out.drift_ms),
        zero_ms=dur("zero_after", out.zero_ms),
        like_day_weeks=sec.int("like_day_weeks", out.like_day_weeks, 1, 52),
        spike_factor=dec("spike_factor", out.spike_factor, Decimal(1)),
        day_high=dec("day_high", out.day_high, Decimal(1)),
        day_low=dec("day_low", out.day_low, Decimal(1)),
        rollover_share=dec("rollover_share", out.rollover_share, Decimal(0)),
        sum_tolerance=dec("sum_tolerance", out.sum_tolerance, Decimal(0)),
    )
    if "units" in sec.data:
        units = _obis_table(sec, "units", lambda s, k: s.str(k))
        out = replace(out, units={**out.units, **units})
    for key in ("max", "min", "register_max"):
        if key in sec.data:
            values = _obis_table(sec, key, lambda s, k: s.decimal(k))
            out = replace(out, **{key: {**getattr(out, key), **values}})
    if "tou" in sec.data:
        tou = _obis_table(
            sec, "tou", lambda s, k: tuple(_check_obis(s, k, v) for v in s.str_list(k))
        )
        out = replace(out, tou={**out.tou, **tou})
    if "serial_obis" in sec.data:
        out = replace(out, serial_obis=_check_obis(sec, "serial_obis", sec.str("serial_obis")))
    if "profile_sum" in sec.data:
        pairs = _obis_table(sec, "profile_sum", lambda s, k: _check_obis(s, k, s.str(k)))
        out = replace(out, profile_sum={**out.profile_sum, **pairs})
    return out


def _check_obis(sec: Section, key: str, text: str) -> str:
    try:
        return str(Obis.parse(text))
    except ObisError as exc:
        raise sec.error(key, str(exc)) from None


def _obis_table(sec: Section, key: str, get: Callable[[Section, str], Any]) -> dict[str, Any]:
    table = sec.table_of(key)
    out = {}
    for name in table.data:
        out[_check_obis(table, name, name)] = get(table, name)
    return out

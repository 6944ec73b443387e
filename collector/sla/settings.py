"""``[sla]`` of the collector config: SLA classes and which meters each one holds.

```toml
[sla]
timezone = "Europe/Amsterdam"        # whose days are evaluated (default UTC)
default_class = "residential"        # meters no class matches (default: not evaluated)

[sla.class.residential]
actual_pct = "99.5"                  # share of intervals that must be actual
on_time_pct = "100"                  # share that must be at the head-end by the deadline
deadline = "4h"                      # after the interval's end
commodity = "electricity"            # match: meters with electricity registers (OBIS A = 1)
vee_class = "residential"            # match: meters of this [vee.class] (optional)
meters = ["em-1", "em-2"]            # match: these meters, whatever else (optional)
obis = ["1-0:1.8.0"]                 # the register whose intervals count (default: the
                                     #   commodity's main import register)
```

A meter's class: the class naming it in ``meters``; else the first class (in file order)
whose ``commodity`` and ``vee_class`` (those given) both fit it; else ``default_class``;
else none (counted as unclassified, not evaluated). Without ``[sla]`` every meter is in
the built-in class ``default`` (99.5 % actual, 100 % within 4 h). Errors name the file,
the line and the key; the collector does not start with a bad ``[sla]``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from protocols.obis import Obis, ObisError

from ..tomlfile import Section

__all__ = [
    "COMMODITIES",
    "DEFAULT_CLASS",
    "MAIN_REGISTER",
    "SlaClass",
    "SlaSettings",
    "commodity_of_obis",
    "parse_sla",
]

_HOUR = 3_600_000

#: OBIS value group A (the medium) -> commodity
_MEDIUM = {1: "electricity", 6: "heat", 7: "gas", 8: "water", 9: "water"}
COMMODITIES = ("electricity", "gas", "water", "heat")
#: the register whose intervals count when a class names none
MAIN_REGISTER = {
    "electricity": "1-0:1.8.0",
    "gas": "7-0:3.0.0",
    "water": "8-0:1.0.0",
    "heat": "6-0:1.0.0",
}


def commodity_of_obis(obis: str) -> str | None:
    """The commodity an OBIS code measures (its medium, value group A); None if unknown."""
    head = obis.split("-", 1)[0]
    return _MEDIUM.get(int(head)) if head.isdigit() else None


@dataclass(frozen=True)
class SlaClass:
    name: str
    actual_pct: Decimal = Decimal("99.5")
    on_time_pct: Decimal = Decimal(100)
    deadline_ms: int = 4 * _HOUR
    commodity: str | None = None
    vee_class: str | None = None
    meters: tuple[str, ...] = ()
    obis: tuple[str, ...] = ()

    def fits(self, commodity: str | None, vee_class: str) -> bool:
        """Whether a meter of this commodity and VEE class matches (``meters`` aside)."""
        if self.commodity is not None and self.commodity != commodity:
            return False
        return self.vee_class is None or self.vee_class == vee_class


DEFAULT_CLASS = SlaClass("default")


@dataclass(frozen=True)
class SlaSettings:
    timezone: str = "UTC"
    classes: tuple[SlaClass, ...] = (DEFAULT_CLASS,)
    default_class: str | None = DEFAULT_CLASS.name
    #: /metrics: the SLA gauges are evaluated again at most this often (wall clock)
    metrics_every_ms: int = 60_000
    by_meter: dict[str, SlaClass] = field(default_factory=dict)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def class_named(self, name: str) -> SlaClass:
        for cls in self.classes:
            if cls.name == name:
                return cls
        raise KeyError(name)

    def class_of(self, meter_id: str, commodity: str | None, vee_class: str) -> SlaClass | None:
        explicit = self.by_meter.get(meter_id)
        if explicit is not None:
            return explicit
        for cls in self.classes:
            # a class of listed meters only takes others when it also has criteria
            by_criteria = not cls.meters or cls.commodity or cls.vee_class
            if by_criteria and cls.fits(commodity, vee_class):
                return cls
        return None if self.default_class is None else self.class_named(self.default_class)

    @property
    def max_deadline_ms(self) -> int:
        return max((c.deadline_ms for c in self.classes), default=DEFAULT_CLASS.deadline_ms)


_CLASS_KEYS = {"actual_pct", "on_time_pct", "deadline", "commodity", "vee_class", "meters", "obis"}


def parse_sla(root: Section, parse_duration_ms: Callable[[str], int]) -> SlaSettings:
    """Read ``[sla]`` (absent: the built-in ``default`` class for every meter)."""
    if "sla" not in root.data:
        return SlaSettings()
    sec = root.table_of("sla")
    sec.check_keys({"timezone", "default_class", "metrics_every", "class"})
    timezone = sec.str("timezone", "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise sec.error("timezone", f"unknown time zone {timezone!r}") from None
    metrics_every = _duration(sec, "metrics_every", "60s", parse_duration_ms)
    classes: list[SlaClass] = []
    by_meter: dict[str, SlaClass] = {}
    table = sec.table_of("class", required=False)
    for name in table.data:
        classes.append(_parse_class(table, name, parse_duration_ms))
        for meter in classes[-1].meters:
            if meter in by_meter:
                csec = table.table_of(name)
                raise csec.error(
                    "meters", f"meter {meter!r} is already in class {by_meter[meter].name!r}"
                )
            by_meter[meter] = classes[-1]
    default = sec.data.get("default_class")
    if default is not None:
        default = sec.str("default_class")
        if default not in {c.name for c in classes}:
            known = ", ".join(c.name for c in classes) or "none"
            raise sec.error("default_class", f"no [sla.class.{default}] (known: {known})")
    if not classes:
        classes = [DEFAULT_CLASS]
        default = DEFAULT_CLASS.name
    return SlaSettings(timezone, tuple(classes), default, metrics_every, by_meter)


def _duration(sec: Section, key: str, default: str, parse_duration_ms: Callable[[str], int]) -> int:
    try:
        return parse_duration_ms(sec.str(key, default))
    except ValueError as exc:
        raise sec.error(key, str(exc)) from None


def _pct(sec: Section, key: str, default: str) -> Decimal:
    if key not in sec.data:
        return Decimal(default)
    value = sec.decimal(key)
    assert value is not None
    if not 0 <= value <= 100:
        raise sec.error(key, f"must be a percentage 0..100, got {value}")
    return value


def _parse_class(table: Section, name: str, parse_duration_ms: Callable[[str], int]) -> SlaClass:
    csec = table.table_of(name)
    csec.check_keys(_CLASS_KEYS)
    commodity = None
    if "commodity" in csec.data:
        commodity = csec.str("commodity")
        if commodity not in COMMODITIES:
            raise csec.error(
                "commodity", f"unknown commodity {commodity!r} (known: {', '.join(COMMODITIES)})"
            )
    obis: tuple[str, ...] = ()
    if "obis" in csec.data:
        codes = csec.str_list("obis")
        for code in codes:
            try:
                Obis.parse(code)
            except (ObisError, ValueError) as exc:
                raise csec.error("obis", f"not an OBIS code {code!r}: {exc}") from None
        obis = tuple(codes)
    return SlaClass(
        name=name,
        actual_pct=_pct(csec, "actual_pct", "99.5"),
        on_time_pct=_pct(csec, "on_time_pct", "100"),
        deadline_ms=_duration(csec, "deadline", "4h", parse_duration_ms),
        commodity=commodity,
        vee_class=csec.str("vee_class") if "vee_class" in csec.data else None,
        meters=tuple(csec.str_list("meters")) if "meters" in csec.data else (),
        obis=obis,
    )

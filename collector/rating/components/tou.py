"""Time-of-use energy: a price per period, periods by month x weekday/weekend x time of day
(public holidays are weekend days), optionally tiered per period (URDB's form)::

    [[version.charge]]
    type = "tou"
    default = "offpeak"
    schedule = [{ months = "6-9", days = "weekday", hours = "16:00-21:00", period = "peak" }]
    [version.charge.periods]
    peak = { price = 0.35, label = "Mon-Fri 16-21, Jun-Sep" }
    offpeak = 0.21

Tiered per period: ``tiers_upto = [100, 300]`` and each period's price a list of one price per
tier (``peak = [0.30, 0.35, 0.40]``). The tiers count the period's total usage in time order.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ...tomlfile import Section
from ..model import ChargeLine, RatingJob
from .common import ParseContext
from .energy import PriceTable, rate_table
from .schedule import Schedule, parse_schedule

__all__ = ["Tou", "parse", "parse_periods"]


@dataclass(frozen=True)
class Tou:
    label: str
    table: PriceTable
    schedule: Schedule
    unit: str
    kind: str = "tou"

    def rate(self, job: RatingJob) -> list[ChargeLine]:
        return rate_table(
            job, self.kind, self.label, self.table, self.schedule, job.usage, self.unit
        )


def _number(value: object) -> bool:
    return isinstance(value, int | Decimal) and not isinstance(value, bool)


def parse_periods(
    sec: Section, tiers: int
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[tuple[Decimal, ...], ...]]:
    """``[periods]``: name -> price | [price per tier] | { price = ..., label = "..." }."""
    periods = sec.data.get("periods")
    if not isinstance(periods, dict) or not periods:
        raise sec.error("periods", "must be a table of period name -> price")
    names, labels, prices = [], [], []
    for name, spec in periods.items():
        label = name
        if isinstance(spec, dict):
            unknown = set(spec) - {"price", "label"}
            if unknown:
                raise sec.error("periods", f"period {name!r}: unknown key(s) {sorted(unknown)}")
            label = spec.get("label") or name
            label = f"{name} ({label})" if label != name else name
            spec = spec.get("price")
        row = spec if isinstance(spec, list) else [spec]
        if not all(_number(p) and p >= 0 for p in row):
            raise sec.error("periods", f"period {name!r}: price(s) must be non-negative numbers")
        if len(row) != tiers:
            raise sec.error("periods", f"period {name!r}: {len(row)} price(s) for {tiers} tier(s)")
        names.append(name)
        labels.append(label)
        prices.append(tuple(Decimal(p) for p in row))
    return tuple(names), tuple(labels), tuple(prices)


def parse(sec: Section, ctx: ParseContext) -> Tou:
    sec.check_keys(
        {
            "type",
            "label",
            "periods",
            "schedule",
            "default",
            "weekday",
            "weekend",
            "tiers_upto",
            "mode",
            "prorate",
        }
    )
    upto = sec.data.get("tiers_upto", [])
    if not isinstance(upto, list) or not all(_number(u) and u > 0 for u in upto):
        raise sec.error("tiers_upto", "must be a list of positive tier limits")
    limits = tuple(Decimal(u) for u in upto)
    if list(limits) != sorted(set(limits)):
        raise sec.error("tiers_upto", "tier limits must grow")
    mode = sec.str("mode", "graduated")
    if mode not in ("graduated", "volume"):
        raise sec.error("mode", f"must be graduated or volume, got {mode!r}")
    prorate = sec.data.get("prorate", True)
    if not isinstance(prorate, bool):
        raise sec.error("prorate", "must be true or false")
    names, labels, prices = parse_periods(sec, len(limits) + 1)
    schedule = parse_schedule(sec, names)
    table = PriceTable(names, labels, limits, prices, mode, prorate)
    default = "Energy" if ctx.unit == "kWh" else "Volume"
    return Tou(sec.str("label", default), table, schedule, ctx.unit)

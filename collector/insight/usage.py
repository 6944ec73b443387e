"""Usage by day and by hour per service point, from VEE's derived intervals.

The intervals are the ones the bill rates (``store.vee.intervals``: the current rows of each
meter on the point, clipped to the meter's time there, converted to the point's unit by
``bill._usage``), so a day's usage here is what the bill charges for that day. An interval
belongs to the local day and hour its **start** lies in (as in rating). Each interval is
split:

* by TOU period: the period the point's tariff (the one assigned at the interval's start)
  puts the interval's start in, asked of the tariff's own schedule (``bill._tou_name``, the
  same lookup the bill's heat map uses); a tariff without a TOU schedule gives ``flat``;
* by quality: VEE's ``actual`` / ``estimated`` / ``edited`` / ``gap``.

Everything is ``Decimal``; nothing is rounded. A period with no intervals has no total
(``None``: absent, not zero).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from protocols.units import UnitError

from ..errors import RatingError
from ..rating.accounts import Account, ServicePoint, local_ms
from ..rating.bill import _tou_name, _usage
from ..rating.model import QUALITIES, TariffHistory, UsageInterval

__all__ = [
    "NO_TOU",
    "Bucket",
    "PointUsage",
    "RatedInterval",
    "load_point",
    "point_usage",
    "shift_year",
]

NO_TOU = "flat"  # the TOU "period" of an interval whose tariff has no TOU schedule
_ZERO = Decimal(0)
_HOUR = timedelta(hours=1)


def _ms(moment: datetime) -> int:
    return int((moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1))


@dataclass(frozen=True, slots=True)
class RatedInterval:
    """One interval with where it belongs: its local day and hour, TOU period, tariff."""

    usage: UsageInterval
    day: date  # local
    hour: datetime  # the local wall-clock hour's start, in UTC: the repeated hour of a DST
    # change is two keys (two local datetimes differing only in ``fold`` compare and hash equal)
    tou: str
    tariff_id: str


@dataclass
class Bucket:
    """Usage of a day, an hour or a whole period."""

    total: Decimal = _ZERO
    intervals: int = 0
    seconds: int = 0  # time covered by the intervals
    by_tou: dict[str, Decimal] = field(default_factory=dict)
    by_quality: dict[str, Decimal] = field(default_factory=lambda: dict.fromkeys(QUALITIES, _ZERO))

    def add(self, item: RatedInterval) -> None:
        q = item.usage.quantity
        self.total += q
        self.intervals += 1
        self.seconds += int((item.usage.end - item.usage.start).total_seconds())
        self.by_tou[item.tou] = self.by_tou.get(item.tou, _ZERO) + q
        self.by_quality[item.usage.quality] = self.by_quality.get(item.usage.quality, _ZERO) + q


@dataclass
class PointUsage:
    """One service point's usage over ``[first, last_exclusive)`` local days."""

    point: ServicePoint
    first: date
    end: date  # exclusive
    items: list[RatedInterval]
    tariffs: tuple[str, ...]
    whole: Bucket
    days: dict[date, Bucket]
    hours: dict[datetime, Bucket]

    @property
    def absent(self) -> bool:
        return not self.items


def _tariff_at(point: ServicePoint, ms: int) -> str | None:
    for span in point.tariffs:
        if span.start_ms <= ms < span.end_ms:
            return span.tariff_id
    return None


async def load_point(
    store: Any, account: Account, point: ServicePoint, first: date, end: date
) -> list[UsageInterval]:
    """The point's import intervals starting in local days ``[first, end)`` (time order)."""
    zone = account.timezone
    lo, hi = local_ms(first, zone), local_ms(end, zone)
    out: list[UsageInterval] = []
    for span in point.meters_between(lo, hi):
        for obis, role in point.quantities:
            if role != "import":
                continue
            rows = await store.vee.intervals(span.meter_id, obis, span.start_ms, span.end_ms)
            if rows:
                try:
                    out.extend(_usage(rows, point.unit))
                except UnitError as exc:  # a unit the point's commodity cannot take
                    where = f"meter {span.meter_id} {obis}"
                    raise RatingError(f"{where}: interval unit: {exc}") from None
    out.sort(key=lambda u: u.start)
    return out


def classify(
    usage: Iterable[UsageInterval],
    account: Account,
    point: ServicePoint,
    histories: Mapping[str, TariffHistory],
) -> list[RatedInterval]:
    zone = account.timezone
    out = []
    for u in usage:
        local = u.start.astimezone(zone)
        tariff_id = _tariff_at(point, _ms(u.start)) or ""
        history = histories.get(tariff_id)
        tou = (_tou_name(history, local) if history is not None else "") or NO_TOU
        hour = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        out.append(RatedInterval(u, local.date(), hour, tou, tariff_id))
    return out


def aggregate(
    items: Sequence[RatedInterval], point: ServicePoint, first: date, end: date
) -> PointUsage:
    whole = Bucket()
    days: dict[date, Bucket] = {}
    hours: dict[datetime, Bucket] = {}
    tariffs: dict[str, None] = {}
    for item in items:
        whole.add(item)
        days.setdefault(item.day, Bucket()).add(item)
        hours.setdefault(item.hour, Bucket()).add(item)
        if item.tariff_id:
            tariffs.setdefault(item.tariff_id)
    return PointUsage(point, first, end, list(items), tuple(tariffs), whole, days, hours)


async def point_usage(
    store: Any,
    account: Account,
    point: ServicePoint,
    histories: Mapping[str, TariffHistory],
    first: date,
    end: date,
) -> PointUsage:
    """Load, classify and aggregate one service point over local days ``[first, end)``."""
    usage = await load_point(store, account, point, first, end)
    return aggregate(classify(usage, account, point, histories), point, first, end)


def shift_year(day: date, years: int = -1) -> date:
    """The same calendar day ``years`` away (29 February becomes 28 February)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def comparison_ranges(first: date, end: date) -> dict[str, tuple[date, date]]:
    """The previous period of as many local days, and the same local days a year earlier."""
    days = (end - first).days
    return {
        "previous": (first - timedelta(days=days), first),
        "last_year": (shift_year(first), shift_year(end)),
    }

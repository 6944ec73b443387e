"""The most expensive hours of a period: each hour of each service point rated by the tariff
engine (``rating.engine.rate``) on that hour's intervals, with the tariff in effect.

What an hour's cost includes (``COST_INCLUDES``): the usage-priced charges only — ``energy``,
``tou`` and ``dynamic`` lines, each rounded once to the currency's minor unit by the engine,
as on a bill. Standing charges, demand, block tiers (and tiered TOU), minimums, taxes and
export credits are left out: they belong to a day or to the whole period (a tier depends on
the period's cumulative usage), not to one hour. The engine rates a copy of each tariff that
keeps only those components (``usage_priced``), so prices, versions, TOU periods, holidays and
rounding are the tariff's own.

An hour of the account is the local wall-clock hour; its cost is the sum over the account's
service points. Ranked by cost (highest first), then by usage, then by time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from ..errors import RatingError
from ..rating.engine import rate
from ..rating.model import TariffHistory
from .usage import PointUsage, RatedInterval

__all__ = ["COST_INCLUDES", "CostlyHour", "HourPart", "top_hours", "usage_priced"]

COST_INCLUDES = (
    "energy charges only: the energy, time-of-use and dynamic price lines the tariff engine "
    "rates for the hour's intervals, each rounded to the currency's minor unit; standing "
    "charges, demand, block tiers, minimums, taxes and export credits are not included"
)
PRICED = ("energy", "tou", "dynamic")
_ZERO = Decimal(0)


@dataclass(frozen=True)
class HourPart:
    service_point: str
    quantity: Decimal
    unit: str
    cost: Decimal
    tou: str
    unit_prices: tuple[Decimal, ...]
    tariff_id: str


@dataclass(frozen=True)
class CostlyHour:
    hour: datetime  # the local hour's start, in UTC
    cost: Decimal
    currency: str
    parts: tuple[HourPart, ...]

    @property
    def start_utc(self) -> datetime:
        return self.hour


_PRICED_CACHE: dict[tuple[str, int], TariffHistory] = {}


def usage_priced(history: TariffHistory) -> TariffHistory:
    """``history`` with only its per-unit, per-interval components (untiered)."""
    key = (history.id, id(history))
    found = _PRICED_CACHE.get(key)
    if found is None:
        versions = []
        for version in history.versions:
            keep = tuple(
                c
                for c in version.components
                if c.kind in PRICED and not getattr(getattr(c, "table", None), "limits", ())
            )
            versions.append(replace(version, components=keep))
        found = replace(history, versions=tuple(versions))
        if len(_PRICED_CACHE) > 1000:
            _PRICED_CACHE.clear()
        _PRICED_CACHE[key] = found
    return found


def _rate_hour(
    items: Sequence[RatedInterval], history: TariffHistory, tz: Any, hour: datetime
) -> tuple[Decimal, tuple[Decimal, ...]]:
    start = hour.astimezone(UTC)
    end = start + timedelta(hours=1)
    lines = rate(usage_priced(history), [i.usage for i in items], start, end, tz)
    cost = sum((line.amount for line in lines), _ZERO)
    prices = tuple(line.unit_price for line in lines if line.quantity)
    return cost, prices


def top_hours(
    points: Sequence[PointUsage],
    histories: Mapping[str, TariffHistory],
    tz: Any,
    n: int = 5,
) -> tuple[list[CostlyHour], list[str]]:
    """The ``n`` most expensive local hours over ``points``, and notes (hours or tariffs
    that could not be rated)."""
    notes: list[str] = []
    by_hour: dict[datetime, list[HourPart]] = {}
    currencies: set[str] = set()
    for usage in points:
        grouped: dict[tuple[datetime, str], list[RatedInterval]] = {}
        for item in usage.items:
            grouped.setdefault((item.hour, item.tariff_id), []).append(item)
        for (hour, tariff_id), items in grouped.items():
            history = histories.get(tariff_id)
            if history is None:
                notes.append(f"{usage.point.id}: no tariff for {hour.astimezone(tz).isoformat()}")
                continue
            try:
                cost, prices = _rate_hour(items, history, tz, hour)
            except RatingError as exc:
                local = hour.astimezone(tz).isoformat()
                notes.append(f"{usage.point.id} {local}: not rated: {exc}")
                continue
            currencies.add(history.currency)
            quantity = sum((i.usage.quantity for i in items), _ZERO)
            tou = "/".join(sorted({i.tou for i in items}))
            by_hour.setdefault(hour, []).append(
                HourPart(usage.point.id, quantity, usage.point.unit, cost, tou, prices, tariff_id)
            )
    if len(currencies) > 1:
        notes.append(f"tariffs in several currencies ({', '.join(sorted(currencies))})")
    currency = sorted(currencies)[0] if currencies else ""
    ranked = sorted(
        by_hour.items(),
        key=lambda kv: (
            -sum((p.cost for p in kv[1]), _ZERO),
            -sum((p.quantity for p in kv[1]), _ZERO),
            kv[0],
        ),
    )
    out = [
        CostlyHour(hour, sum((p.cost for p in parts), _ZERO), currency, tuple(parts))
        for hour, parts in ranked[:n]
    ]
    return out, notes

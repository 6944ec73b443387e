"""The rating interface: what goes into ``rate(...)`` and what comes out.

Shared by the tariff engine (tariff files, components, ``rate``) and the bill (accounts,
service points, storage, outputs). Everything here is plain data: no I/O, no clocks.

``rate(tariffs, usage, start, end, tz, context) -> list[ChargeLine]`` lives in
``collector.rating.engine``; it rates one service point (one commodity) over one billing period
``[start, end)`` (aware datetimes; calendar rules use local time in ``tz``). Tariff versions are
chosen by effective date (a change mid-period splits the lines), components run in the order the
tariff file states them, taxes last in their stated order.

Money: ``Decimal`` everywhere; unit prices keep full precision; each line's ``amount`` is rounded
once to the currency's minor unit (the tariff's rounding mode, half-up by default); a bill total is
the sum of its rounded lines.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from ..errors import RatingError

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

__all__ = [
    "QUALITIES",
    "ChargeLine",
    "Component",
    "PriceSeries",
    "RatingContext",
    "RatingError",
    "RatingJob",
    "TariffHistory",
    "TariffVersion",
    "UsageInterval",
]

#: interval qualities as VEE derives them (``store.vee.intervals``)
QUALITIES = ("actual", "estimated", "edited", "gap")


@dataclass(frozen=True, slots=True)
class UsageInterval:
    """One interval of one quantity of one service point."""

    start: datetime  # aware, UTC
    end: datetime  # aware, UTC
    quantity: Decimal  # consumption in the interval (kWh, m3, ...), exact
    unit: str  # "kWh" | "m3" | ...
    quality: str  # "actual" | "estimated" | "edited" | "gap"
    method: str = ""  # estimation method when estimated


@dataclass(frozen=True, slots=True)
class ChargeLine:
    """One line of a bill section, as a customer reads it."""

    component: str  # "standing" | "energy" | "tier" | "tou" | "dynamic" | "demand" | ...
    label: str  # "Energy, peak (Mon-Fri 07-23, summer)"
    quantity: Decimal  # in ``unit``: days for standing, kWh, kW for demand, money for a % tax
    unit: str
    unit_price: Decimal  # full precision (a % tax: the fraction, e.g. 0.21)
    amount: Decimal  # rounded once to the currency's minor unit
    currency: str
    start: datetime  # the interval range behind the line
    end: datetime
    actual_intervals: int
    estimated_intervals: int  # estimated + edited intervals
    explanation: tuple[str, ...]  # how it was computed, one line each
    period: str = ""  # the TOU period (or "" when the line is not one period's)
    tier: int | None = None  # 1-based tier the line prices, when it prices one
    tariff_id: str = ""
    tariff_version: str = ""  # the version's effective_from (ISO date); "" for the flat form


@dataclass(frozen=True, slots=True)
class PriceSeries:
    """Per-interval prices (e.g. day-ahead hourly): each price holds from its start to the next."""

    name: str
    starts: tuple[datetime, ...]  # aware, ascending
    prices: tuple[Decimal, ...]  # currency per unit
    end: datetime  # the end of the last price's interval
    source: str = ""  # file the series came from, for errors and explanations

    def index_at(self, moment: datetime) -> int | None:
        """Index of the price holding at ``moment``, or None when the series does not cover it."""
        if not self.starts or moment < self.starts[0] or moment >= self.end:
            return None
        return bisect.bisect_right(self.starts, moment) - 1

    def interval_end(self, index: int) -> datetime:
        return self.starts[index + 1] if index + 1 < len(self.starts) else self.end


@dataclass(frozen=True, slots=True)
class RatingContext:
    """What rating needs beyond the intervals of the period.

    ``previous_peaks``: the highest billed demand (kW) of each previous month, most recent last,
    for ratchets (a ratchet looks back over the months its tariff says). ``price_series``: price
    series by name, overriding the file a dynamic component names. ``export``: the export
    intervals of the same service point, for an export credit component. ``holidays``: extra
    public holidays (local dates) on top of the tariff's calendar.
    """

    previous_peaks: tuple[Decimal, ...] = ()
    price_series: Mapping[str, PriceSeries] = field(default_factory=dict)
    export: Sequence[UsageInterval] = ()
    holidays: frozenset[date] = frozenset()


@dataclass(slots=True)
class RatingJob:
    """One tariff version's share of a billing period, handed to each component in turn.

    ``usage``: the intervals whose start lies in ``[start, end)``, in time order. ``lines``: the
    lines the components before this one produced in this job (minimum charge and taxes look at
    them). ``period_start``/``period_end`` are the whole billing period's bounds.
    """

    tariff: TariffHistory
    version: TariffVersion
    usage: Sequence[UsageInterval]
    start: datetime
    end: datetime
    period_start: datetime
    period_end: datetime
    tz: ZoneInfo
    context: RatingContext
    lines: list[ChargeLine] = field(default_factory=list)
    holidays: frozenset[date] = frozenset()


class Component(Protocol):
    """A charge component of a tariff version (one module each in ``components/``)."""

    kind: str
    label: str

    def rate(self, job: RatingJob) -> list[ChargeLine]: ...


@dataclass(frozen=True)
class TariffVersion:
    """A tariff's content from ``effective_from`` (local date, inclusive) to ``effective_to``
    (exclusive; None = open-ended)."""

    effective_from: date
    effective_to: date | None
    components: tuple[Component, ...]
    holidays: frozenset[date] = frozenset()
    note: str = ""


@dataclass(frozen=True)
class TariffHistory:
    """A tariff file: its versions in effective-date order, never overlapping."""

    id: str
    name: str
    currency: str
    minor_unit: int
    rounding: str  # a decimal rounding mode, e.g. decimal.ROUND_HALF_UP
    unit: str  # the quantity it prices: "kWh", "m3", ...
    versions: tuple[TariffVersion, ...]
    path: Path | None = None

    def version_at(self, day: date) -> TariffVersion | None:
        for version in self.versions:
            if version.effective_from <= day and (
                version.effective_to is None or day < version.effective_to
            ):
                return version
        return None

"""Energy (or volume) charges: the price table behind flat, tiered and time-of-use rates.

A price table is prices[period][tier]: a flat rate is 1 x 1, block tiers are 1 x N, time-of-use
is P x 1, tiered time-of-use (URDB's form) is P x N. Tiers count the cumulative usage of the
billing period in time order over all periods; a tier limit crossed inside one interval splits
that interval's quantity exactly (the part up to the limit at the lower tier's price, the rest
at the next). ``volume`` tiers price all units at the tier the period's total reaches.

The hot path (a bill run rates millions of intervals) works on lists: the period of each
interval comes from a cache per (schedule, zone, grid of interval starts), the sums per period
and tier are C-level ``sum(compress(...))`` over slices cut at the tier crossings.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache
from itertools import accumulate, compress
from zoneinfo import ZoneInfo

from ...errors import RatingError
from ...tomlfile import Section
from ..model import ChargeLine, RatingJob, UsageInterval
from .common import ParseContext, day_count, fmt, make_line, positive
from .schedule import Schedule

__all__ = ["Energy", "PriceTable", "parse", "parse_tiers", "rate_table"]

_ZERO = Decimal(0)


@dataclass(frozen=True)
class PriceTable:
    periods: tuple[str, ...]  # ("",) when not time-of-use
    period_labels: tuple[str, ...]
    limits: tuple[Decimal, ...]  # tier upper bounds of cumulative usage; len = tiers - 1
    prices: tuple[tuple[Decimal, ...], ...]  # [period][tier]
    mode: str = "graduated"  # | "volume"
    prorate: bool = True  # limits scaled by days when a tariff version covers part of a period


def parse_tiers(sec: Section, key: str = "tiers") -> tuple[tuple[Decimal, ...], list[Decimal]]:
    """``tiers = [{ upto = 100, price = 0.2 }, { price = 0.3 }]`` -> (limits, prices)."""
    tiers = sec.data.get(key)
    if not isinstance(tiers, list) or not tiers or not all(isinstance(t, dict) for t in tiers):
        raise sec.error(key, "must be a list of { upto = N, price = P }, the last without upto")
    limits: list[Decimal] = []
    prices: list[Decimal] = []
    for number, tier in enumerate(tiers, 1):
        unknown = set(tier) - {"upto", "price"}
        if unknown:
            raise sec.error(key, f"tier {number}: unknown key(s) {sorted(unknown)}")
        price = tier.get("price")
        if not isinstance(price, int | Decimal) or isinstance(price, bool):
            raise sec.error(key, f"tier {number}: price must be a number")
        prices.append(Decimal(price))
        upto = tier.get("upto")
        if number < len(tiers):
            if not isinstance(upto, int | Decimal) or isinstance(upto, bool) or upto <= 0:
                raise sec.error(key, f"tier {number}: upto must be a positive number")
            if limits and Decimal(upto) <= limits[-1]:
                raise sec.error(key, f"tier {number}: upto must grow ({upto} <= {limits[-1]})")
            limits.append(Decimal(upto))
        elif upto is not None:
            raise sec.error(key, f"tier {number}: the last tier has no upto (it is unbounded)")
    return tuple(limits), prices


@lru_cache(maxsize=64)
def _grid(first: datetime, count: int, step: timedelta) -> list[datetime]:
    return [first + step * i for i in range(count)]


@lru_cache(maxsize=64)
def _slot_periods(
    schedule: Schedule,
    tz: ZoneInfo,
    holidays: frozenset[date],
    first: datetime,
    count: int,
    step: timedelta,
) -> tuple[list[int], tuple[list[bool], ...]]:
    indexes = [schedule.index_at(s.astimezone(tz), holidays) for s in _grid(first, count, step)]
    masks = tuple([i == p for i in indexes] for p in range(len(schedule.periods)))
    return indexes, masks


def period_indexes(
    schedule: Schedule | None, usage: Sequence[UsageInterval], job: RatingJob
) -> tuple[list[int], tuple[list[bool], ...]]:
    """The period index of each interval (by its local start) and one mask per period."""
    n = len(usage)
    if schedule is None or n == 0:
        return [0] * n, ([True] * n,)
    first = usage[0].start
    step = usage[0].end - first
    if n > 1 and step > timedelta(0) and [u.start for u in usage] == _grid(first, n, step):
        return _slot_periods(schedule, job.tz, job.holidays, first, n, step)
    tz, holidays = job.tz, job.holidays
    indexes = [schedule.index_at(u.start.astimezone(tz), holidays) for u in usage]
    return indexes, tuple([i == p for i in indexes] for p in range(len(schedule.periods)))


def _share(job: RatingJob) -> tuple[int, int]:
    """(days of this job, days of the billing period): tier limits are per period."""
    return day_count(job.start, job.end, job.tz), day_count(
        job.period_start, job.period_end, job.tz
    )


def _span(mask: list[bool]) -> tuple[int, int]:
    """First and last index where ``mask`` is true, (-1, -1) when none is."""
    if True not in mask:
        return -1, -1
    return mask.index(True), len(mask) - 1 - mask[::-1].index(True)


def rate_table(
    job: RatingJob,
    kind: str,
    label: str,
    table: PriceTable,
    schedule: Schedule | None,
    usage: Sequence[UsageInterval],
    unit: str,
) -> list[ChargeLine]:
    n = len(usage)
    q = [u.quantity for u in usage]
    _, masks = period_indexes(schedule, usage, job)
    qualities = [u.quality for u in usage]
    act = [x == "actual" for x in qualities]
    gap = [x == "gap" for x in qualities]
    currency = job.tariff.currency
    price_unit = f"{currency}/{unit}"
    tiers = len(table.limits) + 1
    part, whole = _share(job) if table.prorate and tiers > 1 else (1, 1)
    if part == whole or whole == 0:
        part = whole = 1
    # multiply before dividing: 30 kWh x 17 / 30 is exactly 17
    limits = tuple(limit * part / whole for limit in table.limits)
    lines: list[ChargeLine] = []

    def counts_in(a: int, b: int, mask: list[bool]) -> tuple[int, int, int]:
        m = mask[a:b]
        total = sum(m)
        actual = sum(compress(act[a:b], m))
        gaps = sum(compress(gap[a:b], m))
        return actual, total - actual - gaps, gaps

    def period_label(p: int) -> str:
        name = table.period_labels[p]
        return f"{label}, {name}" if name else label

    def bounds_text(t: int) -> str:
        lo = limits[t - 1] if t > 0 else _ZERO
        return f"{fmt(lo)}-{fmt(limits[t])} {unit}" if t < len(limits) else f"over {fmt(lo)} {unit}"

    if tiers > 1 and n and min(q) < 0:
        bad = usage[q.index(min(q))]
        raise RatingError(
            f"tariff {job.tariff.id}: {kind} tiers need non-negative usage; interval "
            f"{bad.start.isoformat()} has {bad.quantity} {unit}"
        )
    notes_scale = (
        [f"tier limits prorated to this tariff version's {part} of the period's {whole} days"]
        if part != whole
        else []
    )
    if tiers == 1 or table.mode == "volume":
        total = sum(q, _ZERO)
        reached = bisect.bisect_left(limits, total) if tiers > 1 else 0
        for p in range(len(table.periods)):
            mask = masks[p]
            quantity = sum(compress(q, mask), _ZERO)
            price = table.prices[p][reached]
            exact = quantity * price
            notes = [f"{fmt(quantity)} {unit} x {fmt(price)} {price_unit} = {fmt(exact)}"]
            if tiers > 1:
                notes.insert(
                    0,
                    f"period usage {fmt(total)} {unit} reaches tier {reached + 1} "
                    f"({bounds_text(reached)}): all units at its price",
                )
            first, last = _span(mask)
            lines.append(
                make_line(
                    job,
                    kind,
                    period_label(p) + (f", tier {reached + 1}" if tiers > 1 else ""),
                    quantity,
                    unit,
                    price,
                    exact,
                    (),
                    notes_scale + notes,
                    period=table.periods[p],
                    tier=reached + 1 if tiers > 1 else None,
                    start=usage[first].start if first >= 0 else job.start,
                    end=usage[last].end if first >= 0 else job.end,
                    interval_counts=counts_in(0, n, mask),
                )
            )
        return lines

    # graduated tiers: walk the cumulative usage, split the interval that crosses a limit
    cum = list(accumulate(q))
    for t in range(tiers):
        lo = limits[t - 1] if t > 0 else _ZERO
        hi = limits[t] if t < len(limits) else None
        a = bisect.bisect_right(cum, lo)
        if a >= n:
            break  # tier not reached
        b = n - 1 if hi is None else min(bisect.bisect_left(cum, hi), n - 1)
        for p in range(len(table.periods)):
            mask = masks[p]

            def part(i: int, lo: Decimal = lo, hi: Decimal | None = hi) -> Decimal:
                top = cum[i] if hi is None else min(cum[i], hi)
                return top - max(cum[i] - q[i], lo)

            quantity = sum(compress(q[a + 1 : b], mask[a + 1 : b]), _ZERO)
            notes: list[str] = []
            if mask[a]:
                quantity += part(a)
            if b != a and mask[b]:
                quantity += part(b)
            for i in {a, b}:
                if mask[i] and part(i) != q[i]:
                    notes.append(
                        f"interval {usage[i].start.isoformat()} ({fmt(q[i])} {unit}) crosses a "
                        f"tier limit: {fmt(part(i))} {unit} of it in tier {t + 1}"
                    )
            if quantity == 0 and not any(mask[a : b + 1]):
                continue
            first, last = _span(mask[a : b + 1])
            price = table.prices[p][t]
            exact = quantity * price
            notes.append(f"{fmt(quantity)} {unit} x {fmt(price)} {price_unit} = {fmt(exact)}")
            lines.append(
                make_line(
                    job,
                    kind,
                    f"{period_label(p)}, tier {t + 1} ({bounds_text(t)})",
                    quantity,
                    unit,
                    price,
                    exact,
                    (),
                    notes_scale + notes,
                    period=table.periods[p],
                    tier=t + 1,
                    start=usage[a + first].start if first >= 0 else usage[a].start,
                    end=usage[a + last].end if first >= 0 else usage[b].end,
                    interval_counts=counts_in(a, b + 1, mask),
                )
            )
    if not lines:
        lines.append(
            make_line(
                job,
                kind,
                f"{period_label(0)}, tier 1 ({bounds_text(0)})",
                _ZERO,
                unit,
                table.prices[0][0],
                _ZERO,
                usage,
                ["no usage in the period"],
                period=table.periods[0],
                tier=1,
            )
        )
    return lines


@dataclass(frozen=True)
class Energy:
    """A flat rate per unit (kWh, m3, ...)."""

    label: str
    price: Decimal
    unit: str
    kind: str = "energy"

    def rate(self, job: RatingJob) -> list[ChargeLine]:
        table = PriceTable(("",), ("",), (), ((self.price,),))
        return rate_table(job, self.kind, self.label, table, None, job.usage, self.unit)


def parse(sec: Section, ctx: ParseContext) -> Energy:
    sec.check_keys({"type", "label", "price"})
    default = "Energy" if ctx.unit == "kWh" else "Volume"
    price = positive(sec, "price")
    assert price is not None
    return Energy(sec.str("label", default), price, ctx.unit)

"""Demand charges: the maximum average power over a window (15, 30 or 60 minutes) in the
period, or within time-of-use periods, with an optional ratchet::

    [[version.charge]]
    type = "demand"
    window = 15              # minutes
    price = 4.50             # per kW; or [periods] + schedule like a TOU charge
    ratchet = 80             # percent of the highest demand of the previous months (optional)
    ratchet_months = 11

Windows are aligned to the clock (UTC, or local time where the zone's offset is not a whole
number of windows); a window's power is the energy of the intervals starting in it x 60 /
window minutes (a missing interval counts as 0). Intervals longer than the window cannot be
rated for it. Within TOU periods a window belongs to the period its first minute is in.
Ratchet: billed demand = max(measured, ratchet% x the highest of the last ``ratchet_months``
entries of ``RatingContext.previous_peaks``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from ...errors import RatingError
from ...tomlfile import Section
from ..model import ChargeLine, RatingJob, UsageInterval
from .common import ParseContext, fmt, make_line, positive
from .schedule import Schedule, parse_schedule
from .tou import parse_periods

__all__ = ["Demand", "parse"]

WINDOWS = (5, 10, 15, 30, 60)


@dataclass(frozen=True)
class Demand:
    label: str
    window: int  # minutes
    periods: tuple[str, ...]
    period_labels: tuple[str, ...]
    prices: tuple[Decimal, ...]  # per kW, per period
    schedule: Schedule | None
    ratchet: Decimal | None  # percent
    ratchet_months: int
    kind: str = "demand"

    def rate(self, job: RatingJob) -> list[ChargeLine]:
        if job.tariff.unit != "kWh":
            raise RatingError(f"tariff {job.tariff.id}: demand needs kWh usage")
        span = self.window * 60
        window = timedelta(minutes=self.window)
        per_hour = Decimal(60) / Decimal(self.window)
        sums: dict[int, Decimal] = {}
        owner: dict[int, int] = {}
        first_of: dict[int, UsageInterval] = {}
        keys_of: list[int] = []  # the window of each interval, in usage order
        for u in job.usage:
            if u.end - u.start > window:
                raise RatingError(
                    f"tariff {job.tariff.id}: interval {u.start.isoformat()} is longer than "
                    f"the {self.window}-minute demand window"
                )
            local = u.start.astimezone(job.tz)
            phase = int((local.utcoffset() or timedelta(0)).total_seconds()) % span
            key = (int(u.start.timestamp()) + phase) // span
            keys_of.append(key)
            sums[key] = sums.get(key, Decimal(0)) + u.quantity
            if key not in owner:
                first_of[key] = u
                owner[key] = self.schedule.index_at(local, job.holidays) if self.schedule else 0
        lines = []
        cur = job.tariff.currency
        floor = None
        if self.ratchet is not None and job.context.previous_peaks:
            history = job.context.previous_peaks[-self.ratchet_months :]
            floor = max(history) * self.ratchet / 100
        for p, name in enumerate(self.periods):
            keys = [k for k in sums if owner[k] == p]
            if not keys and len(self.periods) > 1:
                continue  # a TOU period this job never reaches: no line
            peak = max((sums[k] * per_hour for k in keys), default=Decimal(0))
            notes = []
            when = None
            if keys:
                top = max(keys, key=lambda k: sums[k])
                when = first_of[top].start
                notes.append(
                    f"highest {self.window}-minute window from {when.isoformat()}: "
                    f"{fmt(sums[top])} kWh x {fmt(per_hour)} = {fmt(peak)} kW"
                )
            billed = peak
            if floor is not None:
                notes.append(
                    f"ratchet: {fmt(self.ratchet or Decimal(0))}% of the highest of the last "
                    f"{self.ratchet_months} month(s) = {fmt(floor)} kW"
                )
                if floor > peak:
                    billed = floor
                    notes.append(f"billed demand is the ratchet, {fmt(floor)} kW")
            exact = billed * self.prices[p]
            notes.append(f"{fmt(billed)} kW x {fmt(self.prices[p])} {cur}/kW = {fmt(exact)}")
            selected = [u for u, k in zip(job.usage, keys_of, strict=True) if owner[k] == p]
            label = f"{self.label}, {self.period_labels[p]}" if name else self.label
            lines.append(
                make_line(
                    job,
                    self.kind,
                    label,
                    billed,
                    "kW",
                    self.prices[p],
                    exact,
                    selected,
                    notes,
                    period=name,
                )
            )
        return lines


def parse(sec: Section, ctx: ParseContext) -> Demand:
    sec.check_keys(
        {
            "type",
            "label",
            "window",
            "price",
            "periods",
            "schedule",
            "default",
            "weekday",
            "weekend",
            "ratchet",
            "ratchet_months",
        }
    )
    window = sec.int("window", 15, 1, 60)
    if window not in WINDOWS:
        raise sec.error("window", f"must be one of {', '.join(map(str, WINDOWS))} minutes")
    ratchet = positive(sec, "ratchet", required=False)
    if ratchet is not None and ratchet > 100:
        raise sec.error("ratchet", f"is a percentage 0..100, got {ratchet}")
    months = sec.int("ratchet_months", 11, 1, 120)
    label = sec.str("label", "Demand")
    if ctx.unit != "kWh":
        raise sec.error("type", f"a demand charge needs a kWh tariff (unit = {ctx.unit!r})")
    if "periods" in sec.data:
        if "price" in sec.data:
            raise sec.error("price", "give either price (whole period) or [periods], not both")
        names, labels, prices = parse_periods(sec, 1)
        schedule = parse_schedule(sec, names)
        return Demand(
            label, window, names, labels, tuple(p[0] for p in prices), schedule, ratchet, months
        )
    price = positive(sec, "price")
    assert price is not None
    return Demand(label, window, ("",), ("",), (price,), None, ratchet, months)

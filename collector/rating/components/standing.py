"""Standing (fixed) charge per day, or per month prorated by days::

[[version.charge]]
type = "standing"
price = 0.45
per = "day"        # | "month": each calendar month's share = price x days / days in month
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from ...tomlfile import Section
from ..model import ChargeLine, RatingJob
from .common import ParseContext, fmt, local_midnight, make_line, positive

__all__ = ["Standing", "parse"]


@dataclass(frozen=True)
class Standing:
    label: str
    price: Decimal
    per: str  # "day" | "month"
    kind: str = "standing"

    def rate(self, job: RatingJob) -> list[ChargeLine]:
        tz, cur = job.tz, job.tariff.currency
        first = job.start.astimezone(tz).date()
        last = (job.end - timedelta(microseconds=1)).astimezone(tz).date()
        days = (last - first).days + 1
        if self.per == "day":
            exact = self.price * days
            note = f"{days} day(s) x {fmt(self.price)} {cur}/day = {fmt(exact)}"
            return [
                make_line(
                    job,
                    self.kind,
                    self.label,
                    Decimal(days),
                    "day",
                    self.price,
                    exact,
                    (),
                    [note],
                    start=job.start,
                    end=job.end,
                    interval_counts=(0, 0, 0),
                )
            ]
        lines = []
        day = first
        while day <= last:
            in_month = calendar.monthrange(day.year, day.month)[1]
            month_end = day.replace(day=in_month)
            until = min(month_end, last)
            count = (until - day).days + 1
            exact = self.price * count / in_month
            unit_price = self.price / in_month
            note = (
                f"{fmt(self.price)} {cur}/month x {count}/{in_month} days of "
                f"{day:%b %Y} = {fmt(exact)}"
            )
            lines.append(
                make_line(
                    job,
                    self.kind,
                    f"{self.label}, {day:%b %Y} ({count}/{in_month} days)",
                    Decimal(count),
                    "day",
                    unit_price,
                    exact,
                    (),
                    [note],
                    start=max(job.start, local_midnight(day, tz)),
                    end=min(job.end, local_midnight(until + timedelta(days=1), tz)),
                    interval_counts=(0, 0, 0),
                )
            )
            day = until + timedelta(days=1)
        return lines


def parse(sec: Section, ctx: ParseContext) -> Standing:
    sec.check_keys({"type", "label", "price", "per"})
    per = sec.str("per", "day")
    if per not in ("day", "month"):
        raise sec.error("per", f"must be day or month, got {per!r}")
    price = positive(sec, "price")
    assert price is not None
    return Standing(sec.str("label", "Standing charge"), price, per)

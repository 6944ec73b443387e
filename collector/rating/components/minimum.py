"""Minimum charge: when the charges before it (taxes excluded) come to less than the minimum,
a line tops them up to it::

    [[version.charge]]
    type = "minimum"
    amount = 10.00
    per = "month"     # | "day" | "period" (per billing period); prorated by days like standing

It looks at the lines of the components stated before it in the same tariff version.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from ...tomlfile import Section
from ..model import ChargeLine, RatingJob
from .common import ParseContext, day_count, fmt, make_line, money, positive

__all__ = ["Minimum", "parse"]


@dataclass(frozen=True)
class Minimum:
    label: str
    amount: Decimal
    per: str
    kind: str = "minimum"

    def minimum(self, job: RatingJob) -> tuple[Decimal, str]:
        days = day_count(job.start, job.end, job.tz)
        cur = job.tariff.currency
        if self.per == "day":
            exact = self.amount * days
            return exact, f"minimum {fmt(self.amount)} {cur}/day x {days} day(s) = {fmt(exact)}"
        if self.per == "period":
            whole = day_count(job.period_start, job.period_end, job.tz)
            exact = self.amount * days / whole if whole and whole != days else self.amount
            return exact, f"minimum {fmt(self.amount)} {cur}/period x {days}/{whole} days"
        exact = Decimal(0)
        day = job.start.astimezone(job.tz).date()
        last = (job.end - timedelta(microseconds=1)).astimezone(job.tz).date()
        parts = []
        while day <= last:
            in_month = calendar.monthrange(day.year, day.month)[1]
            until = min(day.replace(day=in_month), last)
            count = (until - day).days + 1
            exact += self.amount * count / in_month
            parts.append(f"{count}/{in_month} of {day:%b %Y}")
            day = until + timedelta(days=1)
        return exact, f"minimum {fmt(self.amount)} {cur}/month x ({' + '.join(parts)})"

    def rate(self, job: RatingJob) -> list[ChargeLine]:
        charged = sum((line.amount for line in job.lines if line.component != "tax"), Decimal(0))
        exact, note = self.minimum(job)
        floor = money(exact, job)
        if charged >= floor:
            return []
        top_up = floor - charged
        notes = [
            note + f" = {fmt(exact)}, rounded {floor}",
            f"charges so far {charged} < {floor}: top-up {top_up}",
        ]
        return [
            make_line(
                job,
                self.kind,
                self.label,
                Decimal(1),
                "bill",
                top_up,
                top_up,
                (),
                notes,
                start=job.start,
                end=job.end,
                interval_counts=(0, 0, 0),
            )
        ]


def parse(sec: Section, ctx: ParseContext) -> Minimum:
    sec.check_keys({"type", "label", "amount", "per"})
    per = sec.str("per", "month")
    if per not in ("month", "day", "period"):
        raise sec.error("per", f"must be month, day or period, got {per!r}")
    amount = positive(sec, "amount")
    assert amount is not None
    return Minimum(sec.str("label", "Minimum charge top-up"), amount, per)

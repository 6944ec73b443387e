"""SLA periods: whole days in the SLA's time zone.

``2026-11`` (a month), ``2026-11-05`` (a day), ``2026-11-01..2026-11-07`` (days, both
included). A day is local midnight to local midnight, so a DST day has 23 or 25 hours.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from protocols.clock import utc_ms

__all__ = ["Period", "PeriodError", "day_start_ms", "parse_period"]

_MONTH = re.compile(r"^(\d{4})-(\d{2})$")
_DAY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
MAX_DAYS = 366


class PeriodError(ValueError):
    """A period text that cannot be used."""


@dataclass(frozen=True)
class Period:
    first: date
    last: date  # included
    text: str

    def days(self) -> list[date]:
        return [self.first + timedelta(days=i) for i in range((self.last - self.first).days + 1)]


def day_start_ms(day: date, zone: ZoneInfo) -> int:
    """Unix ms of local midnight starting ``day``."""
    return utc_ms(datetime(day.year, day.month, day.day, tzinfo=zone))


def _day(text: str) -> date:
    match = _DAY.match(text)
    if match is None:
        raise PeriodError(f"{text!r}: not a day YYYY-MM-DD")
    try:
        return date(*(int(g) for g in match.groups()))
    except ValueError as exc:
        raise PeriodError(f"{text!r}: {exc}") from None


def parse_period(text: str) -> Period:
    text = text.strip()
    month = _MONTH.match(text)
    if month:
        year, mon = int(month.group(1)), int(month.group(2))
        if not 1 <= mon <= 12 or year < 1970:
            raise PeriodError(f"{text!r}: not a month YYYY-MM")
        first = date(year, mon, 1)
        nxt = date(year + mon // 12, mon % 12 + 1, 1)
        return Period(first, nxt - timedelta(days=1), text)
    if ".." in text:
        a, _, b = text.partition("..")
        first, last = _day(a.strip()), _day(b.strip())
        if last < first:
            raise PeriodError(f"{text!r}: ends before it starts")
        if (last - first).days >= MAX_DAYS:
            raise PeriodError(f"{text!r}: longer than {MAX_DAYS} days")
        return Period(first, last, text)
    if _DAY.match(text):
        day = _day(text)
        return Period(day, day, text)
    raise PeriodError(
        f"{text!r}: use a month (2026-11), a day (2026-11-05) or days (2026-11-01..2026-11-07)"
    )

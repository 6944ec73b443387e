"""Time-of-use calendars: which period holds at a local wall-clock time.

A schedule is either a list of rules (first match wins, the rest is ``default``)::

    schedule = [
      { months = [6, 7, 8, 9], days = "weekday", hours = "16:00-21:00", period = "peak" },
      { days = "weekday", hours = "07:00-23:00", period = "shoulder" },
    ]
    default = "offpeak"

or two 12 x 24 matrices of period names (month x hour, like URDB's schedules)::

    weekday = [["offpeak", ..., "offpeak"], ...]   # 12 rows of 24
    weekend = [...]

Public holidays count as weekend days. A time is looked up by the *local* wall clock of an
interval's start, so a 23 or 25 hour day needs nothing special: the repeated 02:00 hour of a
25 hour day is in the period 02:00 is in, the missing hour of a 23 hour day is simply absent.
Resolution is one minute.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from ...tomlfile import Section

__all__ = ["Schedule", "parse_schedule"]

MINUTES = 1440
_HOURS = re.compile(r"^(\d{1,2})(?::(\d{2}))?\s*-\s*(\d{1,2})(?::(\d{2}))?$")
_DAYS = {"weekday": (0,), "weekend": (1,), "all": (0, 1)}


@dataclass(frozen=True, eq=False)
class Schedule:
    """``table[(month - 1) * 2 + daytype]`` is a tuple of 1440 period indexes (minute of day);
    daytype 0 = weekday, 1 = weekend or holiday."""

    periods: tuple[str, ...]
    table: tuple[tuple[int, ...], ...] = field(repr=False)

    def index_at(self, local: datetime, holidays: frozenset[date]) -> int:
        day = local.date()
        weekend = 1 if day.weekday() >= 5 or day in holidays else 0
        return self.table[(local.month - 1) * 2 + weekend][local.hour * 60 + local.minute]

    def name_at(self, local: datetime, holidays: frozenset[date]) -> str:
        return self.periods[self.index_at(local, holidays)]


def _minutes(sec: Section, key: str, text: str, rule: int) -> tuple[int, int]:
    found = _HOURS.match(text.strip())
    if not found:
        raise sec.error(key, f"rule {rule}: hours must look like '07:00-23:00', got {text!r}")
    h1, m1, h2, m2 = (int(g) if g else 0 for g in found.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if not (0 <= start < MINUTES and 0 <= end <= MINUTES and m1 < 60 and m2 < 60):
        raise sec.error(key, f"rule {rule}: hours out of range in {text!r}")
    return start, end


def _months(sec: Section, key: str, value: Any, rule: int) -> list[int]:
    if isinstance(value, str):
        found = re.match(r"^(\d{1,2})\s*-\s*(\d{1,2})$", value.strip())
        if not found:
            raise sec.error(key, f"rule {rule}: months must be a list or 'M-N', got {value!r}")
        first, last = int(found.group(1)), int(found.group(2))
        months = (
            list(range(first, last + 1))
            if first <= last
            else [*range(first, 13), *range(1, last + 1)]
        )
    elif isinstance(value, list) and all(isinstance(m, int) for m in value):
        months = value
    else:
        raise sec.error(key, f"rule {rule}: months must be a list of 1..12, got {value!r}")
    if not months or not all(1 <= m <= 12 for m in months):
        raise sec.error(key, f"rule {rule}: months must be in 1..12, got {value!r}")
    return months


def parse_schedule(sec: Section, periods: Sequence[str]) -> Schedule:
    """The schedule of a TOU or demand component; ``periods`` are the names it may use."""
    index = {name: i for i, name in enumerate(periods)}

    def period_of(key: str, name: Any, where: str) -> int:
        if name not in index:
            raise sec.error(key, f"{where}: unknown period {name!r} (known: {', '.join(periods)})")
        return index[name]

    if "weekday" in sec.data or "weekend" in sec.data:
        rows: list[tuple[int, ...]] = []
        matrices = {}
        for key in ("weekday", "weekend"):
            matrix = sec.data.get(key)
            if (
                not isinstance(matrix, list)
                or len(matrix) != 12
                or not all(isinstance(r, list) and len(r) == 24 for r in matrix)
            ):
                raise sec.error(key, "must be 12 rows (months) of 24 period names (hours)")
            matrices[key] = [
                [period_of(key, name, f"month {m + 1} hour {h}") for h, name in enumerate(row)]
                for m, row in enumerate(matrix)
            ]
        for month in range(12):
            for key in ("weekday", "weekend"):
                rows.append(tuple(p for p in matrices[key][month] for _ in range(60)))
        return Schedule(tuple(periods), tuple(rows))

    default = sec.data.get("default")
    rules = sec.data.get("schedule", [])
    if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
        raise sec.error("schedule", "must be a list of inline tables {months, days, hours, period}")
    if default is None and not rules:
        raise sec.error(None, "needs a schedule (rules and/or default, or weekday/weekend)")
    default_index = period_of("default", default, "default") if default is not None else -1
    table = [[default_index] * MINUTES for _ in range(24)]
    done = [[False] * MINUTES for _ in range(24)]
    for number, rule in enumerate(rules, 1):
        unknown = set(rule) - {"months", "days", "hours", "period"}
        if unknown:
            raise sec.error("schedule", f"rule {number}: unknown key(s) {sorted(unknown)}")
        period = period_of("schedule", rule.get("period"), f"rule {number}")
        months = _months(sec, "schedule", rule.get("months", "1-12"), number)
        days = rule.get("days", "all")
        if days not in _DAYS:
            raise sec.error("schedule", f"rule {number}: days must be weekday|weekend|all")
        start, end = _minutes(sec, "schedule", str(rule.get("hours", "00:00-24:00")), number)
        minutes = (
            list(range(start, end)) if start < end else [*range(start, MINUTES), *range(0, end)]
        )
        for month in months:
            for daytype in _DAYS[days]:
                row, flags = table[(month - 1) * 2 + daytype], done[(month - 1) * 2 + daytype]
                for minute in minutes:
                    if not flags[minute]:
                        row[minute] = period
                        flags[minute] = True
    if default_index < 0 and any(-1 in row for row in table):
        raise sec.error("schedule", "the rules leave times uncovered: add default = PERIOD")
    return Schedule(tuple(periods), tuple(tuple(row) for row in table))

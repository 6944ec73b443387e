"""Estimation: how a known delta is spread over intervals, and the like-day profile.

* ``apportion`` splits a delta exactly: in units of the register's resolution, by the
  largest-remainder method, so the parts are multiples of the resolution and add up to the
  delta to the last digit (no rounding drift, no float).
* ``like_day`` gives, for an interval, the mean consumption of the same interval (same
  weekday, same local time of day in the meter's time zone) in the recent weeks, from
  intervals that were measured (actual or edited, never estimated ones).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from fractions import Fraction
from zoneinfo import ZoneInfo

__all__ = ["apportion", "like_day", "like_day_ranges", "week_back_starts"]

_WEEK = timedelta(days=7)


def apportion(
    total: Decimal, weights: Sequence[Decimal | Fraction], step: Decimal
) -> list[Decimal]:
    """``total`` (a multiple of ``step``) split in proportion to ``weights`` (>= 0, not all
    0), each part a multiple of ``step``; the parts add up to ``total`` exactly."""
    if total < 0:
        return [-part for part in apportion(-total, weights, step)]
    units = Fraction(total) / Fraction(step)
    if units.denominator != 1:
        raise ValueError(f"{total} is not a multiple of {step}")
    whole = int(units)
    fw = [Fraction(w) for w in weights]
    sum_w = sum(fw)
    if sum_w <= 0:
        raise ValueError("weights add up to 0")
    shares = [whole * w / sum_w for w in fw]
    floors = [int(s) for s in shares]  # shares >= 0: int() floors
    left = whole - sum(floors)
    order = sorted(range(len(shares)), key=lambda i: (shares[i] - floors[i], -i), reverse=True)
    for i in order[:left]:
        floors[i] += 1
    return [Decimal(n) * step for n in floors]


def week_back_starts(start_ms: int, zone: ZoneInfo, weeks: int) -> list[int]:
    """The UTC starts of the same local weekday and time of day 1..``weeks`` weeks before
    (across DST changes: 08:00 local stays 08:00 local)."""
    local = datetime.fromtimestamp(start_ms / 1000, UTC).astimezone(zone)
    wall = local.replace(tzinfo=None)
    out = []
    for k in range(1, weeks + 1):
        then = (wall - k * _WEEK).replace(tzinfo=zone, fold=local.fold)
        out.append(int(then.timestamp()) * 1000 + start_ms % 1000)
    return out


def like_day_ranges(start_ms: int, end_ms: int, weeks: int) -> tuple[int, int]:
    """One UTC range covering every like-day source of [start, end) (a DST shift is at most
    a few hours, a day of slack covers it)."""
    day = 86_400_000
    return start_ms - weeks * 7 * day - day, end_ms - 7 * day + day


def like_day(
    start_ms: int, zone: ZoneInfo, weeks: int, history: Mapping[int, Decimal]
) -> Fraction | None:
    """Mean of the measured like-day intervals found in ``history`` (start -> value), or
    None if there is none (exact: a Fraction, used as a weight)."""
    found = [history[s] for s in week_back_starts(start_ms, zone, weeks) if s in history]
    if not found:
        return None
    return Fraction(sum(found, Decimal(0))) / len(found)

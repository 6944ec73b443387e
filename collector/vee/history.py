"""Rule ``history``: a day's consumption high or low against the meter's own history.

When an interval completes a local day (the meter's time zone), the day's total is compared
with the mean of the same weekday in the recent weeks (``like_day_weeks``; at least two
complete days needed): above ``day_high`` x the mean, or below the mean / ``day_low``, is
flagged. The spike rule catches one interval; this one a whole day (a tenant moved out, a
bypass, a heat pump that started).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from .base import WARN, Flag, Interval
from .settings import MeterRules

RULE = "history"


def local_day(end_ms: int, zone: ZoneInfo) -> tuple[int, int] | None:
    """(start, end) of the local day that ends at ``end_ms``, or None if ``end_ms`` is not a
    local midnight."""
    local = datetime.fromtimestamp(end_ms / 1000, UTC).astimezone(zone)
    if (local.hour, local.minute, local.second, local.microsecond) != (0, 0, 0, 0):
        return None
    start = datetime.combine(local.date() - timedelta(days=1), datetime.min.time(), zone)
    return int(start.timestamp() * 1000), end_ms


def day_total(intervals: Sequence[Interval], start_ms: int, end_ms: int) -> Decimal | None:
    """The sum of the intervals that tile [start, end) exactly, or None if the day is not
    complete (a hole, a gap row, an unknown value)."""
    total = Decimal(0)
    at = start_ms
    for interval in intervals:
        if interval.end_ms <= start_ms or interval.start_ms >= end_ms:
            continue
        if interval.start_ms != at or interval.value is None or interval.quality == "gap":
            return None
        total += interval.value
        at = interval.end_ms
    return total if at == end_ms else None


def check(
    meter_id: str, obis: str, end_ms: int, total: Decimal, usual: Sequence[Decimal],
    rules: MeterRules,
) -> Flag | None:  # fmt: skip
    """``usual``: the totals of the same weekday in the weeks before (complete days)."""
    if len(usual) < 2:
        return None
    mean = sum(usual, Decimal(0)) / len(usual)
    if total > mean * rules.day_high:
        word = "high"
    elif total * rules.day_low < mean:
        word = "low"
    else:
        return None
    return Flag(
        meter_id, obis, end_ms, RULE, WARN,
        f"day total {total} is {word} against the same weekday of the {len(usual)} weeks"
        f" before (mean {mean.quantize(Decimal('0.001'))})",
    )  # fmt: skip

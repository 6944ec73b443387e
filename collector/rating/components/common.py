"""What every charge component needs: rounding, interval counts, local days, line building,
and the typed TOML getters' context."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import (
    ROUND_DOWN,
    ROUND_HALF_DOWN,
    ROUND_HALF_EVEN,
    ROUND_HALF_UP,
    ROUND_UP,
    Decimal,
)
from pathlib import Path
from zoneinfo import ZoneInfo

from ...tomlfile import Section
from ..model import ChargeLine, RatingJob, UsageInterval

__all__ = [
    "ROUNDINGS",
    "ParseContext",
    "counts",
    "day_count",
    "fmt",
    "local_midnight",
    "make_line",
    "money",
    "positive",
]

#: rounding names a tariff may use -> decimal rounding modes
ROUNDINGS = {
    "half-up": ROUND_HALF_UP,
    "half-even": ROUND_HALF_EVEN,
    "half-down": ROUND_HALF_DOWN,
    "up": ROUND_UP,
    "down": ROUND_DOWN,
}


@dataclass(frozen=True)
class ParseContext:
    """What a component's parser knows about the tariff file around it."""

    path: Path
    currency: str
    unit: str


def money(amount: Decimal, job: RatingJob) -> Decimal:
    """``amount`` rounded once to the currency's minor unit with the tariff's rounding mode."""
    exp = Decimal(1).scaleb(-job.tariff.minor_unit)
    return amount.quantize(exp, rounding=job.tariff.rounding)


def fmt(value: Decimal) -> str:
    """A Decimal for humans: no exponent, no trailing zeros beyond the integer."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def counts(usage: Sequence[UsageInterval]) -> tuple[int, int, int]:
    """(actual, estimated incl. edited, gap) interval counts."""
    qualities = [u.quality for u in usage]
    actual = qualities.count("actual")
    gap = qualities.count("gap")
    return actual, len(qualities) - actual - gap, gap


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def day_count(start: datetime, end: datetime, tz: ZoneInfo) -> int:
    """Local calendar days touched by ``[start, end)`` (a 23 or 25 hour day is one day)."""
    if end <= start:
        return 0
    first = start.astimezone(tz).date()
    last = (end - timedelta(microseconds=1)).astimezone(tz).date()
    return (last - first).days + 1


def positive(sec: Section, key: str, required: bool = True) -> Decimal | None:
    value = sec.decimal(key, required=required)
    if value is not None and value < 0:
        raise sec.error(key, f"must not be negative, got {value}")
    return value


def make_line(
    job: RatingJob,
    component: str,
    label: str,
    quantity: Decimal,
    unit: str,
    unit_price: Decimal,
    exact: Decimal,
    usage: Sequence[UsageInterval] = (),
    explanation: Sequence[str] = (),
    *,
    period: str = "",
    tier: int | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    interval_counts: tuple[int, int, int] | None = None,
) -> ChargeLine:
    """A bill line; ``exact`` is the unrounded amount, rounded here (the only rounding)."""
    amount = money(exact, job)
    actual, estimated, gap = interval_counts if interval_counts is not None else counts(usage)
    if start is None:
        start = usage[0].start if usage else job.start
    if end is None:
        end = usage[-1].end if usage else job.end
    notes = list(explanation)
    if exact != amount:
        notes.append(f"{fmt(exact)} rounded to {amount} ({_mode_name(job)})")
    if gap:
        notes.append(
            f"{gap} interval(s) in gaps: priced at the usage VEE gives them (the register's "
            "change across the gap, not measured per interval; flagged for review)"
        )
    return ChargeLine(
        component=component,
        label=label,
        quantity=quantity,
        unit=unit,
        unit_price=unit_price,
        amount=amount,
        currency=job.tariff.currency,
        start=start,
        end=end,
        actual_intervals=actual,
        estimated_intervals=estimated,
        explanation=tuple(notes),
        period=period,
        tier=tier,
        tariff_id=job.tariff.id,
        tariff_version=_version_name(job),
    )


def _version_name(job: RatingJob) -> str:
    """The version's effective_from, "" for a version in effect since always (the flat form)."""
    since = job.version.effective_from
    return "" if since == date.min else since.isoformat()


def _mode_name(job: RatingJob) -> str:
    for name, mode in ROUNDINGS.items():
        if mode == job.tariff.rounding:
            return name
    return job.tariff.rounding

"""``rate(...)``: one service point's usage over one billing period -> charge lines.

The period ``[start, end)`` is cut at the local midnights where tariff versions change; each
piece is a :class:`RatingJob` that the version's components rate in the order the tariff file
states them (each sees the lines before it, so a minimum or a tax applies to what precedes it).
An interval belongs to the piece its start lies in.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import date, datetime
from zoneinfo import ZoneInfo

from ..errors import RatingError
from .components.common import local_midnight
from .model import ChargeLine, RatingContext, RatingJob, TariffHistory, UsageInterval

__all__ = ["rate"]

_DEFAULT_CONTEXT = RatingContext()


def _bound(day: date | None, tz: ZoneInfo, fallback: datetime) -> datetime:
    if day is None or day in (date.min, date.max):
        return fallback
    return local_midnight(day, tz)


def rate(
    tariffs: TariffHistory,
    usage: Sequence[UsageInterval],
    start: datetime,
    end: datetime,
    tz: ZoneInfo,
    context: RatingContext = _DEFAULT_CONTEXT,
) -> list[ChargeLine]:
    if start.tzinfo is None or end.tzinfo is None:
        raise RatingError(f"tariff {tariffs.id}: the period bounds must be aware datetimes")
    if end <= start:
        raise RatingError(f"tariff {tariffs.id}: empty period {start.isoformat()}..{end}")
    starts = [u.start for u in usage]
    if starts != sorted(starts):
        usage = sorted(usage, key=lambda u: u.start)
        starts = [u.start for u in usage]
    units = {u.unit for u in usage}
    if units - {tariffs.unit}:
        raise RatingError(
            f"tariff {tariffs.id} prices {tariffs.unit}, the usage is in "
            f"{', '.join(sorted(units - {tariffs.unit}))}"
        )
    jobs: list[RatingJob] = []
    covered = start
    for version in tariffs.versions:
        lo = max(start, _bound(version.effective_from, tz, start))
        hi = min(end, _bound(version.effective_to, tz, end))
        if lo >= hi:
            continue
        if lo > covered:
            break
        a, b = bisect.bisect_left(starts, lo), bisect.bisect_left(starts, hi)
        jobs.append(
            RatingJob(
                tariff=tariffs,
                version=version,
                usage=usage[a:b],
                start=lo,
                end=hi,
                period_start=start,
                period_end=end,
                tz=tz,
                context=context,
                holidays=version.holidays | context.holidays,
            )
        )
        covered = hi
    if covered < end:
        day = covered.astimezone(tz).date()
        raise RatingError(f"tariff {tariffs.id} ({tariffs.path}): no version in effect on {day}")
    lines: list[ChargeLine] = []
    for job in jobs:
        for component in job.version.components:
            job.lines.extend(component.rate(job))
        lines.extend(job.lines)
    return lines

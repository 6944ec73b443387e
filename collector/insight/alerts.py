"""Evaluating alert rules on the stored intervals, and raising alerts once per rule and day.

``evaluate_rule`` looks at the local days it is given and returns the alerts due (as rows for
``SqliteInsight.raise_alerts``); the store keeps one per ``(rule, day)``, so evaluating the
same days again (re-delivered data, another collector, the ingest hook and the CLI) adds
nothing. An alert is an event: raised when the data first showed the condition, it stays if a
later correction of the data would no longer show it.

* ``daily_usage_above``: the day's usage (intervals starting in the local day) above the
  threshold. Raised as soon as the running total crosses it, even before the day is over.
* ``night_flow``: night D is the window ending on local day D. It counts when intervals that
  are not gaps cover the whole window and each one's flow (quantity / its length, in the
  rule's l/h or m3/h) is above ``min_flow``; the alert for night D needs nights D-N+1..D.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from protocols.units import convert

from ..rating.accounts import Account, ServicePoint
from ..rating.model import UsageInterval
from .rules import Rule
from .usage import load_point

__all__ = ["evaluate_rule", "night_flow_of", "rule_days"]

_ZERO = Decimal(0)
_HOUR_S = Decimal(3600)


def _fmt(value: Decimal) -> str:
    text = f"{value.normalize():f}"
    return text


def _row(rule: Rule, account_id: str, point_id: str, day: date, value: Decimal, message: str,
         now_ms: int) -> tuple:  # fmt: skip
    """One alert row: (rule, account, service point, kind, day, value, unit, message, raised)."""
    return (rule.id, account_id, point_id, rule.kind, day.isoformat(), str(value), rule.unit,
            message, now_ms)  # fmt: skip


def _window_bounds(rule: Rule, night: date, zone: Any) -> tuple[datetime, datetime]:
    a, b = rule.window
    end_day = night
    start_day = night if a < b else night - timedelta(days=1)
    start = datetime.combine(start_day, time(a // 60, a % 60), tzinfo=zone)
    if b == 1440:
        end = datetime.combine(end_day + timedelta(days=1), time(0), tzinfo=zone)
    else:
        end = datetime.combine(end_day, time(b // 60, b % 60), tzinfo=zone)
    return start, end


def night_flow_of(rule: Rule, usage: list[UsageInterval], night: date, zone: Any) -> Decimal | None:
    """The lowest flow (rule's unit) of the intervals of night ``night`` if the night counts
    (whole window covered, no gap, every interval above ``min_flow``), else None."""
    start, end = _window_bounds(rule, night, zone)
    inside = [u for u in usage if start <= u.start < end]
    if not inside or inside[0].start != start or inside[-1].end != end:
        return None
    lowest: Decimal | None = None
    moment = start
    for u in inside:
        if u.start != moment or u.quality == "gap":
            return None
        moment = u.end
        hours = Decimal(int((u.end - u.start).total_seconds())) / _HOUR_S
        volume = convert(u.quantity, u.unit, rule.volume_unit)
        flow = volume / hours
        if flow <= rule.threshold:
            return None
        lowest = flow if lowest is None else min(lowest, flow)
    return lowest


def rule_days(first_ms: int, last_ms: int, zone: Any, cap: int = 62) -> list[date]:
    """The local days data captured in ``[first_ms, last_ms]`` can change (the day of the
    interval a reading closes, the next day for a window wrapping midnight), at most ``cap``
    (the latest)."""
    lo = datetime.fromtimestamp(first_ms / 1000, zone).date() - timedelta(days=1)
    hi = datetime.fromtimestamp(last_ms / 1000, zone).date() + timedelta(days=1)
    lo = max(lo, hi - timedelta(days=cap - 1))
    return [lo + timedelta(days=i) for i in range((hi - lo).days + 1)]


async def evaluate_rule(
    store: Any,
    account: Account,
    point: ServicePoint,
    rule: Rule,
    days: Iterable[date],
    now_ms: int,
) -> list[tuple]:
    """The alerts ``rule`` raises on ``days`` (rows for ``raise_alerts``)."""
    wanted = sorted(set(days))
    if not wanted:
        return []
    zone = account.timezone
    out: list[tuple] = []
    if rule.kind == "daily_usage_above":
        usage = await load_point(store, account, point, wanted[0], wanted[-1] + timedelta(days=1))
        totals: dict[date, Decimal] = {}
        for u in usage:
            day = u.start.astimezone(zone).date()
            totals[day] = totals.get(day, _ZERO) + convert(u.quantity, u.unit, rule.unit)
        for day in wanted:
            total = totals.get(day)
            if total is not None and total > rule.threshold:
                message = (
                    f"daily usage {_fmt(total)} {rule.unit} on {day.isoformat()} is above "
                    f"{_fmt(rule.threshold)} {rule.unit} ({point.id})"
                )
                out.append(_row(rule, account.id, point.id, day, total, message, now_ms))
        return out
    first = wanted[0] - timedelta(days=rule.nights)  # earlier nights, and a wrapping start
    usage = await load_point(store, account, point, first, wanted[-1] + timedelta(days=1))
    flows: dict[date, Decimal | None] = {}

    def flow(night: date) -> Decimal | None:
        if night not in flows:
            flows[night] = night_flow_of(rule, usage, night, zone)
        return flows[night]

    a, b = rule.params()["window"].split("-")
    for night in wanted:
        seen = [flow(night - timedelta(days=k)) for k in range(rule.nights)]
        if any(f is None for f in seen):
            continue
        lowest = min(f for f in seen if f is not None)
        nights = f"{rule.nights} nights up to" if rule.nights > 1 else "the night of"
        message = (
            f"continuous night-time water flow suggesting a leak: flow in every interval "
            f"{a}-{b} for {nights} {night.isoformat()}, at least {_fmt(lowest)} {rule.unit} "
            f"(above {_fmt(rule.threshold)} {rule.unit}; {point.id})"
        )
        out.append(_row(rule, account.id, point.id, night, lowest, message, now_ms))
    return out

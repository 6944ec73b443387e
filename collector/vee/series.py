"""A register's series around new readings, and how newly derived intervals replace the
current ones.

``load_window`` fetches, for the readings of one (meter, OBIS) in [lo, hi]:

* ``prev``: the last usable point before lo, and an ``anchor``: the last usable point at or
  before the start of prev's interval, so that the interval prev falls into can be derived
  whole (its first part comes from the pair ending at prev);
* the stored points in (anchor, hi] (the new readings and any stored between them);
* the ``tail``: when a late reading lands before stored ones, the points after hi up to
  the first at or beyond the end of the next point's interval.

Intervals are (re)derived from ``emit_from`` (the start of prev's interval) on.
``replace_intervals`` compares them with the current rows: equal ones stay; changed ones are
marked superseded (when, why) and their replacement added; rows no longer derived in the
window are superseded too. Nothing is deleted or updated in place except the superseded
mark.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from ..store.vee_sqlite import IntervalRow, NewInterval, PointRow, SwapRow, VeeWrite
from .base import Interval, Point, ceil_grid, floor_grid
from .derive import ESTIMATED

__all__ = ["VeeTx", "Window", "load_window", "point_of", "replace_intervals"]

_LOOK = 8  # stored points fetched around new ones per query


class VeeTx(Protocol):
    async def points_between(
        self, meter_id: str, obis: str, after_ms: int, upto_ms: int
    ) -> list[PointRow]: ...
    async def points_before(
        self, meter_id: str, obis: str, before_ms: int, limit: int
    ) -> list[PointRow]: ...
    async def points_after(
        self, meter_id: str, obis: str, after_ms: int, limit: int
    ) -> list[PointRow]: ...
    async def current_intervals(
        self, meter_id: str, obis: str, from_ms: int, to_ms: int
    ) -> list[IntervalRow]: ...
    async def swaps(self, meter_id: str) -> list[SwapRow]: ...
    async def swapped_meters(self) -> set[str]: ...
    async def records_between(self, gateway_id: str, low_seq: int, high_seq: int) -> int: ...
    async def add_swap(
        self, meter_id: str, at_ms: int, old_final: Decimal | None, new_initial: Decimal | None,
        reason: str, who: str, now_ms: int,
    ) -> int: ...  # fmt: skip
    async def values_between(
        self, meter_id: str, obis: str, after_ms: int, upto_ms: int
    ) -> list[tuple[str, str]]: ...
    async def write(self, out: VeeWrite) -> None: ...


def point_of(row: PointRow) -> Point | None:
    """The point a stored reading gives the series, or None if it is not used: rejected by
    an operator, or an open error finding not accepted."""
    if row.action == "reject":
        return None
    if row.action == "edit" and row.edited_value is not None:
        return Point(row.captured_ms, Decimal(row.edited_value), row.unit, row.gateway_id,
                     row.seq, True)  # fmt: skip
    if row.has_error and row.action != "accept":
        return None
    return Point(row.captured_ms, Decimal(row.value), row.unit, row.gateway_id, row.seq)


def _usable(rows: list[PointRow]) -> list[Point]:
    return [p for p in map(point_of, rows) if p is not None]


@dataclass
class Window:
    head: list[Point]  # the anchor (or prev), if any
    start: int  # rows are the stored readings in (start, hi]
    rows: list[PointRow]
    tail: list[Point]
    emit_from: int


async def load_window(tx: VeeTx, meter_id: str, obis: str, lo: int, hi: int, step: int) -> Window:
    before = await tx.points_before(meter_id, obis, lo - 1, _LOOK)
    usable = _usable(before)
    prev = usable[0] if usable else None
    anchor = None
    if prev is not None:
        target = floor_grid(prev.ms, step)
        anchor = next((p for p in usable if p.ms <= target), None)
        if anchor is None and len(before) == _LOOK:
            more = _usable(await tx.points_before(meter_id, obis, target, _LOOK))
            anchor = more[0] if more else None
    if prev is not None and anchor is not None:
        head, start, emit_from = [anchor], anchor.ms, floor_grid(prev.ms, step)
    elif prev is not None:
        head, start, emit_from = [prev], prev.ms, ceil_grid(prev.ms, step)
    else:
        head, start, emit_from = [], lo - 1, ceil_grid(lo, step)
    rows = await tx.points_between(meter_id, obis, start, hi)
    tail = _usable(await tx.points_after(meter_id, obis, hi, _LOOK))
    if tail:  # a late reading: derive through the interval after the next point
        end = ceil_grid(tail[0].ms, step)
        if tail[-1].ms < end:
            tail = _usable(await tx.points_between(meter_id, obis, hi, end))
            tail += _usable(await tx.points_after(meter_id, obis, end, _LOOK))[:1]
        else:
            tail = [p for p in tail if p.ms <= end] + [p for p in tail if p.ms > end][:1]
    return Window(head, start, rows, tail, emit_from)


@dataclass
class Replacement:
    superseded: list[tuple[int, str, int]] = field(default_factory=list)  # (ms, why, id)
    inserted: list[NewInterval] = field(default_factory=list)
    added: list[Interval] = field(default_factory=list)  # the new rows, as intervals
    current: list[Interval] = field(default_factory=list)  # all current rows, by start


def replace_intervals(
    meter_id: str, obis: str, unit: str, existing: list[IntervalRow], derived: list[Interval],
    emit_from: int, emit_to: int, now_ms: int, who: str, why: str,
) -> Replacement:  # fmt: skip
    """``existing``: the current rows from before ``emit_from`` (for the rules that look
    back) to ``emit_to``; ``derived``: the intervals derived from ``emit_from`` on."""
    out = Replacement()
    window = {(r.start_ms, r.end_ms): r for r in existing if r.start_ms >= emit_from}
    current = {r.start_ms: _interval(r) for r in existing if r.start_ms < emit_from}
    for interval in derived:
        old = window.get((interval.start_ms, interval.end_ms))
        value = None if interval.value is None else str(interval.value)
        current[interval.start_ms] = interval
        if old is not None and (old.value, old.quality, old.method) == (
            value, interval.quality, interval.method
        ):  # fmt: skip
            continue
        reason = why
        if old is not None:
            method = f" ({old.method})" if old.method else ""
            shown = "" if old.value is None else f" {old.value}"
            reason = f"{why}; replaces {old.quality}{method}{shown}"
            out.superseded.append((now_ms, f"replaced by {_grade(interval)}: {why}", old.id))
        out.inserted.append(
            (meter_id, obis, interval.start_ms, interval.end_ms, value, unit, interval.quality,
             interval.method, now_ms, who, reason)
        )  # fmt: skip
        out.added.append(interval)
    derived_keys = {(i.start_ms, i.end_ms) for i in derived}
    for key, old in window.items():
        if key not in derived_keys and old.end_ms <= emit_to:
            out.superseded.append((now_ms, f"no longer derived: {why}", old.id))
    out.current = [current[s] for s in sorted(current)]
    return out


def _interval(row: IntervalRow) -> Interval:
    value = None if row.value is None else Decimal(row.value)
    return Interval(row.start_ms, row.end_ms, value, row.quality, row.method)


def _grade(interval: Interval) -> str:
    if interval.quality == ESTIMATED:
        return f"estimated ({interval.method})"
    return interval.quality

"""Derived consumption: a cumulative register's points -> interval consumption.

Each pair of consecutive points (p, q) has a delta (``monotonic.pair_delta``: plain,
rollover, or across a recorded swap). The delta is spread over the grid intervals the pair
spans, in proportion to:

* the overlap in time, when the points are no further apart than the expected read
  spacing: the energy is measured, only its place inside the read period is apportioned
  (quality ``actual``; method ``apportioned`` unless the pair is exactly one interval);
* the overlap in time, for a gap up to ``short_gap``: ``estimated`` / ``linear``
  (linear interpolation of the register between the real readings);
* the like-day profile for a longer gap: ``estimated`` / ``like-day``;
* nothing, where there is no basis (no like-day history, or a swap without final reads):
  the span is one ``gap`` row carrying the known total (or None), flagged for review.

An interval takes the pieces of every pair that overlaps it; its quality is the weakest of
them (gap > estimated > edited > actual). Only complete intervals are derived (both of its
ends inside the points given), so a caller passes an anchor point at or before the first
interval it wants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from itertools import pairwise

from .base import Interval, Point, ceil_grid, floor_grid
from .estimate import apportion, like_day
from .monotonic import Swap, pair_delta, resolution
from .settings import MeterRules

__all__ = ["ACTUAL", "EDITED", "ESTIMATED", "GAP", "PairNote", "derive", "gap_pairs"]

ACTUAL = "actual"
EDITED = "edited"
ESTIMATED = "estimated"
GAP = "gap"
_RANK = {ACTUAL: 0, EDITED: 1, ESTIMATED: 2, GAP: 3}


@dataclass(frozen=True, slots=True)
class PairNote:
    """How the span between two points with a gap was filled (for the ``gaps`` flag)."""

    prev: Point
    point: Point
    quality: str
    method: str


def is_gap(prev: Point, point: Point, rules: MeterRules) -> bool:
    return point.ms - prev.ms > rules.read_spacing_ms + rules.drift_ms


def gap_pairs(points: list[Point], rules: MeterRules) -> list[tuple[Point, Point]]:
    """Pairs that will need the like-day history (gaps longer than ``short_gap``)."""
    return [
        (p, q)
        for p, q in pairwise(points)
        if is_gap(p, q, rules) and rules.short_gap_ms < q.ms - p.ms <= rules.max_gap_ms
    ]


def derive(
    points: list[Point],
    obis: str,
    rules: MeterRules,
    swaps: list[Swap],
    history: Mapping[int, Decimal],
    emit_from: int,
) -> tuple[list[Interval], list[PairNote]]:
    """Intervals starting at or after ``emit_from`` that the points cover completely, and a
    note for each gap filled. ``history``: start -> measured interval value (like-day)."""
    step = rules.interval_ms
    sums: dict[int, Decimal] = {}
    quality: dict[int, tuple[str, str]] = {}
    gaps: list[tuple[int, int, Decimal | None]] = []
    notes: list[PairNote] = []
    zone = rules.zone
    for p, q in _pairs(points):
        delta, how = pair_delta(p, q, obis, rules, swaps)
        if q.ms - p.ms > rules.max_gap_ms:  # not worth 10^4+ guessed intervals: review it
            gaps.append((floor_grid(p.ms, step), ceil_grid(q.ms, step), delta))
            notes.append(PairNote(p, q, GAP, "longer than max_gap"))
            continue
        starts = list(range(floor_grid(p.ms, step), q.ms, step))
        overlaps = [Fraction(min(q.ms, s + step) - max(p.ms, s)) for s in starts]
        gap = is_gap(p, q, rules)
        if delta is None:
            gaps.append((starts[0], ceil_grid(q.ms, step), None))
            notes.append(PairNote(p, q, GAP, how))
            continue
        if not gap:
            weights = overlaps
            exact = len(starts) == 1 and p.ms == starts[0] and q.ms == starts[0] + step
            grade = (ACTUAL, "" if exact else "apportioned")
        elif q.ms - p.ms <= rules.short_gap_ms:
            weights, grade = overlaps, (ESTIMATED, "linear")
        else:
            assert zone is not None
            profile = [like_day(s, zone, rules.like_day_weeks, history) for s in starts]
            if any(v is None for v in profile) or (
                delta != 0 and sum(v * o for v, o in zip(profile, overlaps, strict=True)) <= 0  # type: ignore[operator]
            ):
                gaps.append((starts[0], ceil_grid(q.ms, step), delta))
                notes.append(PairNote(p, q, GAP, "no like-day basis"))
                continue
            weights = [v * o for v, o in zip(profile, overlaps, strict=True)]  # type: ignore[operator]
            grade = (ESTIMATED, "like-day")
            if sum(weights) == 0:
                weights = overlaps
        if grade[0] == ACTUAL and (p.edited or q.edited):
            grade = (EDITED, "operator")
        if gap:
            notes.append(PairNote(p, q, *grade))
        if len(starts) == 1:  # the common case: the pair lies inside one interval
            parts = [delta]
        elif delta:
            parts = apportion(delta, weights, resolution(p.value, q.value))
        else:
            parts = [Decimal(0) * resolution(p.value, q.value)] * len(starts)
        for s, part in zip(starts, parts, strict=True):
            sums[s] = sums.get(s, Decimal(0)) + part
            held = quality.get(s)
            if held is None or _RANK[grade[0]] > _RANK[held[0]]:
                quality[s] = grade
    return _emit(points, sums, quality, gaps, step, emit_from), notes


def _pairs(points: list[Point]) -> list[tuple[Point, Point]]:
    return list(pairwise(points))


def _emit(
    points: list[Point],
    sums: dict[int, Decimal],
    quality: dict[int, tuple[str, str]],
    gaps: list[tuple[int, int, Decimal | None]],
    step: int,
    emit_from: int,
) -> list[Interval]:
    if not points:
        return []
    first = max(emit_from, points[0].ms)
    last = points[-1].ms
    # merge overlapping gap spans
    merged: list[list] = []
    for start, end, total in sorted(gaps, key=lambda g: g[0]):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
            held = merged[-1][2]
            merged[-1][2] = None if held is None or total is None else held + total
        else:
            merged.append([start, end, total])
    out: list[Interval] = []
    in_gap: set[int] = set()
    for start, end, total in merged:
        value = total
        for s in range(start, end, step):
            in_gap.add(s)
            if value is not None and s in sums:
                value += sums[s]
        if start >= first and end <= last:
            out.append(Interval(start, end, value, GAP, "no basis"))
    for s in sorted(sums):
        if s in in_gap or s < first or s + step > last:
            continue
        grade, method = quality[s]
        out.append(Interval(s, s + step, sums[s], grade, method))
    out.sort(key=lambda i: i.start_ms)
    return out

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
    acc = _Sums(rules.interval_ms)
    notes: list[PairNote] = []
    zone = rules.zone
    step = rules.interval_ms
    for p, q in pairwise(points):
        delta, how = pair_delta(p, q, obis, rules, swaps)
        if delta is None:
            acc.leave_gap(p, q, None)
            notes.append(PairNote(p, q, GAP, how))
            continue
        if q.ms - p.ms > rules.max_gap_ms:  # not worth 10^4+ guessed intervals: review it
            acc.leave_gap(p, q, delta)
            notes.append(PairNote(p, q, GAP, "longer than max_gap"))
            continue
        starts = list(range(floor_grid(p.ms, step), q.ms, step))
        overlaps = [Fraction(min(q.ms, s + step) - max(p.ms, s)) for s in starts]
        gap = is_gap(p, q, rules)
        if not gap:
            weights = overlaps
            exact = len(starts) == 1 and p.ms == starts[0] and q.ms == starts[0] + step
            grade = (ACTUAL, "" if exact else "apportioned")
        elif q.ms - p.ms <= rules.short_gap_ms:
            weights, grade = overlaps, (ESTIMATED, "linear")
        else:
            profile = [like_day(s, zone, rules.like_day_weeks, history) for s in starts]
            known = [v for v in profile if v is not None]
            if len(known) < len(profile) or (
                delta != 0 and sum(v * o for v, o in zip(known, overlaps, strict=True)) <= 0
            ):
                acc.leave_gap(p, q, delta)
                notes.append(PairNote(p, q, GAP, "no like-day basis"))
                continue
            weights = [v * o for v, o in zip(known, overlaps, strict=True)]
            grade = (ESTIMATED, "like-day")
            if sum(weights) == 0:
                weights = overlaps
        if grade[0] == ACTUAL and (p.edited or q.edited):
            grade = (EDITED, "operator")
        if gap:
            notes.append(PairNote(p, q, *grade))
        if len(starts) == 1:  # the common case: the pair lies inside one interval
            acc.add(starts[0], delta, grade)
            continue
        for start, part in zip(starts, _split(delta, weights, p, q), strict=True):
            acc.add(start, part, grade)
    return acc.emit(points, emit_from), notes


def _split(delta: Decimal, weights: list[Fraction], p: Point, q: Point) -> list[Decimal]:
    step = resolution(p.value, q.value, delta)
    if not delta:
        return [Decimal(0) * step] * len(weights)
    return apportion(delta, weights, step)


class _Sums:
    """Pieces of consumption per grid interval, with the weakest quality among them, and
    the spans left as gaps."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.sums: dict[int, Decimal] = {}
        self.unknown: set[int] = set()
        self.quality: dict[int, tuple[str, str]] = {}
        self.gaps: list[tuple[int, int, Decimal | None]] = []

    def add(self, start: int, part: Decimal | None, grade: tuple[str, str]) -> None:
        if part is None:
            self.unknown.add(start)
        else:
            self.sums[start] = self.sums.get(start, Decimal(0)) + part
        held = self.quality.get(start)
        if held is None or _RANK[grade[0]] > _RANK[held[0]]:
            self.quality[start] = grade

    def leave_gap(self, p: Point, q: Point, delta: Decimal | None) -> None:
        """No basis between p and q: the grid intervals wholly inside become ONE gap row
        [ceil(p), floor(q)) with their share of the delta; the intervals p and q fall into
        (off the grid) take their share by time and the quality ``gap``. Each row so lies
        between p and q alone, and is complete as soon as both points exist."""
        step, grade = self.step, (GAP, "no basis")
        low, high = ceil_grid(p.ms, step), floor_grid(q.ms, step)
        if low > high:  # both inside one interval
            self.add(floor_grid(p.ms, step), delta, grade)
            return
        spans = [  # (start of the piece's row, length, is the middle row)
            (floor_grid(p.ms, step), low - p.ms, False),
            (low, high - low, True),
            (high, q.ms - high, False),
        ]
        spans = [span for span in spans if span[1] > 0]
        if delta is None:
            parts: list[Decimal | None] = [None] * len(spans)
        else:
            parts = list(_split(delta, [Fraction(n) for _s, n, _m in spans], p, q))
        for (start, _length, middle), part in zip(spans, parts, strict=True):
            if middle:
                self.gaps.append((low, high, part))
            else:
                self.add(start, part, grade)

    def emit(self, points: list[Point], emit_from: int) -> list[Interval]:
        if not points:
            return []
        first, last, step = max(emit_from, points[0].ms), points[-1].ms, self.step
        out = [
            Interval(start, end, total, GAP, "no basis")
            for start, end, total in self.gaps
            if start >= first and end <= last
        ]
        for s in sorted(self.quality):
            if s < first or s + step > last:
                continue
            grade, method = self.quality[s]
            value = None if s in self.unknown else self.sums.get(s, Decimal(0))
            out.append(Interval(s, s + step, value, grade, method))
        out.sort(key=lambda i: i.start_ms)
        return out

"""The VEE engine: runs the configured rules on the readings an ingest transaction stored,
derives their interval consumption, and writes findings, counters and intervals in the
SAME transaction (so no reading is ever stored without its validation, and a crash leaves
neither half done).

Per meter: the per-reading rules (units, limits, negative, timestamps, sumcheck), then for
each cumulative register with new readings its series around them: the anchor point at or
before the first interval to (re)derive, the stored and new points, and the points after
(a late reading lands between stored ones). ``monotonic`` and ``gaps`` run along the
series; consumption is derived (``derive``) and compared with the current intervals: equal
ones stay, changed ones are superseded (kept, with when and why) and replaced; ``spike`` and
``zero`` run on the new intervals. Operator actions re-derive the same way (``rederive``).
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from protocols.clock import format_utc_ms

from ..store.base import IngestWrite
from ..store.vee_sqlite import IntervalRow, PointRow, SwapRow, VeeWrite
from . import gaps, limits, monotonic, negative, spike, sumcheck, timestamps, units, zero
from .base import ERROR, INFO, WARN, Flag, Interval, Point, Reading, ceil_grid, floor_grid
from .derive import ESTIMATED, GAP, derive, gap_pairs
from .estimate import like_day_ranges
from .monotonic import Swap
from .settings import MeterRules, VeeSettings

__all__ = ["VeeEngine", "VeeTx"]

log = logging.getLogger("collector.vee")

_DAY = 86_400_000
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
    async def records_between(self, gateway_id: str, low_seq: int, high_seq: int) -> int: ...
    async def add_swap(
        self, meter_id: str, at_ms: int, old_final: Decimal | None, new_initial: Decimal | None,
        reason: str, who: str, now_ms: int,
    ) -> int: ...  # fmt: skip
    async def values_between(
        self, meter_id: str, obis: str, after_ms: int, upto_ms: int
    ) -> list[tuple[str, str]]: ...
    async def write(self, out: VeeWrite) -> None: ...


@dataclass
class VeeTotals:
    validated: int = 0
    flagged: int = 0
    intervals: int = 0
    superseded: int = 0


def _point(row: PointRow) -> Point | None:
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


def _swap(row: SwapRow) -> Swap:
    return Swap(
        row.id, row.meter_id, row.at_ms,
        None if row.old_final is None else Decimal(row.old_final),
        None if row.new_initial is None else Decimal(row.new_initial), row.reason,
    )  # fmt: skip


def _interval(row: IntervalRow) -> Interval:
    value = None if row.value is None else Decimal(row.value)
    return Interval(row.start_ms, row.end_ms, value, row.quality, row.method)


@dataclass(frozen=True, slots=True)
class _Plan:
    """Which per-reading rules can find anything for one OBIS on one meter."""

    unit: str | None  # the expected unit, if the units rule is on and one is known
    limits: bool
    negative: bool
    cumulative: bool


def _plan(obis: str, rules: MeterRules) -> _Plan:
    on = rules.rules
    return _Plan(
        rules.expected_unit(obis) if "units" in on else None,
        "limits" in on and (obis in rules.max or obis in rules.min),
        "negative" in on and negative.is_import(obis),
        rules.cumulative(obis),
    )


class VeeEngine:
    def __init__(self, settings: VeeSettings) -> None:
        self.settings = settings
        self.totals = VeeTotals()

    async def after_ingest(self, tx: VeeTx, rows: IngestWrite, now_ms: int) -> VeeTotals:
        """Validate and derive the readings ``rows`` stored (call after ``tx.write(rows)``)."""
        received = {(r.gateway_id, r.seq): r.received_ms for r in rows.records}
        by_meter: dict[str, list[tuple]] = {}
        for r in rows.readings:
            group = by_meter.get(r[0])
            if group is None:
                group = by_meter[r[0]] = []
            group.append(r)
        out = VeeWrite()
        totals = VeeTotals()
        for meter_id, readings in by_meter.items():
            own = VeeWrite()
            try:
                await self._meter(tx, meter_id, readings, received, now_ms, own, totals)
            except Exception as exc:  # one meter's fault must not stop the others' ingest
                log.exception("VEE failed for meter %s; its readings are stored unvalidated",
                              meter_id)  # fmt: skip
                own = VeeWrite()
                first = min(readings, key=lambda r: r[2])
                self._record(
                    [Flag(meter_id, first[1], first[2], "vee", WARN,
                          f"internal error, readings stored unvalidated: {exc!r}")],
                    now_ms, own,
                )  # fmt: skip
            out.merge(own)
        await tx.write(out)
        totals.intervals += len(out.intervals)
        totals.superseded += len(out.superseded)
        for name in totals.__dict__:
            setattr(self.totals, name, getattr(self.totals, name) + getattr(totals, name))
        return totals

    async def _meter(
        self, tx: VeeTx, meter_id: str, rows: list[tuple], received: dict[tuple[str, int], int],
        now_ms: int, out: VeeWrite, totals: VeeTotals,
    ) -> None:  # fmt: skip
        """``rows``: the meter's stored ``ReadingRow``s of this transaction. The per-reading
        rules run only where they can find something (a unit to compare, a configured limit,
        an import quantity), decided once per OBIS: this runs for every stored reading."""
        rules = self.settings.for_meter(meter_id)
        on = rules.rules
        plans: dict[str, _Plan] = {}
        flags: list[Flag] = []
        series: dict[str, list[Reading]] = {}
        firsts: dict[int, tuple[tuple, bool]] = {}  # ms -> (the capture's clock reading, cum.)
        tou: dict[int, dict[str, Reading]] | None = {} if "sumcheck" in on and rules.tou else None
        serials: list[tuple[int, str]] = []

        def reading(row: tuple) -> Reading:
            _m, obis, ms, value, unit, qflags, source, gw, seq = row
            return Reading(meter_id, obis, ms, Decimal(value), unit, qflags, source, gw, seq,
                           received.get((gw, seq), now_ms))  # fmt: skip

        for row in rows:
            obis = row[1]
            plan = plans.get(obis)
            if plan is None:
                plan = plans[obis] = _plan(obis, rules)
            wrong_unit = plan.unit is not None and row[4] != plan.unit
            if wrong_unit and (f := units.check(reading(row), rules)):
                flags.append(f)
            if plan.limits and (f := limits.check(reading(row), rules)):
                flags.append(f)
            if plan.negative and row[3].startswith("-") and (f := negative.check(reading(row))):
                flags.append(f)
            if plan.cumulative:
                series.setdefault(obis, []).append(reading(row))
            ms = row[2]
            held = firsts.get(ms)
            if held is None or (plan.cumulative and not held[1]):
                firsts[ms] = (row, plan.cumulative)
            if tou is not None:
                tou.setdefault(ms, {})[obis] = reading(row)
            if obis == rules.serial_obis:
                serials.append((ms, row[3]))
        if "timestamps" in on:  # once per capture: the clock is the capture's
            for ms in sorted(firsts):
                row, cumulative = firsts[ms]
                flags += timestamps.check(reading(row), rules, now_ms, rules.aligned and cumulative)
        if tou is not None:
            for ms in sorted(tou):
                flags += sumcheck.check_tou(tou[ms], rules)
        bad = {(f.obis, f.captured_ms) for f in flags if f.outcome == ERROR}
        if serials:
            flags += await self._serial_swaps(tx, meter_id, rules.serial_obis, serials, now_ms)
        swaps: list[Swap] | None = None
        for obis, new in series.items():
            if swaps is None:
                swaps = [_swap(s) for s in await tx.swaps(meter_id)]
            new.sort(key=lambda r: r.captured_ms)
            await self._series(
                tx, meter_id, obis, new, rules, swaps, bad, now_ms, flags, out, "vee",
                f"ingest of {len(new)} reading(s) {_when(new[0].captured_ms)}"
                f"..{_when(new[-1].captured_ms)}",
            )  # fmt: skip
        out.count(meter_id, "", "validated", len(rows))
        totals.validated += len(rows)
        self._record(flags, now_ms, out)
        totals.flagged += len(flags)

    @staticmethod
    async def _serial_swaps(
        tx: VeeTx, meter_id: str, obis: str, serials: list[tuple[int, str]], now_ms: int
    ) -> list[Flag]:
        """Record a swap where the meter's serial number changed (before the registers are
        derived, so that the old and the new register are never subtracted)."""
        serials.sort()
        before = await tx.points_before(meter_id, obis, serials[0][0] - 1, 1)
        last = Decimal(before[0].value) if before else None
        found = []
        for ms, text in serials:
            value = Decimal(text)
            if last is not None and value != last:
                reason = f"serial number changed from {last} to {value}"
                swap_id = await tx.add_swap(meter_id, ms, None, None, reason, "vee", now_ms)
                detail = f"meter swap #{swap_id} detected: {reason}"
                found.append(Flag(meter_id, obis, ms, monotonic.RULE, INFO, detail))
            last = value
        return found

    @staticmethod
    def _record(flags: Iterable[Flag], now_ms: int, out: VeeWrite) -> None:
        for f in flags:
            out.validations.append(
                (f.meter_id, f.obis, f.captured_ms, f.rule, f.outcome, f.detail, now_ms)
            )
            out.count(f.meter_id, f.rule, f.outcome)

    async def _series(
        self, tx: VeeTx, meter_id: str, obis: str, new: Sequence[Reading], rules: MeterRules,
        swaps: list[Swap], bad: set[tuple[str, int]], now_ms: int, flags: list[Flag],
        out: VeeWrite, who: str, why: str, validate: bool = True,
    ) -> None:  # fmt: skip
        """Validate the new readings of one register along its series and (re)derive the
        intervals they touch. ``new`` is sorted by time."""
        step = rules.interval_ms
        lo, hi = new[0].captured_ms, new[-1].captured_ms
        fresh = {r.captured_ms for r in new}
        before = await tx.points_before(meter_id, obis, lo - 1, _LOOK)
        effective = [p for p in map(_point, before) if p is not None]
        prev = effective[0] if effective else None
        anchor = None
        if prev is not None:
            target = floor_grid(prev.ms, step)
            anchor = next((p for p in effective if p.ms <= target), None)
            if anchor is None and len(before) == _LOOK:
                more = await tx.points_before(meter_id, obis, target, _LOOK)
                anchor = next((p for p in map(_point, more) if p is not None), None)
        if anchor is not None:
            start, emit_from = anchor.ms, floor_grid(prev.ms, step)  # type: ignore[union-attr]
            head = [anchor]
        elif prev is not None:
            start, emit_from, head = prev.ms, ceil_grid(prev.ms, step), [prev]
        else:
            start, emit_from, head = lo - 1, ceil_grid(lo, step), []
        rows = await tx.points_between(meter_id, obis, start, hi)
        tail_rows = await tx.points_after(meter_id, obis, hi, _LOOK)
        tail = [p for p in map(_point, tail_rows) if p is not None]
        if tail:  # a late reading: derive through the interval after the next point
            end = ceil_grid(tail[0].ms, step)
            if tail[-1].ms < end:
                tail = [p for p in map(_point, await tx.points_between(
                    meter_id, obis, hi, end)) if p is not None]  # fmt: skip
                extra = await tx.points_after(meter_id, obis, end, _LOOK)
                tail += [p for p in map(_point, extra) if p is not None][:1]
            else:
                tail = [p for p in tail if p.ms <= end] + [p for p in tail if p.ms > end][:1]
        points: list[Point] = list(head)
        gap_pairs_new: list[tuple[Point, Point]] = []
        for row in rows:
            if row.captured_ms == start:
                continue
            point = _point(row)
            if point is None or (obis, row.captured_ms) in bad:
                continue
            last = points[-1] if points else None
            if row.captured_ms in fresh and validate:
                if "monotonic" in rules.rules and (
                    f := monotonic.check(last, point, meter_id, obis, rules, swaps)
                ):
                    flags.append(f)
                    if f.outcome == ERROR:
                        continue
                if last is not None and gaps.is_gap(last, point, rules):
                    gap_pairs_new.append((last, point))
                profile = rules.profile_sum.get(obis)
                if profile and last is not None and "sumcheck" in rules.rules:
                    delta, _how = monotonic.pair_delta(last, point, obis, rules, swaps)
                    if delta is not None:
                        got = await tx.values_between(meter_id, profile, last.ms, point.ms)
                        f = sumcheck.check_profile(
                            meter_id, obis, last.ms, point.ms, delta, profile,
                            [sumcheck.in_unit(v, u, point.unit) for v, u in got],
                            (point.ms - last.ms) // step, rules,
                        )  # fmt: skip
                        if f:
                            flags.append(f)
            points.append(point)
        if tail and validate and points and gaps.is_gap(points[-1], tail[0], rules):
            gap_pairs_new.append((points[-1], tail[0]))
        points += tail
        if len(points) < 2:
            return
        history: dict[int, Decimal] = {}
        for p, q in gap_pairs(points, rules):
            low, high = like_day_ranges(p.ms, q.ms, rules.like_day_weeks)
            for row in await tx.current_intervals(meter_id, obis, low, high):
                measured = row.quality in ("actual", "edited") and row.value is not None
                if measured and row.end_ms - row.start_ms == step:
                    history[row.start_ms] = Decimal(row.value)
        derived, notes = derive(points, obis, rules, swaps, history, emit_from)
        if "gaps" in rules.rules and gap_pairs_new:
            how = {(n.prev.ms, n.point.ms): n for n in notes}
            for p, q in gap_pairs_new:
                note = how.get((p.ms, q.ms))
                if note is None or note.quality == GAP:
                    method, outcome = "no basis to estimate: left as a gap for review", WARN
                else:
                    method, outcome = f"{note.quality} ({note.method})", INFO
                stored = None
                if p.gateway_id == q.gateway_id and q.seq > p.seq:
                    stored = await tx.records_between(q.gateway_id, p.seq, q.seq)
                f = gaps.check(p, q, meter_id, obis, rules, stored, method)
                flags.append(Flag(f.meter_id, f.obis, f.captured_ms, f.rule, outcome, f.detail))
        emit_to = points[-1].ms
        lookback = max(_DAY, rules.zero_ms)
        existing = await tx.current_intervals(meter_id, obis, emit_from - lookback, emit_to)
        unit = new[0].unit or points[-1].unit
        window = {(r.start_ms, r.end_ms): r for r in existing if r.start_ms >= emit_from}
        known = {(i.start_ms, i.end_ms) for i in derived}
        current: dict[int, Interval] = {
            r.start_ms: _interval(r) for r in existing if r.start_ms < emit_from
        }
        added: list[Interval] = []
        for interval in derived:
            old = window.get((interval.start_ms, interval.end_ms))
            value = None if interval.value is None else str(interval.value)
            if old is not None and (old.value, old.quality, old.method) == (
                value,
                interval.quality,
                interval.method,
            ):
                current[interval.start_ms] = interval
                continue
            reason = why
            if old is not None:
                reason = f"{why}; replaces {old.quality}"
                reason += f" ({old.method})" if old.method else ""
                reason += f" {old.value}" if old.value is not None else ""
                out.superseded.append((now_ms, f"replaced by {_replacement(interval)}: {why}",
                                       old.id))  # fmt: skip
            out.intervals.append(
                (meter_id, obis, interval.start_ms, interval.end_ms, value, unit,
                 interval.quality, interval.method, now_ms, who, reason)
            )  # fmt: skip
            current[interval.start_ms] = interval
            added.append(interval)
        for key, old in window.items():
            if key not in known and old.end_ms <= emit_to:
                out.superseded.append((now_ms, f"no longer derived: {why}", old.id))
        if not validate:
            return
        ordered = [current[s] for s in sorted(current)]
        starts = [i.start_ms for i in ordered]
        for interval in added:
            if interval.quality not in ("actual", ESTIMATED):
                continue
            at = bisect_left(starts, interval.start_ms)
            if "spike" in rules.rules and interval.quality == "actual":
                since = bisect_left(starts, interval.start_ms - _DAY)
                day = [
                    i.value for i in ordered[since:at]
                    if i.value is not None and i.end_ms - i.start_ms == step
                ]  # fmt: skip
                if f := spike.check(meter_id, obis, interval, day, rules):
                    flags.append(f)
            if "zero" in rules.rules and interval.value == 0:
                run = int(rules.zero_ms // step) + 1
                f = zero.check(meter_id, obis, interval, ordered[max(0, at - run) : at], rules)
                if f:
                    flags.append(f)

    async def rederive(
        self, tx: VeeTx, meter_id: str, obis: str, around_ms: Sequence[int], now_ms: int,
        who: str, why: str,
    ) -> VeeWrite:  # fmt: skip
        """Derive again the intervals around the given readings of one register (after an
        operator decision or a recorded swap); writes and returns what changed."""
        rules = self.settings.for_meter(meter_id)
        swaps = [_swap(s) for s in await tx.swaps(meter_id)]
        out = VeeWrite()
        flags: list[Flag] = []
        anchors = sorted(set(around_ms))
        fake = [Reading(meter_id, obis, ms, Decimal(0), "", 0, 0, "", 0, now_ms) for ms in anchors]
        await self._series(
            tx, meter_id, obis, fake, rules, swaps, set(), now_ms, flags, out, who, why,
            validate=False,
        )  # fmt: skip
        await tx.write(out)
        return out


def _replacement(interval: Interval) -> str:
    if interval.quality == ESTIMATED:
        return f"estimated ({interval.method})"
    return interval.quality


def _when(ms: int) -> str:
    return format_utc_ms(ms)

"""The VEE engine: runs the configured rules on the readings an ingest transaction stored,
derives their interval consumption, and writes findings, counters and intervals in the
SAME transaction (so no reading is ever stored without its validation, and a crash leaves
neither half done).

Per meter: the per-reading rules (units, limits, negative, timestamps, sumcheck), then for
each cumulative register with new readings its series around them: the anchor point at or
before the first interval to (re)derive, the stored and new points, and the points after
(a late reading lands between stored ones). ``monotonic`` and ``gaps`` run along the
series (``series.load_window``); consumption is derived (``derive``) and compared with the
current intervals (``series.replace_intervals``): equal ones stay, changed ones are
superseded (kept, with when and why) and replaced; ``spike``, ``zero`` and ``history`` run
on the new intervals. Operator actions re-derive the same way (``rederive``).
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from protocols.clock import format_utc_ms

from ..store.base import IngestWrite, StoreConflict
from ..store.vee_sqlite import IntervalRow, SwapRow, VeeWrite
from . import (
    gaps,
    history,
    limits,
    monotonic,
    negative,
    spike,
    sumcheck,
    timestamps,
    units,
    zero,
)
from .base import ERROR, INFO, WARN, Flag, Interval, Point, Reading
from .derive import ESTIMATED, GAP, PairNote, derive, gap_pairs
from .estimate import like_day_ranges, week_back_starts
from .monotonic import Swap
from .series import VeeTx, Window, load_window, point_of, replace_intervals
from .settings import MeterRules, VeeSettings

__all__ = ["VeeEngine", "VeeTx"]

log = logging.getLogger("collector.vee")

_DAY = 86_400_000


@dataclass
class VeeTotals:
    validated: int = 0
    flagged: int = 0
    intervals: int = 0
    superseded: int = 0


def swap_of(row: SwapRow) -> Swap:
    return Swap(
        row.id, row.meter_id, row.at_ms,
        None if row.old_final is None else Decimal(row.old_final),
        None if row.new_initial is None else Decimal(row.new_initial), row.reason,
    )  # fmt: skip


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
    def __init__(self, settings: VeeSettings, clock_of: Callable[[int], int] | None = None) -> None:
        """``clock_of(wall_ms)``: that wall-clock instant on the collector's clock (the
        fleet's virtual clock, if it runs on one). Records carry their receipt time on the
        wall clock and their capture time on the fleet's: the drift check compares the two
        on one clock."""
        self.settings = settings
        self.clock_of: Callable[[int], int] = clock_of or (lambda ms: ms)
        self.totals = VeeTotals()
        self._swapped: set[str] = set()

    async def after_ingest(self, tx: VeeTx, rows: IngestWrite, now_ms: int) -> VeeTotals:
        """Validate and derive the readings ``rows`` stored (call after ``tx.write(rows)``)."""
        clock_of = self.clock_of
        received = {(r.gateway_id, r.seq): clock_of(r.received_ms) for r in rows.records}
        by_meter: dict[str, list[tuple]] = {}
        for r in rows.readings:
            group = by_meter.get(r[0])
            if group is None:
                group = by_meter[r[0]] = []
            group.append(r)
        out = VeeWrite()
        totals = VeeTotals()
        self._swapped = await tx.swapped_meters()  # one query, not one per meter
        for meter_id, readings in by_meter.items():
            own = VeeWrite()
            try:
                await self._meter(tx, meter_id, readings, received, now_ms, own, totals)
            except StoreConflict:
                raise  # the whole transaction is rolled back and run again
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
        detected = []
        if serials:
            detected = await self._serial_swaps(tx, meter_id, rules.serial_obis, serials, now_ms)
            flags += detected
        swaps: list[Swap] | None = None
        for obis, new in series.items():
            if swaps is None:
                swapped = meter_id in self._swapped or bool(detected)
                swaps = [swap_of(s) for s in await tx.swaps(meter_id)] if swapped else []
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
        window = await load_window(
            tx, meter_id, obis, new[0].captured_ms, new[-1].captured_ms, step
        )
        fresh = {r.captured_ms for r in new} if validate else set()
        points, gap_pairs_new = await self._walk(
            tx, meter_id, obis, window, fresh, bad, rules, swaps, flags
        )
        if len(points) < 2:
            return
        history: dict[int, Decimal] = {}
        for p, q in gap_pairs(points, rules):
            low, high = like_day_ranges(p.ms, q.ms, rules.like_day_weeks)
            for row in await tx.current_intervals(meter_id, obis, low, high):
                measured = row.quality in ("actual", "edited") and row.value is not None
                if measured and row.end_ms - row.start_ms == step:
                    history[row.start_ms] = Decimal(row.value)
        derived, notes = derive(points, obis, rules, swaps, history, window.emit_from)
        if "gaps" in rules.rules and gap_pairs_new:
            flags += await self._gap_flags(tx, meter_id, obis, rules, gap_pairs_new, notes)
        emit_to = points[-1].ms
        lookback = max(_DAY + 2 * 3_600_000, rules.zero_ms)  # a 25-hour DST day, too
        existing = await tx.current_intervals(meter_id, obis, window.emit_from - lookback, emit_to)
        done = replace_intervals(
            meter_id, obis, new[0].unit or points[-1].unit, existing, derived,
            window.emit_from, emit_to, now_ms, who, why,
        )  # fmt: skip
        out.superseded += done.superseded
        out.intervals += done.inserted
        if validate:
            flags += _interval_rules(meter_id, obis, rules, done.added, done.current)
            if "history" in rules.rules:
                flags += await _day_rule(tx, meter_id, obis, rules, done.added, done.current)

    async def _walk(
        self, tx: VeeTx, meter_id: str, obis: str, window: Window, fresh: set[int],
        bad: set[tuple[str, int]], rules: MeterRules, swaps: list[Swap], flags: list[Flag],
    ) -> tuple[list[Point], list[tuple[Point, Point]]]:  # fmt: skip
        """The usable points of the window in order; along the way the rules that compare a
        new reading with the point before it (monotonic, gaps, the profile sum). A new
        reading with an error finding is left out, so the next compares with the last good
        one."""
        step = rules.interval_ms
        points: list[Point] = list(window.head)
        gap_pairs_new: list[tuple[Point, Point]] = []
        for row in window.rows:
            if row.captured_ms == window.start:
                continue
            point = point_of(row)
            if point is None or (obis, row.captured_ms) in bad:
                continue
            last = points[-1] if points else None
            if row.captured_ms in fresh and last is not None:
                if "monotonic" in rules.rules and (
                    f := monotonic.check(last, point, meter_id, obis, rules, swaps)
                ):
                    flags.append(f)
                    if f.outcome == ERROR:
                        continue
                if gaps.is_gap(last, point, rules):
                    gap_pairs_new.append((last, point))
                profile = rules.profile_sum.get(obis)
                if profile and "sumcheck" in rules.rules:
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
        tail = window.tail
        if tail and fresh and points and gaps.is_gap(points[-1], tail[0], rules):
            gap_pairs_new.append((points[-1], tail[0]))
        return points + tail, gap_pairs_new

    @staticmethod
    async def _gap_flags(
        tx: VeeTx, meter_id: str, obis: str, rules: MeterRules,
        pairs: list[tuple[Point, Point]], notes: list[PairNote],
    ) -> list[Flag]:  # fmt: skip
        how = {(n.prev.ms, n.point.ms): n for n in notes}
        found = []
        for p, q in pairs:
            note = how.get((p.ms, q.ms))
            if note is None or note.quality == GAP:
                method, outcome = "no basis to estimate: left as a gap for review", WARN
            else:
                method, outcome = f"{note.quality} ({note.method})", INFO
            stored = None
            if p.gateway_id == q.gateway_id and q.seq > p.seq:
                stored = await tx.records_between(q.gateway_id, p.seq, q.seq)
            f = gaps.check(p, q, meter_id, obis, rules, stored, method)
            found.append(Flag(f.meter_id, f.obis, f.captured_ms, f.rule, outcome, f.detail))
        return found

    async def rederive(
        self, tx: VeeTx, meter_id: str, obis: str, around_ms: Sequence[int], now_ms: int,
        who: str, why: str,
    ) -> VeeWrite:  # fmt: skip
        """Derive again the intervals around the given readings of one register (after an
        operator decision or a recorded swap); writes and returns what changed."""
        rules = self.settings.for_meter(meter_id)
        out = VeeWrite()
        if not rules.cumulative(obis):  # no consumption is derived from it
            return out
        swaps = [swap_of(s) for s in await tx.swaps(meter_id)]
        flags: list[Flag] = []
        anchors = sorted(set(around_ms))
        fake = [Reading(meter_id, obis, ms, Decimal(0), "", 0, 0, "", 0, now_ms) for ms in anchors]
        await self._series(
            tx, meter_id, obis, fake, rules, swaps, set(), now_ms, flags, out, who, why,
            validate=False,
        )  # fmt: skip
        await tx.write(out)
        return out


async def _day_rule(
    tx: VeeTx, meter_id: str, obis: str, rules: MeterRules, added: list[Interval],
    current: list[Interval],
) -> list[Flag]:  # fmt: skip
    """``history`` for each local day that a new interval completes."""
    found: list[Flag] = []
    zone = rules.zone
    for interval in added:
        day = history.local_day(interval.end_ms, zone)
        if day is None:
            continue
        total = history.day_total(current, *day)
        if total is None:
            continue
        weeks = rules.like_day_weeks
        earlier = await tx.current_intervals(
            meter_id, obis, day[0] - weeks * 7 * _DAY - _DAY, day[0]
        )
        usual = []
        for k in range(1, weeks + 1):
            starts = week_back_starts(day[0], zone, k)[-1], week_back_starts(day[1], zone, k)[-1]
            value = history.day_total(
                [_as_interval(r) for r in earlier if starts[0] <= r.start_ms < starts[1]], *starts
            )
            if value is not None:
                usual.append(value)
        if f := history.check(meter_id, obis, interval.end_ms, total, usual, rules):
            found.append(f)
    return found


def _as_interval(row: IntervalRow) -> Interval:
    value = None if row.value is None else Decimal(row.value)
    return Interval(row.start_ms, row.end_ms, value, row.quality, row.method)


def _interval_rules(
    meter_id: str, obis: str, rules: MeterRules, added: list[Interval], current: list[Interval]
) -> list[Flag]:
    """``spike`` and ``zero`` on the newly derived intervals (``current``: every current
    interval of the window and the day before, by start)."""
    found: list[Flag] = []
    step = rules.interval_ms
    starts = [i.start_ms for i in current]
    for interval in added:
        if interval.quality not in ("actual", ESTIMATED):
            continue
        at = bisect_left(starts, interval.start_ms)
        if "spike" in rules.rules and interval.quality == "actual":
            since = bisect_left(starts, interval.start_ms - _DAY)
            day = [
                i.value for i in current[since:at]
                if i.value is not None and i.end_ms - i.start_ms == step
            ]  # fmt: skip
            if f := spike.check(meter_id, obis, interval, day, rules):
                found.append(f)
        if "zero" in rules.rules and interval.value == 0:
            run = int(rules.zero_ms // step) + 1
            f = zero.check(meter_id, obis, interval, current[max(0, at - run) : at], rules)
            if f:
                found.append(f)
    return found


def _when(ms: int) -> str:
    return format_utc_ms(ms)

"""Evaluating the data-completeness SLA on a store (SQLite or PostgreSQL).

For each meter (the registry's bindings), each day of the period and each interval of the
meter's grid (``[vee] interval``, per meter) the evaluation asks two things of the derived
intervals (``intervals``, what VEE made of the readings) of the register that counts:

* **actual?** the current row's quality is ``actual`` (not estimated, edited, a gap, or
  missing altogether);
* **on time?** the first ``actual`` row of the interval was created at the head-end (its
  ``created_ms``, the collector's clock) no later than the interval's end + the class's
  ``deadline``.

Both are judged as of ``now_ms``: rows created later, and supersessions after it, are not
seen, so a report can be made again as it stood at an earlier instant.

An interval that is not actual yet and whose deadline has not passed is *pending*: it counts
neither way yet (today's intervals, a backlog that may still come). The ratios are over the
*decided* intervals (actual ones, and every one whose deadline passed). A meter-day is in
breach when ``actual / decided < actual_pct`` or ``on_time / decided < on_time_pct``
(compared exactly, in integers and decimals).

Each interval that is not actual, or late, gets one cause, from evidence in the store, in
this order:

1. ``VEE rejection``: a reading bounding the interval (captured in ``[start, end]``) has an
   ``error`` finding not accepted by an operator, or was rejected or edited by one;
2. ``gateway offline``: the meter's gateway was offline (``sla_gateway_events``: a clean
   stop or the broker's last will) at some time between the interval's start and its
   deadline;
3. ``meter not answering``: the gateway was online but the meter gave nothing: a capture of
   it in the interval was partial or carried an error status, or VEE found the gap
   ``never taken`` (the gateway's sequence is complete), or another meter of the same gateway
   was read in that interval;
4. ``estimated``: the interval is estimated (or a gap row) and nothing above explains it;
5. ``missing`` / ``late``: no evidence at all (e.g. a collector that was not running).

Intervals are expected from the meter's first reading on (before it the meter was not
commissioned, or not yet read by this head-end); a meter never read, from its enrolment.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from .events import OfflineSpan, offline_spans
from .period import Period, day_start_ms
from .settings import MAIN_REGISTER, SlaClass, SlaSettings, commodity_of_obis

__all__ = [
    "CAUSES",
    "Breach",
    "ClassSummary",
    "GatewayDay",
    "MeterDay",
    "SlaReport",
    "evaluate",
    "evaluate_window",
    "ratio",
]

GATEWAY_OFFLINE = "gateway offline"
METER_NOT_ANSWERING = "meter not answering"
VEE_REJECTION = "VEE rejection"
ESTIMATED = "estimated"
MISSING = "missing"
LATE = "late"
CAUSES = (GATEWAY_OFFLINE, METER_NOT_ANSWERING, VEE_REJECTION, ESTIMATED, MISSING, LATE)

BAD_READ = 0x01 | 0x10  # protocols.record Quality.METER_STATUS | PARTIAL
_DAY_MS = 86_400_000
_LOOKBACK_MS = 35 * _DAY_MS  # a gap row may start this long before the period ([vee] max_gap)
_SIX = Decimal("0.000001")


def ratio(part: int, whole: int) -> str | None:
    """``part / whole`` as an exact-enough decimal string (6 places); None when whole is 0."""
    if whole == 0:
        return None
    return str((Decimal(part) / Decimal(whole)).quantize(_SIX))


def _below(part: int, whole: int, pct: Decimal) -> bool:
    """part / whole < pct %, exactly."""
    return whole > 0 and Decimal(part) * 100 < pct * whole


@dataclass
class Tally:
    expected: int = 0  # intervals in the days
    decided: int = 0  # actual, or deadline passed
    actual: int = 0
    on_time: int = 0
    late: int = 0  # actual but after the deadline
    estimated: int = 0  # estimated, edited or gap rows whose deadline passed
    missing: int = 0  # no row at all, deadline passed
    pending: int = 0
    causes: Counter = field(default_factory=Counter)  # every interval that missed, by cause
    not_actual: Counter = field(default_factory=Counter)  # those that are not actual

    def add(self, other: Tally) -> None:
        for name in ("expected", "decided", "actual", "on_time", "late", "estimated",
                     "missing", "pending"):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.causes.update(other.causes)
        self.not_actual.update(other.not_actual)

    def figures(self) -> dict[str, Any]:
        return {
            "expected": self.expected,
            "decided": self.decided,
            "actual": self.actual,
            "on_time": self.on_time,
            "late": self.late,
            "estimated": self.estimated,
            "missing": self.missing,
            "pending": self.pending,
            "actual_ratio": ratio(self.actual, self.decided),
            "on_time_ratio": ratio(self.on_time, self.decided),
            "causes": {c: self.causes[c] for c in CAUSES if self.causes[c]},
        }


@dataclass
class MeterDay:
    day: date
    meter_id: str
    gateway_id: str
    sla_class: SlaClass
    obis: str | None
    tally: Tally

    @property
    def breaches(self) -> list[str]:
        t, c = self.tally, self.sla_class
        kinds = []
        if _below(t.actual, t.decided, c.actual_pct):
            kinds.append("actual")
        if _below(t.on_time, t.decided, c.on_time_pct):
            kinds.append("on-time")
        return kinds

    def to_json(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(),
            "meter": self.meter_id,
            "gateway": self.gateway_id,
            "class": self.sla_class.name,
            "obis": self.obis,
            **self.tally.figures(),
            "breaches": self.breaches,
        }


@dataclass
class Breach:
    day: date
    gateway_id: str
    meter_id: str
    sla_class: SlaClass
    kind: str  # "actual" or "on-time"
    tally: Tally

    @property
    def key(self) -> str:
        """Sort key and pagination cursor."""
        return f"{self.day.isoformat()}~{self.gateway_id}~{self.meter_id}~{self.kind}"

    @property
    def causes(self) -> Counter:
        """The intervals behind the breach by cause: those not actual for an ``actual``
        breach, every one that missed (not actual or late) for an ``on-time`` one."""
        return self.tally.not_actual if self.kind == "actual" else self.tally.causes

    @property
    def cause(self) -> str:
        """The cause of most of the intervals behind the breach (ties: the first of
        ``CAUSES``)."""
        causes = self.causes
        if not causes:
            return MISSING
        return max(CAUSES, key=lambda c: (causes[c], -CAUSES.index(c)))

    def to_json(self) -> dict[str, Any]:
        t, c = self.tally, self.sla_class
        actual = self.kind == "actual"
        return {
            "day": self.day.isoformat(),
            "gateway": self.gateway_id,
            "meter": self.meter_id,
            "class": c.name,
            "kind": self.kind,
            "ratio": ratio(t.actual if actual else t.on_time, t.decided),
            "target_pct": str(c.actual_pct if actual else c.on_time_pct),
            "decided": t.decided,
            "intervals": t.decided - (t.actual if actual else t.on_time),
            "cause": self.cause,
            "causes": {k: self.causes[k] for k in CAUSES if self.causes[k]},
        }


@dataclass
class GatewayDay:
    day: date
    gateway_id: str
    meters: int = 0
    meters_in_breach: int = 0
    tally: Tally = field(default_factory=Tally)
    actual_pct: Decimal = Decimal(0)  # the strictest target of its meters' classes
    on_time_pct: Decimal = Decimal(0)

    def to_json(self) -> dict[str, Any]:
        t = self.tally
        return {
            "day": self.day.isoformat(),
            "gateway": self.gateway_id,
            "meters": self.meters,
            "meters_in_breach": self.meters_in_breach,
            **t.figures(),
            "breach": _below(t.actual, t.decided, self.actual_pct)
            or _below(t.on_time, t.decided, self.on_time_pct),
        }


@dataclass
class ClassSummary:
    sla_class: SlaClass
    meters: set[str] = field(default_factory=set)
    meter_days_in_breach: int = 0
    tally: Tally = field(default_factory=Tally)

    def to_json(self) -> dict[str, Any]:
        c, t = self.sla_class, self.tally
        return {
            "class": c.name,
            "actual_pct": str(c.actual_pct),
            "on_time_pct": str(c.on_time_pct),
            "deadline_ms": c.deadline_ms,
            "meters": len(self.meters),
            "meter_days_in_breach": self.meter_days_in_breach,
            **t.figures(),
        }


@dataclass
class SlaReport:
    period: str
    from_ms: int
    to_ms: int
    now_ms: int
    timezone: str
    classes: list[ClassSummary]
    gateway_days: list[GatewayDay]
    meter_days: list[MeterDay]
    breaches: list[Breach]
    unclassified: list[str]

    def summary_json(self) -> dict[str, Any]:
        return {
            "period": self.period,
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
            "now_ms": self.now_ms,
            "timezone": self.timezone,
            "classes": [c.to_json() for c in self.classes],
            "gateways": [g.to_json() for g in self.gateway_days],
            "breach_count": len(self.breaches),
            "unclassified_meters": self.unclassified,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            **self.summary_json(),
            "meters": [m.to_json() for m in self.meter_days],
            "breaches": [b.to_json() for b in self.breaches],
        }


# -- the store's evidence for one meter ---------------------------------------------------


@dataclass
class MeterData:
    """What the store holds about one meter around the period."""

    meter_id: str
    gateway_id: str
    interval_ms: int
    sla_class: SlaClass
    obis: str | None
    # (start, end, quality, created_ms, superseded_ms) of the register's intervals
    rows: list[tuple[int, int, str, int, int | None]] = field(default_factory=list)
    captures: list[int] = field(default_factory=list)  # sorted capture times of the register
    bad_captures: list[int] = field(default_factory=list)  # partial / error-status captures
    rejected: list[int] = field(default_factory=list)  # readings VEE / an operator rejected
    never_taken: set[int] = field(default_factory=set)  # gap findings "never taken" at these
    since_ms: int | None = None  # the meter's first reading: no interval expected before
    # (rows sorted by start, their starts, the longest row): built once, used every day
    _index: tuple[list, list[int], int] | None = field(default=None, repr=False, compare=False)

    def rows_around(
        self, start_ms: int, end_ms: int
    ) -> list[tuple[int, int, str, int, int | None]]:
        """The rows that may overlap ``[start_ms, end_ms)``, sorted by start: a day's share
        of a month's rows, found by bisection instead of a scan from the month's start."""
        if self._index is None or self._index[0] is not self.rows:
            self.rows = sorted(self.rows)
            longest = max((r[1] - r[0] for r in self.rows), default=0)
            self._index = (self.rows, [r[0] for r in self.rows], longest)
        rows, starts, longest = self._index
        return rows[bisect.bisect_left(starts, start_ms - longest) :
                    bisect.bisect_left(starts, end_ms)]  # fmt: skip


async def _rows(store: Any, sql: str, params: tuple) -> list:
    return list(await store._rows(sql, params))


async def _candidate_obis(store: Any, meter_id: str, from_ms: int, to_ms: int) -> list[str]:
    rows = await _rows(
        store,
        "SELECT DISTINCT obis FROM intervals WHERE meter_id = ? AND start_ms >= ? AND start_ms < ?",
        (meter_id, from_ms, to_ms),
    )
    if not rows:  # nothing derived in the period: what does the meter report at all?
        rows = await _rows(
            store,
            "SELECT obis FROM readings WHERE meter_id = ? ORDER BY captured_ms DESC LIMIT 64",
            (meter_id,),
        )
    return sorted({r[0] for r in rows})


def _commodity(codes: list[str]) -> str | None:
    for code in codes:
        found = commodity_of_obis(code)
        if found is not None:
            return found
    return None


def _register(cls: SlaClass, commodity: str | None, codes: list[str]) -> str | None:
    for code in cls.obis:
        if code in codes:
            return code
    if cls.obis:
        return cls.obis[0]
    main = MAIN_REGISTER.get(commodity or "")
    if main is not None and (main in codes or not codes):
        return main
    cumulative = [c for c in codes if commodity_of_obis(c) is not None]
    return min(cumulative) if cumulative else main


async def _load(store: Any, data: MeterData, from_ms: int, to_ms: int) -> None:
    first = await _rows(
        store, "SELECT min(captured_ms) FROM readings WHERE meter_id = ?", (data.meter_id,)
    )
    if first and first[0][0] is not None:
        data.since_ms = first[0][0]
    else:  # never read: expected from its enrolment on
        bound = await _rows(
            store, "SELECT min(bound_ms) FROM gateway_meters WHERE meter_id = ?", (data.meter_id,)
        )
        data.since_ms = bound[0][0] if bound else None
    if data.obis is None:
        return
    meter, obis, step = data.meter_id, data.obis, data.interval_ms
    data.rows = [
        tuple(r)
        for r in await _rows(
            store,
            "SELECT start_ms, end_ms, quality, created_ms, superseded_ms FROM intervals"
            " WHERE meter_id = ? AND obis = ? AND start_ms >= ? AND start_ms < ? AND end_ms > ?",
            (meter, obis, from_ms - _LOOKBACK_MS, to_ms, from_ms),
        )
    ]
    lo, hi = from_ms - step, to_ms + 2 * _DAY_MS
    readings = await _rows(  # the register's captures, and any register's bad ones
        store,
        "SELECT captured_ms, obis, flags FROM readings WHERE meter_id = ? AND captured_ms >= ?"
        " AND captured_ms < ? AND (obis = ? OR (flags & ?) <> 0) ORDER BY captured_ms",
        (meter, lo, hi, obis, BAD_READ),
    )
    data.captures = sorted({ms for ms, code, _f in readings if code == obis})
    data.bad_captures = sorted({ms for ms, _c, flags in readings if int(flags) & BAD_READ})
    findings = await _rows(
        store,
        "SELECT captured_ms, outcome, rule, detail FROM validations WHERE meter_id = ?"
        " AND obis = ? AND captured_ms >= ? AND captured_ms < ?"
        " AND (outcome = 'error' OR rule = 'gaps')",
        (meter, obis, lo, hi),
    )
    decisions: dict[int, str] = {}
    for ms, action in await _rows(
        store,
        "SELECT captured_ms, action FROM vee_audit WHERE meter_id = ? AND obis = ?"
        " AND captured_ms >= ? AND captured_ms < ? ORDER BY id",
        (meter, obis, lo, hi),
    ):
        decisions[ms] = action  # the latest decision is in force
    rejected = {ms for ms, action in decisions.items() if action in ("reject", "edit")}
    for ms, outcome, rule, detail in findings:
        if outcome == "error" and decisions.get(ms) != "accept":
            rejected.add(ms)
        elif rule == "gaps" and "never taken" in detail:
            data.never_taken.add(ms)
    data.rejected = sorted(rejected)


def _any_in(sorted_ms: list[int], lo: int, hi: int) -> bool:
    """Whether a value lies in [lo, hi]."""
    i = bisect.bisect_left(sorted_ms, lo)
    return i < len(sorted_ms) and sorted_ms[i] <= hi


# -- the evaluation proper (no I/O) -------------------------------------------------------


_WORST = {"actual": 0, "edited": 1, "estimated": 2, "gap": 3}


def evaluate_meter_day(
    data: MeterData,
    day: date,
    start_ms: int,
    end_ms: int,
    now_ms: int,
    offline: list[OfflineSpan],
    gateway_reads: list[int],
) -> MeterDay:
    """One meter's day ``[start_ms, end_ms)``; ``gateway_reads``: sorted capture times of
    its gateway's meters (one of them read while this one was not: the gateway was reading)."""
    cls, step = data.sla_class, data.interval_ms
    deadline = cls.deadline_ms
    tally = Tally()
    rows = data.rows_around(start_ms, end_ms + step)
    first = (start_ms // step) * step
    if first < start_ms:
        first += step
    slot = first
    i0 = 0
    while slot < end_ms:
        s, e = slot, slot + step
        slot = e
        if data.since_ms is None or s < data.since_ms:
            continue  # before the meter's first reading (not commissioned yet): not expected
        tally.expected += 1
        while i0 < len(rows) and rows[i0][1] <= s:
            i0 += 1  # rows ending before the slot (rows sorted by start; gap rows may be long)
        quality = None
        arrival: int | None = None
        for r_start, r_end, r_quality, created, superseded in rows[i0:]:
            if r_start >= e:
                break
            if r_end <= s or created > now_ms:
                continue  # as of now_ms: a row made later did not exist yet
            current = superseded is None or superseded > now_ms
            if current and (quality is None or _WORST[r_quality] > _WORST[quality]):
                quality = r_quality
            if r_quality == "actual" and (arrival is None or created < arrival):
                arrival = created
        due = e + deadline <= now_ms
        if quality == "actual":
            tally.decided += 1
            tally.actual += 1
            if arrival is not None and arrival <= e + deadline:
                tally.on_time += 1
                continue
            tally.late += 1
        elif not due:
            tally.pending += 1
            continue
        else:
            tally.decided += 1
            if quality is None:
                tally.missing += 1
            else:
                tally.estimated += 1
        cause = _cause(data, s, e, deadline, quality, offline, gateway_reads)
        tally.causes[cause] += 1
        if quality != "actual":
            tally.not_actual[cause] += 1
    return MeterDay(day, data.meter_id, data.gateway_id, cls, data.obis, tally)


def _cause(
    data: MeterData, s: int, e: int, deadline: int, quality: str | None,
    offline: list[OfflineSpan], gateway_reads: list[int],
) -> str:  # fmt: skip
    if quality == "edited" or _any_in(data.rejected, s, e):
        return VEE_REJECTION
    if any(span.overlaps(s, e + deadline + 1) for span in offline):
        return GATEWAY_OFFLINE
    if quality != "actual":
        if _any_in(data.bad_captures, s, e):
            return METER_NOT_ANSWERING
        nxt = bisect.bisect_left(data.captures, e)
        if nxt < len(data.captures) and data.captures[nxt] in data.never_taken:
            return METER_NOT_ANSWERING
        if not _any_in(data.captures, s + 1, e) and _any_in(gateway_reads, s + 1, e):
            return METER_NOT_ANSWERING
        return ESTIMATED if quality is not None else MISSING
    return LATE


# -- the whole report ---------------------------------------------------------------------


async def _meters(store: Any) -> list[tuple[str, str]]:
    """(gateway, meter) of the registry's bindings; a meter bound to several gateways counts
    under the one that delivered its newest reading."""
    by_meter: dict[str, list[str]] = {}
    for gw, m in await store.bindings():
        by_meter.setdefault(m, []).append(gw)
    out = []
    for m, gateways in sorted(by_meter.items()):
        gw = sorted(gateways)[0]
        if len(gateways) > 1:
            newest = await _rows(
                store,
                "SELECT gateway_id FROM readings WHERE meter_id = ? ORDER BY captured_ms DESC"
                " LIMIT 1",
                (m,),
            )
            if newest and newest[0][0] in gateways:
                gw = newest[0][0]
        out.append((gw, m))
    return out


async def evaluate(
    store: Any,
    config: Any,
    period: Period,
    now_ms: int,
    *,
    gateway: str | None = None,
    meter: str | None = None,
) -> SlaReport:
    """The SLA of ``period`` (whole days in ``[sla] timezone``) as of ``now_ms`` (the
    collector's clock); ``config`` is the collector's ``Config`` (``sla`` and ``vee``)."""
    settings: SlaSettings = config.sla
    zone = settings.zone
    days = [(d, day_start_ms(d, zone), day_start_ms(d + timedelta(days=1), zone))
            for d in period.days()]  # fmt: skip
    return await _evaluate(store, config, period.text, days, now_ms, gateway, meter)


async def evaluate_window(store: Any, config: Any, from_ms: int, to_ms: int,
                          now_ms: int) -> SlaReport:  # fmt: skip
    """The SLA over ``[from_ms, to_ms)`` as one piece (the /metrics gauges: the last 24 h)."""
    settings: SlaSettings = config.sla
    first = settings_day(from_ms, settings)
    return await _evaluate(store, config, "window", [(first, from_ms, to_ms)], now_ms, None, None)


def settings_day(ms: int, settings: SlaSettings) -> date:
    """The day (in the SLA's time zone) holding instant ``ms``."""
    return datetime.fromtimestamp(ms // 1000, UTC).astimezone(settings.zone).date()


async def _evaluate(
    store: Any, config: Any, text: str, days: list[tuple[date, int, int]], now_ms: int,
    gateway: str | None, meter: str | None,
) -> SlaReport:  # fmt: skip
    settings: SlaSettings = config.sla
    from_ms, to_ms = days[0][1], days[-1][2]
    classes = {c.name: ClassSummary(c) for c in settings.classes}
    unclassified: list[str] = []
    by_gateway: dict[str, list[str]] = {}
    bound = await _meters(store)
    chosen = [(gw, m) for gw, m in bound
              if (gateway is None or gw == gateway) and (meter is None or m == meter)]  # fmt: skip
    # the other meters of the chosen ones' gateways: read or not (evidence, not evaluated)
    gateways = {gw for gw, _m in chosen}
    neighbours: dict[str, set[int]] = {}
    for gw, m in bound:
        if gw in gateways and (gw, m) not in chosen:
            rows = await _rows(
                store,
                "SELECT captured_ms FROM readings WHERE meter_id = ? AND captured_ms >= ?"
                " AND captured_ms < ?",
                (m, from_ms - _DAY_MS, to_ms + _DAY_MS),
            )
            neighbours.setdefault(gw, set()).update(r[0] for r in rows)
    for gw, m in chosen:
        by_gateway.setdefault(gw, []).append(m)
    meter_days: list[MeterDay] = []
    gateway_days: list[GatewayDay] = []
    # a gateway at a time: its meters' rows are loaded, evaluated and dropped, so memory
    # holds one gateway's period, not the fleet's (a month of 2,000 meters took 1.7 GB)
    for gw in sorted(by_gateway):
        metered: list[MeterData] = []
        for m in by_gateway[gw]:
            rules = config.vee.for_meter(m)
            codes = await _candidate_obis(store, m, from_ms, to_ms)
            commodity = _commodity(codes)
            cls = settings.class_of(m, commodity, rules.meter_class)
            if cls is None:
                unclassified.append(m)
                continue
            data = MeterData(m, gw, rules.interval_ms, cls, _register(cls, commodity, codes))
            await _load(store, data, from_ms, to_ms)
            metered.append(data)
        if not metered:
            continue
        horizon = to_ms + max(d.sla_class.deadline_ms for d in metered)
        offline = await offline_spans(store, gw, from_ms, horizon, now_ms)
        reads = sorted({ms for data in metered for ms in data.captures} | neighbours.get(gw, set()))
        for day, start, end in days:
            gday = GatewayDay(day, gw)
            for data in metered:
                md = evaluate_meter_day(data, day, start, end, now_ms, offline, reads)
                meter_days.append(md)
                gday.meters += 1
                gday.tally.add(md.tally)
                gday.actual_pct = max(gday.actual_pct, data.sla_class.actual_pct)
                gday.on_time_pct = max(gday.on_time_pct, data.sla_class.on_time_pct)
                summary = classes[data.sla_class.name]
                summary.meters.add(data.meter_id)
                summary.tally.add(md.tally)
                if md.breaches:
                    gday.meters_in_breach += 1
                    summary.meter_days_in_breach += 1
            gateway_days.append(gday)
    breaches = sorted(
        (Breach(md.day, md.gateway_id, md.meter_id, md.sla_class, kind, md.tally)
         for md in meter_days for kind in md.breaches),
        key=lambda b: b.key,
    )  # fmt: skip
    meter_days.sort(key=lambda md: (md.day, md.gateway_id, md.meter_id))
    gateway_days.sort(key=lambda g: (g.day, g.gateway_id))
    return SlaReport(
        text, from_ms, to_ms, now_ms, settings.timezone, list(classes.values()),
        gateway_days, meter_days, breaches, sorted(unclassified),
    )  # fmt: skip

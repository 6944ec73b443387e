"""The convergent bill: one per account and billing period, a section per service point.

Usage comes from VEE's derived intervals (``store.vee.intervals``: current rows, with their
quality). Each service point's section rates its commodity's intervals with ``rate(...)`` once
per tariff assignment in the period (the tariff engine splits further by tariff version); the
intervals of every meter on the point in the period are joined (a meter swap: the old meter's
intervals up to the swap, the new one's from it). Electricity export (1-0:2.8.0) goes to the
engine as ``RatingContext.export``; a tariff without an export price ignores it.

Where VEE has no intervals for a meter and quantity in the range (VEE off, or no data), the
register difference is the fallback: the register's value at each end of the range,
interpolated between the readings around it (exact Decimal, quantized to the register's
resolution, half-up), as one interval over the range (method ``register difference``). The
readings at both ends are cited in the bill (``readings``) either way, so ``meterlink verify
--bill`` can check them against the signed records.

Money: every line's amount is rounded once by the engine; the total is the sum of the rounded
lines of every section and the correction lines, so the printed lines add up to the total.

Corrections: before a bill is made, each issued bill of an earlier period of the account whose
intervals changed since it was issued (late or corrected data: rows created after its issue
time) is rated again; the difference per line from what was billed (the issued lines plus the
corrections already issued for that period) becomes a correction line with the reason. The
issued bill itself is never changed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any
from zoneinfo import ZoneInfo

from protocols.clock import format_utc_ms, utc_ms
from protocols.units import UnitError, convert

from ..errors import RatingError
from ..store.base import ReadingPoint
from .accounts import Account, Period, ServicePoint, local_ms, parse_period
from .model import ChargeLine, RatingContext, TariffHistory, UsageInterval

__all__ = [
    "Bill",
    "Boundary",
    "Correction",
    "MeterUse",
    "QuantityUse",
    "Section",
    "build_bill",
    "line_key",
    "parse_period",
    "register_at",
]

RateFn = Callable[..., list[ChargeLine]]


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ms(moment: datetime) -> int:
    return utc_ms(moment)


# register boundaries (evidence, and the fallback without VEE) --------------------------------


@dataclass(frozen=True)
class Boundary:
    """A register's value at an instant and how it was found."""

    instant_ms: int
    value: Decimal | None  # None: no readings at all
    method: str  # exact | interpolated | first reading after | latest reading (to date) | ...
    readings: tuple[ReadingPoint, ...]
    explain: str
    meter_id: str = ""
    obis: str = ""
    unit: str = ""

    def evidence(self) -> dict[str, Any]:
        """For JSON: each reading names meter, OBIS, capture instant (Unix ms) and exact value,
        so ``meterlink verify --bill`` can find it in a signed record of an export."""
        return {
            "instant": format_utc_ms(self.instant_ms),
            "value": None if self.value is None else str(self.value),
            "unit": self.unit,
            "method": self.method,
            "readings": [
                {
                    "captured": format_utc_ms(r.captured_ms),
                    "value": r.value,
                    "unit": r.unit,
                    "meter": self.meter_id,
                    "obis": self.obis,
                    "captured_ms": r.captured_ms,
                }
                for r in self.readings
            ],
            "explain": self.explain,
        }


def _value(point: ReadingPoint, unit: str, meter_id: str, obis: str) -> Decimal:
    try:
        return convert(Decimal(point.value), point.unit, unit)
    except UnitError as exc:
        raise RatingError(f"meter {meter_id} {obis}: reading in {point.unit!r}: {exc}") from None


async def register_at(store: Any, meter_id: str, obis: str, instant_ms: int, unit: str) -> Boundary:
    """The register's value at ``instant_ms``: exact, interpolated, or the nearest reading."""
    before = await store.reading_at_or_before(meter_id, obis, instant_ms)
    after = await store.reading_at_or_after(meter_id, obis, instant_ms)
    when = format_utc_ms(instant_ms)
    tag = {"meter_id": meter_id, "obis": obis, "unit": unit}
    if before is not None and before.captured_ms == instant_ms:
        value = _value(before, unit, meter_id, obis)
        return Boundary(instant_ms, value, "exact", (before,), f"reading at {when}", **tag)
    if before is not None and after is not None:
        v0, v1 = _value(before, unit, meter_id, obis), _value(after, unit, meter_id, obis)
        t0, t1 = before.captured_ms, after.captured_ms
        with localcontext() as ctx:
            ctx.prec = 50
            exact = v0 + (v1 - v0) * Decimal(instant_ms - t0) / Decimal(t1 - t0)
        resolution = Decimal(1).scaleb(min(int(v.as_tuple().exponent) for v in (v0, v1)))
        value = exact.quantize(resolution, ROUND_HALF_UP)
        explain = (
            f"interpolated at {when}: {v0} + ({v1} - {v0}) x {instant_ms - t0} ms / "
            f"{t1 - t0} ms = {exact.normalize()} -> {value} (register resolution {resolution}, "
            "half-up)"
        )
        return Boundary(instant_ms, value, "interpolated", (before, after), explain, **tag)
    if after is not None:
        value = _value(after, unit, meter_id, obis)
        explain = f"no reading before {when}: first reading after it"
        return Boundary(instant_ms, value, "first reading after", (after,), explain, **tag)
    if before is not None:
        value = _value(before, unit, meter_id, obis)
        explain = f"no reading after {when} yet: latest reading (to date)"
        return Boundary(instant_ms, value, "latest reading (to date)", (before,), explain, **tag)
    return Boundary(instant_ms, None, "no readings", (), f"no readings of {obis}", **tag)


# the bill's parts --------------------------------------------------------------------------


@dataclass(frozen=True)
class QuantityUse:
    """One quantity of one meter in a section: how much, of what quality, from where."""

    obis: str
    role: str  # import | export
    unit: str
    total: Decimal
    counts: Mapping[str, int]  # quality -> intervals
    source: str  # "vee" | "registers" | "none"
    boundaries: tuple[Boundary, ...]
    note: str = ""


@dataclass(frozen=True)
class MeterUse:
    meter_id: str
    start_ms: int
    end_ms: int
    quantities: tuple[QuantityUse, ...]


@dataclass(frozen=True)
class Section:
    service_point: str
    commodity: str
    unit: str
    start_ms: int
    end_ms: int
    tariffs: tuple[tuple[str, int, int], ...]  # (tariff id, start, end) in the section
    meters: tuple[MeterUse, ...]
    lines: tuple[ChargeLine, ...]
    hourly: Mapping[str, tuple[Decimal | None, ...]]  # local date -> 24 hourly sums, for drawing
    tou: Mapping[str, tuple[str, ...]]  # local date -> 24 TOU period names ("" = none)
    notes: tuple[str, ...] = ()

    @property
    def subtotal(self) -> Decimal:
        return sum((line.amount for line in self.lines), Decimal(0))


@dataclass(frozen=True)
class Correction:
    """A line of an earlier, issued bill that changed since: the difference, and why."""

    service_point: str
    corrects_period: str
    corrects_number: str
    key: str
    line: ChargeLine  # component "correction": quantity and amount are the differences
    billed_quantity: Decimal
    billed_amount: Decimal
    reason: str


@dataclass(frozen=True)
class Bill:
    account_id: str
    account_name: str
    period: str
    timezone: str
    start_ms: int
    end_ms: int
    currency: str
    sections: tuple[Section, ...]
    corrections: tuple[Correction, ...]
    to_date: bool
    as_of_ms: int
    number: str | None = None  # None: a draft, not issued
    issued_ms: int | None = None
    notes: tuple[str, ...] = field(default=())

    @property
    def total(self) -> Decimal:
        lines = sum((s.subtotal for s in self.sections), Decimal(0))
        return lines + sum((c.line.amount for c in self.corrections), Decimal(0))


def line_key(line: ChargeLine) -> str:
    """What identifies 'the same line' of a period when it is rated again."""
    tier = "" if line.tier is None else str(line.tier)
    parts = (line.component, line.label, line.tariff_id, line.tariff_version, line.period, tier)
    return "|".join(parts)


# rating one service point ------------------------------------------------------------------


def _usage(rows: Sequence[Any], unit: str) -> list[UsageInterval]:
    out = []
    moments: dict[int, datetime] = {}  # an interval's end is the next one's start
    for row in rows:
        if row.value is None:
            value = Decimal(0)
        elif row.unit == unit:
            value = Decimal(row.value)
        else:
            value = convert(Decimal(row.value), row.unit, unit)
        start = moments.pop(row.start_ms, None) or _utc(row.start_ms)
        end = moments[row.end_ms] = _utc(row.end_ms)
        out.append(UsageInterval(start, end, value, unit, row.quality, row.method))
    return out


async def _quantity(
    store: Any, meter_id: str, obis: str, role: str, unit: str, start_ms: int, end_ms: int
) -> tuple[QuantityUse, list[UsageInterval]]:
    rows = await store.vee.intervals(meter_id, obis, start_ms, end_ms)
    first = await register_at(store, meter_id, obis, start_ms, unit)
    last = await register_at(store, meter_id, obis, end_ms, unit)
    boundaries = (first, last)
    if rows:
        try:
            usage = _usage(rows, unit)
        except UnitError as exc:
            raise RatingError(f"meter {meter_id} {obis}: interval unit: {exc}") from None
        counts: dict[str, int] = {}
        for u in usage:
            counts[u.quality] = counts.get(u.quality, 0) + 1
        total = sum((u.quantity for u in usage), Decimal(0))
        return QuantityUse(obis, role, unit, total, counts, "vee", boundaries), usage
    if first.value is None or last.value is None:
        note = f"no readings of {obis}" if role == "import" else ""
        return QuantityUse(obis, role, unit, Decimal(0), {}, "none", (), note), []
    total = last.value - first.value
    if total < 0:
        raise RatingError(
            f"meter {meter_id} {obis}: register went down from {first.value} to {last.value}"
            f" {unit} between {format_utc_ms(start_ms)} and {format_utc_ms(end_ms)}"
            " (meter replaced or rolled over? record the swap with `vee swap`)"
        )
    to_date = last.method.endswith("(to date)")
    interval = UsageInterval(
        _utc(start_ms), _utc(end_ms), total, unit, "actual", "register difference"
    )
    note = "no VEE intervals: register difference" + (" (to date)" if to_date else "")
    use = QuantityUse(obis, role, unit, total, {"actual": 1}, "registers", boundaries, note)
    return use, [interval]


def _tou_name(history: TariffHistory, moment: datetime) -> str:
    """The TOU period a tariff puts ``moment`` (local) in, when a component can tell."""
    version = history.version_at(moment.date())
    if version is None:
        return ""
    for component in version.components:
        schedule = getattr(component, "schedule", None)
        name_at = getattr(schedule, "name_at", None)
        if callable(name_at) and getattr(component, "kind", "") != "demand":
            try:
                return str(name_at(moment, version.holidays))
            except Exception:
                return ""
    return ""


_TOU_DAYS: dict[tuple[str, str, date, str], tuple[str, ...]] = {}


def _tou_day(history: TariffHistory, day: date, zone: ZoneInfo) -> tuple[str, ...]:
    """The TOU period of each local hour of ``day`` (cached per tariff file, day and zone:
    a bill run draws the same days for every account on the same tariff)."""
    key = (history.id, str(history.path), day, zone.key)
    found = _TOU_DAYS.get(key)
    if found is None:
        if len(_TOU_DAYS) > 50_000:
            _TOU_DAYS.clear()
        found = tuple(
            _tou_name(history, datetime(day.year, day.month, day.day, hour, tzinfo=zone))
            for hour in range(24)
        )
        _TOU_DAYS[key] = found
    return found


def _grids(
    usage: Sequence[UsageInterval],
    point: ServicePoint,
    tariffs: Sequence[tuple[TariffHistory, int, int]],
    start_ms: int,
    end_ms: int,
    account: Account,
) -> tuple[dict[str, tuple[Decimal | None, ...]], dict[str, tuple[str, ...]]]:
    zone = account.timezone
    sums: dict[str, list[Decimal | None]] = {}
    day = datetime.fromtimestamp(start_ms / 1000, zone).date()
    last = datetime.fromtimestamp((end_ms - 1) / 1000, zone).date()
    tou: dict[str, tuple[str, ...]] = {}
    while day <= last:
        sums[day.isoformat()] = [None] * 24
        if len(tariffs) == 1:  # the usual case: one tariff all period, a cached day
            tou[day.isoformat()] = _tou_day(tariffs[0][0], day, zone)
        else:
            names = []
            for hour in range(24):
                moment = datetime(day.year, day.month, day.day, hour, tzinfo=zone)
                ms = _ms(moment)
                history = next((h for h, lo, hi in tariffs if lo <= ms < hi), None)
                names.append(_tou_name(history, moment) if history is not None else "")
            tou[day.isoformat()] = tuple(names)
        day += timedelta(days=1)
    hour = timedelta(hours=1)
    for u in usage:
        span = u.end - u.start
        if span > timedelta(days=1):
            continue  # a register difference over the range has no shape to draw
        if span <= hour:
            parts = [(u.start, u.quantity)]
        else:  # a gap's share over several hours: drawn spread over them by time
            parts, moment = [], u.start
            while moment < u.end:
                step = min(u.end, moment.replace(minute=0, second=0, microsecond=0) + hour)
                seconds = Decimal(int((step - moment).total_seconds()))
                parts.append((moment, u.quantity * seconds / Decimal(int(span.total_seconds()))))
                moment = step
        for moment, share in parts:
            local = moment.astimezone(zone)
            row = sums.get(local.date().isoformat())
            if row is not None:
                row[local.hour] = (row[local.hour] or Decimal(0)) + share
    del point
    return {k: tuple(_drawn(v) for v in row) for k, row in sums.items()}, tou


def _drawn(value: Decimal | None) -> Decimal | None:
    """An hour's usage for drawing: exact, or to 6 decimals where a gap's share was spread."""
    if value is None or int(value.as_tuple().exponent) >= -6:
        return value
    return value.quantize(Decimal("0.000001"), ROUND_HALF_UP)


async def _section(
    store: Any,
    account: Account,
    point: ServicePoint,
    start_ms: int,
    end_ms: int,
    histories: Mapping[str, TariffHistory],
    rate: RateFn,
    previous_peaks: tuple[Decimal, ...],
) -> Section | None:
    lo, hi = max(start_ms, point.start_ms), min(end_ms, point.end_ms)
    if lo >= hi:
        return None
    meters: list[MeterUse] = []
    imports: list[UsageInterval] = []
    exports: list[UsageInterval] = []
    notes: list[str] = []
    for span in point.meters_between(lo, hi):
        uses = []
        for obis, role in point.quantities:
            use, usage = await _quantity(
                store, span.meter_id, obis, role, point.unit, span.start_ms, span.end_ms
            )
            if role == "export" and use.source == "none":
                continue  # this meter does not export
            uses.append(use)
            (imports if role == "import" else exports).extend(usage)
            if use.note:
                notes.append(f"meter {span.meter_id} {obis}: {use.note}")
        meters.append(MeterUse(span.meter_id, span.start_ms, span.end_ms, tuple(uses)))
    imports.sort(key=lambda u: u.start)
    exports.sort(key=lambda u: u.start)
    lines: list[ChargeLine] = []
    used: list[tuple[TariffHistory, int, int]] = []
    for tspan in point.tariffs_between(lo, hi):
        history = histories.get(tspan.tariff_id)
        if history is None:
            raise RatingError(
                f"account {account.id} service point {point.id}: no tariff {tspan.tariff_id!r}"
            )
        if history.unit and history.unit != point.unit:
            raise RatingError(
                f"account {account.id} service point {point.id} ({point.commodity}, "
                f"{point.unit}): tariff {history.id} prices {history.unit}"
            )
        t0, t1 = _utc(tspan.start_ms), _utc(tspan.end_ms)
        context = RatingContext(
            previous_peaks=previous_peaks,
            export=[u for u in exports if t0 <= u.start < t1],
        )
        usage = [u for u in imports if t0 <= u.start < t1]
        lines.extend(rate(history, usage, t0, t1, account.timezone, context))
        used.append((history, tspan.start_ms, tspan.end_ms))
    hourly, tou = _grids(imports, point, used, lo, hi, account)
    return Section(
        point.id,
        point.commodity,
        point.unit,
        lo,
        hi,
        tuple((h.id, a, b) for h, a, b in used),
        tuple(meters),
        tuple(lines),
        hourly,
        tou,
        tuple(notes),
    )


async def _sections(
    store: Any,
    account: Account,
    start_ms: int,
    end_ms: int,
    histories: Mapping[str, TariffHistory],
    rate: RateFn,
) -> list[Section]:
    sections = []
    for point in account.service_points:
        peaks = await _previous_peaks(store, point.id, start_ms)
        section = await _section(store, account, point, start_ms, end_ms, histories, rate, peaks)
        if section is not None:
            sections.append(section)
    return sections


async def _previous_peaks(store: Any, point_id: str, before_ms: int) -> tuple[Decimal, ...]:
    """The highest billed demand (kW) of each earlier issued period of the point, oldest first
    (for ratchets)."""
    rows = await store.bills.demand_peaks(point_id, before_ms)
    return tuple(Decimal(v) for v in rows)


# corrections -------------------------------------------------------------------------------


async def _corrections(
    store: Any,
    account: Account,
    period: Period,
    histories: Mapping[str, TariffHistory],
    rate: RateFn,
) -> list[Correction]:
    issued = [b for b in await store.bills.of_account(account.id) if b.start_ms < period.start_ms]
    if not issued:
        return []
    all_lines = await store.bills.lines(b.number for b in await store.bills.of_account(account.id))
    out: list[Correction] = []
    for bill in issued:
        reasons = await _changes(store, account, bill)
        if not reasons:
            continue
        # what was billed for that period: its own lines plus corrections issued since
        billed: dict[tuple[str, str], tuple[Decimal, Decimal, str, str]] = {}
        for row in all_lines:
            own = row.number == bill.number and row.corrects_period is None
            later = row.corrects_period == bill.period and row.number != bill.number
            if not (own or later):
                continue
            key = (row.service_point, row.line_key)
            q, a, _u, label = billed.get(key, (Decimal(0), Decimal(0), row.unit, row.label))
            label = row.label if own else label
            billed[key] = (q + Decimal(row.quantity), a + Decimal(row.amount), row.unit, label)
        sections = await _sections(store, account, bill.start_ms, bill.end_ms, histories, rate)
        now: dict[tuple[str, str], ChargeLine] = {}
        for section in sections:
            for line in section.lines:
                key = (section.service_point, line_key(line))
                if key in now:  # same key twice in a section: add them up
                    prev = now[key]
                    line = replace(
                        line,
                        quantity=prev.quantity + line.quantity,
                        amount=prev.amount + line.amount,
                    )
                now[key] = line
        for key in sorted(set(billed) | set(now)):
            old_q, old_a, unit, label = billed.get(key, (Decimal(0), Decimal(0), "", ""))
            new = now.get(key)
            new_q = new.quantity if new is not None else Decimal(0)
            new_a = new.amount if new is not None else Decimal(0)
            if new_q == old_q and new_a == old_a:
                continue
            point_id = key[0]
            reason = reasons.get(point_id) or "re-rated: " + "; ".join(
                sorted(set(reasons.values()))
            )
            base = new.label if new is not None else label
            start = new.start if new is not None else _utc(bill.start_ms)
            end = new.end if new is not None else _utc(bill.end_ms)
            explanation = (
                f"billed on {bill.number} for {bill.period}: {old_q} {unit or new.unit} = {old_a}",
                f"rated again now: {new_q} {new.unit if new else unit} = {new_a}",
                f"difference: {new_q - old_q} = {new_a - old_a} {bill.currency}",
                f"reason: {reason}",
            )
            line = ChargeLine(
                component="correction",
                label=f"Correction {bill.period} (bill {bill.number}): {base}",
                quantity=new_q - old_q,
                unit=new.unit if new is not None else unit,
                unit_price=new.unit_price if new is not None else Decimal(0),
                amount=new_a - old_a,
                currency=bill.currency,
                start=start,
                end=end,
                actual_intervals=new.actual_intervals if new is not None else 0,
                estimated_intervals=new.estimated_intervals if new is not None else 0,
                explanation=explanation,
                period=new.period if new is not None else "",
                tier=new.tier if new is not None else None,
                tariff_id=new.tariff_id if new is not None else "",
                tariff_version=new.tariff_version if new is not None else "",
            )
            out.append(
                Correction(point_id, bill.period, bill.number, key[1], line, old_q, old_a, reason)
            )
    return out


async def _changes(store: Any, account: Account, bill: Any) -> dict[str, str]:
    """Service point -> why its usage in the issued bill's period changed since the issue."""
    reasons: dict[str, str] = {}
    for point in account.service_points:
        parts = []
        for span in point.meters_between(bill.start_ms, bill.end_ms):
            for obis, _role in point.quantities:
                changes = await store.bills.interval_changes(
                    span.meter_id, obis, span.start_ms, span.end_ms, bill.issued_ms
                )
                if changes:
                    n = sum(c[2] for c in changes)
                    quality, why, _count = changes[0]
                    parts.append(
                        f"{n} interval(s) of meter {span.meter_id} {obis} derived after bill "
                        f"{bill.number} was issued ({format_utc_ms(bill.issued_ms)}), e.g. "
                        f"{quality}: {why}"
                    )
        if parts:
            reasons[point.id] = "late or corrected data: " + "; ".join(parts)
    return reasons


# the bill ----------------------------------------------------------------------------------


async def build_bill(
    store: Any,
    account: Account,
    period_text: str,
    now_ms: int,
    histories: Mapping[str, TariffHistory],
    rate: RateFn | None = None,
) -> Bill:
    """A draft bill of ``account`` for ``period_text`` as at ``now_ms`` (not stored)."""
    if rate is None:
        from .engine import rate as engine_rate

        rate = engine_rate
    period = parse_period(period_text, account)
    if period.start_ms > now_ms:
        raise RatingError(f"account {account.id}: period {period.label} has not started yet")
    end_ms = period.end_ms
    to_date = end_ms > now_ms
    if to_date:  # up to the end of today (local)
        today = datetime.fromtimestamp(now_ms / 1000, account.timezone).date()
        end_ms = min(end_ms, local_ms(today + timedelta(days=1), account.timezone))
    sections = await _sections(store, account, period.start_ms, end_ms, histories, rate)
    if not sections:
        raise RatingError(
            f"account {account.id}: no service point occupied in period {period.label}"
        )
    currencies = {line.currency for s in sections for line in s.lines}
    if len(currencies) > 1:
        raise RatingError(
            f"account {account.id}: tariffs in more than one currency"
            f" ({', '.join(sorted(currencies))})"
        )
    currency = (
        currencies.pop()
        if currencies
        else histories[sections[0].tariffs[0][0]].currency
        if sections[0].tariffs
        else ""
    )
    corrections = await _corrections(store, account, period, histories, rate)
    notes = []
    if to_date:
        notes.append(
            f"to date: {format_utc_ms(now_ms)} (the period ends {format_utc_ms(period.end_ms)})"
        )
    if any("(to date)" in n for s in sections for n in s.notes):
        to_date = True
    return Bill(
        account_id=account.id,
        account_name=account.name,
        period=period.label,
        timezone=account.timezone.key,
        start_ms=period.start_ms,
        end_ms=period.end_ms,
        currency=currency,
        sections=tuple(sections),
        corrections=tuple(corrections),
        to_date=to_date,
        as_of_ms=now_ms,
        notes=tuple(notes),
    )

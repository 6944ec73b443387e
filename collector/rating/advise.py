"""Best-tariff advice: an account's own interval data rated on every tariff offered for its
service type, over the last N complete billing periods.

No model, no averages: each month of the window is loaded exactly as the bill loads it (VEE's
current intervals of each meter on the service point, clipped to the meter's time on it; the
register difference where a meter has no intervals) and rated by the same engine
(``engine.rate``) once per option; a month's cost is the sum of its rounded lines, the window's
cost the sum of the months. For the current tariff(s) that is what the bill run issues for
those months (corrections of earlier bills aside), line for line.

Which tariffs are offered for a service point (docs/billing.md, "Best-tariff advice"): a tariff
file may say ``offered = false`` (closed to new customers: never advised, still rated as the
current tariff of the accounts on it) and ``commodity = "gas"`` (or a list). Without
``commodity`` a tariff serves the commodities of the service points the accounts file puts on
it; a tariff on no service point serves the one commodity whose unit it prices (kWh:
electricity; m3 is gas or water, so such a tariff needs ``commodity``). Only tariffs in the
current tariff's currency are compared.

Demand ratchets: each option's month sees the peaks of the point's issued bills before the
window, then the option's own billed peaks of the window's earlier months (as a bill run issuing
month after month on that tariff would).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from protocols.clock import format_utc_ms

from ..errors import RatingError
from ..tomlfile import load_toml
from .accounts import COMMODITIES, Account, Period, ServicePoint, parse_period, period_containing
from .bill import _quantity
from .engine import rate
from .model import ChargeLine, RatingContext, TariffHistory, UsageInterval

__all__ = [
    "Advice",
    "Drivers",
    "MonthUsage",
    "Option",
    "PointAdvice",
    "advice_document",
    "advice_window",
    "advise_account",
    "advise_point",
    "load_usage",
    "offered_tariffs",
    "rate_option",
    "tariff_offer",
]

MAX_MONTHS = 120
_ZERO = Decimal(0)
_TENTH = Decimal("0.1")


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


# which tariffs are offered ------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """What a tariff file says (or implies) about whom it is for."""

    commodities: frozenset[str]
    offered: bool
    how: str  # "commodity key" | "accounts file" | "unit" | "unknown"


_OFFER_CACHE: dict[tuple[str, float], tuple[frozenset[str] | None, bool]] = {}


def _file_offer(history: TariffHistory) -> tuple[frozenset[str] | None, bool]:
    """``commodity`` (None when absent) and ``offered`` as the tariff file states them."""
    if history.path is None:
        return None, True
    try:
        key = (str(history.path), history.path.stat().st_mtime)
    except OSError:
        return None, True
    found = _OFFER_CACHE.get(key)
    if found is not None:
        return found
    doc = load_toml(history.path, "tariff file")
    offered = doc.data.get("offered", True)
    if not isinstance(offered, bool):
        raise doc.error("offered", f"must be true or false, got {offered!r}")
    commodities: frozenset[str] | None = None
    if "commodity" in doc.data:
        raw = doc.data["commodity"]
        names = [raw] if isinstance(raw, str) else raw
        if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
            raise doc.error("commodity", f"must be a commodity or a list of them, got {raw!r}")
        for name in names:
            if name not in COMMODITIES:
                known = ", ".join(COMMODITIES)
                raise doc.error("commodity", f"unknown commodity {name!r} (known: {known})")
            if COMMODITIES[name][1] != history.unit:
                raise doc.error(
                    "commodity",
                    f"{name} is billed in {COMMODITIES[name][1]}, the tariff prices {history.unit}",
                )
        commodities = frozenset(names)
    _OFFER_CACHE[key] = (commodities, offered)
    return commodities, offered


def _assigned(accounts: Mapping[str, Account]) -> dict[str, set[str]]:
    """Tariff id -> the commodities of the service points the accounts file puts on it."""
    out: dict[str, set[str]] = {}
    for account in accounts.values():
        for point in account.service_points:
            for span in point.tariffs:
                out.setdefault(span.tariff_id, set()).add(point.commodity)
    return out


def tariff_offer(history: TariffHistory, assigned: Mapping[str, set[str]]) -> Offer:
    commodities, offered = _file_offer(history)
    if commodities is not None:
        return Offer(commodities, offered, "commodity key")
    if assigned.get(history.id):
        return Offer(frozenset(assigned[history.id]), offered, "accounts file")
    by_unit = [name for name, (_q, unit) in COMMODITIES.items() if unit == history.unit]
    if len(by_unit) == 1:
        return Offer(frozenset(by_unit), offered, "unit")
    return Offer(frozenset(), offered, "unknown")


def offered_tariffs(
    histories: Mapping[str, TariffHistory], accounts: Mapping[str, Account], commodity: str
) -> list[TariffHistory]:
    """The tariffs offered for ``commodity``, by id."""
    assigned = _assigned(accounts)
    out = []
    for tariff_id in sorted(histories):
        offer = tariff_offer(histories[tariff_id], assigned)
        if offer.offered and commodity in offer.commodities:
            out.append(histories[tariff_id])
    return out


# the window and the usage -------------------------------------------------------------------


async def _data_end(store: Any, account: Account, as_of_ms: int) -> int | None:
    """The newest register reading (of a billed import quantity) of any meter on the account,
    within its time on the account and not after ``as_of_ms``."""
    newest: int | None = None
    for point in account.service_points:
        for span in point.meters_between(0, as_of_ms + 1):
            for obis, role in point.quantities:
                if role != "import":
                    continue
                found = await store.reading_at_or_before(
                    span.meter_id, obis, min(as_of_ms, span.end_ms)
                )
                if found is not None and found.captured_ms >= span.start_ms:
                    newest = found.captured_ms if newest is None else max(newest, found.captured_ms)
    return newest


async def advice_window(
    store: Any, account: Account, months: int, as_of_ms: int, last: str | None = None
) -> tuple[Period, ...]:
    """``months`` billing periods ending with ``last`` (YYYY-MM), or with the last period that
    is over as at ``as_of_ms`` and whose end the account's readings reach."""
    if not 1 <= months <= MAX_MONTHS:
        raise RatingError(f"--months must be 1..{MAX_MONTHS}, got {months}")
    if last is not None:
        final = parse_period(last, account)
        if final.end_ms > as_of_ms:
            raise RatingError(
                f"account {account.id}: period {final.label} is not over as at "
                f"{format_utc_ms(as_of_ms)}"
            )
    else:
        end = await _data_end(store, account, as_of_ms)
        if end is None:
            raise RatingError(
                f"account {account.id}: no interval data (no readings of meters "
                f"{', '.join(account.meters)} up to {format_utc_ms(as_of_ms)})"
            )
        final = period_containing(end - 1, account)
        if final.end_ms > end:
            final = final.preceding(account)
    periods = [final]
    while len(periods) < months:
        periods.append(periods[-1].preceding(account))
    return tuple(reversed(periods))


@dataclass
class MonthUsage:
    """One service point's usage in one billing period, loaded as the bill loads it."""

    period: Period
    start_ms: int  # the period clipped to the point's occupancy
    end_ms: int
    imports: list[UsageInterval]
    exports: list[UsageInterval]
    counts: dict[str, int] = field(default_factory=dict)  # quality -> VEE import intervals
    covered_ms: int = 0  # time covered by VEE import intervals
    meter_ms: int = 0  # time meters were on the point
    registers: list[str] = field(default_factory=list)  # meters billed by register difference
    no_data: list[str] = field(default_factory=list)  # meters without any data
    usage: Decimal | None = None  # the imports' total (None: not summed yet)


async def load_usage(
    store: Any, point: ServicePoint, periods: Sequence[Period]
) -> list[MonthUsage]:
    """Per period the point is occupied in: its import and export intervals (``bill._quantity``,
    the bill's own loader) and what they are made of."""
    out = []
    for period in periods:
        lo, hi = max(period.start_ms, point.start_ms), min(period.end_ms, point.end_ms)
        if lo >= hi:
            continue
        month = MonthUsage(period, lo, hi, [], [])
        for span in point.meters_between(lo, hi):
            for obis, role in point.quantities:
                use, usage = await _quantity(
                    store, span.meter_id, obis, role, point.unit, span.start_ms, span.end_ms
                )
                if role == "export":
                    if use.source != "none":
                        month.exports.extend(usage)
                    continue
                month.imports.extend(usage)
                month.meter_ms += span.end_ms - span.start_ms
                if use.source == "vee":
                    for quality, n in Counter(u.quality for u in usage).items():
                        month.counts[quality] = month.counts.get(quality, 0) + n
                    covered = sum((u.end - u.start for u in usage), timedelta(0))
                    month.covered_ms += covered // timedelta(milliseconds=1)
                elif use.source == "registers":
                    month.registers.append(span.meter_id)
                else:
                    month.no_data.append(span.meter_id)
        month.imports.sort(key=lambda u: u.start)
        month.exports.sort(key=lambda u: u.start)
        month.usage = sum((u.quantity for u in month.imports), _ZERO)
        out.append(month)
    return out


# rating one option --------------------------------------------------------------------------


@dataclass(frozen=True)
class Drivers:
    """What a tariff's cost comes from, over the window."""

    tou_shares: tuple[tuple[str, Decimal], ...] = ()  # (TOU period, % of the TOU usage)
    max_demand_kw: Decimal | None = None  # the highest billed demand line
    top_tier: int | None = None  # the highest tier a month reached
    tiers: int | None = None  # how many tiers the tariff has
    months_in_top_tier: int = 0
    months: int = 0

    def text(self) -> str:
        parts = []
        if self.tou_shares:
            parts.append(", ".join(f"{name} {share} %" for name, share in self.tou_shares))
        if self.max_demand_kw is not None:
            parts.append(f"max demand {self.max_demand_kw.normalize():f} kW")
        if self.top_tier is not None:
            of = f" of {self.tiers}" if self.tiers else ""
            parts.append(
                f"tier {self.top_tier}{of} reached ({self.months_in_top_tier} of "
                f"{self.months} months)"
            )
        return "; ".join(parts) or "flat price"


@dataclass(frozen=True)
class Option:
    """One tariff (or the current tariff history) rated over the window."""

    tariff_id: str
    name: str
    current: bool
    plan: tuple[tuple[str, int, int], ...]  # (tariff id, start ms, end ms)
    total: Decimal | None  # None: could not be rated (``error``)
    months: tuple[tuple[str, Decimal], ...] = ()  # (period label, the month's cost)
    by_component: tuple[tuple[str, Decimal], ...] = ()
    drivers: Drivers = Drivers()
    usage: Decimal = _ZERO
    error: str = ""


def _tiers_of(histories: Sequence[TariffHistory]) -> int | None:
    most = None
    for history in histories:
        for version in history.versions:
            for component in version.components:
                table = getattr(component, "table", None)
                limits = getattr(table, "limits", ())
                if limits:
                    most = max(most or 0, len(limits) + 1)
    return most


def _drivers(monthly: Sequence[list[ChargeLine]], histories: Sequence[TariffHistory]) -> Drivers:
    tou: dict[str, Decimal] = {}
    peak: Decimal | None = None
    month_tiers: list[int] = []
    for lines in monthly:
        top = None
        for line in lines:
            if line.component == "tou":
                tou[line.period] = tou.get(line.period, _ZERO) + line.quantity
            elif line.component == "demand":
                peak = line.quantity if peak is None else max(peak, line.quantity)
            if line.tier is not None and line.quantity > 0:
                top = line.tier if top is None else max(top, line.tier)
        if top is not None:
            month_tiers.append(top)
    shares: list[tuple[str, Decimal]] = []
    total = sum(tou.values(), _ZERO)
    if total > 0:
        with localcontext() as ctx:
            ctx.prec = 34
            for name, quantity in tou.items():
                shares.append((name, (quantity * 100 / total).quantize(_TENTH, ROUND_HALF_UP)))
    top_tier = max(month_tiers) if month_tiers else None
    return Drivers(
        tou_shares=tuple(shares),
        max_demand_kw=peak,
        top_tier=top_tier,
        tiers=_tiers_of(histories) if top_tier is not None else None,
        months_in_top_tier=sum(1 for t in month_tiers if t == top_tier),
        months=len(monthly),
    )


def rate_option(
    plan: Sequence[tuple[TariffHistory, int, int]],
    usage: Sequence[MonthUsage],
    tz: Any,
    base_peaks: tuple[Decimal, ...] = (),
    *,
    tariff_id: str = "",
    name: str = "",
    current: bool = False,
) -> Option:
    """Rate ``plan`` (tariffs over time, as on an account's service point) month by month,
    exactly as the bill rates a section: per tariff span in the month, the intervals starting
    in it, the export intervals as context, the previous months' billed demand peaks."""
    first = plan[0][0]
    tariff_id = tariff_id or first.id
    plan_ids = tuple((h.id, a, b) for h, a, b in plan)
    peaks = list(base_peaks)
    monthly: list[list[ChargeLine]] = []
    months: list[tuple[str, Decimal]] = []
    components: dict[str, Decimal] = {}
    used = _ZERO
    try:
        for month in usage:
            lines: list[ChargeLine] = []
            starts = [u.start for u in month.imports]
            export_starts = [u.start for u in month.exports]
            for history, a, b in plan:
                lo, hi = max(a, month.start_ms), min(b, month.end_ms)
                if lo >= hi:
                    continue
                t0, t1 = _utc(lo), _utc(hi)
                i, j = bisect.bisect_left(starts, t0), bisect.bisect_left(starts, t1)
                x, y = bisect.bisect_left(export_starts, t0), bisect.bisect_left(export_starts, t1)
                context = RatingContext(previous_peaks=tuple(peaks), export=month.exports[x:y])
                lines.extend(rate(history, month.imports[i:j], t0, t1, tz, context))
            demand = [line.quantity for line in lines if line.component == "demand"]
            if demand:
                peaks.append(max(demand))
            cost = sum((line.amount for line in lines), _ZERO)
            months.append((month.period.label, cost))
            monthly.append(lines)
            for line in lines:
                components[line.component] = components.get(line.component, _ZERO) + line.amount
            if month.usage is None:
                month.usage = sum((u.quantity for u in month.imports), _ZERO)
            used += month.usage
    except RatingError as exc:
        return Option(tariff_id, name or first.name, current, plan_ids, None, error=str(exc))
    return Option(
        tariff_id=tariff_id,
        name=name or first.name,
        current=current,
        plan=plan_ids,
        total=sum((cost for _l, cost in months), _ZERO),
        months=tuple(months),
        by_component=tuple(components.items()),
        drivers=_drivers(monthly, [h for h, _a, _b in plan]),
        usage=used,
    )


# one service point, one account -------------------------------------------------------------


@dataclass(frozen=True)
class PointAdvice:
    service_point: str
    commodity: str
    unit: str
    current: Option
    options: tuple[Option, ...]  # the offered tariffs (the current one among them if offered)
    counts: Mapping[str, int]  # quality -> VEE import intervals in the window
    missing_hours: Decimal  # meter time on the point not covered by VEE intervals
    register_months: tuple[str, ...]  # periods billed by register difference (some meter)
    empty_months: tuple[str, ...]  # periods with no data at all (some meter)
    notes: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        estimated = sum(n for q, n in self.counts.items() if q != "actual")
        return bool(estimated or self.missing_hours or self.register_months or self.empty_months)

    def difference(self, option: Option) -> Decimal | None:
        if option.total is None or self.current.total is None:
            return None
        return option.total - self.current.total

    @property
    def ranked(self) -> list[Option]:
        """The current option first if it is not among the offers, then the offers by cost."""
        rows = sorted(
            self.options,
            key=lambda o: (o.total is None, o.total if o.total is not None else _ZERO, o.tariff_id),
        )
        if not any(o.current for o in rows):
            rows.insert(0, self.current)
        return rows

    @property
    def best(self) -> Option | None:
        rated = [o for o in self.ranked if o.total is not None]
        return min(rated, key=lambda o: (o.total, not o.current)) if rated else None


def advise_point(
    account: Account,
    point: ServicePoint,
    usage: Sequence[MonthUsage],
    histories: Mapping[str, TariffHistory],
    offers: Sequence[TariffHistory],
    base_peaks: tuple[Decimal, ...] = (),
) -> PointAdvice:
    """Rate the point's current tariff history and each offered tariff over ``usage`` (pure:
    no store, no clock)."""
    lo, hi = usage[0].start_ms, usage[-1].end_ms
    plan = []
    for span in point.tariffs_between(lo, hi):
        history = histories.get(span.tariff_id)
        if history is None:
            raise RatingError(
                f"account {account.id} service point {point.id}: no tariff {span.tariff_id!r}"
            )
        plan.append((history, span.start_ms, span.end_ms))
    if not plan:
        raise RatingError(f"account {account.id} service point {point.id}: no tariff in the window")
    ids = []
    for history, _a, _b in plan:
        if history.id not in ids:
            ids.append(history.id)
    latest = plan[-1][0]
    single = len(ids) == 1
    current = rate_option(
        plan,
        usage,
        account.timezone,
        base_peaks,
        tariff_id=latest.id if single else " -> ".join(ids),
        name=latest.name if single else "as assigned: " + ", ".join(ids),
        current=True,
    )
    if current.total is None:
        raise RatingError(
            f"account {account.id} service point {point.id}: the current tariff cannot be rated"
            f" over the window: {current.error}"
        )
    notes = []
    options = []
    for history in offers:
        if history.currency != latest.currency:
            notes.append(f"tariff {history.id} not compared: priced in {history.currency}")
            continue
        if history.unit != point.unit:
            notes.append(f"tariff {history.id} not compared: prices {history.unit}")
            continue
        if single and history.id == latest.id:
            options.append(current)
            continue
        whole = [(history, lo, hi)]
        options.append(rate_option(whole, usage, account.timezone, base_peaks))
    counts: dict[str, int] = {}
    covered = meter_ms = 0
    registers, empty = [], []
    for month in usage:
        for quality, n in month.counts.items():
            counts[quality] = counts.get(quality, 0) + n
        covered += month.covered_ms
        meter_ms += month.meter_ms
        if month.registers:
            registers.append(month.period.label)
        if month.no_data:
            empty.append(month.period.label)
    missing = Decimal(max(meter_ms - covered, 0)) / Decimal(3_600_000)
    return PointAdvice(
        service_point=point.id,
        commodity=point.commodity,
        unit=point.unit,
        current=current,
        options=tuple(options),
        counts=counts,
        missing_hours=missing.quantize(_TENTH, ROUND_HALF_UP) if missing else _ZERO,
        register_months=tuple(registers),
        empty_months=tuple(empty),
        notes=tuple(notes),
    )


@dataclass(frozen=True)
class Advice:
    account_id: str
    account_name: str
    timezone: str
    periods: tuple[str, ...]
    start_ms: int
    end_ms: int
    as_of_ms: int
    currency: str
    points: tuple[PointAdvice, ...]

    @property
    def current_total(self) -> Decimal:
        return sum((p.current.total or _ZERO for p in self.points), _ZERO)

    @property
    def best_total(self) -> Decimal:
        return sum(((p.best.total if p.best else None) or _ZERO for p in self.points), _ZERO)

    @property
    def flagged(self) -> bool:
        return any(p.flagged for p in self.points)


async def advise_account(
    store: Any,
    account: Account,
    histories: Mapping[str, TariffHistory],
    accounts: Mapping[str, Account],
    as_of_ms: int,
    months: int = 12,
    last: str | None = None,
) -> Advice:
    """Best-tariff advice for ``account`` (``accounts``: every account, for which tariffs
    serve which commodity). Errors (``RatingError``): no interval data at all, none in the
    window, a current tariff that cannot be rated."""
    periods = await advice_window(store, account, months, as_of_ms, last)
    start_ms, end_ms = periods[0].start_ms, periods[-1].end_ms
    window = f"{periods[0].label}..{periods[-1].label}" if len(periods) > 1 else periods[0].label
    loaded = []
    for point in account.service_points:
        usage = await load_usage(store, point, periods)
        if usage:  # else not occupied in the window
            peaks = await store.bills.demand_peaks(point.id, usage[0].start_ms)
            loaded.append((point, usage, tuple(Decimal(v) for v in peaks)))
    if not loaded:
        raise RatingError(f"account {account.id}: no service point occupied in {window}")
    if not any(m.counts for _p, usage, _k in loaded for m in usage):
        raise RatingError(
            f"account {account.id}: no interval data in {window} (no VEE intervals of meters "
            f"{', '.join(account.meters)}; is [vee] on?)"
        )
    points = [
        advise_point(
            account, point, usage, histories,
            offered_tariffs(histories, accounts, point.commodity), peaks,
        )
        for point, usage, peaks in loaded
    ]  # fmt: skip
    currencies = {histories[p.current.plan[-1][0]].currency for p in points}
    if len(currencies) > 1:
        raise RatingError(
            f"account {account.id}: tariffs in more than one currency ({', '.join(currencies)})"
        )
    return Advice(
        account_id=account.id,
        account_name=account.name,
        timezone=account.timezone.key,
        periods=tuple(p.label for p in periods),
        start_ms=start_ms,
        end_ms=end_ms,
        as_of_ms=as_of_ms,
        currency=currencies.pop(),
        points=tuple(points),
    )


# output -------------------------------------------------------------------------------------


def signed(value: Decimal | None) -> str:
    """``+12.30``, ``-4.00``, ``0.00``; ``n/a`` for None."""
    if value is None:
        return "n/a"
    return f"+{value}" if value > 0 else f"{value}"


def _option_doc(point: PointAdvice, option: Option) -> dict[str, Any]:
    d = option.drivers
    return {
        "tariff": option.tariff_id,
        "name": option.name,
        "current": option.current,
        "plan": [
            {"tariff": t, "from": format_utc_ms(a), "to": format_utc_ms(b)}
            for t, a, b in option.plan
        ],
        "cost": None if option.total is None else str(option.total),
        "difference": None if point.difference(option) is None else str(point.difference(option)),
        "months": [{"period": p, "cost": str(c)} for p, c in option.months],
        "by_component": {k: str(v) for k, v in option.by_component},
        "usage": str(option.usage),
        "drivers": {
            "text": d.text() if option.total is not None else "",
            "tou_shares_percent": {name: str(share) for name, share in d.tou_shares},
            "max_demand_kw": None if d.max_demand_kw is None else str(d.max_demand_kw),
            "top_tier": d.top_tier,
            "tiers": d.tiers,
            "months_in_top_tier": d.months_in_top_tier,
        },
        "error": option.error or None,
    }


def data_text(point: PointAdvice) -> str:
    """One line on what the data behind the advice is made of."""
    total = sum(point.counts.values())
    qualities = ", ".join(
        f"{point.counts.get(q, 0)} {q}" for q in ("actual", "estimated", "edited", "gap")
    )
    parts = [f"{total} intervals ({qualities})"]
    if point.missing_hours:
        parts.append(f"{point.missing_hours.normalize():f} h without intervals")
    if point.register_months:
        parts.append(
            "register difference (no interval shape) in " + ", ".join(point.register_months)
        )
    if point.empty_months:
        parts.append("no data at all in " + ", ".join(point.empty_months))
    return "; ".join(parts)


def advice_document(advice: Advice) -> dict[str, Any]:
    """The advice as JSON-ready data (decimals as strings, instants UTC ``...Z``)."""
    points = []
    for point in advice.points:
        best = point.best
        points.append(
            {
                "service_point": point.service_point,
                "commodity": point.commodity,
                "unit": point.unit,
                "current_tariff": point.current.tariff_id,
                "current_cost": str(point.current.total),
                "usage": str(point.current.usage),
                "best": None if best is None else best.tariff_id,
                "saving": None
                if best is None or point.difference(best) is None
                else str(-(point.difference(best) or _ZERO)),
                "options": [_option_doc(point, o) for o in point.ranked],
                "data": {
                    "intervals": dict(point.counts),
                    "estimated_or_gap": sum(n for q, n in point.counts.items() if q != "actual"),
                    "missing_hours": str(point.missing_hours),
                    "register_months": list(point.register_months),
                    "months_without_data": list(point.empty_months),
                    "flagged": point.flagged,
                    "text": data_text(point),
                },
                "notes": list(point.notes),
            }
        )
    return {
        "format": "meterlink-advice/1",
        "account": advice.account_id,
        "name": advice.account_name,
        "timezone": advice.timezone,
        "months": len(advice.periods),
        "periods": list(advice.periods),
        "from": format_utc_ms(advice.start_ms),
        "to": format_utc_ms(advice.end_ms),
        "as_of": format_utc_ms(advice.as_of_ms),
        "currency": advice.currency,
        "current_total": str(advice.current_total),
        "best_total": str(advice.best_total),
        "flagged": advice.flagged,
        "service_points": points,
    }


def render_advice_text(doc: dict[str, Any]) -> str:
    """The advice as a text table per service point (from ``advice_document``)."""
    months = doc["months"]
    span = doc["periods"][0] + (f"..{doc['periods'][-1]}" if months > 1 else "")
    cost_head = "annual cost" if months == 12 else f"cost, {months} month" + "s" * (months > 1)
    cur = doc["currency"]
    out = [
        f"Best-tariff advice for {doc['account']} ({doc['name']}): {months} month(s) {span}"
        f" ({doc['timezone']}), as at {doc['as_of']}",
    ]
    for point in doc["service_points"]:
        out.append("")
        out.append(
            f"Service point {point['service_point']} ({point['commodity']}): usage "
            f"{point['usage']} {point['unit']}; current tariff {point['current_tariff']}, "
            f"{point['current_cost']} {cur}"
        )
        rows = [("", "tariff", cost_head, "difference", "drivers")]
        for o in point["options"]:
            mark = "*" if o["current"] else ""
            cost = "n/a" if o["cost"] is None else f"{o['cost']} {cur}"
            diff = signed(None if o["difference"] is None else Decimal(o["difference"]))
            drivers = o["drivers"]["text"] if o["error"] is None else f"not rated: {o['error']}"
            rows.append((mark, o["tariff"], cost, diff, drivers))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            out.append(
                f"  {r[0]:<{widths[0]}} {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  "
                f"{r[3]:>{widths[3]}}  {r[4]}".rstrip()
            )
        best = point["best"]
        if best is not None and point["saving"] is not None and Decimal(point["saving"]) > 0:
            out.append(f"  best: {best}, saving {point['saving']} {cur} over {months} month(s)")
        else:
            out.append("  best: the current tariff")
        data = point["data"]
        flag = "  FLAGGED: " if data["flagged"] else "  "
        out.append(f"{flag}data: {data['text']}")
        for note in point["notes"]:
            out.append(f"  note: {note}")
    out.append("")
    out.append(
        f"current total {doc['current_total']} {cur}; with the best tariff per service point "
        f"{doc['best_total']} {cur}"
    )
    out.append("* = current tariff; costs are the sums of the monthly bills' rounded lines")
    return "\n".join(out) + "\n"

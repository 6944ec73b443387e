"""A bill for one account and one calendar month in the account's time zone.

Energy per meter is a register difference: register 1-0:1.8.0 (import; 1-0:2.8.0 export)
at the period's end minus at its start. A register's value at a boundary instant is
interpolated linearly between the last reading at or before it and the first reading at or
after it, in exact Decimal arithmetic (50 digits), then quantized to the register's own
resolution (the finer of the two readings' decimal places) with ROUND_HALF_UP, so that the
bill never claims more precision than the meter has. With no reading after the end yet the
latest reading is used and the line says "to date".

Money: each line is ``quantity x rate`` rounded once to the currency's minor unit with
ROUND_HALF_UP (away from zero, so a credit rounds like a charge); the total is the sum of
the rounded lines, so the lines always add up to the total printed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, localcontext

from protocols.clock import format_utc_ms
from protocols.units import UnitError, convert

from ..errors import RatingError
from ..store.base import ReadingPoint, Store
from .accounts import Account

__all__ = [
    "EXPORT_OBIS",
    "IMPORT_OBIS",
    "Bill",
    "BillLine",
    "Boundary",
    "build_bill",
    "parse_period",
]

IMPORT_OBIS = "1-0:1.8.0"
EXPORT_OBIS = "1-0:2.8.0"
_PERIOD_RE = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True)
class Period:
    label: str  # YYYY-MM
    first_day: date
    next_first_day: date
    start_ms: int
    end_ms: int  # exclusive: the first instant of the next month

    @property
    def days(self) -> int:
        return (self.next_first_day - self.first_day).days


def parse_period(text: str, account: Account) -> Period:
    match = _PERIOD_RE.match(text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise RatingError(f"period {text!r}: expected YYYY-MM, e.g. 2026-11")
    year, month = int(match.group(1)), int(match.group(2))
    first = date(year, month, 1)
    following = date(year + month // 12, month % 12 + 1, 1)

    def instant(day: date) -> int:
        local = datetime(day.year, day.month, day.day, tzinfo=account.timezone)
        return int(local.astimezone(UTC).timestamp()) * 1000

    return Period(text.strip(), first, following, instant(first), instant(following))


@dataclass(frozen=True)
class Boundary:
    """A register's value at an instant and how it was found."""

    instant_ms: int
    value: Decimal | None  # kWh; None: no readings at all
    method: str  # exact | interpolated | first reading after | latest reading (to date) | ...
    readings: tuple[ReadingPoint, ...]  # the readings behind it, as stored
    explain: str
    meter_id: str = ""
    obis: str = ""

    def evidence(self) -> dict:
        """The boundary for JSON. Each reading names its identity (meter, OBIS, capture
        instant in Unix ms) and exact value, so ``meterlink verify --bill`` can find it in a
        signed record of an export."""
        return {
            "instant": format_utc_ms(self.instant_ms),
            "value_kwh": None if self.value is None else str(self.value),
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


@dataclass(frozen=True)
class BillLine:
    kind: str  # standing_charge | energy_import | export_credit
    description: str
    meter_id: str | None
    quantity: Decimal
    unit: str
    rate: Decimal
    rate_unit: str
    amount: Decimal  # rounded once, to the minor unit
    period: str
    note: str = ""
    readings: tuple[Boundary, ...] = ()


@dataclass(frozen=True)
class Bill:
    account_id: str
    account_name: str
    period: str
    timezone: str
    start: str  # local ISO 8601
    end: str
    tariff_id: str
    currency: str
    lines: tuple[BillLine, ...]
    total: Decimal
    to_date: bool
    notes: tuple[str, ...] = field(default=())


def _kwh(point: ReadingPoint, meter_id: str, obis: str) -> Decimal:
    try:
        return convert(Decimal(point.value), point.unit, "kWh")
    except UnitError as exc:
        raise RatingError(f"meter {meter_id} {obis}: reading in {point.unit!r}: {exc}") from None


def _resolution(*values: Decimal) -> Decimal:
    exponent = min(int(v.as_tuple().exponent) for v in values)
    return Decimal(1).scaleb(exponent)


async def register_at(store: Store, meter_id: str, obis: str, instant_ms: int) -> Boundary:
    """The register's value at ``instant_ms`` (see the module docstring)."""
    found = await _register_at(store, meter_id, obis, instant_ms)
    return replace(found, meter_id=meter_id, obis=obis)


async def _register_at(store: Store, meter_id: str, obis: str, instant_ms: int) -> Boundary:
    before = await store.reading_at_or_before(meter_id, obis, instant_ms)
    after = await store.reading_at_or_after(meter_id, obis, instant_ms)
    when = format_utc_ms(instant_ms)
    if before is not None and before.captured_ms == instant_ms:
        value = _kwh(before, meter_id, obis)
        return Boundary(instant_ms, value, "exact", (before,), f"reading at {when}")
    if before is not None and after is not None:
        v0, v1 = _kwh(before, meter_id, obis), _kwh(after, meter_id, obis)
        t0, t1 = before.captured_ms, after.captured_ms
        with localcontext() as ctx:
            ctx.prec = 50
            exact = v0 + (v1 - v0) * Decimal(instant_ms - t0) / Decimal(t1 - t0)
        resolution = _resolution(v0, v1)
        value = exact.quantize(resolution, ROUND_HALF_UP)
        explain = (
            f"interpolated at {when}: {v0} + ({v1} - {v0}) x {instant_ms - t0} ms / "
            f"{t1 - t0} ms = {exact.normalize()} -> {value} (register resolution {resolution}, "
            "half-up)"
        )
        return Boundary(instant_ms, value, "interpolated", (before, after), explain)
    if after is not None:
        value = _kwh(after, meter_id, obis)
        explain = f"no reading before {when}: first reading after it"
        return Boundary(instant_ms, value, "first reading after", (after,), explain)
    if before is not None:
        value = _kwh(before, meter_id, obis)
        explain = f"no reading after {when} yet: latest reading (to date)"
        return Boundary(instant_ms, value, "latest reading (to date)", (before,), explain)
    return Boundary(instant_ms, None, "no readings", (), f"no readings of {obis}")


def _money(value: Decimal, minor_unit: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-minor_unit), ROUND_HALF_UP)


async def _energy_line(
    store: Store, account: Account, period: Period, meter_id: str, obis: str, export: bool
) -> BillLine | None:
    tariff = account.tariff
    start = await register_at(store, meter_id, obis, period.start_ms)
    end = await register_at(store, meter_id, obis, period.end_ms)
    if start.value is None or end.value is None:
        if export:
            return None  # this meter does not export
        quantity = Decimal(0)
        note = f"no readings of {obis}"
    else:
        quantity = end.value - start.value
        if quantity < 0:
            raise RatingError(
                f"meter {meter_id} {obis}: register went down from {start.value} to "
                f"{end.value} kWh in {period.label} (meter replaced or rolled over?)"
            )
        note = "to date" if end.method.endswith("(to date)") else ""
    conflicts = await store.conflict_count(meter_id, period.start_ms, period.end_ms)
    if conflicts:
        note = (note + "; " if note else "") + f"{conflicts} conflicting readings in period"
    if export:
        rate = tariff.export_credit_per_kwh or Decimal(0)
        amount = -_money(quantity * rate, tariff.minor_unit)
        kind, what = "export_credit", "Export credit"
    else:
        rate = tariff.import_price_per_kwh
        amount = _money(quantity * rate, tariff.minor_unit)
        kind, what = "energy_import", "Energy import"
    return BillLine(
        kind=kind,
        description=f"{what}, meter {meter_id} ({obis})",
        meter_id=meter_id,
        quantity=quantity,
        unit="kWh",
        rate=rate,
        rate_unit=f"{tariff.currency}/kWh",
        amount=amount,
        period=period.label,
        note=note,
        readings=(start, end),
    )


async def build_bill(store: Store, account: Account, period_text: str, now_ms: int) -> Bill:
    period = parse_period(period_text, account)
    tariff = account.tariff
    if period.start_ms > now_ms:
        raise RatingError(f"account {account.id}: period {period.label} has not started yet")
    to_date = period.end_ms > now_ms
    if to_date:
        today = datetime.fromtimestamp(now_ms // 1000, account.timezone).date()
        days = (today - period.first_day).days + 1
        day_note = f"{days} of {period.days} days (to date)"
    else:
        days = period.days
        day_note = ""
    lines = [
        BillLine(
            kind="standing_charge",
            description="Standing charge",
            meter_id=None,
            quantity=Decimal(days),
            unit="days",
            rate=tariff.standing_charge_per_day,
            rate_unit=f"{tariff.currency}/day",
            amount=_money(days * tariff.standing_charge_per_day, tariff.minor_unit),
            period=period.label,
            note=day_note,
        )
    ]
    for meter_id in account.meters:
        line = await _energy_line(store, account, period, meter_id, IMPORT_OBIS, export=False)
        assert line is not None
        lines.append(line)
        if tariff.export_credit_per_kwh is not None:
            line = await _energy_line(store, account, period, meter_id, EXPORT_OBIS, export=True)
            if line is not None:
                lines.append(line)
    if any(line.note.startswith("to date") for line in lines):
        to_date = True
    local = account.timezone
    start = datetime.fromtimestamp(period.start_ms // 1000, local).isoformat()
    end = datetime.fromtimestamp(period.end_ms // 1000, local).isoformat()
    return Bill(
        account_id=account.id,
        account_name=account.name,
        period=period.label,
        timezone=str(local.key),
        start=start,
        end=end,
        tariff_id=tariff.id,
        currency=tariff.currency,
        lines=tuple(lines),
        total=sum((line.amount for line in lines), Decimal(0)),
        to_date=to_date,
    )

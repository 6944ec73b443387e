"""Customer accounts, their service points and the meters and tariffs of each over time.

An account is billed per billing period (monthly, starting on ``cycle_day``) in its own time
zone. It has one or more service points: an electricity, gas or water connection that the
customer occupies from ``moved_in`` to ``moved_out``; on it, meters follow each other (a meter
swap) and tariffs follow each other (a tariff change), each with the instant it starts.

```
[[account]]
id = "acc-1001"
name = "De Vries, Prinsengracht 12"
timezone = "Europe/Amsterdam"
cycle_day = 1                          # optional (1..31; clamped to short months' last day)

[[account.service_point]]
id = "acc-1001-e"                      # optional: "<account>-<commodity>"
commodity = "electricity"              # electricity | gas | water
moved_in = 2026-11-17                  # optional: 00:00 local that day (a local date-time works)
moved_out = 2027-06-01                 # optional, exclusive: billed up to 00:00 of that day
tariff = "flat-2026"                   # one tariff all along, or a history:
# tariffs = [{ tariff = "flat-2026" }, { tariff = "tou-2027", from = 2027-01-01 }]
meters = ["em-sdm-01"]                 # one meter all along, or a history (swap at 10:30):
# meters = [{ meter = "em-a", to = 2026-11-12T10:30:00 },
#           { meter = "em-b", from = 2026-11-12T10:30:00 }]
```

The first version's shorthand still loads: ``tariff`` and ``meters`` on the account itself
are one electricity service point. Local dates and date-times are in the account's zone.
A meter may serve two service points (or two accounts: a move-out and the next tenant's
move-in) only at times that do not overlap.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from protocols.clock import utc_ms
from protocols.errors import EncodeError
from protocols.record import check_id

from ..errors import ConfigError, RatingError
from ..tomlfile import Section, load_toml

__all__ = [
    "COMMODITIES",
    "Account",
    "MeterSpan",
    "Period",
    "ServicePoint",
    "TariffSpan",
    "load_accounts",
    "parse_period",
]

#: commodity -> (quantities billed: (OBIS, role), unit). Roles: "import" is consumption,
#: "export" is energy fed in (credited only if the tariff has an export price).
COMMODITIES: dict[str, tuple[tuple[tuple[str, str], ...], str]] = {
    "electricity": ((("1-0:1.8.0", "import"), ("1-0:2.8.0", "export")), "kWh"),
    "gas": ((("7-0:3.0.0", "import"),), "m3"),
    "water": ((("8-0:1.0.0", "import"),), "m3"),
}

#: far bounds for "all along" (Unix ms): 1970 and 9999
_EARLIEST = 0
_LATEST = 253_402_300_799_000


@dataclass(frozen=True, slots=True)
class MeterSpan:
    meter_id: str
    start_ms: int  # inclusive
    end_ms: int  # exclusive


@dataclass(frozen=True, slots=True)
class TariffSpan:
    tariff_id: str
    start_ms: int
    end_ms: int


@dataclass(frozen=True, slots=True)
class ServicePoint:
    id: str
    commodity: str  # electricity | gas | water
    unit: str
    start_ms: int  # moved in (inclusive)
    end_ms: int  # moved out (exclusive)
    meters: tuple[MeterSpan, ...]
    tariffs: tuple[TariffSpan, ...]

    @property
    def quantities(self) -> tuple[tuple[str, str], ...]:
        return COMMODITIES[self.commodity][0]

    def meters_between(self, start_ms: int, end_ms: int) -> list[MeterSpan]:
        """The meters on this point within [start, end) and the occupancy, clipped to it."""
        lo, hi = max(start_ms, self.start_ms), min(end_ms, self.end_ms)
        return [
            MeterSpan(m.meter_id, max(lo, m.start_ms), min(hi, m.end_ms))
            for m in self.meters
            if max(lo, m.start_ms) < min(hi, m.end_ms)
        ]

    def tariffs_between(self, start_ms: int, end_ms: int) -> list[TariffSpan]:
        lo, hi = max(start_ms, self.start_ms), min(end_ms, self.end_ms)
        return [
            TariffSpan(t.tariff_id, max(lo, t.start_ms), min(hi, t.end_ms))
            for t in self.tariffs
            if max(lo, t.start_ms) < min(hi, t.end_ms)
        ]


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    name: str
    timezone: ZoneInfo
    cycle_day: int
    service_points: tuple[ServicePoint, ...]

    @property
    def meters(self) -> tuple[str, ...]:
        """Every meter the account ever had, in order of first appearance."""
        seen: dict[str, None] = {}
        for point in self.service_points:
            for span in point.meters:
                seen.setdefault(span.meter_id)
        return tuple(seen)

    @property
    def tariff_ids(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for point in self.service_points:
            for span in point.tariffs:
                seen.setdefault(span.tariff_id)
        return tuple(seen)


# billing periods ---------------------------------------------------------------------------

_PERIOD_RE = re.compile(r"^(\d{4})-(\d{2})$")


@dataclass(frozen=True, slots=True)
class Period:
    """A billing period: from the cycle day of month ``label`` to the next month's, local."""

    label: str  # YYYY-MM: the month the period starts in
    first_day: date
    next_first_day: date
    start_ms: int
    end_ms: int  # exclusive

    @property
    def days(self) -> int:
        return (self.next_first_day - self.first_day).days

    def following(self, account: Account) -> Period:
        return parse_period(self.next_first_day.strftime("%Y-%m"), account)

    def preceding(self, account: Account) -> Period:
        year, month = self.first_day.year, self.first_day.month
        prev = (year, month - 1) if month > 1 else (year - 1, 12)
        return parse_period(f"{prev[0]:04d}-{prev[1]:02d}", account)


def _cycle_date(year: int, month: int, day: int) -> date:
    for d in (day, 30, 29, 28):
        if d <= day:
            try:
                return date(year, month, d)
            except ValueError:
                continue
    raise AssertionError("unreachable")  # pragma: no cover


def local_ms(day: date, zone: ZoneInfo) -> int:
    """00:00 local on ``day`` in Unix ms (a DST gap at midnight moves it forward)."""
    local = datetime.combine(day, time(0), tzinfo=zone)
    return utc_ms(local.astimezone(UTC))


def parse_period(text: str, account: Account) -> Period:
    match = _PERIOD_RE.match(text.strip())
    if not match or not 1 <= int(match.group(2)) <= 12:
        raise RatingError(f"period {text!r}: expected YYYY-MM, e.g. 2026-11")
    year, month = int(match.group(1)), int(match.group(2))
    first = _cycle_date(year, month, account.cycle_day)
    nyear, nmonth = year + month // 12, month % 12 + 1
    following = _cycle_date(nyear, nmonth, account.cycle_day)
    zone = account.timezone
    return Period(text.strip(), first, following, local_ms(first, zone), local_ms(following, zone))


def period_containing(instant_ms: int, account: Account) -> Period:
    local = datetime.fromtimestamp(instant_ms / 1000, account.timezone).date()
    period = parse_period(f"{local.year:04d}-{local.month:02d}", account)
    if instant_ms < period.start_ms:
        period = period.preceding(account)
    return period


# loading -----------------------------------------------------------------------------------


def _instant(sec: Section, key: str, value: Any, zone: ZoneInfo) -> int:
    if isinstance(value, datetime):
        aware = value if value.tzinfo is not None else value.replace(tzinfo=zone)
        return utc_ms(aware.astimezone(UTC))
    if isinstance(value, date):
        return local_ms(value, zone)
    raise sec.error(key, f"must be a date (2026-11-17) or a date-time, got {value!r}")


def _spans(sec: Section, key: str, name_key: str, zone: ZoneInfo) -> list[tuple[str, int, int]]:
    """``key`` as a string or a list: plain ids are there all along (several meters of one
    connection add up); tables ``{name_key = ..., from = ..., to = ...}`` follow each other
    (a missing ``from`` is the previous table's ``to``, a missing ``to`` the next's ``from``)."""
    raw = sec.data.get(key)
    if isinstance(raw, str):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise sec.error(key, f"must be a non-empty list (or one {name_key} id), got {raw!r}")
    items: list[tuple[str, int | None, int | None]] = []
    plain: list[str] = []
    for item in raw:
        if isinstance(item, str) and item:
            if len(raw) > 1 and key == "tariffs":
                raise sec.error(key, "a tariff history needs tables with 'from' dates")
            plain.append(item)
        elif isinstance(item, dict):
            unknown = set(item) - {name_key, "from", "to"}
            if unknown:
                raise sec.error(key, f"unknown key {sorted(unknown)[0]!r} in an item")
            name = item.get(name_key)
            if not isinstance(name, str) or not name:
                raise sec.error(key, f'each item needs {name_key} = "..."')
            lo = _instant(sec, key, item["from"], zone) if "from" in item else None
            hi = _instant(sec, key, item["to"], zone) if "to" in item else None
            items.append((name, lo, hi))
        else:
            raise sec.error(key, f"an item must be an id or a table, got {item!r}")
    if plain and items and name_key == "tariff":
        raise sec.error(key, "a tariff history needs tables with 'from' dates")
    out = [(name, _EARLIEST, _LATEST) for name in plain]  # all along (they add up)
    history = items
    previous: tuple[str, int, int] | None = None
    for i, (name, lo, hi) in enumerate(history):
        lo = lo if lo is not None else (previous[2] if previous else _EARLIEST)
        if hi is None:
            nxt = history[i + 1][1] if i + 1 < len(history) else None
            hi = nxt if nxt is not None else _LATEST
        if hi <= lo:
            raise sec.error(key, f"{name}: 'to' must be after 'from'")
        if previous and lo < previous[2]:
            raise sec.error(key, f"{name} starts before {previous[0]} ends (overlap)")
        previous = (name, lo, hi)
        out.append(previous)
    return out


def _service_point(
    sec: Section,
    account_id: str,
    zone: ZoneInfo,
    tariffs: Collection[str],
    taken: set[str],
    shorthand: bool = False,
) -> ServicePoint:
    commodity = "electricity" if shorthand else sec.str("commodity", "electricity")
    if commodity not in COMMODITIES:
        known = ", ".join(COMMODITIES)
        raise sec.error("commodity", f"unknown commodity {commodity!r} (known: {known})")
    point_id = (
        f"{account_id}-{commodity}" if shorthand else sec.str("id", f"{account_id}-{commodity}")
    )
    try:
        check_id("service point", point_id)
    except EncodeError as exc:
        raise sec.error("id", str(exc)) from None
    if point_id in taken:
        raise sec.error("id", f"service point {point_id!r} twice in account {account_id}")
    taken.add(point_id)
    start = _instant(sec, "moved_in", sec.data["moved_in"], zone) if "moved_in" in sec.data else 0
    end = (
        _instant(sec, "moved_out", sec.data["moved_out"], zone)
        if "moved_out" in sec.data
        else _LATEST
    )
    if end <= start:
        raise sec.error("moved_out", "must be after moved_in")
    if "tariff" in sec.data and "tariffs" in sec.data:
        raise sec.error("tariffs", "give 'tariff' or 'tariffs', not both")
    tariff_key = "tariffs" if "tariffs" in sec.data else "tariff"
    if tariff_key not in sec.data:
        raise sec.error(None, "missing key 'tariff' (or 'tariffs')")
    tariff_spans = _spans(sec, tariff_key, "tariff", zone)
    for name, _lo, _hi in tariff_spans:
        if name not in tariffs:
            known = ", ".join(sorted(tariffs)) or "none"
            raise sec.error(tariff_key, f"unknown tariff {name!r} (known: {known})")
    if "meters" not in sec.data:
        raise sec.error(None, "missing key 'meters'")
    meter_spans = _spans(sec, "meters", "meter", zone)
    for name, _lo, _hi in meter_spans:
        try:
            check_id("meter", name)
        except EncodeError as exc:
            raise sec.error("meters", str(exc)) from None
    unit = COMMODITIES[commodity][1]
    return ServicePoint(
        point_id,
        commodity,
        unit,
        start,
        end,
        tuple(MeterSpan(*s) for s in meter_spans),
        tuple(TariffSpan(*s) for s in tariff_spans),
    )


def load_accounts(path: Path, tariffs: Collection[str]) -> dict[str, Account]:
    """The accounts file at ``path``; ``tariffs`` are the known tariff ids (a mapping works)."""
    doc = load_toml(path, "accounts file")
    doc.check_keys({"account"})
    accounts: dict[str, Account] = {}
    # meter -> [(start, end, account, point)] to refuse a meter in two places at once
    used: dict[str, list[tuple[int, int, str, str]]] = {}
    point_index = 0
    for sec in doc.tables("account"):
        sec.check_keys({"id", "name", "timezone", "cycle_day", "tariff", "meters", "service_point"})
        account_id = sec.str("id")
        try:
            check_id("account", account_id)
        except EncodeError as exc:
            raise sec.error("id", str(exc)) from None
        if account_id in accounts:
            raise sec.error("id", f"account {account_id!r} is defined twice")
        zone_name = sec.str("timezone")
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise sec.error("timezone", f"unknown time zone {zone_name!r}") from None
        cycle_day = sec.int("cycle_day", 1, 1, 31)
        taken: set[str] = set()
        points: list[ServicePoint] = []
        if "tariff" in sec.data or "meters" in sec.data:
            points.append(_service_point(sec, account_id, zone, tariffs, taken, shorthand=True))
        raw = sec.data.get("service_point", [])
        if not isinstance(raw, list) or not all(isinstance(p, dict) for p in raw):
            raise sec.error("service_point", "must be an array of tables")
        for item in raw:
            psec = Section(sec.file, item, "account.service_point", point_index, True)
            point_index += 1
            psec.check_keys(
                {"id", "commodity", "moved_in", "moved_out", "tariff", "tariffs", "meters"}
            )
            points.append(_service_point(psec, account_id, zone, tariffs, taken))
        if not points:
            raise sec.error(None, "an account needs a service point (or tariff and meters)")
        for point in points:
            for span in point.meters:
                lo, hi = max(span.start_ms, point.start_ms), min(span.end_ms, point.end_ms)
                for olo, ohi, oacc, opoint in used.get(span.meter_id, []):
                    if lo < ohi and olo < hi:
                        raise sec.error(
                            "meters" if "meters" in sec.data else "service_point",
                            f"meter {span.meter_id} already in account {oacc} (service point "
                            f"{opoint}) at the same time",
                        )
                used.setdefault(span.meter_id, []).append((lo, hi, account_id, point.id))
        accounts[account_id] = Account(
            account_id, sec.str("name", account_id), zone, cycle_day, tuple(points)
        )
    return accounts


def check_known(value: str, known: Collection[str], what: str, where: Path) -> None:
    if value not in known:
        names = ", ".join(sorted(known)) or "none"
        raise ConfigError(f"{where}: no {what} {value!r} (known: {names})")

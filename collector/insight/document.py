"""The usage insight of an account over a range of local days, as one JSON-ready document
(``format = "meterlink-usage/1"``; decimals as strings, instants UTC ``...Z``), and its text.

``usage_document`` loads every service point's intervals for the range, the previous range
of as many days and the same days a year earlier (``usage.comparison_ranges``), and the
most expensive hours (``costly.top_hours``). A comparison range without any interval is
reported with ``total = null`` (absent, not zero); one partly covered says how much
(``hours_covered`` next to ``hours``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal, localcontext
from typing import Any

from protocols.clock import format_utc_ms

from ..errors import RatingError
from ..rating.accounts import Account, Period, local_ms, parse_period
from ..rating.model import QUALITIES, TariffHistory
from .costly import COST_INCLUDES, top_hours
from .usage import Bucket, PointUsage, comparison_ranges, point_usage

__all__ = ["MAX_DAYS", "parse_range", "render_usage_text", "usage_document"]

MAX_DAYS = 400
BY = ("day", "hour")
_TENTH = Decimal("0.1")
#: a comparison needs both periods this well covered by intervals, or it compares gaps
_MIN_COVERED = Decimal("0.95")


def parse_range(
    account: Account, period: str | None, start: str | None, end: str | None
) -> tuple[date, date, str]:
    """Local days ``[first, end)`` from a billing period ``YYYY-MM`` or from ``from`` / ``to``
    local dates (``to`` exclusive); errors name the parameter."""
    if period:
        p: Period = parse_period(period, account)
        return p.first_day, p.next_first_day, p.label
    if not start or not end:
        raise RatingError("give a period (YYYY-MM) or both from and to (local dates YYYY-MM-DD)")
    days = []
    for name, text in (("from", start), ("to", end)):
        try:
            days.append(date.fromisoformat(text.strip()))
        except ValueError:
            raise RatingError(f"{name}={text!r}: expected a local date YYYY-MM-DD") from None
    first, last = days
    if last <= first:
        raise RatingError(f"to={end!r}: must be after from={start!r} (to is exclusive)")
    if (last - first).days > MAX_DAYS:
        raise RatingError(f"from..to: at most {MAX_DAYS} days, got {(last - first).days}")
    return first, last, f"{first.isoformat()}..{last.isoformat()}"


def _dec(value: Decimal) -> str:
    return str(value)


def _bucket(b: Bucket) -> dict[str, Any]:
    return {
        "total": _dec(b.total),
        "intervals": b.intervals,
        "by_tou": {k: _dec(v) for k, v in sorted(b.by_tou.items())},
        "by_quality": {q: _dec(b.by_quality.get(q, Decimal(0))) for q in QUALITIES},
    }


def _hours(first: date, end: date, zone: Any) -> Decimal:
    return Decimal(local_ms(end, zone) - local_ms(first, zone)) / Decimal(3_600_000)


def _compare(now: PointUsage, then: PointUsage, zone: Any) -> dict[str, Any]:
    covered = Decimal(then.whole.seconds) / Decimal(3600)
    out: dict[str, Any] = {
        "from": then.first.isoformat(),
        "to": then.end.isoformat(),
        "hours": _dec(_hours(then.first, then.end, zone).normalize()),
        "hours_covered": _dec(covered.normalize()),
        "intervals": then.whole.intervals,
        "total": None,
        "change": None,
        "change_percent": None,
    }
    if then.absent:
        out["note"] = "no interval data in this range"
        return out
    out["total"] = _dec(then.whole.total)
    hours = _hours(then.first, then.end, zone)
    own = _hours(now.first, now.end, zone)
    if then.whole.seconds < _MIN_COVERED * hours * 3600 or (
        now.whole.seconds < _MIN_COVERED * own * 3600
    ):
        # 12 hours of October against a whole November is not a 4,000 % rise
        out["note"] = (
            f"not compared: a period is less than {_MIN_COVERED:%} covered by interval data"
        )
        return out
    if not now.absent:
        change = now.whole.total - then.whole.total
        out["change"] = _dec(change)
        if then.whole.total:
            with localcontext() as ctx:
                ctx.prec = 34
                pct = (change * 100 / then.whole.total).quantize(_TENTH, ROUND_HALF_UP)
            out["change_percent"] = _dec(pct)
    return out


async def usage_document(
    store: Any,
    account: Account,
    histories: Mapping[str, TariffHistory],
    first: date,
    end: date,
    label: str = "",
    by: str = "day",
    top: int = 5,
) -> dict[str, Any]:
    if by not in BY:
        raise RatingError(f"by={by!r}: must be one of {', '.join(BY)}")
    zone = account.timezone
    ranges = comparison_ranges(first, end)
    lo, hi = local_ms(first, zone), local_ms(end, zone)
    points: list[PointUsage] = []
    sections = []
    for point in account.service_points:
        if point.start_ms >= hi or point.end_ms <= lo:
            continue
        now = await point_usage(store, account, point, histories, first, end)
        points.append(now)
        section: dict[str, Any] = {
            "service_point": point.id,
            "commodity": point.commodity,
            "unit": point.unit,
            "tariffs": list(now.tariffs),
            "total": None if now.absent else _dec(now.whole.total),
            "hours_covered": _dec((Decimal(now.whole.seconds) / Decimal(3600)).normalize()),
            **{k: v for k, v in _bucket(now.whole).items() if k != "total"},
            "days": [
                {"day": day.isoformat(), **_bucket(bucket)}
                for day, bucket in sorted(now.days.items())
            ],
        }
        if by == "hour":
            section["hours"] = [
                {
                    "hour": hour.astimezone(zone).isoformat(),
                    "start": format_utc_ms(int(hour.timestamp()) * 1000),
                    **_bucket(bucket),
                }
                for hour, bucket in sorted(now.hours.items())
            ]
        comparison = {}
        for name, (a, b) in ranges.items():
            then = await point_usage(store, account, point, histories, a, b)
            comparison[name] = _compare(now, then, zone)
        section["comparison"] = comparison
        sections.append(section)
    hours, notes = top_hours(points, histories, zone, top)
    return {
        "format": "meterlink-usage/1",
        "account": account.id,
        "name": account.name,
        "timezone": zone.key,
        "period": label or f"{first.isoformat()}..{end.isoformat()}",
        "from": first.isoformat(),
        "to": end.isoformat(),
        "from_utc": format_utc_ms(lo),
        "to_utc": format_utc_ms(hi),
        "by": by,
        "service_points": sections,
        "top_hours": [
            {
                "hour": h.hour.astimezone(zone).isoformat(),
                "start": format_utc_ms(int(h.start_utc.timestamp()) * 1000),
                "end": format_utc_ms(int((h.start_utc + timedelta(hours=1)).timestamp()) * 1000),
                "cost": _dec(h.cost),
                "currency": h.currency,
                "service_points": [
                    {
                        "service_point": p.service_point,
                        "quantity": _dec(p.quantity),
                        "unit": p.unit,
                        "tou": p.tou,
                        "cost": _dec(p.cost),
                        "unit_prices": [_dec(x) for x in p.unit_prices],
                        "tariff": p.tariff_id,
                    }
                    for p in h.parts
                ],
            }
            for h in hours
        ],
        "top_hours_cost_includes": COST_INCLUDES,
        "notes": notes,
    }


def _same_places(rows: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    """Rows with every number column written to that column's most decimal places: exact
    values (only zeros are added), lined up (5.265 and 5.4910 as 5.2650 and 5.4910)."""
    if not rows:
        return rows
    columns = list(zip(*rows, strict=True))
    out = [list(columns[0])]
    for column in columns[1:]:
        values = [Decimal(v) for v in column]
        places = max(max(-v.as_tuple().exponent, 0) for v in values)  # type: ignore[operator]
        step = Decimal(1).scaleb(-places)
        out.append([str(v.quantize(step)) for v in values])
    return [tuple(r) for r in zip(*out, strict=True)]


def render_usage_text(doc: dict[str, Any]) -> str:
    """The document as text: per service point totals, splits, days and comparisons; then
    the most expensive hours."""
    out = [
        f"Usage of {doc['account']} ({doc['name']}): {doc['period']}, local days "
        f"{doc['from']}..{doc['to']} (to exclusive, {doc['timezone']})"
    ]
    for s in doc["service_points"]:
        out.append("")
        total = "no data" if s["total"] is None else f"{s['total']} {s['unit']}"
        out.append(
            f"Service point {s['service_point']} ({s['commodity']}): {total}, "
            f"{s['intervals']} intervals, tariff {', '.join(s['tariffs']) or '-'}"
        )
        tou = ", ".join(f"{k} {v}" for k, v in s["by_tou"].items())
        quality = ", ".join(f"{k} {v}" for k, v in s["by_quality"].items())
        out.append(f"  by TOU period: {tou or '-'}")
        out.append(f"  by quality: {quality}")
        for name, c in s["comparison"].items():
            title = "previous period" if name == "previous" else "same days last year"
            if c["total"] is None:
                out.append(f"  {title} {c['from']}..{c['to']}: no data")
            else:
                pct = "" if c["change_percent"] is None else f" ({c['change_percent']} %)"
                change = "" if c["change"] is None else f", change {c['change']}{pct}"
                if c["change"] is None and c.get("note"):
                    change = f"; {c['note']}"
                out.append(
                    f"  {title} {c['from']}..{c['to']}: {c['total']} {s['unit']}"
                    f" ({c['hours_covered']} of {c['hours']} h covered){change}"
                )
        rows = [("day", "total", *s["by_tou"].keys(), "estimated/edited/gap")]
        for d in s["days"]:
            other = sum(
                (Decimal(d["by_quality"][q]) for q in ("estimated", "edited", "gap")), Decimal(0)
            )
            rows.append(
                (d["day"], d["total"], *(d["by_tou"].get(k, "0") for k in s["by_tou"]), str(other))
            )
        rows = [rows[0], *_same_places(rows[1:])]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for r in rows:
            out.append(
                "  " + "  ".join(f"{v:>{w}}" if i else f"{v:<{w}}" for i, (v, w) in
                                 enumerate(zip(r, widths, strict=True)))
            )  # fmt: skip
        for h in s.get("hours", []):
            out.append(f"  {h['hour']}  {h['total']}")
    out.append("")
    out.append("Most expensive hours (" + doc["top_hours_cost_includes"] + "):")
    if not doc["top_hours"]:
        out.append("  none")
    for i, h in enumerate(doc["top_hours"], start=1):
        parts = "; ".join(
            f"{p['service_point']} {p['quantity']} {p['unit']} {p['tou']} {p['cost']}"
            for p in h["service_points"]
        )
        out.append(f"  {i}. {h['hour']}  {h['cost']} {h['currency']}  ({parts})")
    for note in doc["notes"]:
        out.append(f"  note: {note}")
    return "\n".join(out) + "\n"

"""``meterlink rate``: what-if rating of an interval usage file against a tariff file, without a
collector.

    meterlink rate --tariff T.toml --usage usage.csv [--period 2026-11 | --period A..B]
                   [--timezone Europe/Amsterdam] [--account-file A.toml [--account ID]]
                   [--export export.csv] [--prices NAME=FILE] [--previous-peaks 12.5,14]
                   [--interval MINUTES] [--json]

The usage file format is in ``usagefile.py``. The account file gives what an account would:
``timezone``, ``previous_peaks`` (kW, oldest first, for demand ratchets) and ``holidays``
(extra public holidays), either at its top level or in the ``[[account]]`` table ``--account``
names (the collector's accounts file works: only these keys are read).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import CollectorError, ConfigError
from ..tomlfile import load_toml
from .components.common import counts, fmt
from .components.dynamic import load_price_csv
from .engine import rate
from .model import ChargeLine, PriceSeries, RatingContext, TariffHistory, UsageInterval
from .tariff import load_tariff
from .usagefile import load_usage_csv

__all__ = ["lines_to_json", "main", "render_lines"]


def _zone(name: str, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: unknown time zone {name!r}") from None


def _account(path: Path, account_id: str | None) -> dict[str, Any]:
    doc = load_toml(path, "account file")
    data = doc.data
    if isinstance(data.get("account"), list):
        accounts = [a for a in data["account"] if isinstance(a, dict)]
        if account_id is None and len(accounts) == 1:
            return accounts[0]
        for account in accounts:
            if account.get("id") == account_id:
                return account
        known = ", ".join(str(a.get("id")) for a in accounts)
        raise ConfigError(f"{path}: give --account ID (accounts: {known})")
    return data


def _period(
    text: str | None, usage: Sequence[UsageInterval], tz: ZoneInfo
) -> tuple[datetime, datetime]:
    def midnight(day: date) -> datetime:
        return datetime(day.year, day.month, day.day, tzinfo=tz)

    if text is None:
        first = usage[0].start.astimezone(tz).date()
        last = (usage[-1].end - timedelta(microseconds=1)).astimezone(tz).date()
        return midnight(first), midnight(last + timedelta(days=1))
    if ".." in text:
        a, b = text.split("..", 1)
        try:
            return midnight(date.fromisoformat(a)), midnight(date.fromisoformat(b))
        except ValueError:
            raise ConfigError(f"--period {text!r}: expected YYYY-MM-DD..YYYY-MM-DD") from None
    try:
        year, month = (int(x) for x in text.split("-"))
        start = date(year, month, 1)
    except ValueError:
        raise ConfigError(f"--period {text!r}: expected YYYY-MM or A..B") from None
    end = date(year + month // 12, month % 12 + 1, 1)
    return midnight(start), midnight(end)


def line_to_json(line: ChargeLine) -> dict[str, Any]:
    return {
        "component": line.component,
        "label": line.label,
        "quantity": str(line.quantity),
        "unit": line.unit,
        "unit_price": str(line.unit_price),
        "amount": str(line.amount),
        "currency": line.currency,
        "start": line.start.isoformat(),
        "end": line.end.isoformat(),
        "actual_intervals": line.actual_intervals,
        "estimated_intervals": line.estimated_intervals,
        "period": line.period,
        "tier": line.tier,
        "tariff_id": line.tariff_id,
        "tariff_version": line.tariff_version,
        "explanation": list(line.explanation),
    }


def lines_to_json(
    tariff: TariffHistory, lines: Sequence[ChargeLine], start: datetime, end: datetime,
    tz: ZoneInfo, usage: Sequence[UsageInterval],
) -> dict[str, Any]:  # fmt: skip
    actual, estimated, gap = counts(usage)
    total = sum((line.amount for line in lines), Decimal(0))
    return {
        "tariff": {"id": tariff.id, "name": tariff.name, "path": str(tariff.path)},
        "period": {"start": start.isoformat(), "end": end.isoformat(), "timezone": str(tz)},
        "intervals": {"count": len(usage), "actual": actual, "estimated": estimated, "gap": gap},
        "currency": tariff.currency,
        "lines": [line_to_json(line) for line in lines],
        "total": str(total),
    }


def render_lines(doc: dict[str, Any], explain: bool = True) -> str:
    period, iv = doc["period"], doc["intervals"]
    out = [
        f"What-if rating: {doc['tariff']['name']} ({doc['tariff']['id']})",
        f"Period {period['start']} .. {period['end']} ({period['timezone']}), "
        f"{iv['count']} intervals: {iv['actual']} actual, {iv['estimated']} estimated"
        + (f", {iv['gap']} gap" if iv["gap"] else ""),
        "",
    ]
    rows = [("Line", "Quantity", "Unit price", "Amount", "Intervals (act/est)")]
    for line in doc["lines"]:
        quantity = f"{fmt(Decimal(line['quantity']))} {line['unit']}"
        unit = line["unit"]
        price = (
            f"{fmt(Decimal(line['unit_price']) * 100)} %"
            if unit == line["currency"]
            else f"{fmt(Decimal(line['unit_price']))} {line['currency']}/{unit}"
        )
        ivs = f"{line['actual_intervals']}/{line['estimated_intervals']}"
        rows.append((line["label"], quantity, price, f"{line['amount']} {line['currency']}", ivs))
    widths = [max(len(r[k]) for r in rows) for k in range(5)]
    versions = {line["tariff_version"] for line in doc["lines"]}
    shown = None
    for i, row in enumerate(rows):
        if i > 0 and len(versions) > 1 and doc["lines"][i - 1]["tariff_version"] != shown:
            shown = doc["lines"][i - 1]["tariff_version"]
            out.append(f"-- tariff version from {shown}")
        out.append(
            "  ".join(
                cell.ljust(widths[k]) if k == 0 else cell.rjust(widths[k])
                for k, cell in enumerate(row)
            ).rstrip()
        )
        if explain and i > 0:
            out += [f"    {note}" for note in doc["lines"][i - 1]["explanation"]]
    out.append("")
    out.append(f"Total {doc['total']} {doc['currency']} (the sum of the rounded lines)")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="meterlink rate", description="What-if rating of an interval usage file."
    )
    parser.add_argument("--tariff", required=True, type=Path, help="tariff TOML file")
    parser.add_argument("--usage", required=True, type=Path, help="usage CSV: start,quantity")
    parser.add_argument("--period", help="YYYY-MM or YYYY-MM-DD..YYYY-MM-DD (default: the file)")
    parser.add_argument("--timezone", help="local time zone (default: account file or UTC)")
    parser.add_argument("--account-file", type=Path, help="timezone, previous_peaks, holidays")
    parser.add_argument("--account", help="the [[account]] id in --account-file")
    parser.add_argument("--export", type=Path, help="export usage CSV (for an export credit)")
    parser.add_argument("--prices", action="append", default=[], metavar="NAME=FILE",
                        help="a price series for a dynamic charge (repeatable)")  # fmt: skip
    parser.add_argument("--previous-peaks", help="kW of previous months, oldest first: 12.5,14")
    parser.add_argument("--interval", type=int, help="interval length in minutes")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--brief", action="store_true", help="text without the explanations")
    args = parser.parse_args(argv)
    try:
        tariff = load_tariff(args.tariff)
        account: dict[str, Any] = {}
        if args.account_file:
            account = _account(args.account_file, args.account)
        zone_name = args.timezone or account.get("timezone") or "UTC"
        tz = _zone(str(zone_name), str(args.account_file or "--timezone"))
        usage = load_usage_csv(args.usage, tariff.unit, args.interval)
        export = load_usage_csv(args.export, tariff.unit, args.interval) if args.export else []
        series: dict[str, PriceSeries] = {}
        for spec in args.prices:
            name, sep, path = spec.partition("=")
            if not sep or not name or not path:
                raise ConfigError(f"--prices {spec!r}: expected NAME=FILE")
            series[name] = load_price_csv(Path(path), name)
        peaks_text = args.previous_peaks
        peaks: list[Decimal] = []
        if peaks_text:
            peaks = [Decimal(p) for p in peaks_text.split(",") if p.strip()]
        elif account.get("previous_peaks"):
            peaks = [Decimal(str(p)) for p in account["previous_peaks"]]
        holidays = frozenset(
            h if isinstance(h, date) else date.fromisoformat(str(h))
            for h in account.get("holidays", [])
        )
        start, end = _period(args.period, usage, tz)
        context = RatingContext(tuple(peaks), series, export, holidays)
        lines = rate(tariff, usage, start, end, tz, context)
    except (CollectorError, ArithmeticError, ValueError) as exc:
        print(f"meterlink rate: {exc}", file=sys.stderr)
        return 1
    doc = lines_to_json(tariff, lines, start, end, tz, [u for u in usage if start <= u.start < end])
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render_lines(doc, explain=not args.brief))
    return 0


if __name__ == "__main__":
    sys.exit(main())

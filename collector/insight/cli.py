"""``meterlink collector usage`` and ``meterlink collector alerts``.

    usage --account A --config C (--period YYYY-MM | --from YYYY-MM-DD --to YYYY-MM-DD)
          [--by day|hour] [--format text|json]
    alerts --account A --config C [--check YYYY-MM] [--format text|json]

``usage`` prints the usage insight (``document.usage_document``): per service point the
total, TOU and quality splits, days (and hours), the comparisons, then the most expensive
hours. ``alerts`` lists the account's alert rules and the alerts raised; ``--check PERIOD``
first evaluates the rules on every day of that billing period (as the ingest hook does when
data arrives; raising nothing twice). Exit 0 done, 2 bad input (config, account, period), 1
database.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from protocols.clock import format_utc_ms

from ..config import Config
from ..errors import ConfigError
from ..store import open_store
from ..store.insight_sqlite import insight_of
from .alerts import evaluate_rule
from .document import parse_range, render_usage_text, usage_document
from .rules import RuleError, rule_from_row

__all__ = ["add_parsers", "run_alerts", "run_usage"]


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("usage", help="usage by day and hour, TOU and quality splits, top hours")
    p.add_argument("--account", required=True)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--period", metavar="YYYY-MM", help="a billing period")
    p.add_argument("--from", dest="from_", metavar="YYYY-MM-DD", help="first local day")
    p.add_argument("--to", metavar="YYYY-MM-DD", help="the local day after the last")
    p.add_argument("--by", choices=("day", "hour"), default="day")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p = sub.add_parser("alerts", help="an account's usage alert rules and the alerts raised")
    p.add_argument("--account", required=True)
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--check", metavar="YYYY-MM", help="evaluate the rules on this period first")
    p.add_argument("--format", choices=("text", "json"), default="text")


def _billing(config: Config) -> Any:
    from ..rating.run import load_billing

    if config.billing is None:
        raise ConfigError(f"{config.path}: no [billing] table (accounts, tariffs)")
    return load_billing(config.billing.accounts, config.billing.tariffs)


async def run_usage(config: Config, args: argparse.Namespace) -> int:
    billing = _billing(config)
    account = billing.account(args.account)
    first, end, label = parse_range(account, args.period, args.from_, args.to)
    store = await open_store(config.collector.database)
    try:
        doc = await usage_document(store, account, billing.tariffs, first, end, label, args.by)
    finally:
        await store.close()
    if args.format == "json":
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        sys.stdout.write(render_usage_text(doc))
    return 0


async def run_alerts(config: Config, args: argparse.Namespace) -> int:
    from collector.service import clock_ms_of

    billing = _billing(config)
    account = billing.account(args.account)
    store = await open_store(config.collector.database)
    try:
        insight = insight_of(store)
        rules, broken = [], []
        for row in await insight.rules(account.id):
            try:
                rules.append(rule_from_row(account, row))
            except RuleError as exc:
                broken.append(f"rule {row.id}: {exc}")
        new = 0
        if args.check:
            first, end, _label = parse_range(account, args.check, None, None)
            days = [first + timedelta(days=i) for i in range((end - first).days)]
            now = clock_ms_of(config)()
            due = []
            for rule in rules:
                point = next(p for p in account.service_points if p.id == rule.service_point)
                due += await evaluate_rule(store, account, point, rule, days, now)
            new = await insight.raise_alerts(due)
        raised = await insight.alerts(account.id, 0, 100_000)
    finally:
        await store.close()
    if args.format == "json":
        doc = {
            "account": account.id,
            "rules": [r.document() for r in rules],
            "broken_rules": broken,
            "new": new,
            "alerts": [{**row._asdict(), "raised": format_utc_ms(row.raised_ms)} for row in raised],
        }
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        return 0
    out = [f"Alert rules of {account.id} ({account.name}):"]
    for r in rules:
        params = ", ".join(f"{k} {v}" for k, v in r.params().items())
        out.append(f"  #{r.id} {r.kind} on {r.service_point}: {params}")
    out += [f"  {b} (skipped)" for b in broken] or ([] if rules else ["  none"])
    if args.check:
        out.append(f"checked {args.check}: {new} new alert(s)")
    out.append(f"Alerts ({len(raised)}):")
    for row in raised:
        out.append(
            f"  {row.day}  #{row.rule_id}  {row.message}  (raised {format_utc_ms(row.raised_ms)})"
        )
    sys.stdout.write("\n".join(out) + "\n")
    return 0

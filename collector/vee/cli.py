"""``meterlink collector vee ...``: the VEE report and the operator's actions.

vee report --config C [--meter M] [--since ISO] [--limit N] [--all] [--json]
vee accept FLAG --reason TEXT --config C [--by NAME]
vee reject FLAG --reason TEXT --config C [--by NAME]
vee edit --meter M --obis O --at ISO --value V --reason TEXT --config C [--by NAME]
vee swap --meter M --at ISO [--old-final V --new-initial V] --reason TEXT --config C
vee intervals --meter M --obis O --from ISO --to ISO --config C [--history] [--json]
"""

from __future__ import annotations

import argparse
import getpass
import json
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path

from protocols.clock import ClockSettingError, format_utc_ms, parse_utc, utc_ms
from protocols.obis import Obis, ObisError

from ..config import Config
from ..store import open_store
from .engine import VeeEngine
from .operator import VeeActionError, decide, edit, record_swap

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    vee = sub.add_parser("vee", help="validation, estimation and editing: report and actions")
    actions = vee.add_subparsers(dest="vee_command", required=True)
    p = actions.add_parser("report", help="findings, estimates, swaps and sequence gaps")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--meter")
    p.add_argument("--since", metavar="ISO", help="readings/intervals at or after this instant")
    p.add_argument("--limit", type=int, default=200, help="rows per section (default 200)")
    p.add_argument("--all", action="store_true", help="also info findings (rollover, swap)")
    p.add_argument("--json", action="store_true")
    for name, text in (("accept", "use a flagged reading as it is"),
                       ("reject", "do not use a reading (its span is estimated)")):  # fmt: skip
        p = actions.add_parser(name, help=text)
        p.add_argument("flag", type=int, help="finding number (vee report)")
        _operator_args(p)
    p = actions.add_parser("edit", help="use another value for a stored reading")
    p.add_argument("--meter", required=True)
    p.add_argument("--obis", required=True)
    p.add_argument("--at", required=True, metavar="ISO", help="the reading's capture time")
    p.add_argument("--value", required=True)
    _operator_args(p)
    p = actions.add_parser("swap", help="record a meter replacement")
    p.add_argument("--meter", required=True)
    p.add_argument("--at", required=True, metavar="ISO", help="when the new meter took over")
    p.add_argument("--old-final", help="the old register at the swap (with --new-initial)")
    p.add_argument("--new-initial", help="the new register at the swap")
    _operator_args(p)
    p = actions.add_parser("intervals", help="derived interval consumption (what rating uses)")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--meter", required=True)
    p.add_argument("--obis", default="1-0:1.8.0")
    p.add_argument("--from", dest="from_", required=True, metavar="ISO")
    p.add_argument("--to", required=True, metavar="ISO")
    p.add_argument("--history", action="store_true", help="also superseded rows")
    p.add_argument("--json", action="store_true")


def _operator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", required=True)
    p.add_argument("--by", help="who (default: the login name)")
    p.add_argument("--config", type=Path, required=True)


def _ms(text: str, what: str) -> int:
    try:
        return utc_ms(parse_utc(text))
    except ClockSettingError as exc:
        raise VeeActionError(f"{what}: {exc}") from None


def _decimal(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise VeeActionError(f"{what}: not a number: {text!r}") from None
    if not value.is_finite():
        raise VeeActionError(f"{what}: must be a finite number, got {text!r}")
    return value


def _obis(text: str) -> str:
    try:
        return str(Obis.parse(text))
    except ObisError as exc:
        raise VeeActionError(f"--obis: {exc}") from None


def _who(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


async def run(config: Config, args: argparse.Namespace) -> int:
    now = time.time_ns() // 1_000_000
    store = await open_store(config.collector.database)
    try:
        engine = VeeEngine(config.vee)
        command = args.vee_command
        if command == "report":
            return await _report(store, args)
        if command == "intervals":
            return await _intervals(store, args)
        if command in ("accept", "reject"):
            text = await decide(store, engine, args.flag, command, args.reason, _who(args), now)
        elif command == "edit":
            text = await edit(
                store, engine, args.meter, _obis(args.obis), _ms(args.at, "--at"),
                _decimal(args.value, "--value"), args.reason, _who(args), now,
            )  # fmt: skip
        else:
            old = None if args.old_final is None else _decimal(args.old_final, "--old-final")
            new = None if args.new_initial is None else _decimal(args.new_initial, "--new-initial")
            text = await record_swap(
                store, engine, args.meter, _ms(args.at, "--at"), old, new, args.reason,
                _who(args), now,
            )  # fmt: skip
        print(text)
        return 0
    finally:
        await store.close()


async def _report(store, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    since = None if args.since is None else _ms(args.since, "--since")
    outcomes = ("error", "warn", "info") if args.all else ("error", "warn")
    reads = store.vee
    counters = await reads.counters(args.meter)
    flags = await reads.flags(args.meter, since, args.limit, outcomes)
    estimates = await reads.estimates(args.meter, since, args.limit)
    swaps = await reads.swaps(args.meter)
    seq_gaps = await reads.sequence_gaps()
    if args.json:
        doc = {
            "counters": [
                {"meter": m, "rule": r or None, "outcome": o, "count": n} for m, r, o, n in counters
            ],
            "flags": [row._asdict() for row in flags],
            "estimates": [row._asdict() for row in estimates],
            "swaps": [row._asdict() for row in swaps],
            "sequence_gaps": [
                {"gateway": g, "first": a, "last": b, "in_quarantine": q} for g, a, b, q in seq_gaps
            ],
        }
        print(json.dumps(doc, indent=2))
        return 0
    print("validated readings and findings (per meter):")
    per: dict[str, list[str]] = {}
    for meter, rule, outcome, n in counters:
        label = "validated" if not rule else f"{rule} {outcome}"
        per.setdefault(meter, []).append(f"{label} {n}")
    for meter, parts in per.items():
        print(f"  {meter:<16} " + ", ".join(parts))
    if not per:
        print("  (none)")
    print("findings to review (#id: meter obis time rule outcome [decision]: detail):")
    for f in flags:
        decision = f" [{f.decision}ed]" if f.decision else ""
        print(
            f"  #{f.id}: {f.meter_id} {f.obis} {format_utc_ms(f.captured_ms)} {f.rule}"
            f" {f.outcome}{decision}: {f.detail}"
        )
    if not flags:
        print("  (none)")
    print("estimated, edited and gap intervals (current):")
    for row in estimates:
        method = f" ({row.method})" if row.method else ""
        value = "unknown" if row.value is None else f"{row.value} {row.unit}"
        print(
            f"  {row.meter_id} {row.obis} {format_utc_ms(row.start_ms)} .."
            f" {format_utc_ms(row.end_ms)}: {value} {row.quality}{method}"
        )
    if not estimates:
        print("  (none)")
    print("meter swaps:")
    for s in swaps:
        finals = (
            "" if s.old_final is None else f" old final {s.old_final}, new initial {s.new_initial};"
        )
        print(f"  #{s.id} {s.meter_id} at {format_utc_ms(s.at_ms)}:{finals} {s.reason} ({s.who})")
    if not swaps:
        print("  (none)")
    print("gateway sequence gaps (records not arrived; lost unless they are in quarantine):")
    for gateway, first, last, held in seq_gaps:
        print(f"  {gateway} seq {first}..{last} ({last - first + 1} missing, {held} in quarantine)")
    if not seq_gaps:
        print("  (none)")
    return 0


async def _intervals(store, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    start, end = _ms(args.from_, "--from"), _ms(args.to, "--to")
    rows = await store.vee.intervals(args.meter, _obis(args.obis), start, end, args.history)
    if args.json:
        print(json.dumps([row._asdict() for row in rows], indent=2))
        return 0
    for row in rows:
        method = f" ({row.method})" if row.method else ""
        value = "unknown" if row.value is None else f"{row.value} {row.unit}"
        old = "" if row.superseded_ms is None else f"  [superseded: {row.superseded_why}]"
        print(
            f"{format_utc_ms(row.start_ms)} .. {format_utc_ms(row.end_ms)}  {value}"
            f"  {row.quality}{method}  by {row.created_by}: {row.why}{old}"
        )
    if not rows:
        print("no intervals")
    return 0

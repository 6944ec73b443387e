"""``meterlink collector ...`` (and ``python -m collector ...``).

    run CONFIG [--clock SETTING]
    enrol GATEWAY --public-key FILE --meters M1,M2,... --config CONFIG
    revoke GATEWAY --key-id HEX --config CONFIG
    bill (--account A | --all) --period YYYY-MM --config CONFIG [--format text|json|csv|html]
         [--out FILE] [--issue] [--as-of ISO]
    advise --account A --config CONFIG [--months 12] [--to YYYY-MM] [--as-of ISO]
           [--format text|json]                      (collector/rating/advisecli.py)
    usage --account A --config CONFIG (--period YYYY-MM | --from DAY --to DAY) [--by day|hour]
    alerts --account A --config CONFIG [--check YYYY-MM]      (collector/insight/cli.py)
    sla --period P --config CONFIG [--gateway G] [--meter M]     (collector/sla/cli.py)
    latency --config CONFIG [--from ISO] [--to ISO] [--gateway G] (collector/latency_cli.py)
    stats --config CONFIG [--json]
    quarantine --config CONFIG [--limit N]
    export --config CONFIG (--gateway GW | --meter M | --account A --period YYYY-MM)
           [--from ISO --to ISO] --out FILE
    vee report|accept|reject|edit|swap|intervals ... --config CONFIG   (collector/vee/cli.py)
    command GATEWAY ping|read-now|backfill|set-clock|push-config|rotate-key ... --config CONFIG
    commands|gateways --config CONFIG; rotate GATEWAY --public-key FILE; keys init
                                                            (collector/commands/cli.py)

Exit codes: 0 done, 1 runtime failure (database), 2 bad input (arguments, config, key file,
account or period).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sqlite3
import sys
import time
from dataclasses import asdict
from pathlib import Path

from protocols.clock import ClockSettingError, format_utc_ms, parse_utc, utc_ms

from .commands.cli import LIFECYCLE
from .config import Config, load_config, with_clock
from .errors import CollectorError, ConfigError, RatingError
from .registry import enrol_gateway, revoke_key
from .store import open_store

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meterlink collector", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="run the collector service")
    p.add_argument("config", type=Path)
    p.add_argument(
        "--clock",
        help="the collector's clock (overrides collector.clock): 'system' or the fleet's "
        "START@ANCHORxSPEED; records beyond collector.max_future ahead of it are refused",
    )
    p = sub.add_parser("revoke", help="revoke one key of a gateway (its records are refused)")
    p.add_argument("gateway")
    p.add_argument("--key-id", required=True, help="16 hex digits (as `enrol` printed it)")
    p.add_argument("--config", type=Path, required=True)
    p = sub.add_parser("enrol", help="enrol a gateway's public key and the meters it reports")
    p.add_argument("gateway")
    p.add_argument("--public-key", type=Path, required=True, help="PEM file from the agent")
    p.add_argument("--meters", required=True, help="comma-separated meter ids")
    p.add_argument("--config", type=Path, required=True)
    p = sub.add_parser("bill", help="the convergent bill of an account (or all) for a period")
    who = p.add_mutually_exclusive_group(required=True)
    who.add_argument("--account")
    who.add_argument("--all", action="store_true", help="a bill run over every account")
    p.add_argument(
        "--period", required=True, help="YYYY-MM: the month the billing period starts in"
    )
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--format", choices=("text", "json", "csv", "html"), default="text")
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument(
        "--out",
        type=Path,
        help="write to this file instead of stdout (with --all --format html: a folder, "
        "one page per account)",
    )
    p.add_argument(
        "--issue",
        action="store_true",
        help="number and store the bill (never changed afterwards); an issued bill is shown "
        "as issued",
    )
    p.add_argument(
        "--as-of",
        metavar="INSTANT",
        help="bill as at this instant (ISO 8601; default now): a period not over by then is "
        "billed to date (simulated fleets run on a virtual clock)",
    )
    p = sub.add_parser("stats", help="counters per meter, quarantine, gateway status")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--json", action="store_true")
    p = sub.add_parser("quarantine", help="list quarantined messages and records")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--limit", type=int, default=100)
    p = sub.add_parser("export", help="stored records as received, with keys, for verify")
    p.add_argument("--config", type=Path, required=True)
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--gateway")
    what.add_argument("--meter")
    what.add_argument("--account")
    p.add_argument("--period", help="YYYY-MM, with --account")
    p.add_argument("--from", dest="from_", metavar="ISO", help="captured at or after")
    p.add_argument("--to", metavar="ISO", help="captured at or before")
    p.add_argument("--out", type=Path, required=True)
    from .vee.cli import add_parser as add_vee_parser

    add_vee_parser(sub)
    from .rating.advisecli import add_parser as add_advise_parser

    add_advise_parser(sub)  # advise --account A (best-tariff advice)
    from .commands.cli import add_parsers as add_command_parsers

    add_command_parsers(sub)  # command, commands, gateways, rotate, keys
    from .sla.cli import add_parser as add_sla_parser

    add_sla_parser(sub)  # sla --period P (data-completeness SLA)
    from .insight.cli import add_parsers as add_insight_parsers

    add_insight_parsers(sub)  # usage / alerts --account A (usage insight)
    from .latency_cli import add_parser as add_latency_parser

    add_latency_parser(sub)  # latency [--from --to] (capture-to-commit delay)
    return parser


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        config = load_config(args.config)
        if args.command == "run":
            from .service import run_service

            config = with_clock(config, args.clock)

            logging.basicConfig(
                level=logging.INFO,
                stream=sys.stderr,
                format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            )
            return asyncio.run(run_service(config))
        command = {
            "enrol": _enrol,
            "revoke": _revoke,
            "bill": _bill,
            "stats": _stats,
            "quarantine": _quarantine,
            "export": _export,
            "vee": _vee,
            "advise": _advise,
            "sla": _sla,
            "latency": _latency,
            "usage": _usage,
            "alerts": _alerts,
            **dict.fromkeys(LIFECYCLE, _lifecycle),
        }[args.command]
        return asyncio.run(command(config, args))
    except CollectorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (sqlite3.Error, RuntimeError) as exc:
        print(f"error: database: {exc}", file=sys.stderr)
        return 1


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


async def _usage(config: Config, args: argparse.Namespace) -> int:
    from .insight.cli import run_usage

    return await run_usage(config, args)


async def _alerts(config: Config, args: argparse.Namespace) -> int:
    from .insight.cli import run_alerts

    return await run_alerts(config, args)


async def _enrol(config: Config, args: argparse.Namespace) -> int:
    store = await open_store(config.collector.database)
    try:
        result = await enrol_gateway(
            store, args.gateway, args.public_key, args.meters.split(","), _now_ms()
        )
    finally:
        await store.close()
    what = "key added" if result.key_added else "key already enrolled"
    print(
        f"gateway {result.gateway_id}: {what} (key id {result.key_id}); "
        f"meters bound: {', '.join(result.meters)}"
    )
    return 0


async def _revoke(config: Config, args: argparse.Namespace) -> int:
    store = await open_store(config.collector.database)
    try:
        before = await revoke_key(store, args.gateway, args.key_id, _now_ms())
    finally:
        await store.close()
    key_id = args.key_id.strip().lower()
    if before == "revoked":
        print(f"gateway {args.gateway}: key {key_id} was already revoked")
    else:
        print(
            f"gateway {args.gateway}: key {key_id} revoked; records signed with it are "
            "refused from the collector's next transaction on"
        )
    return 0


async def _bill(config: Config, args: argparse.Namespace) -> int:
    from .rating.billcli import bill_command

    if config.billing is None:
        raise ConfigError(f"{config.path}: no [billing] table (accounts, tariffs)")
    as_of = _now_ms()
    if args.as_of:
        try:
            as_of = utc_ms(parse_utc(args.as_of))
        except ClockSettingError as exc:
            raise RatingError(f"--as-of: {exc}") from None
    return await bill_command(config, args, as_of)


async def _stats(config: Config, args: argparse.Namespace) -> int:
    store = await open_store(config.collector.database)
    try:
        counters = await store.counters()
        reasons = await store.quarantine_by_reason()
        statuses = await store.gateway_statuses()
    finally:
        await store.close()
    if args.json:
        doc = {
            "counters": [
                {"gateway": gw, "meter": meter or None, **asdict(delta)}
                for gw, meter, delta in counters
            ],
            "quarantine": {reason: count for reason, count in reasons},
            "gateways": [row._asdict() for row in statuses],
        }
        print(json.dumps(doc, indent=2))
        return 0
    print("per meter (gateway):")
    header = "records  readings  dup.rec  dup.read  rejected  conflicts"
    print(f"  {'meter':<16} {'gateway':<14} {header}")
    for gw, meter, d in counters:
        print(
            f"  {meter or '(none)':<16} {gw or '(none)':<14} {d.records_stored:>7}"
            f"  {d.readings_stored:>8}  {d.duplicate_records:>7}  {d.duplicate_readings:>8}"
            f"  {d.rejected:>8}  {d.conflicts:>9}"
        )
    print("quarantine by reason:")
    for reason, count in reasons:
        print(f"  {count:>7}  {reason}")
    if not reasons:
        print("  (empty)")
    print("gateways (last status):")
    for row in statuses:
        at = format_utc_ms(row.received_ms)
        extra = f" ({row.reason})" if row.reason else ""
        print(
            f"  {row.gateway_id:<14} {row.state}{extra}  backlog {row.backlog}"
            f"  dropped {row.dropped}  last seq {row.last_seq}  received {at}"
        )
    if not statuses:
        print("  (none)")
    return 0


async def _quarantine(config: Config, args: argparse.Namespace) -> int:
    store = await open_store(config.collector.database)
    try:
        entries = await store.quarantine_entries(args.limit)
    finally:
        await store.close()
    for ident, row in entries:
        seq = "-" if row.seq is None else row.seq
        print(
            f"#{ident} {format_utc_ms(row.received_ms)} gateway {row.gateway_id or '-'}"
            f" seq {seq} meter {row.meter_id or '-'} ({len(row.raw)} bytes on {row.topic}):"
            f" {row.reason}"
        )
    if not entries:
        print("quarantine is empty")
    return 0


async def _lifecycle(config: Config, args: argparse.Namespace) -> int:
    from .commands.cli import run

    return await run(config, args)


async def _advise(config: Config, args: argparse.Namespace) -> int:
    from .rating.advisecli import run

    return await run(config, args)


async def _sla(config: Config, args: argparse.Namespace) -> int:
    from .sla.cli import run

    return await run(config, args)


async def _latency(config: Config, args: argparse.Namespace) -> int:
    from .latency_cli import run

    return await run(config, args)


async def _vee(config: Config, args: argparse.Namespace) -> int:
    from .vee.cli import run

    return await run(config, args)


async def _export(config: Config, args: argparse.Namespace) -> int:
    from .export import export_command

    return export_command(config, args, _now_ms())

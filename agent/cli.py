"""``meterlink agent ...``: run, check, keys init, status."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from protocols.clock import ClockSettingError, format_utc_ms, parse_utc

from .buffer import Buffer, BufferError
from .config import ConfigError, load_config
from .keys import KeyFileError, create_key, load_key
from .service import AgentService, ProgressOptions, build_meters, load_profiles

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meterlink agent", description="the field agent")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="poll meters, buffer signed records, publish them")
    run.add_argument("config", type=Path)
    run.add_argument("--clock", help="clock setting START@ANCHORxSPEED (overrides the config)")
    run.add_argument(
        "--progress-json",
        type=float,
        nargs="?",
        const=1.0,
        default=None,
        metavar="SECONDS",
        help="print one JSON line of counters on stdout every SECONDS (default 1)",
    )
    run.add_argument(
        "--progress-every", type=float, default=10.0, help="seconds between INFO progress lines"
    )
    run.add_argument("--log-level", default="INFO")
    run.add_argument(
        "--until",
        metavar="INSTANT",
        help="poll no slot at or after this virtual instant (ISO 8601), wait for the "
        "head-end to ack the backlog, then exit 0 (demos and test rigs)",
    )
    run.add_argument(
        "--drain-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="with --until: real seconds to wait for the backlog to drain (default 60)",
    )

    check = sub.add_parser("check", help="validate the config and profiles, show the polling plan")
    check.add_argument("config", type=Path)
    check.add_argument("--clock")

    keys = sub.add_parser("keys", help="the gateway's signing key")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    init = keys_sub.add_parser("init", help="create the Ed25519 key pair")
    where = init.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path)
    where.add_argument("--state-dir", type=Path)
    init.add_argument("--force", action="store_true", help="replace an existing key")
    show = keys_sub.add_parser("show", help="print the public key path and key id")
    where = show.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", type=Path)
    where.add_argument("--state-dir", type=Path)

    status = sub.add_parser("status", help="buffer backlog and per-meter statistics")
    status.add_argument("config", type=Path)
    status.add_argument("--json", action="store_true")
    return parser


def _err(text: str) -> None:
    print(f"meterlink agent: {text}", file=sys.stderr)


def _keys_dir(args: argparse.Namespace) -> Path:
    if args.state_dir is not None:
        return args.state_dir / "keys"
    return load_config(args.config).keys_dir


def cmd_keys(args: argparse.Namespace) -> int:
    try:
        keys_dir = _keys_dir(args)
        key = (
            create_key(keys_dir, args.force) if args.keys_command == "init" else load_key(keys_dir)
        )
    except ConfigError as exc:
        _err(str(exc))
        return 2
    except (KeyFileError, OSError) as exc:
        _err(str(exc))
        return 1
    verb = "created" if args.keys_command == "init" else "key"
    print(f"{verb}: private {key.path} (mode 0600)")
    print(f"public key: {keys_dir / 'gateway.pub'}")
    print(f"key id: {key.key_id}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config, args.clock)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        print(f"{len(exc.issues)} error(s) in {args.config}", file=sys.stderr)
        return 1
    profiles, issues = load_profiles(config.meters)
    for issue in issues:
        print(
            f"error: {config.path}:{_meter_line(config, issue.meter_id)}: {issue}", file=sys.stderr
        )
    print(
        f"gateway {config.gateway.id}: state {config.gateway.state_dir}, clock "
        f"{config.gateway.clock}, mqtt {config.mqtt.host}:{config.mqtt.port}, buffer max "
        f"{config.buffer.max_records} ({config.buffer.when_full})"
    )
    try:
        key = load_key(config.keys_dir)
        print(f"key {key.key_id} ({key.path})")
    except KeyFileError as exc:
        print(f"warning: {exc}")
    ok_meters = [m for m in config.meters if m.id in profiles]
    groups, _connections = build_meters(
        config.__class__(config.path, config.gateway, config.mqtt, config.buffer, tuple(ok_meters)),
        profiles,
    )
    by_id = {m.id: m for m in config.meters}
    for (_driver, host, port), drivers in groups.items():
        print(f"connection {host}:{port}: {len(drivers)} meter(s), one transaction at a time")
        for d in drivers:
            meter = by_id[d.meter_id]
            print(
                f"  {meter.id}: unit {meter.unit} profile {d.profile.name} "
                f"({len(d.profile.registers)} values) every {_duration(meter.interval_ns)} "
                f"timeout {_duration(meter.timeout_ns)} retries {meter.retries}: "
                f"{d.describe_plan()}"
            )
    if issues:
        print(f"{len(issues)} error(s)", file=sys.stderr)
        return 1
    print(f"ok: {len(config.meters)} meter(s) on {len(groups)} connection(s)")
    return 0


def _meter_line(config, meter_id: str) -> object:  # type: ignore[no-untyped-def]
    for meter in config.meters:
        if meter.id == meter_id:
            return meter.line
    return "?"


def _duration(ns: int) -> str:
    for unit, size in (("h", 3600 * 10**9), ("m", 60 * 10**9), ("s", 10**9), ("ms", 10**6)):
        if ns % size == 0:
            return f"{ns // size}{unit}"
    return f"{ns / 1e9:g}s"


def cmd_status(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        _err(str(exc))
        return 2

    async def read() -> dict[str, object]:
        buffer = await Buffer.open_readonly(config.buffer_path)
        try:
            return await buffer.summary()
        finally:
            await buffer.close()

    try:
        summary = asyncio.run(read())
    except BufferError as exc:
        _err(str(exc))
        return 1
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    s = summary
    print(f"gateway {s['gateway_id']}  buffer {config.buffer_path}")
    print(
        f"backlog {s['backlog']} records (sent, awaiting ack: {s['sent_not_acked']}), "
        f"last seq {s['last_seq']}, dropped {s['dropped_total']}, refused {s['refused_total']}"
    )
    if s["oldest_seq"] is not None:
        print(f"oldest held: seq {s['oldest_seq']} captured {_ts(s['oldest_captured_ms'])}")
    if s["oldest_unsent_seq"] is not None:
        print(
            f"oldest never sent: seq {s['oldest_unsent_seq']} captured "
            f"{_ts(s['oldest_unsent_captured_ms'])}"
        )
    print("meters:")
    for m in s["meters"]:  # type: ignore[attr-defined]
        line = (
            f"  {m['meter_id']}: {m['records']} records, {m['readings']} readings, "
            f"{m['read_errors']} errors, {m['skipped_slots']} skipped slots, last capture "
            f"{_ts(m['last_capture_ms'])}"
        )
        if m["last_error"]:
            line += f"; last error {_ts(m['last_error_ms'])}: {m['last_error']}"
        print(line)
    if s["losses"]:
        print("losses:")
        for loss in s["losses"]:  # type: ignore[attr-defined]
            print(
                f"  seqs {loss['first_seq']}-{loss['last_seq']} ({loss['count']}): "
                f"{loss['reason']} at {_ts(loss['at_ms'])}"
            )
    return 0


def _ts(ms: object) -> str:
    return format_utc_ms(ms) if isinstance(ms, int) else "-"


def cmd_run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = load_config(args.config, args.clock)
    except ConfigError as exc:
        for issue in exc.issues:
            print(f"error: {issue}", file=sys.stderr)
        print(
            f"meterlink agent: {len(exc.issues)} error(s) in {args.config}; not started",
            file=sys.stderr,
        )
        return 2
    # Profiles too, before anything is opened: never run with part of the meters.
    _profiles, profile_issues = load_profiles(config.meters)
    if profile_issues:
        for issue in profile_issues:
            print(
                f"error: {config.path}:{_meter_line(config, issue.meter_id)}: {issue}",
                file=sys.stderr,
            )
        print(
            f"meterlink agent: {len(profile_issues)} profile error(s); not started",
            file=sys.stderr,
        )
        return 2
    until_ns = None
    if args.until:
        try:
            until_ns = int(parse_utc(args.until).timestamp()) * 10**9
        except ClockSettingError as exc:
            _err(f"--until: {exc}")
            return 2
    service = AgentService(
        config,
        ProgressOptions(args.progress_every, args.progress_json),
        until_ns=until_ns,
        drain_timeout=args.drain_timeout,
    )
    try:
        return asyncio.run(service.run())
    except (KeyFileError, BufferError) as exc:
        _err(str(exc))
        return 1


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "keys":
        return cmd_keys(args)
    if args.command == "check":
        return cmd_check(args)
    if args.command == "status":
        return cmd_status(args)
    return cmd_run(args)

"""``meterlink agent ...``: run, check, keys init, status, scan."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from protocols.clock import ClockSettingError, format_utc_ms, parse_utc

from .buffer import Buffer, BufferError
from .config import DLMS_DEFAULT_PORT, ConfigError, DlmsSettings, load_config
from .drivers.dlms import DlmsMeter
from .drivers.dlms.scan import ScanError, config_section, format_table, scan
from .drivers.modbus_tcp import MeterReadError
from .keys import KeyFileError, create_key, load_key
from .service import CLOCKS_FILE, AgentService, ProgressOptions, build_meters, load_profiles

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
    check.add_argument(
        "--read",
        action="store_true",
        help="also read each DLMS meter once (one association each) and show what came back",
    )

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

    scan_cmd = sub.add_parser("scan", help="ask a meter what it has; print a config section")
    scan_sub = scan_cmd.add_subparsers(dest="scan_command", required=True)
    dlms = scan_sub.add_parser(
        "dlms",
        help="read a DLMS meter's object list (public client by default)",
        description="Associate with a DLMS/COSEM meter, read its object list "
        "(0.0.40.0.0.255), print it with the registers' values, then a [[meters]] section.",
    )
    where = dlms.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="the meter (TCP wrapper or HDLC over TCP)")
    where.add_argument("--serial", metavar="DEV", help="HDLC on a serial port, e.g. /dev/ttyUSB0")
    dlms.add_argument("--port", type=int, default=DLMS_DEFAULT_PORT, help="default 4059")
    dlms.add_argument(
        "--transport", choices=("wrapper", "hdlc"), help="default: wrapper (hdlc with --serial)"
    )
    dlms.add_argument("--baud", type=int, default=9600, help="serial: HDLC baud (default 9600)")
    dlms.add_argument("--mode-e", action="store_true", help="serial: IEC 62056-21 mode E start")
    dlms.add_argument("--client-address", type=int, default=16, help="default 16 (public)")
    dlms.add_argument("--server-address", type=int, default=1, help="logical device, default 1")
    dlms.add_argument("--physical-address", type=int, default=17, help="hdlc: default 17")
    dlms.add_argument("--timeout", type=float, default=5.0, help="seconds per request")
    dlms.add_argument("--id", default="", help="meter id for the config section")
    dlms.add_argument("--no-values", action="store_true", help="list the objects only")
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
    ok_meters = [m for m in config.meters if m.id in profiles or m.dlms is not None]
    groups, _connections = build_meters(
        config.__class__(config.path, config.gateway, config.mqtt, config.buffer, tuple(ok_meters)),
        profiles,
    )
    by_id = {m.id: m for m in config.meters}
    for (driver_name, host, port), drivers in groups.items():
        where = f"{host}:{port}" if port else host
        kind = " (dlms)" if driver_name == "dlms" else ""
        print(f"connection {where}{kind}: {len(drivers)} meter(s), one transaction at a time")
        for d in drivers:
            meter = by_id[d.meter_id]
            if isinstance(d, DlmsMeter):
                print(f"  {meter.id}: {_describe_dlms(d, meter.interval_ns, meter.timeout_ns)}")
                continue
            print(
                f"  {meter.id}: unit {meter.unit} profile {d.profile.name} "
                f"({len(d.profile.registers)} values) every {_duration(meter.interval_ns)} "
                f"timeout {_duration(meter.timeout_ns)} retries {meter.retries}: "
                f"{d.describe_plan()}"
            )
    failed = 0
    if args.read:
        dlms_meters = [
            d for drivers in groups.values() for d in drivers if isinstance(d, DlmsMeter)
        ]
        failed = asyncio.run(_try_reads(dlms_meters))
    if issues:
        print(f"{len(issues)} error(s)", file=sys.stderr)
        return 1
    if failed:
        print(f"{failed} meter(s) could not be read", file=sys.stderr)
        return 1
    print(f"ok: {len(config.meters)} meter(s) on {len(groups)} connection(s)")
    return 0


def _describe_dlms(meter: DlmsMeter, interval_ns: int, timeout_ns: int) -> str:
    s = meter.settings
    parts = [
        f"dlms {meter.description} auth {s.auth}",
        f"{len(meter.objects)} objects ({', '.join(str(o) for o in meter.objects)})",
    ]
    if s.load_profile is not None:
        parts.append(f"load profile {s.load_profile}")
    clock_set = "off" if s.clock_set_ns is None else _duration(s.clock_set_ns)
    limit = _duration(s.clock_limit_ns) if s.clock_limit_ns else "off"
    parts.append(f"clock_limit {limit}, clock_set {clock_set}")
    return (
        ", ".join(parts) + f"; every {_duration(interval_ns)} timeout {_duration(timeout_ns)} "
        f"retries {meter.retries}"
    )


async def _try_reads(meters: list[DlmsMeter]) -> int:
    """``agent check --read``: one read per DLMS meter, with a hint on failure."""
    failed = 0
    for meter in meters:
        meter.retries = 0
        try:
            outcome = await meter.read()
        except MeterReadError as exc:
            failed += 1
            print(f"read {meter.meter_id}: FAILED: {exc}")
            print(f"  hint: {_read_hint(str(exc), meter)}")
            continue
        values = ", ".join(f"{v.obis}={v.value} {v.unit}".rstrip() for v in outcome.values)
        clock = meter.clock
        drift = "?" if clock.drift_ms is None else f"{clock.drift_ms / 1000:+.3f}s"
        print(f"read {meter.meter_id}: ok: {values}; clock drift {drift}")
        if clock.suspect:
            print(f"  warning: the meter's clock is beyond clock_limit ({drift})")
        for text in outcome.errors:
            print(f"  partial: {text}")
    return failed


def _read_hint(text: str, meter: DlmsMeter) -> str:
    s = meter.settings
    if "association refused" in text:
        if "authentication" in text or s.client_address != 16:
            return (
                "the meter refused this client: check client_address, auth and the secrets "
                "file (the public client is 16 with auth none)"
            )
        return "check server_address (the logical device) and the meter's application context"
    if "cannot connect" in text:
        return "nothing listens there: check host, port (4059 is usual) and the network path"
    if "no answer" in text or "timed out" in text:
        return (
            "connected but no answer: check transport (wrapper or hdlc), server_address and "
            "physical_address, and that no other client holds the meter's only association"
        )
    if "object-undefined" in text:
        return "the meter lacks a configured object: run `meterlink agent scan dlms` to list them"
    return "run `meterlink agent scan dlms` with the same addresses to see what the meter answers"


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
    clocks = _read_clocks(config.gateway.state_dir / CLOCKS_FILE)
    if clocks:
        summary["clocks"] = clocks
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
    if clocks:
        print("meter clocks (DLMS, at the agent's last read):")
        for meter_id, c in sorted(clocks.items()):
            print(f"  {meter_id}: {_clock_line(c)}")
    if s["losses"]:
        print("losses:")
        for loss in s["losses"]:  # type: ignore[attr-defined]
            print(
                f"  seqs {loss['first_seq']}-{loss['last_seq']} ({loss['count']}): "
                f"{loss['reason']} at {_ts(loss['at_ms'])}"
            )
    return 0


def _read_clocks(path: Path) -> dict[str, dict[str, object]]:
    """The running (or last) agent's DLMS clock figures; {} if none were written."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _clock_line(c: dict[str, object]) -> str:
    drift = c.get("drift_ms")
    text = "drift not measured" if not isinstance(drift, int) else f"drift {drift / 1000:+.3f}s"
    if isinstance(c.get("uncertainty_ms"), int) and isinstance(drift, int):
        text += f" (+/-{c['uncertainty_ms'] / 1000:.3f}s) at {_ts(c.get('measured_ms'))}"
    if c.get("clock_suspect"):
        text += ", BEYOND clock_limit: captures flagged CLOCK_SUSPECT"
    if c.get("clock_sets"):
        text += f", clock set {c['clock_sets']} time(s), last {_ts(c.get('last_set_ms'))}"
    for key in ("clock_error", "clock_set_error"):
        if c.get(key):
            text += f"; {c[key]}"
    return text


def cmd_scan(args: argparse.Namespace) -> int:
    transport = args.transport or ("hdlc" if args.serial else "wrapper")
    problems = []
    if args.serial and transport != "hdlc":
        problems.append("--serial needs --transport hdlc")
    if args.mode_e and not args.serial:
        problems.append("--mode-e is for a serial port (--serial DEV)")
    for name, value, low, high in (
        ("--client-address", args.client_address, 1, 127),
        ("--server-address", args.server_address, 0, 0x3FFF),
        ("--physical-address", args.physical_address, 0, 0x3FFF),
        ("--port", args.port, 1, 65535),
        ("--baud", args.baud, 300, 115200),
    ):
        if not low <= value <= high:
            problems.append(f"{name} must be {low}..{high}, got {value}")
    if not 0 < args.timeout <= 60:
        problems.append(f"--timeout must be > 0 and <= 60 seconds, got {args.timeout:g}")
    if problems:
        for text in problems:
            _err(text)
        return 2
    settings = DlmsSettings(
        transport=transport,
        serial=args.serial or "",
        baud=args.baud,
        mode_e=args.mode_e,
        client_address=args.client_address,
        server_address=args.server_address,
        physical_address=args.physical_address,
    )
    host = args.host or ""
    try:
        result = asyncio.run(scan(settings, host, args.port, args.timeout, not args.no_values))
    except ScanError as exc:
        _err(f"scan failed: {exc}")
        text = str(exc)
        meter = DlmsMeter("scan", settings, host, args.port)
        _err(f"hint: {_read_hint(text, meter)}")
        return 1
    print(f"dlms meter at {result.description}: {len(result.objects)} objects")
    print(format_table(result))
    print()
    print("# ready to paste into the agent's config:")
    print(config_section(result, settings, host, args.port, args.id), end="")
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
    if args.command == "scan":
        return cmd_scan(args)
    return cmd_run(args)

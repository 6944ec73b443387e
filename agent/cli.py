"""``meterlink agent ...``: run, check, keys init, status, scan."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field, replace
from decimal import Decimal
from pathlib import Path

from protocols import iec62056_21
from protocols.clock import ClockSettingError, format_utc_ms, parse_utc
from protocols.errors import DecodeError

from .buffer import Buffer, BufferError
from .config import DLMS_DEFAULT_PORT, ConfigError, DlmsSettings, SerialSettings, load_config
from .drivers.dlms import DlmsMeter
from .drivers.dlms.scan import ScanError, config_section, format_table, scan
from .drivers.dsmr_p1 import DsmrMeter
from .drivers.iec62056 import Iec62056Meter, IecLine, IecReadError, readout
from .drivers.modbus_rtu import RtuBus, RtuMeter, RtuReadError
from .drivers.modbus_scan import (
    PLAUSIBLE,
    FoundUnit,
    load_known_profiles,
    parse_units,
    scan_units,
)
from .drivers.modbus_tcp import ModbusTcpConnection, ModbusTcpMeter
from .keys import KeyFileError, create_key, load_key
from .service import (
    CLOCKS_FILE,
    STATE_FILE,
    AgentService,
    ProgressOptions,
    build_meters,
    load_profiles,
)

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
    reading = check.add_mutually_exclusive_group()
    reading.add_argument(
        "--read",
        action="store_true",
        help="read every meter once (the default): buses in parallel, the meters of a bus "
        "one after the other; a table: meter, bus, result, values, time, hint",
    )
    reading.add_argument(
        "--no-read",
        action="store_true",
        help="only validate the config and show the polling plan; touch no meter",
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

    mb = scan_sub.add_parser(
        "modbus",
        help="find the Modbus units on an RS-485 port or behind a TCP gateway",
        description="Probe unit ids, identify known device profiles (config/profiles) by "
        "reading a distinguishing register, print a ready-to-paste [[meters]] section. "
        "Serial: --port DEV [--baud --parity --stopbits]; TCP: --host H --port P.",
    )
    mb.add_argument("--port", required=True, help="serial device, or the TCP port with --host")
    mb.add_argument("--host", help="Modbus TCP gateway or meter")
    mb.add_argument("--baud", type=int, default=9600, help="serial: default 9600")
    mb.add_argument("--parity", choices=("N", "E", "O"), default="E", help="serial: default E")
    mb.add_argument("--stopbits", type=int, choices=(1, 2), default=1, help="serial: default 1")
    mb.add_argument("--units", default="1-247", help="unit ids, e.g. 1-247 or 1,2,10-20")
    mb.add_argument("--timeout", type=float, default=0.2, help="seconds per probe (0.2)")
    mb.add_argument("--profiles", type=Path, help="profile directory (default config/profiles)")

    ie = scan_sub.add_parser(
        "iec62056",
        help="read an IEC 62056-21 meter once (mode C) and show its data sets",
        description="Sign on at 300 baud 7E1, print the identification and every data set "
        "of the readout, then a [[meters]] section.",
    )
    ie.add_argument("--port", required=True, help="serial device, e.g. /dev/ttyUSB0")
    ie.add_argument("--address", default="", help="device address (several meters on a line)")
    ie.add_argument("--max-baud", type=int, default=19200, help="highest rate to accept")
    ie.add_argument("--timeout", type=float, default=3.0, help="seconds per message (3)")
    ie.add_argument("--id", default="", help="meter id for the config section")
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
    ok_meters = [
        m
        for m in config.meters
        if m.id in profiles or m.dlms is not None or m.driver in ("iec62056", "dsmr-p1")
    ]
    groups, _connections = build_meters(
        config.__class__(config.path, config.gateway, config.mqtt, config.buffer, tuple(ok_meters)),
        profiles,
    )
    by_id = {m.id: m for m in config.meters}
    for (driver_name, host, port), drivers in groups.items():
        where = f"{host}:{port}" if port else host
        kind = " (dlms)" if driver_name == "dlms" else ""
        first = by_id[drivers[0].meter_id]
        if first.serial is not None:
            kind = f" ({driver_name} {first.serial.setting})"
        print(f"connection {where}{kind}: {len(drivers)} meter(s), one transaction at a time")
        rtu = [d for d in drivers if isinstance(d, RtuMeter)]
        if rtu:
            speed = config.gateway.clock.speed
            print(f"  {_rtu_budget(rtu, [by_id[d.meter_id] for d in rtu], speed)}")
        for d in drivers:
            meter = by_id[d.meter_id]
            if isinstance(d, DlmsMeter):
                print(f"  {meter.id}: {_describe_dlms(d, meter.interval_ns, meter.timeout_ns)}")
                continue
            if isinstance(d, Iec62056Meter | DsmrMeter):
                print(
                    f"  {meter.id}: {d.describe()} every {_duration(meter.interval_ns)} "
                    f"timeout {_duration(meter.timeout_ns)}"
                )
                continue
            print(
                f"  {meter.id}: unit {meter.unit} profile {d.profile.name} "
                f"({len(d.profile.registers)} values) every {_duration(meter.interval_ns)} "
                f"timeout {_duration(meter.timeout_ns)} retries {meter.retries}: "
                f"{d.describe_plan()}"
            )
    failed = 0
    if not args.no_read:
        failed = asyncio.run(_try_reads(list(groups.values()), _connections))
    if issues:
        print(f"{len(issues)} error(s)", file=sys.stderr)
        return 1
    if failed:
        print(f"{failed} meter(s) could not be read", file=sys.stderr)
        return 1
    print(f"ok: {len(config.meters)} meter(s) on {len(groups)} connection(s)")
    return 0


def _rtu_budget(meters: list[RtuMeter], configs: list[object], speed: Decimal) -> str:
    """A bus's cycle from frame sizes at its baud rate against its shortest interval in
    real time (a virtual clock at ``speed`` shortens it), and with one meter silent (one
    time-out): whether the bus can keep its period."""
    line = meters[0].bus.line
    cycle = sum(line.transaction(r.count).total for m in meters for r in m.plan)
    interval_ns = min(c.interval_ns for c in configs)  # type: ignore[attr-defined]
    interval_s = float(Decimal(interval_ns) / speed / 10**9)
    worst = cycle + max(m.timeout for m in meters)
    text = (
        f"bus time per cycle at {line.baud} baud: {cycle * 1000:.0f} ms from frame sizes "
        f"({sum(len(m.plan) for m in meters)} requests), {worst * 1000:.0f} ms with one meter "
        f"silent; shortest interval {interval_s:g}s"
        + (f" real (clock at {speed}x)" if speed != 1 else "")
    )
    if worst > interval_s:
        text += " -- WARNING: the bus cannot keep this period (slots will be skipped)"
    return text


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


@dataclass(slots=True)
class _Tried:
    meter_id: str
    bus: str
    ok: bool
    values: int
    seconds: float
    text: str  # the values (ok) or the error
    error: Exception | None = None
    hint: str = ""
    partial: list[str] = field(default_factory=list)
    driver: object = None
    suspect: bool = False  # read, but the values are implausible (a wrong profile)


async def _try_reads(buses: list[list[object]], connections: list[object]) -> int:
    """``agent check --read``: one read of every meter, the buses in parallel and the meters
    of one bus one after the other; a line per meter, then a table with hints."""
    results = await asyncio.gather(*(_try_bus(drivers) for drivers in buses))
    for conn in connections:
        close = getattr(conn, "close", None)
        if close is not None:
            await close()
    tried = [t for bus in results for t in bus]
    for bus in results:
        silent = [t for t in bus if not t.ok and _kinds(t.error) == {"silent"}]
        for t in bus:
            if not t.ok:
                t.hint = _failure_hint(t, bus, silent)
    for t in tried:
        if t.ok:
            print(f"read {t.meter_id}: ok: {t.text}")
            if t.suspect:
                print(f"  hint: {t.hint}")
            for text in t.partial:
                print(f"  partial: {text}")
        else:
            print(f"read {t.meter_id}: FAILED: {t.text}")
            print(f"  hint: {t.hint}")
    print()
    print(_table(tried))
    return sum(1 for t in tried if not t.ok)


async def _try_bus(drivers: list[object]) -> list[_Tried]:
    out = []
    for driver in drivers:
        meter_id = str(getattr(driver, "meter_id", "?"))
        if hasattr(driver, "retries"):
            driver.retries = 0  # type: ignore[attr-defined]
        if isinstance(driver, DlmsMeter):
            # a check reads, it never writes: no clock set; and no load-profile backfill
            driver.clock.settings = replace(driver.clock.settings, clock_set_ns=None)
            driver.profile = None
        started = time.monotonic()
        bus = _bus_name(driver)
        try:
            outcome = await driver.read()  # type: ignore[attr-defined]
        except Exception as exc:  # every failure is a row of the table
            took = time.monotonic() - started
            out.append(_Tried(meter_id, bus, False, 0, took, str(exc), exc, driver=driver))
            continue
        took = time.monotonic() - started
        values = getattr(outcome, "values", ())
        text = ", ".join(f"{v.obis}={v.value} {v.unit}".rstrip() for v in values)
        if getattr(outcome, "unchanged", False):
            text = "(the same reading as before)"
        if isinstance(driver, DlmsMeter):
            clock = driver.clock
            drift = "?" if clock.drift_ms is None else f"{clock.drift_ms / 1000:+.3f}s"
            text += f"; clock drift {drift}"
            if clock.suspect:
                text += f" (beyond clock_limit {_duration(driver.settings.clock_limit_ns)})"
        tried = _Tried(meter_id, bus, True, len(values), took, text, driver=driver)
        tried.partial = list(getattr(outcome, "errors", []))
        odd = [
            f"{v.obis} = {v.value} {v.unit}"
            for v in values
            if v.obis in PLAUSIBLE and not any(lo <= v.value <= hi for lo, hi in PLAUSIBLE[v.obis])
        ]
        if odd and isinstance(driver, ModbusTcpMeter):
            tried.suspect = True
            tried.hint = (
                f"values look wrong ({'; '.join(odd[:2])}): the profile (register map, word "
                "order or scale) does not fit this meter; run `meterlink agent scan modbus`"
            )
        out.append(tried)
    return out


def _bus_name(driver: object) -> str:
    if isinstance(driver, RtuMeter):
        return driver.bus.name
    if isinstance(driver, ModbusTcpMeter):
        return driver.connection.name
    if isinstance(driver, Iec62056Meter):
        return driver.line.device
    if isinstance(driver, DsmrMeter):
        return driver.port.device
    if isinstance(driver, DlmsMeter):
        return driver.description
    return "?"


def _kinds(exc: Exception | None) -> set[str]:
    if isinstance(exc, RtuReadError):
        return set(exc.kinds)
    if isinstance(exc, IecReadError):
        return {exc.kind}
    if exc is None:
        return set()
    text = str(exc)
    if "cannot connect" in text or "cannot open" in text:
        return {"port"}
    if "no answer within" in text:
        return {"silent"}
    if "exception response" in text:
        return {"exception"}
    return {"other"}


def _failure_hint(t: _Tried, bus: list[_Tried], silent: list[_Tried]) -> str:
    """What to look at on site, from what the read got (and what the bus's others got)."""
    exc = t.error
    if isinstance(t.driver, DlmsMeter):
        return _read_hint(t.text, t.driver)
    kinds = _kinds(exc)
    if isinstance(exc, IecReadError):
        return _IEC_HINTS.get(exc.kind, _IEC_HINTS["bad"])
    if isinstance(t.driver, DsmrMeter):
        if "carry no M-Bus channel" in t.text:
            return "the P1 port works but has no device on this channel: check channel"
        if "bad telegram" in t.text:
            return (
                "telegrams arrive damaged: check version (its baud rate and parity: DSMR 4/5 "
                "115200 8N1, 2.2/3 9600 7E1) and the P1 cable"
            )
        return (
            "no telegram: check the P1 cable (RJ12) and that the meter's P1 port is enabled "
            '(data request line at 5 V); DSMR 2.2/3 need version = "2.2"/"3" (9600 7E1)'
        )
    if "port" in kinds:
        return (
            "cannot open the port / connect: check the device path (or host and port), "
            "permissions (group dialout) and that no other program holds the port"
        )
    if kinds & {"crc", "truncated", "garbage", "malformed"}:
        return (
            "replies arrive damaged (bad CRC / cut short): baud rate, parity or stop bits "
            "differ from the meter's, or the RS-485 line needs termination (120 ohm at both "
            "ends) and biasing; also check A/B and the shield"
        )
    if "wrong-unit" in kinds:
        return "another unit answered: two meters share this unit id; give each its own"
    if "exception" in kinds:
        code = ""
        if exc is not None and "exception response" in str(exc):
            code = str(exc).split("exception response", 1)[1].split(")", 1)[0] + ")"
        return (
            f"the meter answers with exception{code}: the register map (profile) does not "
            "fit this meter; run `meterlink agent scan modbus` to identify it"
        )
    if kinds == {"silent"}:
        others_ok = any(o.ok for o in bus if o is not t)
        if others_ok:
            return (
                "no reply from this unit only, while others on the bus answer: check its "
                "unit id (address) and that it is powered and wired to the bus"
            )
        if len(silent) > 1 or len(bus) == 1:
            return (
                "no reply at all on this bus: check wiring (A/B swapped?), the adapter, and "
                "baud rate / parity (a meter ignores frames at the wrong setting)"
            )
    return "run `meterlink agent scan` for this bus to see what answers"


_IEC_HINTS = {
    "silent": (
        "no identification: check the optical head's position and cable, and the device "
        "address (with several meters on a line each answers only to its own)"
    ),
    "switch": (
        "the meter identified itself but sent nothing after the baud switch: set max_baud "
        "lower (e.g. 4800); the head or the line may not manage the meter's highest rate"
    ),
    "data": "the data message stopped: check the head's position (ambient light) and cable",
    "bad": (
        "a damaged message (BCC, parity or format): check the head's position, the cable, "
        "and that the port runs 7E1"
    ),
    "port": "cannot open the serial port: check the device path and permissions",
}


def _table(rows: list[_Tried]) -> str:
    head = ("meter", "bus", "result", "values", "time", "hint")
    body = [
        (
            t.meter_id,
            t.bus,
            ("SUSPECT" if t.suspect else "partial" if t.partial else "ok") if t.ok else "FAILED",
            str(t.values),
            f"{t.seconds:.2f}s",
            t.hint,
        )
        for t in rows
    ]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(5)]
    lines = []
    for row in [head, *body]:
        cells = [row[i].ljust(widths[i]) for i in range(5)]
        lines.append(("  ".join(cells) + "  " + row[5]).rstrip())
    return "\n".join(lines)


def _read_hint(text: str, meter: DlmsMeter | None) -> str:
    if "secrets file" in text:
        return (
            "fix the secrets file named above: mode 0600, and a [meters.ID] table with this "
            "meter's password (lls) or authentication_key and encryption_key (hls-gmac)"
        )
    if "HLS authentication failed" in text:
        return (
            "the meter and the gateway do not share keys: check authentication_key and "
            "encryption_key in the secrets file, client_address (management is 1) and "
            "system_title"
        )
    if "no UA to SNRM" in text or "mode E sign-on" in text:
        return (
            "no HDLC answer: check physical_address (often 17, or derived from the serial "
            "number), server_address, the baud rate and mode_e, and the line or optical head"
        )
    if "association refused" in text:
        if "authentication" in text or (meter is not None and meter.settings.client_address != 16):
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
    state = _read_clocks(config.gateway.state_dir / STATE_FILE)
    if state:
        summary["agent"] = state
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
        print(
            f"oldest unacknowledged reading: seq {s['oldest_seq']} captured "
            f"{_ts(s['oldest_captured_ms'])}"
        )
    else:
        print("oldest unacknowledged reading: none (every reading is acknowledged)")
    if s["oldest_unsent_seq"] is not None:
        print(
            f"oldest never sent: seq {s['oldest_unsent_seq']} captured "
            f"{_ts(s['oldest_unsent_captured_ms'])}"
        )
    print("meters:")
    for m in s["meters"]:  # type: ignore[attr-defined]
        line = (
            f"  {m['meter_id']}: {m['records']} records, {m['readings']} readings, "
            f"{m['read_errors']} errors, {m['skipped_slots']} skipped slots, last good read "
            f"{_ts(m['last_capture_ms'])}"
        )
        if m["last_error"]:
            line += f"; last error {_ts(m['last_error_ms'])}: {m['last_error']}"
        print(line)
    if state:
        _print_state(state)
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


def _print_state(state: dict[str, object]) -> None:
    """The running agent's broker connection and buses (agent-state.json)."""
    at = state.get("t_ms")
    age_s = (time.time_ns() // 10**6 - at) / 1000 if isinstance(at, int) else None
    broker = state.get("broker")
    if isinstance(broker, dict):
        where = f"{broker.get('host')}:{broker.get('port')}"
        if state.get("stopped") or age_s is None or age_s > 10:
            print(f"agent: not running (last state {_ts(at)}); broker {where}")
        else:
            link = "connected" if broker.get("connected") else "DISCONNECTED"
            print(f"broker {where}: {link} (agent state {age_s:.0f}s old)")
    buses = state.get("buses")
    if not isinstance(buses, list) or not buses:
        return
    print("buses (cycle = real time to poll the bus's due meters once; period = the slot):")
    for bus in buses:
        if not isinstance(bus, dict):
            continue
        cycle, period = bus.get("last_cycle_s"), bus.get("period_s")
        text = f"  {bus.get('name')}: {len(bus.get('meters') or [])} meter(s)"
        if isinstance(cycle, int | float) and isinstance(period, int | float) and period:
            keeps = "keeps its period" if cycle <= period else "CANNOT keep its period"
            text += (
                f", cycle {cycle:.3f}s (max {bus.get('max_cycle_s', 0):.3f}s) of "
                f"{period:g}s: {keeps}"
            )
        if isinstance(bus.get("utilisation"), int | float):
            text += f", utilisation {bus['utilisation'] * 100:.1f}%"
        if bus.get("overruns"):
            text += f", {bus['overruns']} overrun(s), {bus.get('skipped_slots', 0)} slot(s) skipped"
        extra = [
            f"{key.replace('_', ' ')} {bus[key]}"
            for key in ("requests", "silent", "bad_frames", "exceptions", "stray", "telegrams",
                        "bad_telegrams", "readouts", "failures")
            if key in bus
        ]  # fmt: skip
        if extra:
            text += f" ({', '.join(extra)})"
        print(text)


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
    if args.scan_command == "modbus":
        return _scan_modbus(args)
    if args.scan_command == "iec62056":
        return _scan_iec62056(args)
    return _scan_dlms(args)


def _scan_modbus(args: argparse.Namespace) -> int:
    problems = []
    try:
        units = parse_units(args.units)
    except ValueError as exc:
        problems.append(str(exc))
        units = []
    tcp_port = 0
    if args.host:
        try:
            tcp_port = int(args.port)
        except ValueError:
            tcp_port = 0
        if not 1 <= tcp_port <= 65535:
            problems.append(f"--port with --host is a TCP port 1..65535, got {args.port!r}")
    elif args.baud not in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200):
        problems.append(f"--baud {args.baud}: one of 1200 .. 115200")
    if not 0 < args.timeout <= 60:
        problems.append(f"--timeout must be > 0 and <= 60 seconds, got {args.timeout:g}")
    profiles = load_known_profiles(args.profiles) if args.profiles else load_known_profiles()
    if not profiles:
        problems.append("no device profiles found to identify units with")
    if problems:
        for text in problems:
            _err(text)
        return 2
    if args.host:
        tcp = ModbusTcpConnection(args.host, tcp_port)
        where = f"modbus tcp {args.host}:{tcp_port}"
        reader, closer = tcp.read, tcp.close
    else:
        bus = RtuBus(SerialSettings(args.port, args.baud, 8, args.parity, args.stopbits))
        where = f"modbus rtu {bus.name}"
        reader, closer = bus.read, bus.close
    tty = sys.stderr.isatty()

    def progress(done: int, unit: int, found: list[FoundUnit]) -> None:
        if done == len(units):
            text = f"scanned {len(units)} unit id(s): {len(found)} answered"
        else:
            text = f"unit {unit} ({done + 1}/{len(units)}), {len(found)} found"
        if tty:
            print(f"\r{text:<60}", end="" if done < len(units) else "\n", file=sys.stderr)
        elif done == len(units) or done % 10 == 0:
            print(text, file=sys.stderr, flush=True)

    async def run() -> list[FoundUnit]:
        try:
            return await scan_units(reader, units, profiles, args.timeout, progress)
        finally:
            await closer()

    print(f"scanning {where}, unit ids {args.units}, {args.timeout:g}s per probe", file=sys.stderr)
    try:
        found = asyncio.run(run())
    except ConnectionError as exc:
        _err(f"scan failed: {exc}")
        _err(
            "hint: check the device path (or host and port), permissions (group dialout) "
            "and that no other program (an agent) holds the port"
        )
        return 1
    if not found:
        print(f"no unit answered on {where}")
        print(
            "hint: check wiring (A/B), baud rate and parity (try --parity N, --baud 19200), "
            "and termination",
            file=sys.stderr,
        )
        return 1
    print(f"{len(found)} unit(s) answered on {where}:")
    for f in found:
        name = f.profile.name if f.profile is not None else "unknown (no known profile fits)"
        also = f" (also fits: {', '.join(f.also)})" if f.also else ""
        print(f"  unit {f.unit}: {name}{also}")
        for profile_name, got in f.probes.items():
            print(f"    probe {profile_name}: {got}")
    print()
    print("# ready to paste into the agent's config:")
    for f in found:
        print(_modbus_section(args, tcp_port, f))
    return 0


def _modbus_section(args: argparse.Namespace, tcp_port: int, f: FoundUnit) -> str:
    lines = ["[[meters]]", f'id = "unit-{f.unit}"  # the meter\'s id: change it']
    if args.host:
        lines += ['driver = "modbus-tcp"', f'host = "{args.host}"', f"port = {tcp_port}"]
    else:
        device = os.path.abspath(args.port)  # the config resolves relative paths from its folder
        lines += ['driver = "modbus-rtu"', f'port = "{device}"', f"baud = {args.baud}"]
        lines += [f'parity = "{args.parity}"', f"stopbits = {args.stopbits}"]
    lines.append(f"unit = {f.unit}")
    if f.profile is not None:
        lines.append(f'profile = "{f.profile.name}"')
    else:
        lines.append('profile = "?"  # no shipped profile fits: write one (docs/agent.md)')
        lines = [f"# {line}" for line in lines]
    lines.append('interval = "15m"')
    if f.profile is None:
        lines[-1] = "# " + lines[-1]
    return "\n".join(lines) + "\n"


def _scan_iec62056(args: argparse.Namespace) -> int:
    problems = []
    if args.max_baud not in (300, 600, 1200, 2400, 4800, 9600, 19200):
        problems.append(f"--max-baud {args.max_baud}: one of 300 .. 19200")
    if not 0 < args.timeout <= 60:
        problems.append(f"--timeout must be > 0 and <= 60 seconds, got {args.timeout:g}")
    if problems:
        for text in problems:
            _err(text)
        return 2
    line = IecLine(args.port)

    async def run() -> tuple[object, object, int]:
        try:
            await line.port.open()
            return await readout(line.port, args.address, args.max_baud, args.timeout)
        finally:
            await line.close()

    print(f"signing on at {args.port} (300 baud 7E1), address {args.address!r}", file=sys.stderr)
    try:
        ident, block, baud = asyncio.run(run())
    except (IecReadError, ConnectionError, DecodeError) as exc:
        _err(f"scan failed: {exc}")
        kind = exc.kind if isinstance(exc, IecReadError) else "port"
        if isinstance(exc, DecodeError):
            kind = "bad"
        _err(f"hint: {_IEC_HINTS[kind]}")
        return 1
    assert isinstance(ident, iec62056_21.Identification)
    assert isinstance(block, iec62056_21.DataBlock)
    print(
        f"identification: manufacturer {ident.manufacturer}, mode {ident.protocol_mode}, "
        f"highest rate {ident.baud} baud, ident {ident.ident!r}; read at {baud} baud"
    )
    taken = iec62056_21.readings(block.datasets)
    by_line = {(r.line, r.obis): r for r in taken.values}
    print(f"{len(block.datasets)} data set(s):")
    for ds in block.datasets:
        unit = f"*{ds.unit}" if ds.unit else ""
        extra = "".join(f"({e})" for e in ds.extra)
        note = ""
        try:
            code = iec62056_21.obis_of(ds.address)
        except iec62056_21.Iec62056Error:
            code = None
        if code is not None and (ds.line, code) in by_line:
            r = by_line[(ds.line, code)]
            note = f"  -> {r.obis} = {r.value} {r.unit}"
        print(f"  {ds.address}({ds.value}{unit}){extra}{note}")
    for problem in taken.problems:
        print(f"  problem: {problem}")
    print()
    print("# ready to paste into the agent's config:")
    lines = [
        "[[meters]]",
        f'id = "{args.id or ident.ident or "iec-1"}"',
        'driver = "iec62056"',
        f'serial = "{os.path.abspath(args.port)}"',
    ]
    if args.address:
        lines.append(f'address = "{args.address}"')
    if baud < ident.baud or args.max_baud != 19200:
        lines.append(f"max_baud = {min(args.max_baud, ident.baud)}")
    lines.append('interval = "15m"')
    print("\n".join(lines))
    return 0


def _scan_dlms(args: argparse.Namespace) -> int:
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

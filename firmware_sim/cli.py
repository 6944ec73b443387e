"""``meterlink sim ...``: run simulated meters.

    sim modbus (--port P | --rtu PTY-LINK [--baud 9600] [--parity E] [--stop-bits 1] [--no-pace])
               --profile NAME [--host H] [--units 1,2,3] [--speed X] [--start ISO]
               [--clock SETTING] [--seed N] [--meter-prefix TEXT] [--origin ISO]
               [--fault UNIT:KIND[:ARG]]...
    sim iec62056 --pty-link PATH [--address A]... [--meter-id ID] [--baud 9600]
               [--clock-offset S] [--fault KIND[:ARG]] [clock flags as above]
    sim dsmr --pty-link PATH [--version 2.2|3|4|5|fluvius] [--meter-id ID] [--gas] [--water]
               [--every SECONDS] [--fault KIND[:ARG]] [clock flags as above]
    sim dlms (--port P | --transport hdlc --pty-link PATH [--mode-e]) [--host H]
             [--speed X | --clock SETTING] [--start ISO] [--seed N]
             [--meter-id ID] [--server-address N] [--clock-offset SECONDS] [--deviation MIN]
             [--transport wrapper|hdlc] [--physical-address N]
             [--auth none|lls|hls] [--password TEXT] [--keys FILE] [--profile-period 15m]
    sim run SCENARIO.toml [--clock SETTING] [--pty-dir DIR]

Once every server listens, one line per server goes to stdout (flushed)::

    READY modbus 127.0.0.1:PORT profile=NAME units=1,2,3 meters=ID1,ID2,ID3
    READY dlms 127.0.0.1:PORT transport=wrapper auth=none meters=ID
    READY dlms pty:PATH transport=hdlc server=1/17 device=/dev/pts/N auth=none meters=ID
    READY rtu pty:PATH profile=NAME units=1,2 meters=ID1,ID2 device=/dev/pts/N baud=9600 ...
    READY iec62056 pty:PATH meters=ID addresses=- baud=9600 device=/dev/pts/N
    READY dsmr pty:PATH version=5 meters=E,G every=1 device=/dev/pts/N

DLMS meters and the serial simulators also take control lines on stdin (``[NAME] COMMAND
ARGS``: ``clock-offset SECONDS`` for DLMS, ``fault ...`` for the serial lines, see
``firmware_sim.serial``), one answer line each on stdout: the rig's "command".

SIGTERM or SIGINT stops the servers; the exit status is then 0. Bad arguments, scenario
errors and a port that cannot be bound (in use) exit 2 with one line naming the problem.
See docs/simulator.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from protocols.clock import ClockSetting, ClockSettingError, parse_utc
from protocols.modbus import ModbusProfileError, Profile, load_profile
from protocols.tomltext import TomlTextError, loads_exact

from .dlms import DlmsMeterState, DlmsSimOptions, DlmsSimServer
from .dlms.options import AUTH_LEVELS, TRANSPORTS
from .faults import Fault, FaultSpecError, parse_fault, parse_unit_fault
from .modbus_server import ListenError, ModbusSimServer
from .model import BUCKET_NS, MeterModel, ModelParams
from .pty import PtyError
from .serial import SerialSim
from .serial.setup import (
    add_serial_parsers,
    dsmr_from_args,
    iec_from_args,
    load_serial_tables,
    rtu_from_args,
)

__all__ = ["PROFILE_DIR", "ScenarioError", "load_scenario", "main", "resolve_profile"]

PROFILE_DIR = Path(__file__).resolve().parents[1] / "config" / "profiles"
NS_PER_S = 1_000_000_000


class ScenarioError(ValueError):
    """A scenario file or command line that cannot be run."""


def resolve_profile(name: str) -> Profile:
    """A profile by name (``config/profiles/NAME.toml``) or by path to a TOML file."""
    candidate = Path(name)
    if candidate.suffix == ".toml" or candidate.is_file():
        return load_profile(candidate)
    path = PROFILE_DIR / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILE_DIR.glob("*.toml")))
        raise ScenarioError(f"unknown profile {name!r} (known: {known}; or give a .toml path)")
    return load_profile(path)


def make_clock(
    clock: str | None, speed: str | None, start: str | None, now_ns: int
) -> ClockSetting:
    """``--clock`` wins; else ``--speed``/``--start`` anchored at now; else the system clock."""
    if clock is not None:
        return ClockSetting.parse(clock)
    if speed is None and start is None:
        return ClockSetting.system()
    try:
        rate = Decimal(speed) if speed is not None else Decimal(1)
    except InvalidOperation:
        raise ScenarioError(f"speed {speed!r} is not a decimal number") from None
    begin = (
        parse_utc(start) if start is not None else datetime.fromtimestamp(now_ns // NS_PER_S, UTC)
    )
    return ClockSetting.accelerated(begin, now_ns, rate)


def default_origin(clock: ClockSetting, now_ns: int) -> int:
    """Where the registers hold their initial values: the virtual start of the clock, or
    midnight UTC of today for the system clock."""
    if clock.start_ns is not None:
        return clock.start_ns
    day = 86_400 * NS_PER_S
    return now_ns // day * day


@dataclass(frozen=True, slots=True)
class ServerSpec:
    host: str
    port: int
    profile: Profile
    meters: dict[int, MeterModel]
    faults: dict[int, Fault] = field(default_factory=dict)
    seed: int = 0


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, float):
        raise ScenarioError(f"{where}: write decimals as strings or plain numbers")
    try:
        return Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation:
        raise ScenarioError(f"{where}: not a decimal number: {value!r}") from None


_UNIT_KEYS = {
    "unit",
    "meter",
    "kind",
    "base_load_w",
    "pv_peak_w",
    "initial_import_kwh",
    "initial_export_kwh",
    "initial_import_kvarh",
    "initial_export_kvarh",
    "seed",
    "fault",
}


def _params(entry: dict[str, Any], where: str) -> ModelParams:
    kwargs: dict[str, Any] = {}
    for key in ("kind",):
        if key in entry:
            kwargs[key] = entry[key]
    for key in ("base_load_w", "pv_peak_w"):
        if key in entry:
            if not isinstance(entry[key], int) or isinstance(entry[key], bool):
                raise ScenarioError(f"{where}.{key}: must be an integer (watts)")
            kwargs[key] = entry[key]
    for key in (
        "initial_import_kwh",
        "initial_export_kwh",
        "initial_import_kvarh",
        "initial_export_kvarh",
    ):
        if key in entry:
            kwargs[key] = _decimal(entry[key], f"{where}.{key}")
    try:
        return ModelParams(**kwargs)
    except ValueError as exc:
        raise ScenarioError(f"{where}: {exc}") from None


def load_scenario(
    path: Path, clock_override: str | None, now_ns: int
) -> tuple[ClockSetting, list[ServerSpec]]:
    """Read a scenario file (format in docs/simulator.md)."""
    try:
        data = loads_exact(path.read_text(encoding="utf-8"))
    except (OSError, TomlTextError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    clock_table = data.get("clock", {})
    if isinstance(clock_table, str):
        clock_table = {"setting": clock_table}
    try:
        clock = make_clock(
            clock_override or clock_table.get("setting"),
            None if clock_table.get("speed") is None else str(clock_table["speed"]),
            clock_table.get("start"),
            now_ns,
        )
    except ClockSettingError as exc:
        raise ScenarioError(f"{path}: clock: {exc}") from None
    origin = default_origin(clock, now_ns)
    if "origin" in data:
        origin = _to_ns(parse_utc(str(data["origin"])))
    seed = data.get("seed", 0)
    host = data.get("host", "127.0.0.1")
    servers = []
    for i, server in enumerate(data.get("servers", [])):
        where = f"{path}: servers[{i}]"
        if "profile" not in server:
            raise ScenarioError(f"{where}: missing profile")
        profile = resolve_profile(server["profile"])
        port = server.get("port", 0)
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ScenarioError(f"{where}: port must be 0..65535")
        if port == 0 and any("meter" not in u for u in server.get("units", [])):
            port = free_port(server.get("host", host))  # default meter ids name the port
        meters: dict[int, MeterModel] = {}
        faults: dict[int, Fault] = {}
        for j, entry in enumerate(server.get("units", [])):
            uwhere = f"{where}.units[{j}]"
            unknown = set(entry) - _UNIT_KEYS
            if unknown:
                raise ScenarioError(f"{uwhere}: unknown keys {', '.join(sorted(unknown))}")
            unit = entry.get("unit", j + 1)
            if unit in meters:
                raise ScenarioError(f"{uwhere}: unit {unit} used twice")
            if not isinstance(unit, int) or isinstance(unit, bool) or not 1 <= unit <= 247:
                raise ScenarioError(f"{uwhere}.unit: must be an integer 1..247, got {unit!r}")
            if "fault" in entry:
                if not isinstance(entry["fault"], str):
                    raise ScenarioError(f"{uwhere}.fault: expected a string like 'garbage'")
                try:
                    faults[unit] = parse_fault(entry["fault"])
                except FaultSpecError as exc:
                    raise ScenarioError(f"{uwhere}.fault: {exc}") from None
            meter_id = entry.get("meter") or f"sim-{port}-{unit}"
            meters[unit] = MeterModel(
                meter_id, entry.get("seed", seed), _params(entry, uwhere), origin_ns=origin
            )
        if not meters:
            raise ScenarioError(f"{where}: no [[servers.units]]")
        servers.append(
            ServerSpec(server.get("host", host), port, profile, meters, faults, seed=seed)
        )
    if not servers and not any(data.get(k) for k in ("dlms", "rtu", "iec62056", "dsmr")):
        raise ScenarioError(f"{path}: no [[servers]], [[dlms]], [[rtu]], [[iec62056]], [[dsmr]]")
    return clock, servers


_DLMS_KEYS = _UNIT_KEYS - {"unit", "fault"} | {
    "host",
    "port",
    "server_address",
    "clock_offset_s",
    "deviation",
    "transport",
    "pty_link",
    "mode_e",
    "physical_address",
    "auth",
    "password",
    "keys",
    "profile_period",
}


def dlms_options(
    where: str,
    *,
    transport: str = "wrapper",
    pty_link: str | None = None,
    mode_e: bool = False,
    server_address: int = 1,
    physical_address: int = 17,
    auth: str = "none",
    password: str = "",
    keys: str | None = None,
    base: Path = Path(),
) -> DlmsSimOptions:
    """Checked options of one simulated DLMS meter (flags or a ``[[dlms]]`` table); errors
    name the flag (``where`` = "--") or the table key."""

    def k(key: str) -> str:
        return f"--{key.replace('_', '-')}" if where == "--" else f"{where}{key}"

    if transport not in TRANSPORTS:
        raise ScenarioError(f"{k('transport')} {transport!r}: one of {', '.join(TRANSPORTS)}")
    if auth not in AUTH_LEVELS:
        raise ScenarioError(f"{k('auth')} {auth!r}: one of {', '.join(AUTH_LEVELS)}")
    if pty_link and transport != "hdlc":
        raise ScenarioError(f"{k('pty_link')}: a serial pty needs transport hdlc")
    if mode_e and not pty_link:
        raise ScenarioError(f"{k('mode_e')}: the mode E start is for a serial pty (pty_link)")
    if not 0 <= server_address <= 0x3FFF:
        raise ScenarioError(f"{k('server_address')} {server_address}: must be 0..16383")
    if not 0 <= physical_address <= 0x3FFF:
        raise ScenarioError(f"{k('physical_address')} {physical_address}: must be 0..16383")
    if auth == "lls" and not password:
        raise ScenarioError(f"{k('auth')} lls needs a password")
    if auth == "hls" and not keys:
        raise ScenarioError(f"{k('auth')} hls needs a keys file")
    return DlmsSimOptions(
        transport=transport,
        pty_link=Path(base, pty_link) if pty_link else None,
        mode_e=mode_e,
        server_address=server_address,
        physical_address=physical_address,
        auth=auth,
        password=password.encode(),
        keys=Path(base, keys) if keys else None,
    )


def load_dlms_scenario(path: Path, clock: ClockSetting, now_ns: int) -> list[DlmsSimServer]:
    """The ``[[dlms]]`` tables of a scenario: one simulated DLMS meter (TCP wrapper) each."""
    try:
        data = loads_exact(path.read_text(encoding="utf-8"))
    except (OSError, TomlTextError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    origin = default_origin(clock, now_ns)
    if "origin" in data:
        origin = _to_ns(parse_utc(str(data["origin"])))
    origin -= origin % BUCKET_NS
    host = data.get("host", "127.0.0.1")
    servers = []
    for i, entry in enumerate(data.get("dlms", [])):
        where = f"{path}: dlms[{i}]"
        unknown = set(entry) - _DLMS_KEYS
        if unknown:
            raise ScenarioError(f"{where}: unknown keys {', '.join(sorted(unknown))}")
        for key in ("port", "server_address", "physical_address", "deviation"):
            if key in entry and (type(entry[key]) is not int):
                raise ScenarioError(f"{where}.{key}: must be an integer")
        for key in ("transport", "pty_link", "auth", "password", "keys", "profile_period"):
            if key in entry and not isinstance(entry[key], str):
                raise ScenarioError(f"{where}.{key}: must be a string")
        options = dlms_options(
            f"{where}: ",
            transport=entry.get("transport", "wrapper"),
            pty_link=entry.get("pty_link"),
            mode_e=entry.get("mode_e", False) is True,
            server_address=entry.get("server_address", 1),
            physical_address=entry.get("physical_address", 17),
            auth=entry.get("auth", "none"),
            password=entry.get("password", ""),
            keys=entry.get("keys"),
            base=path.resolve().parent,
        )
        server_host = entry.get("host", host)
        port = entry.get("port", 0) or free_port(server_host)
        meter_id = entry.get("meter") or f"sim-dlms-{port}"
        model = MeterModel(
            meter_id,
            entry.get("seed", data.get("seed", 0)),
            _params(entry, where),
            origin_ns=origin,
        )
        offset = _decimal(entry.get("clock_offset_s", 0), f"{where}.clock_offset_s")
        period = _period_s(entry.get("profile_period", "15m"), f"{where}.profile_period")
        state = DlmsMeterState(
            model, clock, int(offset * 1000), entry.get("deviation", 0), profile_period_s=period
        )
        servers.append(DlmsSimServer(state, server_host, port, options))
    return servers


def load_serial_scenario(
    path: Path, clock: ClockSetting, now_ns: int, pty_dir: Path | None = None
) -> list[SerialSim]:
    """The ``[[rtu]]``, ``[[iec62056]]`` and ``[[dsmr]]`` tables of a scenario."""
    try:
        data = loads_exact(path.read_text(encoding="utf-8"))
    except (OSError, TomlTextError) as exc:
        raise ScenarioError(f"{path}: {exc}") from None
    origin = default_origin(clock, now_ns)
    if "origin" in data:
        origin = _to_ns(parse_utc(str(data["origin"])))
    origin -= origin % BUCKET_NS
    return list(
        load_serial_tables(
            data,
            path,
            clock,
            origin,
            params=_params,
            resolve_profile=resolve_profile,
            pty_dir=pty_dir,
        )
    )


def _period_s(text: str, where: str) -> int:
    """``"15m"``, ``"1h"``, ``"60s"``: a profile capture period in whole seconds that
    divides a day."""
    units = {"s": 1, "m": 60, "h": 3600}
    try:
        seconds = int(text[:-1]) * units[text[-1:]]
    except (KeyError, ValueError):
        raise ScenarioError(f"{where}: expected e.g. '15m', '1h', '60s', got {text!r}") from None
    if seconds <= 0 or 86400 % seconds:
        raise ScenarioError(f"{where}: {text!r} must divide a day")
    return seconds


WARM_UP_LIMIT_NS = 62 * 86_400 * NS_PER_S  # two months of one-minute buckets


def free_port(host: str) -> int:
    """A port that was free a moment ago (for names that must carry the port)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _to_ns(value: datetime) -> int:
    return int((value - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * NS_PER_S


async def _serve(
    clock: ClockSetting,
    specs: Sequence[ServerSpec],
    dlms: Sequence[DlmsSimServer] = (),
    serial: Sequence[SerialSim] = (),
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    servers: list[ModbusSimServer] = []
    started_serial: list[SerialSim] = []
    try:
        for spec in specs:
            server = ModbusSimServer(
                spec.profile,
                spec.meters,
                clock,
                host=spec.host,
                port=spec.port,
                faults=spec.faults,
                seed=spec.seed,
            )
            await server.start()
            servers.append(server)
        started_dlms: list[DlmsSimServer] = []
        for dlms_server in dlms:
            await dlms_server.start()
            started_dlms.append(dlms_server)
        for sim in serial:
            await sim.start()
            started_serial.append(sim)
        # Warm every model up to "now" before saying READY: the first request must not pay
        # for computing the registers' history (at high clock speeds that costs slots).
        # Bounded: a clock set years away from the registers' origin is warmed on demand.
        now = clock.virtual_ns(time.time_ns())
        models = [m for spec in specs for m in spec.meters.values()]
        models += [d.meter.model for d in dlms]
        models += [m for sim in serial for m in sim.models()]
        for model in models:
            if abs(now - model.origin_bucket * BUCKET_NS) <= WARM_UP_LIMIT_NS:
                model.values_at(now)
        print(f"clock {clock}", file=sys.stderr, flush=True)
        for server in servers:
            print(server.ready_line(), flush=True)
        for dlms_server in started_dlms:
            print(dlms_server.ready_line(), flush=True)
        for sim in started_serial:
            print(sim.ready_line(), flush=True)
        control = None
        if dlms or serial:
            devices = [{d.meter.model.meter_id: d.meter.command} for d in dlms]
            devices += [sim.targets() for sim in serial]
            control = asyncio.create_task(_control_loop(devices))
        await stop.wait()
        if control is not None:
            control.cancel()
    finally:
        for server in servers:
            await server.stop()
        for dlms_server in dlms:
            await dlms_server.stop()
        for sim in started_serial:
            await sim.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    return 0


Command = Callable[[list[str]], str]


async def _control_loop(devices: Sequence[dict[str, Command]]) -> None:
    """Control lines on stdin: ``[NAME] COMMAND ARGS...``; NAME is a meter id, or the
    pty link of a serial line; it may be left out when there is one device (one DLMS meter,
    one RTU bus, one P1 port, one IEC line); the answer goes to stdout. EOF ends the loop
    (not the servers). stdin is read by a daemon thread: a blocked read never holds up the
    shutdown."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def reader() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, "")

    threading.Thread(target=reader, name="sim-control", daemon=True).start()
    by_id = {name: command for device in devices for name, command in device.items()}
    # one device: its first name (the DLMS meter, the bus, the port, a one-meter line)
    default = next(iter(devices[0].values())) if len(devices) == 1 and devices[0] else None
    while line := await lines.get():
        words = line.split()
        if not words:
            continue
        target = by_id.get(words[0])
        if target is not None:
            words = words[1:]
        elif default is not None:
            target = default
        if target is None:
            print(f"ERROR name the meter first: one of {', '.join(by_id)}", flush=True)
            continue
        try:
            print(target(words), flush=True)
        except Exception as exc:  # a control line never stops the simulator
            print(f"ERROR {type(exc).__name__}: {exc}", flush=True)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="meterlink sim", description="simulated meters")
    sub = parser.add_subparsers(dest="command", required=True)
    mb = sub.add_parser("modbus", help="one Modbus TCP server, or an RTU bus on a pty (--rtu)")
    mb.add_argument("--port", type=int, help="TCP port (0: any free port)")
    mb.add_argument("--rtu", metavar="PTY-LINK", help="Modbus RTU on a pty: symlink PATH to it")
    mb.add_argument("--baud", type=int, default=9600, help="--rtu: line speed (9600)")
    mb.add_argument("--parity", default="E", help="--rtu: N, E (default) or O")
    mb.add_argument("--stop-bits", type=int, default=1, help="--rtu: 1 (default) or 2")
    mb.add_argument(
        "--no-pace",
        action="store_true",
        help="--rtu: answer after the 3.5-character silence only, not the answer's wire time",
    )
    mb.add_argument("--profile", required=True, help="profile name or path to a .toml")
    mb.add_argument("--host", default="127.0.0.1")
    mb.add_argument("--units", default="1", help="unit ids, e.g. 1,2,3")
    mb.add_argument("--speed", help="virtual seconds per real second")
    mb.add_argument("--start", help="virtual start, ISO 8601 (default: now)")
    mb.add_argument("--clock", help="full clock setting START@ANCHORxSPEED (wins)")
    mb.add_argument("--origin", help="virtual instant of the initial registers (ISO 8601)")
    mb.add_argument("--seed", type=int, default=0)
    mb.add_argument("--meter-prefix", default="sim")
    mb.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="UNIT:KIND[:ARG]",
        help="make a unit misbehave (repeatable). TCP: garbage, slow:SECONDS[,SECONDS...], "
        "wrong-unit[:UNIT], silent, mid-frame, exception:CODE; --rtu: silent, late:MS, corrupt, "
        "truncated, wrong-unit[:UNIT], exception:CODE, garbage (docs/simulator.md, "
        "docs/serial.md)",
    )
    dl = sub.add_parser("dlms", help="one DLMS/COSEM meter (TCP wrapper or HDLC)")
    dl.add_argument("--port", type=int, help="TCP port (0: any free port; not with --pty-link)")
    dl.add_argument("--host", default="127.0.0.1")
    dl.add_argument("--speed", help="virtual seconds per real second")
    dl.add_argument("--start", help="virtual start, ISO 8601 (default: now)")
    dl.add_argument("--clock", help="full clock setting START@ANCHORxSPEED (wins)")
    dl.add_argument("--origin", help="virtual instant of the initial registers (ISO 8601)")
    dl.add_argument("--seed", type=int, default=0)
    dl.add_argument("--meter-id", help="meter id (default: sim-dlms-PORT)")
    dl.add_argument("--server-address", type=int, default=1, help="server wPort (default 1)")
    dl.add_argument(
        "--clock-offset", default="0", help="meter clock minus true time, seconds (drift)"
    )
    dl.add_argument(
        "--deviation", type=int, default=0, help="minutes, UTC = local + deviation (CET: -60)"
    )
    dl.add_argument("--transport", default="wrapper", help="wrapper (default) or hdlc")
    dl.add_argument("--pty-link", help="hdlc on a serial pty: make a symlink PATH to it")
    dl.add_argument("--mode-e", action="store_true", help="pty: IEC 62056-21 mode E start")
    dl.add_argument("--physical-address", type=int, default=17, help="HDLC lower address")
    dl.add_argument("--auth", default="none", help="none (default), lls or hls")
    dl.add_argument("--password", default="", help="the LLS secret")
    dl.add_argument("--keys", help="HLS: TOML file with the keys (mode 0600)")
    dl.add_argument("--profile-period", default="15m", help="load profile capture period")
    add_serial_parsers(sub)
    run = sub.add_parser("run", help="a fleet of servers from a scenario file")
    run.add_argument("scenario", type=Path)
    run.add_argument("--clock", help="clock setting overriding the scenario's")
    run.add_argument(
        "--pty-dir", type=Path, help="where relative pty_link paths of serial tables go"
    )
    return parser


def _dlms_from_args(
    args: argparse.Namespace, now_ns: int
) -> tuple[ClockSetting, list[ServerSpec], list[DlmsSimServer]]:
    clock = make_clock(args.clock, args.speed, args.start, now_ns)
    origin = _to_ns(parse_utc(args.origin)) if args.origin else default_origin(clock, now_ns)
    origin -= origin % BUCKET_NS
    if args.port is None and not args.pty_link:
        raise ScenarioError("--port is required (or --pty-link for hdlc on a serial pty)")
    if args.port is not None and not 0 <= args.port <= 65535:
        raise ScenarioError(f"--port {args.port}: must be 0..65535")
    if not -720 <= args.deviation <= 720:
        raise ScenarioError(f"--deviation {args.deviation}: must be -720..720 minutes")
    options = dlms_options(
        "--",
        transport=args.transport,
        pty_link=args.pty_link,
        mode_e=args.mode_e,
        server_address=args.server_address,
        physical_address=args.physical_address,
        auth=args.auth,
        password=args.password,
        keys=args.keys,
    )
    offset = _decimal(args.clock_offset, "--clock-offset")
    period = _period_s(args.profile_period, "--profile-period")
    port = 0 if args.pty_link else args.port or free_port(args.host)
    default_id = f"sim-dlms-{Path(args.pty_link).name}" if args.pty_link else f"sim-dlms-{port}"
    model = MeterModel(args.meter_id or default_id, args.seed, origin_ns=origin)
    state = DlmsMeterState(
        model, clock, int(offset * 1000), args.deviation, profile_period_s=period
    )
    return clock, [], [DlmsSimServer(state, args.host, port, options)]


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    now_ns = time.time_ns()
    try:
        if args.command == "modbus":
            clock = make_clock(args.clock, args.speed, args.start, now_ns)
            origin = (
                _to_ns(parse_utc(args.origin)) if args.origin else default_origin(clock, now_ns)
            )
            origin -= origin % BUCKET_NS
            try:
                units = sorted({int(u) for u in args.units.split(",") if u.strip()})
            except ValueError:
                raise ScenarioError(f"--units {args.units!r}: expected e.g. 1,2,3") from None
            if args.rtu:
                if args.port is not None:
                    raise ScenarioError("--port and --rtu: a server is TCP or RTU, not both")
                profile = resolve_profile(args.profile)
                bus = rtu_from_args(args, profile, units, clock, origin)
                return asyncio.run(_serve(clock, [], (), [bus]))
            if args.port is None:
                raise ScenarioError("--port is required (or --rtu PTY-LINK for Modbus RTU)")
            faults = dict(parse_unit_fault(text) for text in args.fault)
            for unit in faults:
                if unit not in units:
                    raise ScenarioError(f"--fault: unit {unit} is not in --units {args.units}")
            if not 0 <= args.port <= 65535:
                raise ScenarioError(f"--port {args.port}: must be 0..65535")
            port = args.port or free_port(args.host)  # meter ids name the real port
            meters = {
                u: MeterModel(f"{args.meter_prefix}-{port}-{u}", args.seed, origin_ns=origin)
                for u in units
            }
            spec = ServerSpec(
                args.host, port, resolve_profile(args.profile), meters, faults, args.seed
            )
            return asyncio.run(_serve(clock, [spec]))
        if args.command == "dlms":
            return asyncio.run(_serve(*_dlms_from_args(args, now_ns)))
        if args.command in ("iec62056", "dsmr"):
            clock = make_clock(args.clock, args.speed, args.start, now_ns)
            origin = (
                _to_ns(parse_utc(args.origin)) if args.origin else default_origin(clock, now_ns)
            )
            origin -= origin % BUCKET_NS
            make = iec_from_args if args.command == "iec62056" else dsmr_from_args
            return asyncio.run(_serve(clock, [], (), [make(args, clock, origin)]))
        clock, specs = load_scenario(args.scenario, args.clock, now_ns)
        dlms = load_dlms_scenario(args.scenario, clock, now_ns)
        serial = load_serial_scenario(args.scenario, clock, now_ns, args.pty_dir)
        return asyncio.run(_serve(clock, specs, dlms, serial))
    except (ScenarioError, ModbusProfileError, ClockSettingError, ValueError) as exc:
        print(f"sim: error: {exc}", file=sys.stderr)
        return 2
    except ListenError as exc:  # a port in use is an argument problem, not a crash
        print(f"sim: error: {exc.strerror}", file=sys.stderr)
        return 2
    except PtyError as exc:  # a pty link that cannot be made: an argument problem too
        print(f"sim: error: {exc.strerror}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:  # pymodbus: RuntimeError when it cannot listen
        print(f"sim: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C before the handler is installed
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        return 0

"""Serial simulators from command-line flags and scenario tables (used by ``firmware_sim.cli``).

``sim modbus --rtu``, ``sim iec62056``, ``sim dsmr`` and the scenario tables ``[[rtu]]``
(with ``[[rtu.units]]``), ``[[iec62056]]`` (one meter, or ``[[iec62056.meters]]`` for several
on one line) and ``[[dsmr]]``. Errors are :class:`SerialSetupError` naming the flag or the
table and key; the CLI prints them and exits 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from protocols.clock import ClockSetting, ClockSettingError, parse_utc, utc_ms
from protocols.errors import EncodeError
from protocols.modbus import ModbusProfileError, Profile
from protocols.modbus.rtu import SerialLine

from ..model import MeterModel, ModelParams
from .dsmr import VERSIONS, P1Port
from .faults import DSMR_KINDS, IEC_KINDS, RTU_KINDS, FaultState, LineFaultError, parse_line_fault
from .iec62056 import IecLine, IecMeter
from .rtu import RtuBus, RtuUnit, parse_unit_faults

__all__ = [
    "DSMR_ALIASES",
    "SerialSetupError",
    "add_serial_parsers",
    "dsmr_from_args",
    "iec_from_args",
    "load_serial_tables",
    "rtu_from_args",
]

#: version names accepted for ``--version`` / ``version =`` -> the table key
DSMR_ALIASES = {v: v for v in ("2.2", "3", "4", "5", "fluvius")} | {"e-mucs": "fluvius"}
BAUDS = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
GAS_PARAMS = ModelParams(kind="household", base_load_w=1200, initial_import_kwh=Decimal("12345.67"))
WATER_PARAMS = ModelParams(kind="water", base_load_w=600, initial_import_kwh=Decimal("12345.6"))
#: the water model counts m3 as kWh / 100, so a flow of 1 l/h is a load of 100 W
W_PER_LPH = 100

ParamsFn = Callable[[dict[str, Any], str], ModelParams]


class SerialSetupError(ValueError):
    """A flag or scenario table of a serial simulator that cannot be run."""


def _line(baud: Any, parity: Any, stop_bits: Any, where: str) -> SerialLine:
    if baud not in BAUDS:
        raise SerialSetupError(f"{where}baud {baud!r}: one of {', '.join(map(str, BAUDS))}")
    try:
        return SerialLine(int(baud), parity=str(parity), stop_bits=int(stop_bits))
    except (EncodeError, ValueError) as exc:
        raise SerialSetupError(f"{where}{exc}") from None


def _fault(text: Any, kinds: frozenset[str], where: str) -> FaultState:
    if not isinstance(text, str):
        raise SerialSetupError(f"{where}fault: expected a string like 'silent'")
    try:
        return FaultState(parse_line_fault(text, kinds))
    except LineFaultError as exc:
        raise SerialSetupError(f"{where}fault: {exc}") from None


def _decimal(value: Any, where: str) -> Decimal:
    if isinstance(value, (float, bool)):
        raise SerialSetupError(f"{where}: write decimals as strings or plain integers")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise SerialSetupError(f"{where}: not a decimal number: {value!r}") from None


def _leak(lph: Any, start: Any, where: str) -> dict[str, Any]:
    """``leak_lph`` / ``--leak-lph`` (litres per hour, exact, 0.01 l/h steps) and the virtual
    instant it starts (ISO 8601; None: from the beginning) as ``ModelParams`` fields."""
    if lph is None:
        if start is not None:
            raise SerialSetupError(f"{where}leak_from: needs leak_lph")
        return {}
    rate = _decimal(lph, f"{where}leak_lph")
    watts = rate * W_PER_LPH
    if rate < 0 or watts != watts.to_integral_value():
        raise SerialSetupError(f"{where}leak_lph {lph!r}: >= 0, in steps of 0.01 l/h")
    out: dict[str, Any] = {"leak_w": int(watts)}
    if start is not None:
        try:
            out["leak_from_ns"] = utc_ms(parse_utc(str(start))) * 1_000_000
        except (ClockSettingError, ValueError) as exc:
            raise SerialSetupError(f"{where}leak_from {start!r}: {exc}") from None
    return out


def _dsmr_version(text: str, where: str) -> str:
    if text not in DSMR_ALIASES:
        raise SerialSetupError(f"{where}version {text!r}: one of {', '.join(DSMR_ALIASES)}")
    return DSMR_ALIASES[text]


# -- command line ------------------------------------------------------------------------


def _clock_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--speed", help="virtual seconds per real second")
    parser.add_argument("--start", help="virtual start, ISO 8601 (default: now)")
    parser.add_argument("--clock", help="full clock setting START@ANCHORxSPEED (wins)")
    parser.add_argument("--origin", help="virtual instant of the initial registers (ISO 8601)")
    parser.add_argument("--seed", type=int, default=0)


def add_serial_parsers(sub: Any) -> None:
    """``sim iec62056`` and ``sim dsmr`` (``sim modbus --rtu`` extends the modbus parser)."""
    iec = sub.add_parser("iec62056", help="IEC 62056-21 mode C meters on a serial pty")
    iec.add_argument("--pty-link", required=True, help="make a symlink PATH to the pty")
    iec.add_argument(
        "--address",
        action="append",
        default=[],
        help="device address; repeat for several meters on the line (default: none)",
    )
    iec.add_argument("--meter-id", help="meter id (one meter; default sim-iec-LINKNAME)")
    iec.add_argument("--baud", type=int, default=9600, help="highest rate offered (9600)")
    iec.add_argument("--clock-offset", default="0", help="meter clock minus true time, s")
    iec.add_argument("--fault", help="silent, late:MS, corrupt or truncated")
    _clock_flags(iec)
    p1 = sub.add_parser("dsmr", help="a DSMR P1 port on a serial pty")
    p1.add_argument("--pty-link", required=True, help="make a symlink PATH to the pty")
    p1.add_argument("--version", default="5", help=f"{', '.join(DSMR_ALIASES)} (default 5)")
    p1.add_argument("--meter-id", help="electricity meter id (default sim-p1-LINKNAME)")
    p1.add_argument("--gas", action="store_true", help="a gas meter on M-Bus channel 1")
    p1.add_argument("--water", action="store_true", help="a water meter on M-Bus channel 2")
    p1.add_argument("--leak-lph", help="the water meter leaks this many litres per hour")
    p1.add_argument("--leak-from", metavar="ISO", help="virtual instant the leak starts")
    p1.add_argument("--every", help="real seconds between telegrams (default 1 or 10)")
    p1.add_argument("--fault", help="silent, late:MS, corrupt, truncated or garbage")
    _clock_flags(p1)


def rtu_from_args(
    args: argparse.Namespace, profile: Profile, units: list[int], clock: ClockSetting, origin: int
) -> RtuBus:
    line = _line(args.baud, args.parity, args.stop_bits, "--")
    link = Path(args.rtu)
    try:
        faults = parse_unit_faults(args.fault, dict.fromkeys(units))
    except ValueError as exc:
        raise SerialSetupError(str(exc)) from None
    members = [
        RtuUnit(
            u,
            profile,
            MeterModel(f"{args.meter_prefix}-{link.name}-{u}", args.seed, origin_ns=origin),
            FaultState(faults[u]) if u in faults else FaultState(),
        )
        for u in units
    ]
    return RtuBus(link, members, clock, line=line, seed=args.seed, pace=not args.no_pace)


def iec_from_args(args: argparse.Namespace, clock: ClockSetting, origin: int) -> IecLine:
    link = Path(args.pty_link)
    addresses = args.address or [""]
    if args.meter_id and len(addresses) > 1:
        raise SerialSetupError("--meter-id names one meter; with several --address ids are made")
    offset = int(_decimal(args.clock_offset, "--clock-offset") * 1000)
    fault = _fault(args.fault, IEC_KINDS, "--") if args.fault else None
    meters = []
    for address in addresses:
        default = f"sim-iec-{link.name}" + (f"-{address}" if len(addresses) > 1 else "")
        model = MeterModel(args.meter_id or default, args.seed, origin_ns=origin)
        meters.append(_iec_meter(model, address, args.baud, offset, fault, "--"))
    return _iec_line(link, meters, clock, "--")


def _iec_meter(
    model: MeterModel, address: str, baud: Any, offset_ms: int, fault: FaultState | None, where: str
) -> IecMeter:
    if baud not in (300, 600, 1200, 2400, 4800, 9600, 19200):
        raise SerialSetupError(f"{where}baud {baud!r}: 300..19200 (mode C)")
    try:
        return IecMeter(
            model, address, baud=baud, clock_offset_ms=offset_ms, faults=fault or FaultState()
        )
    except ValueError as exc:
        raise SerialSetupError(f"{where}{exc}") from None


def _iec_line(link: Path, meters: list[IecMeter], clock: ClockSetting, where: str) -> IecLine:
    try:
        return IecLine(link, meters, clock)
    except ValueError as exc:
        raise SerialSetupError(f"{where}{exc}") from None


def dsmr_from_args(args: argparse.Namespace, clock: ClockSetting, origin: int) -> P1Port:
    link = Path(args.pty_link)
    version = VERSIONS[_dsmr_version(args.version, "--")]
    meter_id = args.meter_id or f"sim-p1-{link.name}"
    every = _decimal(args.every, "--every") if args.every is not None else None
    if every is not None and every <= 0:
        raise SerialSetupError(f"--every {args.every}: must be > 0 seconds")
    fault = _fault(args.fault, DSMR_KINDS, "--").fault if args.fault else None
    leak = _leak(getattr(args, "leak_lph", None), getattr(args, "leak_from", None), "--")
    if leak and not args.water:
        raise SerialSetupError("--leak-lph: needs --water (the leak is the water meter's)")
    water_params = replace(WATER_PARAMS, **leak)
    return P1Port(
        link,
        version,
        MeterModel(meter_id, args.seed, origin_ns=origin),
        clock,
        gas=MeterModel(f"{meter_id}-gas", args.seed, GAS_PARAMS, origin_ns=origin)
        if args.gas
        else None,
        water=MeterModel(f"{meter_id}-water", args.seed, water_params, origin_ns=origin)
        if args.water
        else None,
        every_s=every,
        fault=fault,
        seed=args.seed,
    )


# -- scenario tables ---------------------------------------------------------------------

MODEL_KEYS = {
    "kind", "base_load_w", "pv_peak_w", "initial_import_kwh", "initial_export_kwh",
    "initial_import_kvarh", "initial_export_kvarh", "seed",
}  # fmt: skip
_RTU_KEYS = {"pty_link", "baud", "parity", "stop_bits", "profile", "units", "seed", "pace"}
_RTU_UNIT_KEYS = MODEL_KEYS | {"unit", "meter", "profile", "fault"}
_IEC_KEYS = {"pty_link", "meters"}
_IEC_METER_KEYS = MODEL_KEYS | {"meter", "address", "baud", "clock_offset_s", "fault"}
_DSMR_KEYS = MODEL_KEYS | {
    "pty_link", "version", "meter", "gas", "water", "every", "fault",
    "initial_gas_m3", "initial_water_m3", "leak_lph", "leak_from",
}  # fmt: skip


def _check_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise SerialSetupError(f"{where}: unknown keys {', '.join(sorted(unknown))}")


def _link(table: dict[str, Any], base: Path, where: str) -> Path:
    link = table.get("pty_link")
    if not isinstance(link, str) or not link:
        raise SerialSetupError(f"{where}.pty_link: required, the path of the pty's symlink")
    return base / link


def _model_params(entry: dict[str, Any], where: str, params: ParamsFn) -> ModelParams:
    return params({k: v for k, v in entry.items() if k in MODEL_KEYS - {"seed"}}, where)


def load_serial_tables(
    data: dict[str, Any],
    path: Path,
    clock: ClockSetting,
    origin: int,
    *,
    params: ParamsFn,
    resolve_profile: Callable[[str], Profile],
    pty_dir: Path | None = None,
) -> list[RtuBus | IecLine | P1Port]:
    """The ``[[rtu]]``, ``[[iec62056]]`` and ``[[dsmr]]`` tables of a scenario. A relative
    ``pty_link`` is taken from ``pty_dir`` (``sim run --pty-dir``), else from the scenario's
    directory."""
    base = pty_dir or path.resolve().parent
    seed = data.get("seed", 0)
    sims: list[RtuBus | IecLine | P1Port] = []
    for i, bus in enumerate(data.get("rtu", [])):
        where = f"{path}: rtu[{i}]"
        _check_keys(bus, _RTU_KEYS, where)
        link = _link(bus, base, where)
        line = _line(
            bus.get("baud", 9600), bus.get("parity", "E"), bus.get("stop_bits", 1), f"{where}: "
        )
        bus_seed = bus.get("seed", seed)
        members = []
        for j, entry in enumerate(bus.get("units", [])):
            uwhere = f"{where}.units[{j}]"
            _check_keys(entry, _RTU_UNIT_KEYS, uwhere)
            unit = entry.get("unit", j + 1)
            if type(unit) is not int or not 1 <= unit <= 247:
                raise SerialSetupError(f"{uwhere}.unit: must be an integer 1..247, got {unit!r}")
            name = entry.get("profile", bus.get("profile"))
            if not isinstance(name, str):
                raise SerialSetupError(f"{uwhere}: no profile (give it here or on the bus)")
            try:
                profile = resolve_profile(name)
            except (ModbusProfileError, ValueError) as exc:
                raise SerialSetupError(f"{uwhere}.profile: {exc}") from None
            meter_id = entry.get("meter") or f"sim-{link.name}-{unit}"
            model = MeterModel(
                meter_id,
                entry.get("seed", bus_seed),
                _model_params(entry, uwhere, params),
                origin_ns=origin,
            )
            fault = _fault(entry["fault"], RTU_KINDS, f"{uwhere}.") if "fault" in entry else None
            members.append(RtuUnit(unit, profile, model, fault or FaultState()))
        if not members:
            raise SerialSetupError(f"{where}: no [[rtu.units]]")
        try:
            pace = bus.get("pace", True)
            if not isinstance(pace, bool):
                raise SerialSetupError(f"{where}.pace: true or false")
            sims.append(RtuBus(link, members, clock, line=line, seed=bus_seed, pace=pace))
        except ValueError as exc:
            raise SerialSetupError(f"{where}: {exc}") from None
    for i, table in enumerate(data.get("iec62056", [])):
        where = f"{path}: iec62056[{i}]"
        entries = table.get("meters")
        if entries is None:
            _check_keys(table, _IEC_KEYS | _IEC_METER_KEYS, where)
            entries = [{k: v for k, v in table.items() if k != "pty_link"}]
        else:
            _check_keys(table, _IEC_KEYS, where)
        link = _link(table, base, where)
        meters = []
        for j, entry in enumerate(entries):
            mwhere = f"{where}.meters[{j}]" if "meters" in table else where
            _check_keys(entry, _IEC_METER_KEYS, mwhere)
            address = entry.get("address", "")
            meter_id = entry.get("meter") or f"sim-iec-{link.name}" + (
                f"-{address}" if len(entries) > 1 else ""
            )
            model = MeterModel(
                meter_id,
                entry.get("seed", seed),
                _model_params(entry, mwhere, params),
                origin_ns=origin,
            )
            offset = _decimal(entry.get("clock_offset_s", 0), f"{mwhere}.clock_offset_s")
            fault = _fault(entry["fault"], IEC_KINDS, f"{mwhere}.") if "fault" in entry else None
            meters.append(
                _iec_meter(
                    model,
                    str(address),
                    entry.get("baud", 9600),
                    int(offset * 1000),
                    fault,
                    f"{mwhere}: ",
                )
            )
        sims.append(_iec_line(link, meters, clock, f"{where}: "))
    for i, table in enumerate(data.get("dsmr", [])):
        where = f"{path}: dsmr[{i}]"
        _check_keys(table, _DSMR_KEYS, where)
        link = _link(table, base, where)
        version = VERSIONS[_dsmr_version(str(table.get("version", "5")), f"{where}: ")]
        meter_id = table.get("meter") or f"sim-p1-{link.name}"
        mseed = table.get("seed", seed)
        model = MeterModel(meter_id, mseed, _model_params(table, where, params), origin_ns=origin)
        gas = water = None
        leak = _leak(table.get("leak_lph"), table.get("leak_from"), f"{where}.")
        if leak and table.get("water", False) is not True:
            raise SerialSetupError(f"{where}.leak_lph: needs water = true")
        if table.get("gas", False) is True:
            m3 = _decimal(table.get("initial_gas_m3", "1234.567"), f"{where}.initial_gas_m3")
            gas = MeterModel(
                f"{meter_id}-gas",
                mseed,
                ModelParams(base_load_w=1200, initial_import_kwh=m3 * 10),
                origin_ns=origin,
            )
        if table.get("water", False) is True:
            m3 = _decimal(table.get("initial_water_m3", "123.456"), f"{where}.initial_water_m3")
            water = MeterModel(
                f"{meter_id}-water",
                mseed,
                ModelParams(kind="water", initial_import_kwh=m3 * 100, **leak),
                origin_ns=origin,
            )
        every = _decimal(table["every"], f"{where}.every") if "every" in table else None
        if every is not None and every <= 0:
            raise SerialSetupError(f"{where}.every: must be > 0 seconds")
        fault = _fault(table["fault"], DSMR_KINDS, f"{where}.").fault if "fault" in table else None
        sims.append(
            P1Port(
                link,
                version,
                model,
                clock,
                gas=gas,
                water=water,
                every_s=every,
                fault=fault,
                seed=mseed,
            )
        )
    links = [str(s.pty.link) for s in sims]
    for link_text in links:
        if links.count(link_text) > 1:
            raise SerialSetupError(f"{path}: pty_link {link_text} used twice")
    return sims

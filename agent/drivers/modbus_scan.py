"""``agent scan modbus``: which unit ids answer on a bus (RTU) or behind a gateway (TCP), and
which shipped device profile each one is.

A unit is present when it answers a probe at all (a register answer or an exception
response); a unit that stays silent for one time-out is absent, and so is one for which a
TCP gateway answers exception 10 or 11 (path unavailable, target failed to respond).

The profile is found by probing: for each known profile (``config/profiles/*.toml``) its
distinguishing registers are read (the supply frequency ``1-0:14.7.0`` and the phase 1
voltage ``1-0:32.7.0``, at the addresses, types, word orders and scales of that profile)
and the profile fits when every one answers with a plausible value (45..65 Hz, 0 or
80..300 V). Two profiles with the same addresses and types would both fit: the first (by
name) is taken and the others are named.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from protocols.modbus import ModbusError, Profile, ReadRequest, load_profile
from protocols.modbus.plan import Point
from protocols.obis import Obis

from .modbus_rtu import RtuLineError
from .modbus_tcp import ModbusExceptionResponse

__all__ = ["PROFILES_DIR", "FoundUnit", "load_known_profiles", "parse_units", "scan_units"]

PROFILES_DIR = Path(__file__).resolve().parents[2] / "config" / "profiles"
FREQUENCY = Obis.parse("1-0:14.7.0")
VOLTAGE = Obis.parse("1-0:32.7.0")
#: OBIS -> plausible (low, high) ranges of a probed value
PLAUSIBLE: dict[Obis, tuple[tuple[Decimal, Decimal], ...]] = {
    FREQUENCY: ((Decimal(45), Decimal(65)),),
    VOLTAGE: ((Decimal(0), Decimal(0)), (Decimal(80), Decimal(300))),
}

#: exception codes of a Modbus TCP gateway for a unit id with no device behind it
GATEWAY_NO_DEVICE = (10, 11)

Reader = Callable[[ReadRequest, int, float], Awaitable[list[int]]]


@dataclass(slots=True)
class FoundUnit:
    unit: int
    profile: Profile | None = None
    also: list[str] = field(default_factory=list)  # other profiles that fit as well
    probes: dict[str, str] = field(default_factory=dict)  # profile -> what its probe got


def parse_units(text: str) -> list[int]:
    """``1-247``, ``1,2,5-9`` -> unit ids (1..247); ValueError with the bad part."""
    units: list[int] = []
    for part in text.split(","):
        part = part.strip()
        low, dash, high = part.partition("-")
        try:
            first = int(low)
            last = int(high) if dash else first
        except ValueError:
            raise ValueError(f"--units {text!r}: {part!r} is not N or N-M") from None
        if not 1 <= first <= last <= 247:
            raise ValueError(f"--units {text!r}: {part!r} must be within 1..247, low to high")
        units.extend(u for u in range(first, last + 1) if u not in units)
    return units


def load_known_profiles(directory: Path = PROFILES_DIR) -> list[Profile]:
    profiles = []
    for path in sorted(directory.glob("*.toml")):
        try:
            profiles.append(load_profile(path))
        except (ModbusError, OSError):
            continue  # a broken profile file is `agent check`'s business, not the scan's
    return profiles


def _probes(profile: Profile) -> list[tuple[Obis, ReadRequest]]:
    out = []
    for obis in (FREQUENCY, VOLTAGE):
        try:
            spec = profile.register(obis)
        except KeyError:
            continue
        point = Point(spec.function, spec.address, spec.count, obis)
        out.append((obis, ReadRequest(spec.function, spec.address, spec.count, (point,))))
    return out


def _plausible(obis: Obis, value: Decimal) -> bool:
    return any(low <= value <= high for low, high in PLAUSIBLE[obis])


async def probe_unit(
    read: Reader, unit: int, profiles: list[Profile], timeout: float
) -> FoundUnit | None:
    """None when the unit does not answer the first probe at all."""
    found = FoundUnit(unit)
    present = False
    fits: list[Profile] = []
    for profile in profiles:
        ok = True
        notes = []
        for obis, request in _probes(profile):
            try:
                registers = await read(request, unit, timeout)
            except TimeoutError:
                if not present:
                    return None  # silent: nobody at this address
                ok = False
                notes.append(f"{obis}: no answer")
                break
            except ModbusExceptionResponse as exc:
                if exc.code in GATEWAY_NO_DEVICE and not present:
                    return None  # a TCP gateway saying nobody is at this unit id
                present = True
                ok = False
                notes.append(f"{obis}: {exc}")
                break
            except (RtuLineError, ModbusError) as exc:
                present = True  # something answered, damaged
                ok = False
                notes.append(f"{obis}: {exc}")
                break
            present = True
            value = profile.register(obis).decode(registers)
            notes.append(f"{obis}={value}")
            if not _plausible(obis, value):
                ok = False
                break
        found.probes[profile.name] = ", ".join(notes) or "no distinguishing register"
        if ok and notes:
            fits.append(profile)
    if not present:
        return None
    if fits:
        found.profile = fits[0]
        found.also = [p.name for p in fits[1:]]
    return found


async def scan_units(
    read: Reader,
    units: list[int],
    profiles: list[Profile],
    timeout: float,
    progress: Callable[[int, int, list[FoundUnit]], None] | None = None,
) -> list[FoundUnit]:
    found: list[FoundUnit] = []
    for index, unit in enumerate(units):
        if progress is not None:
            progress(index, unit, found)
        result = await probe_unit(read, unit, profiles, timeout)
        if result is not None:
            found.append(result)
        await asyncio.sleep(0)
    if progress is not None:
        progress(len(units), 0, found)
    return found

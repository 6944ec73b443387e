"""The Clock object (class 8, 0.0.1.0.0.255) of the simulated meter, and the control
commands that make its clock wrong.

The meter's clock is the model's virtual time plus ``clock_offset_ms`` plus the drift
gained since ``drift_from_ns`` at ``drift_ppm`` (``DlmsMeterState.meter_clock_ms``), shown
as local time at ``deviation`` minutes (UTC = local + deviation).

* GET: attribute 2 time (octet-string of 12), 3 time_zone (long), 4 status (unsigned).
* SET (the session decides who may: the public client only reads): attribute 2 takes a
  date-time (12 bytes, every field of an instant specified; a "not specified" deviation
  means the meter's own; a specified status replaces the meter's status bits) and moves
  the meter's clock there: the offset is recomputed, the drift keeps its rate from the
  new time on, ``clock_adjusted_ms`` records the meter's time after the adjustment (the
  load profile marks its entry "clock adjusted"). Attribute 3 takes a long -720..720 (or
  -32768 "not specified" is refused). Anything else: type-unmatched or read-write-denied.
* stdin commands: ``clock-offset SECONDS`` (the meter's clock minus the true time, from
  now on), ``drift-ppm N`` (the clock gains N microseconds per second of virtual time from
  now on; negative: it loses), ``clock-status BITS`` (the status byte: ``0x08``, ``8``
  or ``0b1000``).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING

from protocols.dlms import DlmsDecodeError, DlmsEncodeError
from protocols.dlms.apdu import AccessResult
from protocols.dlms.axdr import Data, Tag
from protocols.dlms.cosem import CosemDateTime
from protocols.obis import Obis

from .objects import COMMANDS
from .plain import PlainObject

if TYPE_CHECKING:
    from .objects import DlmsMeterState

__all__ = ["CLASS_CLOCK", "OBIS_CLOCK", "ClockObject", "set_meter_clock"]

CLASS_CLOCK = 8
OBIS_CLOCK = Obis(0, 0, 1, 0, 0, 255)
MAX_DRIFT_PPM = 10**6  # one second per second: beyond that it is not a clock


@dataclass(frozen=True, slots=True)
class ClockObject(PlainObject):
    obis: Obis = OBIS_CLOCK
    class_id: int = CLASS_CLOCK
    version: int = 0

    def read(self, meter: DlmsMeterState, attribute: int) -> Data | AccessResult:
        if attribute == 2:
            stamp = CosemDateTime.from_unix_ms(
                meter.meter_clock_ms(meter.virtual_ns()), meter.deviation, meter.clock_status
            )
            return Data.octet_string(stamp.to_bytes())
        if attribute == 3:
            return Data(Tag.LONG, meter.deviation)
        if attribute == 4:
            return Data(Tag.UNSIGNED, meter.clock_status)
        return AccessResult.OBJECT_UNAVAILABLE

    def set(self, meter: DlmsMeterState, attribute: int, value: Data) -> AccessResult:
        if attribute == 2:
            return _set_time(meter, value)
        if attribute == 3:
            if value.tag is not Tag.LONG or not -720 <= value.integer <= 720:
                return AccessResult.TYPE_UNMATCHED
            meter.deviation = value.integer
            return AccessResult.SUCCESS
        return AccessResult.READ_WRITE_DENIED


def _set_time(meter: DlmsMeterState, value: Data) -> AccessResult:
    try:
        stamp = CosemDateTime.from_data(value)
        new_ms = stamp.to_unix_ms(meter.deviation)
        CosemDateTime.from_unix_ms(new_ms, meter.deviation)  # the meter can show it
    except (DlmsDecodeError, DlmsEncodeError):
        meter.errors += 1
        return AccessResult.TYPE_UNMATCHED
    set_meter_clock(meter, new_ms)
    if stamp.status is not None:
        meter.clock_status = stamp.status
    meter.clock_adjusted_ms = new_ms
    return AccessResult.SUCCESS


def set_meter_clock(meter: DlmsMeterState, meter_ms: int, drift_ppm: int | None = None) -> None:
    """From now on the meter's clock shows ``meter_ms`` and then runs at ``drift_ppm``
    (default: its present rate)."""
    now = meter.virtual_ns()
    meter.clock_offset_ms = meter_ms - now // 1_000_000
    meter.drift_from_ns = now
    if drift_ppm is not None:
        meter.drift_ppm = drift_ppm


def _now_ms(meter: DlmsMeterState) -> int:
    return meter.meter_clock_ms(meter.virtual_ns())


def _clock_offset(meter: DlmsMeterState, args: list[str]) -> str:
    """``clock-offset SECONDS``: the meter's clock minus the true time, from now on."""
    try:
        (text,) = args
        offset_ms = int(Decimal(text) * 1000)
    except (ValueError, ArithmeticError):
        return f"ERROR clock-offset: expected one number of seconds, got {args!r}"
    set_meter_clock(meter, meter.virtual_ns() // 1_000_000 + offset_ms)
    return f"OK clock-offset {offset_ms / 1000:g}"


def _drift_ppm(meter: DlmsMeterState, args: list[str]) -> str:
    """``drift-ppm N``: the clock gains N µs per second of virtual time from now on."""
    try:
        (text,) = args
        ppm = int(text)
    except ValueError:
        return f"ERROR drift-ppm: expected one integer (ppm), got {args!r}"
    if abs(ppm) > MAX_DRIFT_PPM:
        return f"ERROR drift-ppm: {ppm} is beyond +/-{MAX_DRIFT_PPM}"
    set_meter_clock(meter, _now_ms(meter), ppm)
    return f"OK drift-ppm {ppm}"


def _clock_status(meter: DlmsMeterState, args: list[str]) -> str:
    """``clock-status BITS``: the clock's status byte (e.g. 0x08 invalid-status, 0x01
    invalid value, 0x02 doubtful, 0x80 daylight saving active)."""
    try:
        (text,) = args
        bits = int(text, 0)
    except (ValueError, InvalidOperation):
        return f"ERROR clock-status: expected one byte like 0x08, got {args!r}"
    if not 0 <= bits <= 0xFF:
        return f"ERROR clock-status: {bits} is not a byte"
    meter.clock_status = bits
    return f"OK clock-status 0x{bits:02x}"


COMMANDS["clock-offset"] = _clock_offset
COMMANDS["drift-ppm"] = _drift_ppm
COMMANDS["clock-status"] = _clock_status

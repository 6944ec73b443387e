"""The simulated meter's load profile: Profile Generic (class 7, version 1) 1.0.99.1.0.255
and the AMR profile status Data object 0.0.96.10.1.255.

Capture objects (attribute 3): the Clock's time (0.0.1.0.0.255 attribute 2), the AMR
profile status (0.0.96.10.1.255 attribute 2, unsigned), and the energy registers 1.8.0,
2.8.0, 3.8.0, 4.8.0 (attribute 2, double-long-unsigned, the registers' own scaler_unit).

An entry is captured at every multiple of the capture period on the meter's clock (the
model's virtual time plus ``clock_offset_ms``); its register values are the model's at the
true instant the meter's clock showed that time, with the same integer rounding as the
registers (``register_integer``). An entry, once computed, is kept (a later clock-offset
does not rewrite history); the buffer holds the newest ``PROFILE_ENTRIES`` capture
instants (60 days at 15 minutes), the oldest fall out.

A power outage (control command ``outage START END``, meter-clock times) removes the
entries whose capture instant falls in ``[START, END)`` and sets the power-down bit (0x80)
on every entry whose period ``(T - period, T]`` overlaps it: the first entry after the
outage. The registers keep answering (the outage is of the metering, as the profile shows
it). Daylight saving (clock status 0x80) sets the status's DST bit (0x08); a clock SET
(``clock_adjusted_ms``) sets clock-adjusted (0x20) on the entry whose period holds it.

Selective access on the buffer: by range (selector 1, restricting object the clock column,
from/to both included, selected columns) and by entry (selector 2); without one, the whole
buffer.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from protocols.dlms import DlmsDecodeError
from protocols.dlms.apdu import AccessResult
from protocols.dlms.axdr import Data, Tag
from protocols.dlms.cosem import STATUS_DST, CosemDateTime
from protocols.dlms.profile import (
    AMR_CLOCK_ADJUSTED,
    AMR_DST,
    AMR_POWER_DOWN,
    CLASS_PROFILE_GENERIC,
    CaptureObject,
    EntryDescriptor,
    RangeDescriptor,
    encode_capture_objects,
    parse_access,
)
from protocols.obis import Obis

from .clock import CLASS_CLOCK, OBIS_CLOCK
from .objects import CLASS_DATA, CLASS_REGISTER, COMMANDS, DLMS_OBJECTS, register_integer
from .plain import PlainObject

if TYPE_CHECKING:
    from .objects import DlmsMeterState

__all__ = [
    "OBIS_AMR_STATUS",
    "OBIS_LOAD_PROFILE",
    "PROFILE_ENTRIES",
    "AmrStatusObject",
    "LoadProfileObject",
    "profile_objects",
]

OBIS_LOAD_PROFILE = Obis(1, 0, 99, 1, 0, 255)
OBIS_AMR_STATUS = Obis(0, 0, 96, 10, 1, 255)
PROFILE_ENTRIES = 60 * 96  # 60 days of 15-minute entries
_ENERGY = tuple(Obis.parse(code) for code in ("1.8.0", "2.8.0", "3.8.0", "4.8.0"))
_COLUMNS = (
    CaptureObject(CLASS_CLOCK, OBIS_CLOCK, 2),
    CaptureObject(CLASS_DATA, OBIS_AMR_STATUS, 2),
    *(CaptureObject(CLASS_REGISTER, obis, 2) for obis in _ENERGY),
)
_SORT_FIFO = 1


class LoadProfileObject:
    """1.0.99.1.0.255: entries computed on demand from the model and kept once computed."""

    class_id = CLASS_PROFILE_GENERIC
    version = 1

    def __init__(self, obis: Obis = OBIS_LOAD_PROFILE, depth: int = PROFILE_ENTRIES) -> None:
        self.obis = obis
        self.depth = depth
        self.columns = _COLUMNS
        #: capture instant (meter clock, Unix ms) -> register integers of _ENERGY
        self._kept: dict[int, tuple[int, ...]] = {}
        #: power outages on the meter's clock, [start_ms, end_ms)
        self.outages: list[tuple[int, int]] = []
        self.rows_sent = 0

    # -- the entries ----------------------------------------------------------------------
    def period_ms(self, meter: DlmsMeterState) -> int:
        return max(int(meter.profile_period_s), 1) * 1000

    def window(self, meter: DlmsMeterState) -> tuple[int, int, int]:
        """(first, last, period) capture instants the buffer can hold now (meter clock)."""
        period = self.period_ms(meter)
        now = meter.meter_clock_ms(meter.virtual_ns())
        last = now // period * period
        return last - (self.depth - 1) * period, last, period

    def instants(self, meter: DlmsMeterState, start_ms: int, end_ms: int) -> list[int]:
        """Capture instants in ``[start_ms, end_ms]`` that hold an entry, oldest first."""
        first, last, period = self.window(meter)
        low = max(first, -(-start_ms // period) * period)
        high = min(last, end_ms // period * period)
        if high < low:
            return []
        return [t for t in range(low, high + 1, period) if not self._off(t)]

    def _off(self, t: int) -> bool:
        return any(start <= t < end for start, end in self.outages)

    def status(self, meter: DlmsMeterState, t: int) -> int:
        period = self.period_ms(meter)
        status = 0
        if any(start <= t and end > t - period for start, end in self.outages):
            status |= AMR_POWER_DOWN
        if meter.clock_status & STATUS_DST:
            status |= AMR_DST
        adjusted = getattr(meter, "clock_adjusted_ms", None)  # set by a clock SET
        if adjusted is not None and t - period < adjusted <= t:
            status |= AMR_CLOCK_ADJUSTED
        return status

    def registers_at(self, meter: DlmsMeterState, t: int) -> tuple[int, ...]:
        kept = self._kept.get(t)
        if kept is None:
            # the true instant the meter's clock showed t: offset, then the drift (one step)
            true_ns = (t - meter.clock_offset_ms) * 1_000_000
            true_ns -= (meter.meter_clock_ms(true_ns) - t) * 1_000_000
            mwh = meter.model.energies_mwh(true_ns)
            kept = tuple(
                register_integer(DLMS_OBJECTS[obis], Decimal(value).scaleb(-6))
                for obis, value in zip(_ENERGY, mwh, strict=True)
            )
            if len(self._kept) >= 2 * self.depth:
                first = self.window(meter)[0]
                self._kept = {k: v for k, v in self._kept.items() if k >= first}
            self._kept[t] = kept
        return kept

    def row(self, meter: DlmsMeterState, t: int) -> tuple[Data, ...]:
        stamp = CosemDateTime.from_unix_ms(t, meter.deviation, meter.clock_status)
        return (
            Data.octet_string(stamp.to_bytes()),
            Data(Tag.UNSIGNED, self.status(meter, t)),
            *(Data(Tag.DOUBLE_LONG_UNSIGNED, v) for v in self.registers_at(meter, t)),
        )

    def latest_status(self, meter: DlmsMeterState) -> int:
        first, last, _ = self.window(meter)
        found = self.instants(meter, first, last)
        return self.status(meter, found[-1]) if found else 0

    # -- COSEM ----------------------------------------------------------------------------
    def get(
        self, meter: DlmsMeterState, attribute: int, selector: Data | None
    ) -> Data | AccessResult:
        if selector is not None and attribute != 2:
            return AccessResult.OTHER_REASON
        if attribute == 2:
            return self._buffer(meter, selector)
        if attribute == 3:
            return encode_capture_objects(self.columns)
        if attribute == 4:
            return Data(Tag.DOUBLE_LONG_UNSIGNED, int(meter.profile_period_s))
        if attribute == 5:
            return Data(Tag.ENUM, _SORT_FIFO)
        if attribute == 6:  # no sort object (FIFO)
            return CaptureObject(0, Obis(0, 0, 0, 0, 0, 0), 0).to_data()
        if attribute == 7:
            first, last, _ = self.window(meter)
            return Data(Tag.DOUBLE_LONG_UNSIGNED, len(self.instants(meter, first, last)))
        if attribute == 8:
            return Data(Tag.DOUBLE_LONG_UNSIGNED, self.depth)
        return AccessResult.OBJECT_UNAVAILABLE

    def _buffer(self, meter: DlmsMeterState, selector: Data | None) -> Data | AccessResult:
        first, last, _ = self.window(meter)
        columns = range(len(self.columns))
        if selector is None:
            instants = self.instants(meter, first, last)
        else:
            try:
                kind, parameters = selector.items
                access = parse_access(kind.integer, parameters)
            except DlmsDecodeError:
                return AccessResult.OTHER_REASON
            if isinstance(access, RangeDescriptor):
                if access.restricting not in (self.columns[0], _clock_whole()):
                    return AccessResult.OTHER_REASON
                try:
                    start = access.start.to_unix_ms(meter.deviation)
                    end = access.end.to_unix_ms(meter.deviation)
                except DlmsDecodeError:
                    return AccessResult.OTHER_REASON
                instants = self.instants(meter, start, end)
                if access.selected:
                    if any(c not in self.columns for c in access.selected):
                        return AccessResult.OTHER_REASON
                    columns = [self.columns.index(c) for c in access.selected]
            else:
                assert isinstance(access, EntryDescriptor)
                every = self.instants(meter, first, last)
                instants = [every[i] for i in access.selects(len(every))]
                high = len(self.columns) if access.to_value == 0 else access.to_value
                columns = range(max(access.from_value, 1) - 1, min(high, len(self.columns)))
        rows = []
        for t in instants:
            cells = self.row(meter, t)
            rows.append(Data.structure(*(cells[i] for i in columns)))
        self.rows_sent += len(rows)
        return Data.array(*rows)

    def set(self, meter: DlmsMeterState, attribute: int, value: Data) -> AccessResult:
        return AccessResult.READ_WRITE_DENIED


def _clock_whole() -> CaptureObject:
    return CaptureObject(CLASS_CLOCK, OBIS_CLOCK, 2, 0)


class AmrStatusObject(PlainObject):
    """0.0.96.10.1.255 (Data, unsigned): the status of the newest profile entry."""

    class_id = CLASS_DATA
    version = 0
    obis = OBIS_AMR_STATUS

    def __init__(self, profile: LoadProfileObject) -> None:
        self.profile = profile

    def read(self, meter: DlmsMeterState, attribute: int) -> Data | AccessResult:
        if attribute == 2:
            return Data(Tag.UNSIGNED, self.profile.latest_status(meter))
        return AccessResult.OBJECT_UNAVAILABLE


def profile_objects(meter: DlmsMeterState) -> list[LoadProfileObject | AmrStatusObject]:
    """The load profile and its status object (``standard_objects`` adds them)."""
    profile = LoadProfileObject()
    return [profile, AmrStatusObject(profile)]


# -- control command --------------------------------------------------------------------------
def _instant(text: str, now_ms: int) -> int:
    """``now``, ``+SECONDS``/``-SECONDS`` from the meter's clock now, or an ISO 8601 instant
    (UTC unless it says otherwise)."""
    if text == "now":
        return now_ms
    if text[:1] in "+-":
        return now_ms + int(Decimal(text) * 1000)
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _outage(meter: DlmsMeterState, args: list[str]) -> str:
    """``outage START END``: the meter was (or will be) without power from START to END on
    its own clock (``now``, ``-3600``, ``+900`` or ISO 8601): no profile entries then, the
    first after flagged power-down."""
    profile = meter.objects.get(OBIS_LOAD_PROFILE)
    if not isinstance(profile, LoadProfileObject):
        return "ERROR outage: this meter has no load profile"
    now = meter.meter_clock_ms(meter.virtual_ns())
    try:
        start, end = (_instant(a, now) for a in args)
    except (ValueError, ArithmeticError):
        return f"ERROR outage: expected START END (now, +/-SECONDS or ISO 8601), got {args!r}"
    if end <= start:
        return f"ERROR outage: END must be after START, got {args!r}"
    profile.outages.append((start, end))
    return f"OK outage {start} {end}"


COMMANDS["outage"] = _outage

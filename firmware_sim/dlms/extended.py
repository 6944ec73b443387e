"""An Extended Register and a numeric Data object, so that clients meet more than class 3.

* 1-0:1.6.0 (class 4, Extended Register): the day's maximum demand, the highest 15-minute
  average active import power of the meter's current day so far (W, scaler 0), with its
  status (0) and capture_time (the end of that 15-minute interval, meter clock).
* 0-0:96.7.21 (class 1, Data): the number of power failures the load profile recorded
  (``outage`` command), long-unsigned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocols.dlms.apdu import AccessResult
from protocols.dlms.axdr import Data, Tag
from protocols.dlms.cosem import CosemDateTime, ScalerUnit
from protocols.obis import Obis

from .plain import PlainObject

if TYPE_CHECKING:
    from .objects import DlmsMeterState

__all__ = ["MaxDemandObject", "PowerFailuresObject"]

CLASS_EXTENDED_REGISTER = 4
OBIS_MAX_DEMAND = Obis(1, 0, 1, 6, 0, 255)
OBIS_POWER_FAILURES = Obis(0, 0, 96, 7, 21, 255)
DEMAND_WINDOW_MS = 15 * 60 * 1000
DAY_MS = 86_400_000
UNIT_W = 27


@dataclass(frozen=True, slots=True)
class MaxDemandObject(PlainObject):
    obis: Obis = OBIS_MAX_DEMAND
    class_id: int = CLASS_EXTENDED_REGISTER
    version: int = 0

    def maximum(self, meter: DlmsMeterState) -> tuple[int, int]:
        """(watts, end of the window in meter-clock ms) of today's highest window so far;
        (0, start of the day) before the first window of the day has ended."""
        now_ns = meter.virtual_ns()
        now_ms = meter.meter_clock_ms(now_ns)
        offset_ms = now_ms - now_ns // 1_000_000  # meter clock minus true time
        local_ms = now_ms - meter.deviation * 60_000  # UTC = local + deviation
        day_start = local_ms // DAY_MS * DAY_MS + meter.deviation * 60_000
        best = (0, day_start)
        end = day_start + DEMAND_WINDOW_MS
        while end <= now_ms:
            before = meter.model.energies_mwh((end - DEMAND_WINDOW_MS - offset_ms) * 1_000_000)
            after = meter.model.energies_mwh((end - offset_ms) * 1_000_000)
            watts = (after[0] - before[0]) * 4 // 1000  # mWh per 15 min -> W, truncated
            if watts > best[0]:
                best = (watts, end)
            end += DEMAND_WINDOW_MS
        return best

    def read(self, meter: DlmsMeterState, attribute: int) -> Data | AccessResult:
        if attribute == 3:
            return ScalerUnit(0, UNIT_W).to_data()
        if attribute == 4:
            return Data(Tag.UNSIGNED, 0)
        if attribute not in (2, 5):
            return AccessResult.OBJECT_UNAVAILABLE
        watts, at_ms = self.maximum(meter)
        if attribute == 2:
            return Data(Tag.DOUBLE_LONG_UNSIGNED, watts)
        stamp = CosemDateTime.from_unix_ms(at_ms, meter.deviation, meter.clock_status)
        return Data.octet_string(stamp.to_bytes())


@dataclass(frozen=True, slots=True)
class PowerFailuresObject(PlainObject):
    obis: Obis = OBIS_POWER_FAILURES
    class_id: int = 1
    version: int = 0

    def read(self, meter: DlmsMeterState, attribute: int) -> Data | AccessResult:
        if attribute != 2:
            return AccessResult.OBJECT_UNAVAILABLE
        profile = next((o for o in meter.objects.values() if hasattr(o, "outages")), None)
        count = len(profile.outages) if profile is not None else 0  # type: ignore[attr-defined]
        return Data(Tag.LONG_UNSIGNED, min(count, 0xFFFF))

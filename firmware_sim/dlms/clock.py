"""The Clock object (class 8, 0.0.1.0.0.255) of the simulated meter.

It shows the model's virtual time plus the meter's ``clock_offset_ms`` (a meter whose clock
is off), as local time at ``deviation`` minutes (UTC = local + deviation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from protocols.dlms.apdu import AccessResult
from protocols.dlms.axdr import Data, Tag
from protocols.dlms.cosem import CosemDateTime
from protocols.obis import Obis

if TYPE_CHECKING:
    from .objects import DlmsMeterState

__all__ = ["CLASS_CLOCK", "OBIS_CLOCK", "ClockObject"]

CLASS_CLOCK = 8
OBIS_CLOCK = Obis(0, 0, 1, 0, 0, 255)


@dataclass(frozen=True, slots=True)
class ClockObject:
    obis: Obis = OBIS_CLOCK
    class_id: int = CLASS_CLOCK
    version: int = 0

    def get(
        self, meter: DlmsMeterState, attribute: int, selector: Data | None
    ) -> Data | AccessResult:
        if selector is not None:
            return AccessResult.OTHER_REASON
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
        return AccessResult.READ_WRITE_DENIED

"""The meter's clock: read every cycle, the capture's timestamp.

(Issue 4 adds here: drift against the gateway's clock, the limit that flags readings, and
the policy that sets the meter's clock.)
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.dlms import DlmsDecodeError
from protocols.dlms.cosem import CosemDateTime
from protocols.obis import Obis
from protocols.record import Quality

from .session import DlmsSession, ObjectError

__all__ = ["CLASS_CLOCK", "CLOCK", "ClockReading", "read_clock"]

CLASS_CLOCK = 8
CLOCK = Obis(0, 0, 1, 0, 0, 255)


@dataclass(frozen=True, slots=True)
class ClockReading:
    meter_ms: int | None  # the meter's clock (Unix ms, UTC); None: unreadable
    flags: Quality = Quality.NONE
    error: str = ""  # why meter_ms is None


async def read_clock(session: DlmsSession, assume_deviation: int = 0) -> ClockReading:
    """Clock attribute 2 as Unix ms, with the clock's quality flags."""
    try:
        stamp = CosemDateTime.from_data(await session.get(CLASS_CLOCK, CLOCK, 2))
        return ClockReading(stamp.to_unix_ms(assume_deviation), stamp.quality)
    except (ObjectError, DlmsDecodeError) as exc:
        return ClockReading(None, Quality.NONE, str(exc))

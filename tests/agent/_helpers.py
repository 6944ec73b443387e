"""Small builders shared by the agent tests."""

from __future__ import annotations

from decimal import Decimal

from agent.buffer import Capture
from protocols.obis import Obis
from protocols.record import Value

ENERGY = Obis.parse("1-0:1.8.0")
POWER = Obis.parse("1-0:1.7.0")


def capture(meter: str, ms: int, kwh: str = "1.5", values: int = 2) -> Capture:
    vals = [Value(ENERGY, Decimal(kwh), "kWh"), Value(POWER, Decimal("230.5"), "W")]
    return Capture(meter, ms, tuple(vals[:values]))

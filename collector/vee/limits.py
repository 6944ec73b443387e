"""Rule ``limits``: a value within the physical limits configured for its quantity
(e.g. power at most the meter's rated maximum)."""

from __future__ import annotations

from .base import ERROR, Flag, Reading
from .settings import MeterRules

RULE = "limits"


def check(reading: Reading, rules: MeterRules) -> Flag | None:
    high = rules.max.get(reading.obis)
    if high is not None and reading.value > high:
        detail = f"{reading.value} {reading.unit} above the limit {high}"
    else:
        low = rules.min.get(reading.obis)
        if low is None or reading.value >= low:
            return None
        detail = f"{reading.value} {reading.unit} below the limit {low}"
    return Flag(reading.meter_id, reading.obis, reading.captured_ms, RULE, ERROR, detail)

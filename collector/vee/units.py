"""Rule ``units``: the unit of a reading is the one its quantity has on this meter."""

from __future__ import annotations

from .base import ERROR, Flag, Reading
from .settings import MeterRules

RULE = "units"


def check(reading: Reading, rules: MeterRules) -> Flag | None:
    """An energy register in W, or a power value in kWh, is wrong data, not a value."""
    expected = rules.expected_unit(reading.obis)
    if expected is None or reading.unit == expected:
        return None
    return Flag(
        reading.meter_id, reading.obis, reading.captured_ms, RULE, ERROR,
        f"unit {reading.unit!r}, expected {expected!r} for {reading.obis}",
    )  # fmt: skip

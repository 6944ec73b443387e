"""Rule ``spike``: an interval far above the meter's usual.

An interval whose consumption is more than ``spike_factor`` times the third-highest
interval of the 24 hours before it is flagged (the third-highest, not the highest, so
that one earlier spike does not hide the next). Needs at least 3 earlier intervals.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from .base import WARN, Flag, Interval
from .settings import MeterRules

RULE = "spike"


def check(
    meter_id: str, obis: str, interval: Interval, day_before: Sequence[Decimal],
    rules: MeterRules,
) -> Flag | None:  # fmt: skip
    if interval.value is None or len(day_before) < 3:
        return None
    third = sorted(day_before, reverse=True)[2]
    if third <= 0 or interval.value <= third * rules.spike_factor:
        return None
    return Flag(
        meter_id, obis, interval.end_ms, RULE, WARN,
        f"interval consumption {interval.value} is more than {rules.spike_factor} x the"
        f" third-highest of the day before ({third})",
    )  # fmt: skip

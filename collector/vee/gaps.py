"""Rule ``gaps``: missing readings in an interval series, and whether they were lost or
never taken.

Every record of a gateway has the next number of its gap-free sequence. Between two
readings of a meter with a hole in time, the gateway's sequence tells the two apart:

* numbers missing in between -> **lost**: records were made but have not arrived (still in
  the gateway's backlog, in quarantine, or lost on the way); they may still come;
* the sequence is complete in between -> **never taken**: the gateway did not read the
  meter then (meter off-line, read failed); nothing will come.
"""

from __future__ import annotations

from .base import WARN, Flag, Point
from .settings import MeterRules
from .timestamps import span

RULE = "gaps"


def is_gap(prev: Point, point: Point, rules: MeterRules) -> bool:
    return point.ms - prev.ms > rules.read_spacing_ms + rules.drift_ms


def check(
    prev: Point, point: Point, meter_id: str, obis: str, rules: MeterRules,
    stored_between: int | None, method: str,
) -> Flag:  # fmt: skip
    """``stored_between``: records of the gateway stored with a sequence number between the
    two readings' (None: the readings came through different gateways)."""
    missing_intervals = (point.ms - prev.ms) // rules.read_spacing_ms - 1
    head = f"gap of {span(point.ms - prev.ms)} ({max(missing_intervals, 1)} intervals missing)"
    if stored_between is None:
        why = f"cannot tell lost from never taken: gateways {prev.gateway_id}, {point.gateway_id}"
    else:
        lost = point.seq - prev.seq - 1 - stored_between
        if lost > 0:
            why = (
                f"lost: {lost} records of {point.gateway_id} between seq {prev.seq} and"
                f" {point.seq} have not arrived"
            )
        else:
            why = (
                f"never taken: {point.gateway_id}'s sequence is complete between seq"
                f" {prev.seq} and {point.seq}"
            )
    return Flag(meter_id, obis, point.ms, RULE, WARN, f"{head}; {why}; {method}")

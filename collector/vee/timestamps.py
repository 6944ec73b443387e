"""Rule ``timestamps``: not in the future beyond a tolerance, not older than the retention
limit, and no sign of a meter clock that drifted.

Drift shows in three ways: the agent flagged the capture ``CLOCK_SUSPECT``; the capture
time is ahead of the time the collector received the record (a clock can be behind by a
backlog's age, but never ahead); or a reading of an interval series lies off the interval
grid (a load profile closes on :00/:15/:30/:45 of the meter's clock).
"""

from __future__ import annotations

from protocols.record import Quality

from .base import WARN, Flag, Reading
from .settings import MeterRules

RULE = "timestamps"


def check(reading: Reading, rules: MeterRules, now_ms: int, on_grid: bool) -> list[Flag]:
    """``on_grid``: the reading belongs to a series that should sit on the interval grid."""
    found: list[str] = []
    ahead = reading.captured_ms - now_ms
    if ahead > rules.future_ms:
        found.append(f"captured {_span(ahead)} ahead of the collector's clock")
    age = now_ms - reading.captured_ms
    if age > rules.retention_ms:
        found.append(f"captured {_span(age)} ago, beyond the retention limit")
    if reading.flags & Quality.CLOCK_SUSPECT:
        found.append("the gateway flagged the meter's clock as suspect")
    lead = reading.captured_ms - reading.received_ms
    if lead > rules.drift_ms:
        found.append(f"clock drift: captured {_span(lead)} after the collector received it")
    if on_grid:
        offset = reading.captured_ms % rules.interval_ms
        off = min(offset, rules.interval_ms - offset)
        if off > rules.drift_ms:
            sign = "+" if offset == off else "-"
            found.append(f"clock drift: {sign}{_span(off)} off the {_span(rules.interval_ms)} grid")
    return [
        Flag(reading.meter_id, reading.obis, reading.captured_ms, RULE, WARN, text)
        for text in found
    ]


def _span(ms: int) -> str:
    """``600000`` -> ``10m``; ``90061000`` -> ``1d1h1m1s``."""
    parts = []
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size:
            parts.append(f"{ms // size}{unit}")
            ms %= size
    if ms or not parts:
        parts.append(f"{ms}ms")
    return "".join(parts)


span = _span

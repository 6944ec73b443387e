"""Rule ``zero``: no consumption for a long time (``zero_after``, default 1 day) on a
meter that is connected: a stuck register, a bypass, or a vacant site."""

from __future__ import annotations

from collections.abc import Sequence

from .base import WARN, Flag, Interval
from .settings import MeterRules
from .timestamps import span

RULE = "zero"


def check(
    meter_id: str, obis: str, interval: Interval, before: Sequence[Interval],
    rules: MeterRules,
) -> Flag | None:  # fmt: skip
    """``before``: the current intervals before ``interval``, in time order. Flags once,
    when the zero run first reaches ``zero_after``."""
    if interval.value != 0:
        return None
    start = interval.start_ms
    for previous in reversed(before):
        if previous.end_ms != start or previous.value != 0:
            break
        start = previous.start_ms
    length = interval.end_ms - start
    if length < rules.zero_ms or length - (interval.end_ms - interval.start_ms) >= rules.zero_ms:
        return None
    return Flag(meter_id, obis, interval.end_ms, RULE, WARN, f"no consumption for {span(length)}")

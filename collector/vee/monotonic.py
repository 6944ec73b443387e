"""Rule ``monotonic``: a cumulative register never decreases.

A decrease is one of three things:

* a rollover: the register passed its known maximum (``register_max``, e.g. 99999999.9 kWh)
  and started again at 0. The consumption is ``new + (max + resolution) - old``, exact in
  Decimal. It counts as a rollover only if the old value is within ``rollover_share`` of the
  top and the new one within that share of 0 (otherwise a glitch would pass as a wrap);
* a meter replacement: a swap lies between the two readings (recorded by an operator, or
  by VEE when the meter's serial number reading changed). The old and the new register are
  never subtracted from each other;
* an error: the reading is flagged and not used for consumption until an operator decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from .base import ERROR, INFO, Flag, Point
from .settings import MeterRules

RULE = "monotonic"


@dataclass(frozen=True, slots=True)
class Swap:
    """A meter replaced at ``at_ms``: readings before it are the old register's, from it
    on the new one's. ``old_final``/``new_initial``: the registers at the swap, if read."""

    id: int
    meter_id: str
    at_ms: int
    old_final: Decimal | None
    new_initial: Decimal | None
    reason: str


def resolution(*values: Decimal) -> Decimal:
    """The finest step the values are given in: ``12.5`` and ``3.25`` -> ``0.01``."""
    exponent = min(int(v.as_tuple().exponent) for v in values)
    return Decimal(1).scaleb(min(exponent, 0))


def rollover_delta(old: Decimal, new: Decimal, top: Decimal, share: Decimal) -> Decimal | None:
    """Consumption across a wrap at ``top`` (the register's last value), or None if the pair
    does not look like one."""
    step = resolution(old, new, top)
    modulus = top + step
    band = modulus * share
    if old < modulus - band or new > band:
        return None
    return new + modulus - old


def swap_between(swaps: list[Swap], start_ms: int, end_ms: int) -> Swap | None:
    """The swap between two readings; of several, the latest recorded one with final reads
    (an operator's record of a swap VEE detected from the serial number wins)."""
    found = [swap for swap in swaps if start_ms < swap.at_ms <= end_ms]
    if not found:
        return None
    with_finals = [swap for swap in found if swap.old_final is not None]
    return max(with_finals or found, key=lambda swap: swap.id)


def pair_delta(
    prev: Point, point: Point, obis: str, rules: MeterRules, swaps: list[Swap]
) -> tuple[Decimal | None, str]:
    """Consumption between two points of one register and how it was found: ``""`` (plain
    difference), ``rollover``, ``swap`` (from the recorded final/initial reads), or None
    with ``swap`` (a swap without them: unknown) or ``decrease`` (an error)."""
    swap = swap_between(swaps, prev.ms, point.ms)
    if swap is not None:
        if swap.old_final is None or swap.new_initial is None:
            return None, "swap"
        return (swap.old_final - prev.value) + (point.value - swap.new_initial), "swap"
    if point.value >= prev.value:
        return point.value - prev.value, ""
    top = rules.register_max.get(obis)
    if top is not None:
        delta = rollover_delta(prev.value, point.value, top, rules.rollover_share)
        if delta is not None:
            return delta, "rollover"
    return None, "decrease"


def check(
    prev: Point | None, point: Point, meter_id: str, obis: str, rules: MeterRules,
    swaps: list[Swap],
) -> Flag | None:  # fmt: skip
    if prev is None:
        return None
    delta, how = pair_delta(prev, point, obis, rules, swaps)
    if how == "":
        return None
    if how == "rollover":
        detail = (
            f"rollover at {rules.register_max[obis]}: {prev.value} -> {point.value}"
            f" is a consumption of {delta}"
        )
        return Flag(meter_id, obis, point.ms, RULE, INFO, detail)
    if how == "swap":
        swap = swap_between(swaps, prev.ms, point.ms)
        assert swap is not None
        known = "unknown consumption" if delta is None else f"consumption {delta}"
        detail = f"meter swap #{swap.id} between the readings ({swap.reason}): {known}"
        return Flag(meter_id, obis, point.ms, RULE, INFO, detail)
    detail = f"register decreased: {prev.value} -> {point.value} (no rollover, no swap)"
    return Flag(meter_id, obis, point.ms, RULE, ERROR, detail)

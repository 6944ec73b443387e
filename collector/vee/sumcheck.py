"""Rule ``sumcheck``: parts that must add up to a whole.

* Time-of-use registers against the total register, in the same capture:
  ``1.8.1 + 1.8.2 == 1.8.0`` within ``sum_tolerance`` (``[vee.tou]``: total -> tariffs).
* Load profile against the register: the interval-energy values a meter's profile gives
  (e.g. ``1-0:1.29.0``, each the energy of the interval ending at its time) summed between
  two reads of the register equal the register's delta over the same span
  (``[vee.profile_sum]``: register -> interval quantity). Checked only when the profile is
  complete over the span (a missing interval is the ``gaps`` rule's business).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

from protocols.units import UnitError, unit_by_symbol

from .base import WARN, Flag, Reading
from .settings import MeterRules

RULE = "sumcheck"


def check_tou(capture: Mapping[str, Reading], rules: MeterRules) -> list[Flag]:
    """``capture``: OBIS -> reading of one (meter, captured_ms)."""
    flags = []
    for total_obis, parts in rules.tou.items():
        total = capture.get(total_obis)
        if total is None or not all(p in capture for p in parts):
            continue
        summed = sum((capture[p].value for p in parts), Decimal(0))
        if abs(summed - total.value) > rules.sum_tolerance:
            flags.append(
                Flag(
                    total.meter_id,
                    total_obis,
                    total.captured_ms,
                    RULE,
                    WARN,
                    f"tariff registers {' + '.join(parts)} = {summed}, total {total.value}"
                    f" (difference {total.value - summed})",
                )
            )
    return flags


def in_unit(value: str, unit: str, target: str) -> Decimal | None:
    """``value`` in ``unit`` expressed in ``target`` (``"1500", "Wh", "kWh"`` -> 1.5), exact;
    None if the units are not the same quantity."""
    if unit == target:
        return Decimal(value)
    try:
        have, want = unit_by_symbol(unit), unit_by_symbol(target)
    except UnitError:
        return None
    if have.code != want.code:
        return None
    return Decimal(value).scaleb(have.power - want.power)


def check_profile(
    meter_id: str, obis: str, start_ms: int, end_ms: int, register_delta: Decimal,
    profile_obis: str, values: list[Decimal | None], expected: int, rules: MeterRules,
) -> Flag | None:  # fmt: skip
    """``values``: the profile's interval values in (start, end] in the register's unit
    (None: not convertible); ``expected``: how many intervals the span holds."""
    if len(values) != expected or expected == 0 or any(v is None for v in values):
        return None
    summed = sum((v for v in values if v is not None), Decimal(0))
    if abs(summed - register_delta) <= rules.sum_tolerance:
        return None
    return Flag(
        meter_id, obis, end_ms, RULE, WARN,
        f"load profile {profile_obis} sums to {summed} over {expected} intervals, the register"
        f" moved {register_delta} (difference {register_delta - summed})",
    )  # fmt: skip

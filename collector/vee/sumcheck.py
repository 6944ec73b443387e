"""Rule ``sumcheck``: parts that must add up to a whole.

* Time-of-use registers against the total register, in the same capture:
  ``1.8.1 + 1.8.2 == 1.8.0`` within ``tou_tolerance`` (``[vee.tou]``: total -> tariffs).
* Interval data against the register over the same period: the derived intervals of a
  load profile summed between two register reads equal the register delta. Consumption is
  derived from the register's own points, so the sum matches by construction; what this
  catches is an interval series that was edited or estimated away from its register
  (``check_span``, used by ``vee report --check``).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal

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
        if abs(summed - total.value) > rules.tou_tolerance:
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


def check_span(
    meter_id: str, obis: str, end_ms: int, intervals_sum: Decimal, register_delta: Decimal,
    tolerance: Decimal,
) -> Flag | None:  # fmt: skip
    if abs(intervals_sum - register_delta) <= tolerance:
        return None
    return Flag(
        meter_id, obis, end_ms, RULE, WARN,
        f"intervals sum to {intervals_sum}, the register moved {register_delta}",
    )  # fmt: skip

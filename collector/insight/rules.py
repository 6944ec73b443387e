"""Alert rules a customer (an account) sets, and their validation.

Two kinds (JSON as the API takes it; decimals as strings or integers, never floats):

* ``daily_usage_above``: ``{"kind": "daily_usage_above", "service_point": "sp-e",
  "threshold": "20", "unit": "kWh"}`` — a local day's usage of the service point above
  ``threshold`` (in ``unit``, any unit convertible to the point's: kWh/Wh/MWh, m3/l).
* ``night_flow`` (water): ``{"kind": "night_flow", "service_point": "sp-w",
  "window": "00:00-05:00", "min_flow": "0", "unit": "l/h", "nights": 1}`` — flow above
  ``min_flow`` (l/h or m3/h) in *every* interval of the night window (local time; may wrap
  midnight: ``23:00-05:00``, the night then belongs to the day it ends on), the window fully
  covered by intervals that are not gaps, for ``nights`` nights in a row: continuous
  night-time water flow, suggesting a leak.

``parse_rule`` refuses anything else with a ``RuleError`` naming the field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from protocols.units import UnitError, convert

from ..errors import CollectorError
from ..rating.accounts import Account, ServicePoint

__all__ = ["KINDS", "Rule", "RuleError", "parse_rule", "rule_from_row"]

KINDS = ("daily_usage_above", "night_flow")
MAX_NIGHTS = 31
_WINDOW = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_FIELDS = {
    "daily_usage_above": {"kind", "service_point", "threshold", "unit"},
    "night_flow": {"kind", "service_point", "window", "min_flow", "unit", "nights"},
}


class RuleError(CollectorError):
    """A rule that cannot be used; the message names the field."""


@dataclass(frozen=True)
class Rule:
    id: int
    account_id: str
    kind: str
    service_point: str
    threshold: Decimal = Decimal(0)  # daily: in ``unit``; night: min flow in ``unit``
    unit: str = ""  # daily: kWh, m3, l, ...; night: l/h or m3/h
    window: tuple[int, int] = (0, 300)  # minutes of the local day: start, end (may wrap)
    nights: int = 1

    @property
    def volume_unit(self) -> str:
        """For a night rule: the volume part of the flow unit (``l`` of ``l/h``)."""
        return self.unit.removesuffix("/h")

    def params(self) -> dict[str, Any]:
        if self.kind == "daily_usage_above":
            return {"threshold": str(self.threshold), "unit": self.unit}
        a, b = self.window
        return {
            "window": f"{a // 60:02d}:{a % 60:02d}-{b // 60:02d}:{b % 60:02d}",
            "min_flow": str(self.threshold),
            "unit": self.unit,
            "nights": self.nights,
        }

    def document(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account": self.account_id,
            "kind": self.kind,
            "service_point": self.service_point,
            **self.params(),
        }


def _decimal(value: Any, name: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise RuleError(f'{name}: a decimal as a string (e.g. "12.5") or an integer, got {value!r}')
    try:
        out = Decimal(str(value).strip())
    except InvalidOperation:
        raise RuleError(f"{name}: not a decimal number: {value!r}") from None
    if not out.is_finite() or out < 0:
        raise RuleError(f"{name}: must be a finite number >= 0, got {value!r}")
    return out


def _window(value: Any) -> tuple[int, int]:
    found = _WINDOW.match(value) if isinstance(value, str) else None
    if not found:
        raise RuleError(f'window: expected "HH:MM-HH:MM" (local time), got {value!r}')
    h1, m1, h2, m2 = (int(g) for g in found.groups())
    if h1 > 23 or m1 > 59 or h2 > 24 or m2 > 59 or (h2 == 24 and m2):
        raise RuleError(f"window: not a time of day in {value!r}")
    a, b = h1 * 60 + m1, h2 * 60 + m2
    if a == b % 1440:
        raise RuleError(f"window: empty or a whole day: {value!r}")
    return a, b


def _point(account: Account, value: Any) -> ServicePoint:
    if not isinstance(value, str) or not value:
        raise RuleError(f"service_point: a service point id of account {account.id}, got {value!r}")
    for point in account.service_points:
        if point.id == value:
            return point
    known = ", ".join(p.id for p in account.service_points) or "none"
    raise RuleError(f"service_point: account {account.id} has no service point {value!r} "
                    f"(known: {known})")  # fmt: skip


def _convertible(unit: str, to: str, name: str) -> None:
    try:
        convert(Decimal(1), unit, to)
    except UnitError as exc:
        raise RuleError(
            f"{name}: {unit!r} cannot be compared with the point's {to}: {exc}"
        ) from None


def parse_rule(account: Account, data: Any, rule_id: int = 0) -> Rule:
    """A rule of ``account`` from its JSON form (``RuleError`` naming the field)."""
    if not isinstance(data, dict):
        raise RuleError(f"the rule must be a JSON object, got {type(data).__name__}")
    kind = data.get("kind")
    if kind not in KINDS:
        raise RuleError(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    unknown = sorted(set(data) - _FIELDS[kind])
    if unknown:
        raise RuleError(f"{unknown[0]}: not a field of a {kind} rule "
                        f"(fields: {', '.join(sorted(_FIELDS[kind]))})")  # fmt: skip
    point = _point(account, data.get("service_point"))
    if kind == "daily_usage_above":
        if "threshold" not in data:
            raise RuleError("threshold: required (the daily usage to exceed)")
        threshold = _decimal(data["threshold"], "threshold")
        unit = data.get("unit", point.unit)
        if not isinstance(unit, str):
            raise RuleError(f"unit: a unit symbol, got {unit!r}")
        _convertible(unit, point.unit, "unit")
        return Rule(rule_id, account.id, kind, point.id, threshold, unit)
    if point.commodity != "water":
        raise RuleError(f"service_point: {point.id} is {point.commodity}; night_flow watches water")
    unit = data.get("unit", "l/h")
    if unit not in ("l/h", "m3/h"):
        raise RuleError(f"unit: l/h or m3/h, got {unit!r}")
    nights = data.get("nights", 1)
    if isinstance(nights, bool) or not isinstance(nights, int) or not 1 <= nights <= MAX_NIGHTS:
        raise RuleError(f"nights: a whole number 1..{MAX_NIGHTS}, got {nights!r}")
    return Rule(
        rule_id, account.id, kind, point.id,
        _decimal(data.get("min_flow", "0"), "min_flow"), unit,
        _window(data.get("window", "00:00-05:00")), nights,
    )  # fmt: skip


def rule_from_row(account: Account, row: Any) -> Rule:
    """A stored rule (``RuleRow``) checked again against the account as it is now."""
    data = {"kind": row.kind, "service_point": row.service_point, **json.loads(row.params)}
    return parse_rule(account, data, int(row.id))

"""What the VEE rules see and say: readings, series points, flags and derived intervals."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

__all__ = [
    "ERROR",
    "INFO",
    "WARN",
    "Flag",
    "Interval",
    "Point",
    "Reading",
    "ceil_grid",
    "floor_grid",
]

#: The reading is not used for consumption until an operator accepts or edits it.
ERROR = "error"
#: The reading is used, and flagged for review.
WARN = "warn"
#: Noted (a rollover, a meter swap, an estimate made): nothing to review.
INFO = "info"


@dataclass(frozen=True, slots=True)
class Reading:
    """One stored reading as the rules see it (the value exact)."""

    meter_id: str
    obis: str
    captured_ms: int
    value: Decimal
    unit: str
    flags: int
    clock_source: int
    gateway_id: str
    seq: int
    received_ms: int


@dataclass(frozen=True, slots=True)
class Point:
    """A point of a cumulative register's series, as consumption is derived from it:
    the stored value, or the operator's edit of it."""

    ms: int
    value: Decimal
    unit: str
    gateway_id: str
    seq: int
    edited: bool = False


@dataclass(frozen=True, slots=True)
class Flag:
    """One finding of a rule about one reading (identity meter, OBIS, captured_ms)."""

    meter_id: str
    obis: str
    captured_ms: int
    rule: str
    outcome: str  # ERROR | WARN | INFO
    detail: str


@dataclass(frozen=True, slots=True)
class Interval:
    """Derived consumption of one meter and quantity over [start_ms, end_ms).

    ``quality``: ``actual``, ``estimated`` (``method`` linear / like-day), ``edited``, or
    ``gap`` (no basis to estimate: the known total of the span, flagged for review; value
    None where even the total is unknown, e.g. across a meter swap without final reads)."""

    start_ms: int
    end_ms: int
    value: Decimal | None
    quality: str
    method: str = ""


def floor_grid(ms: int, step: int) -> int:
    return ms - ms % step


def ceil_grid(ms: int, step: int) -> int:
    return -(-ms // step) * step

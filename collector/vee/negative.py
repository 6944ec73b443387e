"""Rule ``negative``: an import quantity (OBIS C = 1 active, 3 reactive import) is never
negative; a negative value is a meter or transfer fault."""

from __future__ import annotations

from .base import ERROR, Flag, Reading

RULE = "negative"

_IMPORT_C = frozenset({"1", "3"})


def is_import(obis: str) -> bool:
    """``1-0:1.8.0`` -> True; ``1-0:2.8.0`` (export) -> False."""
    _, _, rest = obis.partition(":")
    return rest.split(".", 1)[0] in _IMPORT_C and obis.startswith("1-")


def check(reading: Reading) -> Flag | None:
    if reading.value >= 0 or not is_import(reading.obis):
        return None
    return Flag(
        reading.meter_id, reading.obis, reading.captured_ms, RULE, ERROR,
        f"negative value {reading.value} {reading.unit} on an import quantity",
    )  # fmt: skip

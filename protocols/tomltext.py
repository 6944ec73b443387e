"""TOML text with exact numbers: the one parser of every meterlink file (configs, profiles,
scenarios, tariffs), so that each reports a bad file the same way.

Floats become ``Decimal`` (a price or a scale is never a binary float). ``tomllib`` raises
``decimal.InvalidOperation`` for a float ``Decimal`` cannot hold (e.g. ``0E0488888888888888``)
and gives no line number attribute on Python 3.11: both become :class:`TomlTextError`.
"""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from typing import Any

__all__ = ["TomlTextError", "loads_exact"]

_LINE = re.compile(r"at line (\d+)")


class TomlTextError(ValueError):
    """Text that is not valid TOML; ``line`` is 1-based where tomllib says it."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


def loads_exact(text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text, parse_float=Decimal)
    except tomllib.TOMLDecodeError as exc:
        found = _LINE.search(str(exc))
        raise TomlTextError(str(exc), int(found.group(1)) if found else None) from None
    except ArithmeticError as exc:
        raise TomlTextError(f"a number out of range ({type(exc).__name__})", None) from None

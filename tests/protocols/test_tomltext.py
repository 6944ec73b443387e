"""One TOML parser for every file: exact numbers, and errors that carry the line."""

from __future__ import annotations

from decimal import Decimal

import pytest

from protocols.tomltext import TomlTextError, loads_exact


def test_floats_are_exact_decimals() -> None:
    assert loads_exact("price = 0.1\n")["price"] == Decimal("0.1")


def test_syntax_error_carries_its_line() -> None:
    with pytest.raises(TomlTextError) as info:
        loads_exact('a = 1\nb = "unterminated\n')
    assert info.value.line == 2


def test_a_float_decimal_cannot_hold_is_an_error_not_a_crash() -> None:
    with pytest.raises(TomlTextError, match="out of range"):
        loads_exact("x = 0E0488888888888888888888\n")

"""Charge components, one module each; ``PARSERS`` maps a tariff file's ``type`` to the parser."""

from __future__ import annotations

from collections.abc import Callable

from ...tomlfile import Section
from ..model import Component
from . import demand, dynamic, energy, export, minimum, standing, tax, tiers, tou
from .common import ParseContext

__all__ = ["PARSERS", "ParseContext"]

PARSERS: dict[str, Callable[[Section, ParseContext], Component]] = {
    "standing": standing.parse,
    "energy": energy.parse,
    "tiers": tiers.parse,
    "tou": tou.parse,
    "dynamic": dynamic.parse,
    "demand": demand.parse,
    "minimum": minimum.parse,
    "tax": tax.parse,
    "export": export.parse,
}

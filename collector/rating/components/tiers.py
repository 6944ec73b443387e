"""Block tiers over the billing period's usage: ``graduated`` (each slice at its own price) or
``volume`` (all units at the price of the tier the period's total reaches)::

    [[version.charge]]
    type = "tiers"
    mode = "graduated"
    tiers = [{ upto = 100, price = 0.20 }, { upto = 300, price = 0.25 }, { price = 0.30 }]
"""

from __future__ import annotations

from dataclasses import dataclass

from ...tomlfile import Section
from ..model import ChargeLine, RatingJob
from .common import ParseContext
from .energy import PriceTable, parse_tiers, rate_table

__all__ = ["Tiers", "parse"]

MODES = ("graduated", "volume")


@dataclass(frozen=True)
class Tiers:
    label: str
    table: PriceTable
    unit: str
    kind: str = "tier"

    def rate(self, job: RatingJob) -> list[ChargeLine]:
        return rate_table(job, self.kind, self.label, self.table, None, job.usage, self.unit)


def parse(sec: Section, ctx: ParseContext) -> Tiers:
    sec.check_keys({"type", "label", "mode", "tiers", "prorate"})
    mode = sec.str("mode", "graduated")
    if mode not in MODES:
        raise sec.error("mode", f"must be one of {', '.join(MODES)}, got {mode!r}")
    prorate = sec.data.get("prorate", True)
    if not isinstance(prorate, bool):
        raise sec.error("prorate", "must be true or false")
    limits, prices = parse_tiers(sec)
    table = PriceTable(("",), ("",), limits, (tuple(prices),), mode, prorate)
    default = "Energy" if ctx.unit == "kWh" else "Volume"
    return Tiers(sec.str("label", default), table, ctx.unit)

"""Export credit: a price per unit for what the service point fed back, from
``RatingContext.export`` (the export intervals of the period); a negative line::

    [[version.charge]]
    type = "export"
    price = 0.07
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ...tomlfile import Section
from ..model import ChargeLine, RatingJob
from .common import ParseContext, fmt, make_line, positive

__all__ = ["ExportCredit", "parse"]


@dataclass(frozen=True)
class ExportCredit:
    label: str
    price: Decimal
    unit: str
    kind: str = "export"

    def rate(self, job: RatingJob) -> list[ChargeLine]:
        usage = [u for u in job.context.export if job.start <= u.start < job.end]
        quantity = sum((u.quantity for u in usage), Decimal(0))
        exact = -(quantity * self.price)
        cur = job.tariff.currency
        note = f"{fmt(quantity)} {self.unit} exported x {fmt(self.price)} {cur}/{self.unit}"
        return [
            make_line(
                job,
                self.kind,
                self.label,
                quantity,
                self.unit,
                -self.price,
                exact,
                usage,
                [f"{note} = credit {fmt(-exact)}"],
                start=usage[0].start if usage else job.start,
                end=usage[-1].end if usage else job.end,
            )
        ]


def parse(sec: Section, ctx: ParseContext) -> ExportCredit:
    sec.check_keys({"type", "label", "price"})
    price = positive(sec, "price")
    assert price is not None
    return ExportCredit(sec.str("label", "Export credit"), price, ctx.unit)

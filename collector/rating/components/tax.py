"""Taxes and levies, applied in the order the tariff states them::

    [[version.charge]]
    type = "tax"
    label = "Energy tax"
    per_unit = 0.1108        # a levy per unit of usage (kWh, m3) of the period
    [[version.charge]]
    type = "tax"
    label = "VAT"
    percent = 21             # of the lines it applies to
    on = "all"               # "charges" (default: the non-tax lines before it) | "all" (with
                             # the taxes before it) | a list of components, e.g. ["energy", "tou"]
    per_line = false         # true: one tax line per line it applies to, each rounded

A percentage tax on the total (``per_line = false``) is computed on the sum of the rounded
lines and rounded once; per line, each line's tax is rounded, so the two can differ by cents.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from ...tomlfile import Section
from ..model import ChargeLine, RatingJob
from .common import ParseContext, fmt, make_line

__all__ = ["Tax", "parse"]


@dataclass(frozen=True)
class Tax:
    label: str
    percent: Decimal | None
    per_unit: Decimal | None
    on: tuple[str, ...]  # ("charges",) | ("all",) | component kinds
    per_line: bool
    unit: str
    kind: str = "tax"

    def base(self, job: RatingJob) -> list[ChargeLine]:
        if self.on == ("charges",):
            return [line for line in job.lines if line.component != "tax"]
        if self.on == ("all",):
            return list(job.lines)
        return [line for line in job.lines if line.component in self.on]

    def rate(self, job: RatingJob) -> list[ChargeLine]:
        cur = job.tariff.currency
        if self.per_unit is not None:
            quantity = sum((u.quantity for u in job.usage), Decimal(0))
            exact = quantity * self.per_unit
            note = f"{fmt(quantity)} {self.unit} x {fmt(self.per_unit)} {cur}/{self.unit}"
            return [
                make_line(
                    job,
                    self.kind,
                    self.label,
                    quantity,
                    self.unit,
                    self.per_unit,
                    exact,
                    job.usage,
                    [f"{note} = {fmt(exact)}"],
                )
            ]
        assert self.percent is not None
        rate = self.percent / 100
        base = self.base(job)
        if self.per_line:
            lines = []
            for line in base:
                exact = line.amount * rate
                lines.append(
                    make_line(
                        job,
                        self.kind,
                        f"{self.label} on {line.label}",
                        line.amount,
                        cur,
                        rate,
                        exact,
                        (),
                        [f"{line.amount} x {fmt(self.percent)}% = {fmt(exact)} (rounded per line)"],
                        start=line.start,
                        end=line.end,
                        interval_counts=(0, 0, 0),
                    )
                )
            return lines
        amount = sum((line.amount for line in base), Decimal(0))
        exact = amount * rate
        notes = [
            f"on {len(base)} line(s) ({', '.join(sorted({b.component for b in base}))}) "
            f"totalling {amount} {cur}",
            f"{amount} x {fmt(self.percent)}% = {fmt(exact)} (rounded once, on the total)",
        ]
        start = min((b.start for b in base), default=job.start)
        end = max((b.end for b in base), default=job.end)
        return [
            make_line(
                job,
                self.kind,
                f"{self.label} {fmt(self.percent)}%",
                amount,
                cur,
                rate,
                exact,
                (),
                notes,
                start=start,
                end=end,
                interval_counts=(0, 0, 0),
            )
        ]


def parse(sec: Section, ctx: ParseContext) -> Tax:
    sec.check_keys({"type", "label", "percent", "per_unit", "on", "per_line"})
    percent = sec.decimal("percent", required=False)
    per_unit = sec.decimal("per_unit", required=False)
    if (percent is None) == (per_unit is None):
        raise sec.error(None, "a tax needs exactly one of percent = P or per_unit = AMOUNT")
    on = sec.data.get("on", "charges")
    if isinstance(on, str):
        if on not in ("charges", "all"):
            raise sec.error("on", f"must be charges, all or a list of components, got {on!r}")
        kinds: tuple[str, ...] = (on,)
    elif isinstance(on, list) and on and all(isinstance(k, str) for k in on):
        kinds = tuple(on)
    else:
        raise sec.error("on", "must be charges, all or a list of component names")
    per_line = sec.data.get("per_line", False)
    if not isinstance(per_line, bool):
        raise sec.error("per_line", "must be true or false")
    if per_unit is not None and per_line:
        raise sec.error("per_line", "only a percentage tax can be per line")
    return Tax(sec.str("label", "Tax"), percent, per_unit, kinds, per_line, ctx.unit)

"""Dynamic prices: a price per interval from a price file (e.g. day-ahead hourly prices), with
an optional multiplier and adder: unit price = market price x multiplier + adder::

    [[version.charge]]
    type = "dynamic"
    prices = "prices/day-ahead-2026-11.csv"   # relative to the tariff file; or series = "NAME"
    multiplier = 1.0
    adder = 0.0215

A price file is CSV: ``start,price`` per line (interval start in ISO 8601 with its UTC offset,
price in currency per unit), ascending; a header line and ``#`` comments are allowed; each price
holds until the next start, the last one for as long as the step before it (1 h if alone). A
usage interval takes the price holding at its start and must end within that price's interval.
A series given in ``RatingContext.price_series`` under ``series`` (or the file's name) wins over
the file.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

from ...errors import ConfigError, RatingError
from ...tomlfile import Section
from ..model import ChargeLine, PriceSeries, RatingJob
from .common import ParseContext, fmt, make_line

__all__ = ["Dynamic", "load_price_csv", "parse"]


def load_price_csv(path: Path, name: str = "") -> PriceSeries:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read price file: {exc.strerror}") from None
    starts: list[datetime] = []
    prices: list[Decimal] = []
    for number, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 2:
            raise ConfigError(f"{path}:{number}: expected 'start,price', got {','.join(row)!r}")
        try:
            start = datetime.fromisoformat(row[0].strip())
        except ValueError:
            if not starts and not prices:
                continue  # a header line
            raise ConfigError(f"{path}:{number}: not an ISO 8601 time: {row[0]!r}") from None
        if start.tzinfo is None:
            raise ConfigError(f"{path}:{number}: {row[0]!r} has no UTC offset")
        try:
            price = Decimal(row[1].strip())
        except InvalidOperation:
            raise ConfigError(f"{path}:{number}: not a decimal price: {row[1]!r}") from None
        if not price.is_finite():
            raise ConfigError(f"{path}:{number}: not a finite price: {row[1]!r}")
        if starts and start <= starts[-1]:
            raise ConfigError(f"{path}:{number}: times must ascend ({row[0]})")
        starts.append(start)
        prices.append(price)
    if not starts:
        raise ConfigError(f"{path}: no prices in the price file")
    step = starts[-1] - starts[-2] if len(starts) > 1 else timedelta(hours=1)
    return PriceSeries(
        name or path.stem, tuple(starts), tuple(prices), starts[-1] + step, str(path)
    )


@dataclass(frozen=True)
class Dynamic:
    label: str
    series_name: str
    series: PriceSeries | None
    multiplier: Decimal
    adder: Decimal
    unit: str
    kind: str = "dynamic"

    def rate(self, job: RatingJob) -> list[ChargeLine]:
        series = job.context.price_series.get(self.series_name, self.series)
        if series is None:
            raise RatingError(
                f"tariff {job.tariff.id}: dynamic prices {self.series_name!r} not given"
            )
        total = Decimal(0)
        exact = Decimal(0)
        low: Decimal | None = None
        high: Decimal | None = None
        m, a = self.multiplier, self.adder
        for u in job.usage:
            i = series.index_at(u.start)
            if i is None or u.end > series.interval_end(i):
                raise RatingError(
                    f"tariff {job.tariff.id}: price series {series.name!r} ({series.source}) "
                    f"has no price for the whole interval {u.start.isoformat()}"
                    f"..{u.end.isoformat()}"
                )
            price = series.prices[i]
            low = price if low is None or price < low else low
            high = price if high is None or price > high else high
            total += u.quantity
            exact += u.quantity * (price * m + a)
        cur = job.tariff.currency
        unit_price = exact / total if total else a
        notes = [
            f"{len(job.usage)} interval(s) priced from {series.name!r}: unit price = market "
            f"price x {fmt(m)} + {fmt(a)} {cur}/{self.unit}",
        ]
        if low is not None:
            notes.append(f"market prices {fmt(low)}..{fmt(high or low)} {cur}/{self.unit}")
        notes.append(
            f"sum of interval quantity x unit price = {fmt(exact)}; average "
            f"{fmt(unit_price)} {cur}/{self.unit}"
        )
        return [
            make_line(
                job, self.kind, self.label, total, self.unit, unit_price, exact, job.usage, notes
            )
        ]


def parse(sec: Section, ctx: ParseContext) -> Dynamic:
    sec.check_keys({"type", "label", "prices", "series", "multiplier", "adder"})
    if "prices" not in sec.data and "series" not in sec.data:
        raise sec.error(None, "dynamic prices need prices = FILE or series = NAME")
    series = None
    name = sec.data.get("series")
    if "prices" in sec.data:
        path = sec.path_of("prices")
        series = load_price_csv(path, name or path.stem)
        name = series.name
    multiplier = sec.decimal("multiplier", required=False)
    adder = sec.decimal("adder", required=False)
    return Dynamic(
        sec.str("label", "Energy, dynamic price"),
        str(name),
        series,
        Decimal(1) if multiplier is None else multiplier,
        Decimal(0) if adder is None else adder,
        ctx.unit,
    )

"""Interval usage files for what-if rating (``meterlink rate --usage``).

CSV, one interval a line: ``start,quantity[,quality]``. ``start`` is ISO 8601 with its UTC offset
(``2026-11-01T00:00:00+01:00``); ``quantity`` is the consumption in the interval in the tariff's
unit, as a decimal (kept exact); ``quality`` is ``actual`` (default), ``estimated``, ``edited``
or ``gap``. A header line and ``#`` comments are allowed. Every interval has the same length:
``--interval`` minutes, or else the smallest step between two starts (15 minutes for a file of
one line).
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from itertools import pairwise
from pathlib import Path

from ..errors import ConfigError
from .model import QUALITIES, UsageInterval

__all__ = ["load_usage_csv"]


def load_usage_csv(path: Path, unit: str, minutes: int | None = None) -> list[UsageInterval]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read usage file: {exc.strerror}") from None
    rows: list[tuple[datetime, Decimal, str]] = []
    for number, row in enumerate(csv.reader(text.splitlines()), 1):
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        try:
            start = datetime.fromisoformat(row[0].strip())
        except ValueError:
            if not rows:
                continue  # a header line
            raise ConfigError(f"{path}:{number}: not an ISO 8601 time: {row[0]!r}") from None
        if start.tzinfo is None:
            raise ConfigError(f"{path}:{number}: {row[0]!r} has no UTC offset")
        if len(row) < 2:
            raise ConfigError(f"{path}:{number}: expected 'start,quantity[,quality]'")
        try:
            quantity = Decimal(row[1].strip())
        except InvalidOperation:
            raise ConfigError(f"{path}:{number}: not a decimal quantity: {row[1]!r}") from None
        if not quantity.is_finite():
            raise ConfigError(f"{path}:{number}: not a finite quantity: {row[1]!r}")
        quality = row[2].strip() if len(row) > 2 and row[2].strip() else "actual"
        if quality not in QUALITIES:
            raise ConfigError(
                f"{path}:{number}: quality must be one of {', '.join(QUALITIES)}, got {quality!r}"
            )
        start = start.astimezone(UTC)
        if rows and start <= rows[-1][0]:
            raise ConfigError(f"{path}:{number}: starts must ascend ({row[0].strip()})")
        rows.append((start, quantity, quality))
    if not rows:
        raise ConfigError(f"{path}: no intervals in the usage file")
    if minutes is not None:
        step = timedelta(minutes=minutes)
    elif len(rows) > 1:
        step = min(b[0] - a[0] for a, b in pairwise(rows))
    else:
        step = timedelta(minutes=15)
    for (a, _, _), (b, _, _) in pairwise(rows):
        if b - a < step:
            raise ConfigError(f"{path}: intervals overlap at {a.isoformat()} (length {step})")
    return [UsageInterval(s, s + step, q, unit, quality) for s, q, quality in rows]

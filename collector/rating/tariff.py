"""Tariff files: one TOML file per tariff, holding its versions by effective date.

```
id = "tou-2026"
name = "Time of use 2026"
currency = "EUR"              # minor unit from ISO 4217 (or minor_unit = N)
unit = "kWh"                  # what it prices: kWh | m3 | ...
rounding = "half-up"          # each line rounded once: half-up|half-even|half-down|up|down
holidays = [2026-12-25]       # public holidays: weekend days for time-of-use (optional)
holidays_file = "holidays-nl.toml"   # or/and a file (TOML holidays = [...], or a date a line)

[[version]]
effective_from = 2026-01-01   # local date, inclusive
effective_to = 2027-01-01     # exclusive; omitted = open-ended

[[version.charge]]            # components, rated in this order; taxes see the lines before them
type = "standing"             # standing | energy | tiers | tou | dynamic | demand | minimum |
price = 0.45                  # tax | export (see components/ for each one's keys)
```
Prices are read as ``Decimal`` exactly as written. The first version's flat-only form (top-level
``standing_charge_per_day``, ``import_price_per_kwh``, ``export_credit_per_kwh``) still loads, as
one open-ended version of standing + energy (+ export credit).
"""

from __future__ import annotations

from datetime import date
from itertools import pairwise
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..tomlfile import Section, load_toml
from .components import PARSERS, ParseContext
from .components.common import ROUNDINGS
from .components.energy import Energy
from .components.export import ExportCredit
from .components.standing import Standing
from .model import Component, TariffHistory, TariffVersion

__all__ = ["MINOR_UNITS", "load_tariff", "load_tariffs"]

#: ISO 4217 minor-unit digits of the currencies a tariff may name (add as needed)
MINOR_UNITS = {
    "EUR": 2,
    "GBP": 2,
    "USD": 2,
    "CHF": 2,
    "SEK": 2,
    "NOK": 2,
    "DKK": 2,
    "PLN": 2,
    "CZK": 2,
    "CAD": 2,
    "AUD": 2,
    "JPY": 0,
}

LEGACY = {"standing_charge_per_day", "import_price_per_kwh", "export_credit_per_kwh"}
TOP = {
    "format",
    "id",
    "name",
    "currency",
    "minor_unit",
    "rounding",
    "unit",
    "holidays",
    "holidays_file",
    "version",
    "note",
    "source",
    "offered",  # best-tariff advice (collector/rating/advise.py): offered to customers?
    "commodity",  # ... and for which service type
}


def _date(sec: Section, key: str, value: Any) -> date:
    if isinstance(value, date) and not hasattr(value, "hour"):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    raise sec.error(key, f"must be a date like 2026-01-01, got {value!r}")


def _dates(sec: Section, key: str) -> frozenset[date]:
    value = sec.data.get(key, [])
    if not isinstance(value, list):
        raise sec.error(key, "must be a list of dates")
    return frozenset(_date(sec, key, v) for v in value)


def _holidays_file(sec: Section) -> frozenset[date]:
    path = sec.path_of("holidays_file")
    if path.suffix == ".toml":
        doc = load_toml(path, "holidays file")
        doc.check_keys({"holidays", "name", "source"})
        return _dates(doc, "holidays")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise sec.error("holidays_file", f"cannot read {path}: {exc.strerror}") from None
    days = set()
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip().split(",", 1)[0].strip()
        if not text:
            continue
        try:
            days.add(date.fromisoformat(text))
        except ValueError:
            raise ConfigError(f"{path}:{number}: not a date: {text!r}") from None
    return frozenset(days)


def _legacy(doc: Section, ctx: ParseContext) -> tuple[TariffVersion, ...]:
    components: list[Component] = []
    standing = doc.decimal("standing_charge_per_day")
    energy = doc.decimal("import_price_per_kwh")
    export = doc.decimal("export_credit_per_kwh", required=False)
    for key, value in (
        ("standing_charge_per_day", standing),
        ("import_price_per_kwh", energy),
        ("export_credit_per_kwh", export),
    ):
        if value is not None and value < 0:
            raise doc.error(key, f"must not be negative, got {value}")
    assert standing is not None and energy is not None
    components.append(Standing("Standing charge", standing, "day"))
    components.append(Energy("Energy", energy, ctx.unit))
    if export is not None:
        components.append(ExportCredit("Export credit", export, ctx.unit))
    return (TariffVersion(date.min, None, tuple(components)),)


def load_tariff(path: Path) -> TariffHistory:
    doc = load_toml(path, "tariff file")
    legacy = bool(LEGACY & set(doc.data))
    doc.check_keys(TOP | LEGACY if legacy else TOP)
    currency = doc.str("currency")
    if "minor_unit" in doc.data:
        minor = doc.int("minor_unit", None, 0, 4)
    elif currency in MINOR_UNITS:
        minor = MINOR_UNITS[currency]
    else:
        raise doc.error("currency", f"unknown currency {currency!r}: add minor_unit = N")
    rounding = doc.str("rounding", "half-up")
    if rounding not in ROUNDINGS:
        raise doc.error("rounding", f"must be one of {', '.join(ROUNDINGS)}, got {rounding!r}")
    if "format" in doc.data and doc.int("format", 2, 1, 2) != 2:
        raise doc.error("format", "this meterlink reads tariff format 2")
    unit = doc.str("unit", "kWh")
    ctx = ParseContext(path, currency, unit)
    holidays = _dates(doc, "holidays")
    if "holidays_file" in doc.data:
        holidays |= _holidays_file(doc)
    if legacy:
        if "version" in doc.data:
            raise doc.error("version", "use either [[version]] tables or the flat keys")
        versions = _legacy(doc, ctx)
    else:
        versions = _versions(doc, ctx, holidays)
    return TariffHistory(
        id=doc.str("id"),
        name=doc.str("name", doc.str("id")),
        currency=currency,
        minor_unit=minor,
        rounding=ROUNDINGS[rounding],
        unit=unit,
        versions=versions,
        path=path,
    )


def _versions(
    doc: Section, ctx: ParseContext, holidays: frozenset[date]
) -> tuple[TariffVersion, ...]:
    tables = doc.tables("version")
    if not tables:
        raise doc.error(None, "no [[version]] table (each needs effective_from and charges)")
    versions: list[TariffVersion] = []
    charge_index = 0
    for sec in tables:
        sec.check_keys({"effective_from", "effective_to", "charge", "note", "holidays"})
        start = _date(sec, "effective_from", sec._get("effective_from", None, True))
        end = None
        if "effective_to" in sec.data:
            end = _date(sec, "effective_to", sec.data["effective_to"])
            if end <= start:
                raise sec.error("effective_to", f"must be after effective_from ({start})")
        charges = sec.data.get("charge")
        if not isinstance(charges, list) or not charges:
            raise sec.error(None, "a version needs [[version.charge]] tables")
        components: list[Component] = []
        for item in charges:
            csec = Section(sec.file, item, "version.charge", charge_index, True)
            charge_index += 1
            if not isinstance(item, dict):
                raise csec.error(None, "must be a table")
            kind = csec.str("type")
            parser = PARSERS.get(kind)
            if parser is None:
                raise csec.error(
                    "type", f"unknown charge type {kind!r} (known: {', '.join(PARSERS)})"
                )
            components.append(parser(csec, ctx))
        note = sec.data.get("note", "")
        versions.append(
            TariffVersion(
                start, end, tuple(components), holidays | _dates(sec, "holidays"), str(note)
            )
        )
    versions.sort(key=lambda v: v.effective_from)
    for before, after in pairwise(versions):
        if before.effective_to is None or before.effective_to > after.effective_from:
            raise doc.error(
                None,
                f"versions overlap: the one from {before.effective_from} "
                f"runs into the one from {after.effective_from}",
            )
    return tuple(versions)


def load_tariffs(folder: Path) -> dict[str, TariffHistory]:
    if not folder.is_dir():
        raise ConfigError(f"{folder}: tariffs folder not found")
    tariffs: dict[str, TariffHistory] = {}
    for path in sorted(folder.glob("*.toml")):
        tariff = load_tariff(path)
        if tariff.id in tariffs:
            raise ConfigError(
                f"{path}: tariff id {tariff.id!r} already defined in {tariffs[tariff.id].path}"
            )
        tariffs[tariff.id] = tariff
    return tariffs

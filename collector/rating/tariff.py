"""Tariff files: one TOML file per tariff in the tariffs folder.

```
id = "flat-2026"
name = "Flat 2026"
currency = "EUR"
standing_charge_per_day = 0.61234    # currency units per day, kept at full precision
import_price_per_kwh = 0.27815
export_credit_per_kwh = 0.07         # optional
```
Prices are read as ``Decimal`` exactly as written (TOML floats are parsed as Decimal).
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from ..errors import ConfigError
from ..tomlfile import load_toml

__all__ = ["MINOR_UNITS", "Tariff", "load_tariff", "load_tariffs"]

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
    "JPY": 0,
}


@dataclass(frozen=True)
class Tariff:
    id: str
    name: str
    currency: str
    minor_unit: int
    standing_charge_per_day: Decimal
    import_price_per_kwh: Decimal
    export_credit_per_kwh: Decimal | None
    path: Path


def load_tariff(path: Path) -> Tariff:
    doc = load_toml(path, "tariff file")
    doc.check_keys(
        {
            "id",
            "name",
            "currency",
            "minor_unit",
            "standing_charge_per_day",
            "import_price_per_kwh",
            "export_credit_per_kwh",
        }
    )
    currency = doc.str("currency")
    if "minor_unit" in doc.data:
        minor = doc.int("minor_unit", None, 0, 4)
    elif currency in MINOR_UNITS:
        minor = MINOR_UNITS[currency]
    else:
        raise doc.error("currency", f"unknown currency {currency!r}: add minor_unit = N")
    prices = {}
    for key in ("standing_charge_per_day", "import_price_per_kwh", "export_credit_per_kwh"):
        value = doc.decimal(key, required=key != "export_credit_per_kwh")
        if value is not None and value < 0:
            raise doc.error(key, f"must not be negative, got {value}")
        prices[key] = value
    return Tariff(
        id=doc.str("id"),
        name=doc.str("name", doc.str("id")),
        currency=currency,
        minor_unit=minor,
        standing_charge_per_day=prices["standing_charge_per_day"],  # type: ignore[arg-type]
        import_price_per_kwh=prices["import_price_per_kwh"],  # type: ignore[arg-type]
        export_credit_per_kwh=prices["export_credit_per_kwh"],
        path=path,
    )


def load_tariffs(folder: Path) -> dict[str, Tariff]:
    if not folder.is_dir():
        raise ConfigError(f"{folder}: tariffs folder not found")
    tariffs: dict[str, Tariff] = {}
    for path in sorted(folder.glob("*.toml")):
        tariff = load_tariff(path)
        if tariff.id in tariffs:
            raise ConfigError(
                f"{path}: tariff id {tariff.id!r} already defined in {tariffs[tariff.id].path}"
            )
        tariffs[tariff.id] = tariff
    return tariffs

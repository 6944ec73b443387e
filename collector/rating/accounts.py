"""Customer accounts: who is billed, in which time zone, on which tariff, for which meters.

```
[[account]]
id = "acc-1001"
name = "..."
timezone = "Europe/Amsterdam"
tariff = "flat-2026"
meters = ["em-sdm-01"]
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from protocols.errors import EncodeError
from protocols.record import check_id

from ..tomlfile import load_toml
from .tariff import Tariff

__all__ = ["Account", "load_accounts"]


@dataclass(frozen=True)
class Account:
    id: str
    name: str
    timezone: ZoneInfo
    tariff: Tariff
    meters: tuple[str, ...]


def load_accounts(path: Path, tariffs: dict[str, Tariff]) -> dict[str, Account]:
    doc = load_toml(path, "accounts file")
    doc.check_keys({"account"})
    accounts: dict[str, Account] = {}
    meter_owner: dict[str, str] = {}
    for sec in doc.tables("account"):
        sec.check_keys({"id", "name", "timezone", "tariff", "meters"})
        account_id = sec.str("id")
        if account_id in accounts:
            raise sec.error("id", f"account {account_id!r} is defined twice")
        zone_name = sec.str("timezone")
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise sec.error("timezone", f"unknown time zone {zone_name!r}") from None
        tariff_id = sec.str("tariff")
        if tariff_id not in tariffs:
            known = ", ".join(sorted(tariffs)) or "none"
            raise sec.error("tariff", f"unknown tariff {tariff_id!r} (known: {known})")
        meters = sec.str_list("meters")
        if not meters:
            raise sec.error("meters", "an account needs at least one meter")
        for meter in meters:
            try:
                check_id("meter", meter)
            except EncodeError as exc:
                raise sec.error("meters", str(exc)) from None
            if meter in meter_owner:
                raise sec.error("meters", f"meter {meter} already in account {meter_owner[meter]}")
            meter_owner[meter] = account_id
        accounts[account_id] = Account(
            account_id, sec.str("name", account_id), zone, tariffs[tariff_id], tuple(meters)
        )
    return accounts

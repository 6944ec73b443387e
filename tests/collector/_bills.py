"""A billing site for the bill tests: a collector config with VEE on (1 h intervals), tariff and
account files, and a real SQLite file fed through ``Ingestor`` (signed records, VEE in the
ingest transaction), so bills are made from VEE's derived intervals as in production."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector.config import load_config
from collector.ingest import Ingestor
from collector.rating.run import bill_account, load_billing
from collector.registry import enrol_gateway
from collector.store import open_store
from collector.vee import VeeEngine
from protocols.obis import Obis

from ._fixtures import T0, T_END, message, record, write_public_key

HOUR = 3_600_000
DAY = 24 * HOUR
GW = "gw-1"

CONFIG = """\
[collector]
database = "c.sqlite"

[billing]
accounts = "accounts.toml"
tariffs = "tariffs"

[vee]
timezone = "Europe/Amsterdam"
interval = "1h"
"""

#: Electricity: TOU (peak Mon-Fri 07:00-23:00, else offpeak), a daily standing charge, export
#: credit, VAT 21 % on the charges (not on the credit: "on" lists the components).
ELECTRICITY = """
id = "e-tou"
name = "Electricity TOU"
currency = "EUR"
unit = "kWh"

[[version]]
effective_from = 2026-01-01

[[version.charge]]
type = "standing"
label = "Standing charge"
price = 0.5

[[version.charge]]
type = "tou"
label = "Energy"
default = "offpeak"
schedule = [{ days = "weekday", hours = "07:00-23:00", period = "peak" }]
[version.charge.periods]
peak = 0.30
offpeak = 0.20

[[version.charge]]
type = "export"
price = 0.07

[[version.charge]]
type = "tax"
label = "VAT"
percent = 21
on = ["standing", "tou"]
"""

GAS = """
id = "gas-flat"
name = "Gas"
currency = "EUR"
unit = "m3"

[[version]]
effective_from = 2026-01-01

[[version.charge]]
type = "standing"
label = "Standing charge"
price = 0.4

[[version.charge]]
type = "energy"
label = "Gas"
price = 1.25
"""

WATER = """
id = "water-flat"
name = "Water"
currency = "EUR"
unit = "m3"

[[version]]
effective_from = 2026-01-01

[[version.charge]]
type = "standing"
label = "Standing charge"
price = 0.2

[[version.charge]]
type = "energy"
label = "Water"
price = 2.0
"""

TARIFFS = {"e-tou": ELECTRICITY, "gas-flat": GAS, "water-flat": WATER}

IMPORT = Obis.parse("1-0:1.8.0")
EXPORT = Obis.parse("1-0:2.8.0")
GAS_VOLUME = Obis.parse("7-0:3.0.0")
WATER_VOLUME = Obis.parse("8-0:1.0.0")


def hourly(
    obis: Obis, unit: str, start_ms: int, hours: int, first: Decimal, step: Callable[[int], Decimal]
) -> list[tuple[int, Obis, str, str]]:
    """Register readings every hour from ``start_ms``: ``first``, then + ``step(hour)``."""
    out, value = [], first
    for h in range(hours + 1):
        out.append((start_ms + h * HOUR, obis, str(value), unit))
        value += step(h)
    return out


class Site:
    def __init__(self, root: Path, accounts: str, tariffs: dict[str, str] | None = None) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        (root / "tariffs").mkdir(exist_ok=True)
        for name, text in (tariffs or TARIFFS).items():
            (root / "tariffs" / f"{name}.toml").write_text(text)
        (root / "accounts.toml").write_text(accounts)
        self.config_path = root / "collector.toml"
        self.config_path.write_text(CONFIG)
        self.config = load_config(self.config_path)
        self.db = self.config.collector.database
        self.key = Ed25519PrivateKey.generate()
        self.seq = 0
        self.batch = 0
        self.meters: list[str] = []

    def enrol(self, meters: Sequence[str]) -> None:
        self.meters = list(meters)
        pem = write_public_key(self.key, self.root / "gw.pem")

        async def go() -> None:
            store = await open_store(self.db)
            try:
                await enrol_gateway(store, GW, pem, self.meters, T0 - 60 * DAY)
            finally:
                await store.close()

        asyncio.run(go())

    def feed(self, meter: str, readings: Sequence[tuple[int, Obis, str, str]], now_ms: int) -> None:
        """One record per capture instant (its values together), ingested in batches of 500
        with VEE on, the collector's clock at ``now_ms``."""
        by_time: dict[int, list[tuple[Obis, str, str]]] = {}
        for ms, obis, value, unit in readings:
            by_time.setdefault(ms, []).append((obis, value, unit))
        raws = []
        for ms in sorted(by_time):
            self.seq += 1
            raws.append(record(self.key, GW, meter, self.seq, ms, by_time[ms]).raw)
        messages = []
        for i in range(0, len(raws), 500):
            self.batch += 1
            messages.append(message(GW, self.batch, raws[i : i + 500], received_ms=now_ms))

        async def go() -> None:
            store = await open_store(self.db)
            try:
                ingestor = Ingestor(store, clock_ms=lambda: now_ms, vee=VeeEngine(self.config.vee))
                for msg in messages:
                    outcomes = await ingestor.ingest([msg])
                    assert all(o.ack is not None for o in outcomes)
            finally:
                await store.close()

        asyncio.run(go())

    def bill(
        self, account: str, period: str, as_of_ms: int, issue: bool = False
    ) -> tuple[dict[str, Any], str]:
        billing = load_billing(self.config.billing.accounts, self.config.billing.tariffs)

        async def go() -> tuple[dict[str, Any], str]:
            store = await open_store(self.db)
            try:
                return await bill_account(
                    store, billing, billing.account(account), period, as_of_ms, issue
                )
            finally:
                await store.close()

        return asyncio.run(go())


def lines_by_label(section: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {line["label"]: line for line in section["lines"]}


# a site with one account of three commodities, November 2026 read every hour ----------------

HOURS = 720 + 4  # readings from 2 h before the month to 2 h after it
FIRST = T0 - 2 * HOUR
AFTER = T_END + 10 * 24 * HOUR  # billed on 11 December

CONVERGENT = """
[[account]]
id = "acc-1"
name = "Jansen, Dorpsstraat 1"
timezone = "Europe/Amsterdam"

[[account.service_point]]
id = "sp-e"
commodity = "electricity"
tariff = "e-tou"
meters = ["em-1"]

[[account.service_point]]
id = "sp-g"
commodity = "gas"
tariff = "gas-flat"
meters = ["gm-1"]

[[account.service_point]]
id = "sp-w"
commodity = "water"
tariff = "water-flat"
meters = ["wm-1"]
"""


def constant(step: str) -> Callable[[int], Decimal]:
    return lambda _h: Decimal(step)


def electricity(first_ms: int = FIRST, hours: int = HOURS, start: str = "1000.000"):
    """+0.5 kWh import and +0.1 kWh export every hour."""
    return hourly(IMPORT, "kWh", first_ms, hours, Decimal(start), constant("0.5")) + hourly(
        EXPORT, "kWh", first_ms, hours, Decimal("50.000"), constant("0.1")
    )


def convergent_site(root: Path) -> Site:
    """Electricity (em-1: +0.5 kWh import, +0.1 kWh export an hour), gas (gm-1: +0.1 m3 an
    hour) and water (wm-1: +0.005 m3 an hour) of account acc-1, all of November 2026."""
    site = Site(root, CONVERGENT)
    site.enrol(["em-1", "gm-1", "wm-1"])
    site.feed("em-1", electricity(), AFTER)
    gas = hourly(GAS_VOLUME, "m3", FIRST, HOURS, Decimal("500.000"), constant("0.1"))
    site.feed("gm-1", gas, AFTER)
    water = hourly(WATER_VOLUME, "m3", FIRST, HOURS, Decimal("20.000"), constant("0.005"))
    site.feed("wm-1", water, AFTER)
    return site

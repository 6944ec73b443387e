"""A real collector database for the verify tests: records signed by a test key, ingested by
``collector.ingest.Ingestor``, with a collector config, a tariff and an account beside it."""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from collector import cli as collector_cli
from collector.ingest import Ingestor
from collector.registry import enrol_gateway
from collector.store import open_store
from protocols.record import SignedRecord
from tests.collector._fixtures import (
    IMPORT,
    POWER,
    T0,
    T_END,
    message,
    record,
    write_public_key,
)

GW = "gw-1"
MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR

CONFIG = """
[collector]
database = "collector.sqlite"
[billing]
accounts = "accounts.toml"
tariffs = "tariffs"
"""
TARIFF = """
id = "flat-test"
currency = "EUR"
standing_charge_per_day = 0.5
import_price_per_kwh = 0.25
"""
ACCOUNTS = """
[[account]]
id = "acc-1"
name = "Test"
timezone = "Europe/Amsterdam"
tariff = "flat-test"
meters = ["em-1"]
"""

# (meter, captured_ms, import kWh): em-1 straddles November 2026 (bill boundaries
# interpolate with the readings just outside the month); em-2 is another customer's.
CAPTURES = [
    ("em-1", T0 - 10 * MIN, "1000.00"),
    ("em-1", T0 + 30 * MIN, "1000.02"),
    ("em-2", T0 + HOUR, "50.0"),
    ("em-1", T0 + 15 * DAY, "1180.40"),
    ("em-2", T0 + 15 * DAY, "90.5"),
    ("em-1", T_END - 15 * MIN, "1350.37"),
    ("em-1", T_END + 15 * MIN, "1350.45"),
]


@dataclass
class Site:
    root: Path
    config: Path
    database: Path
    key: Ed25519PrivateKey
    public_pem: Path
    records: list[SignedRecord]


def build_site(root: Path) -> Site:
    root.mkdir(parents=True, exist_ok=True)
    (root / "tariffs").mkdir()
    (root / "tariffs" / "t.toml").write_text(TARIFF)
    (root / "accounts.toml").write_text(ACCOUNTS)
    config = root / "collector.toml"
    config.write_text(CONFIG)
    key = Ed25519PrivateKey.generate()
    pem = write_public_key(key, root / "gw-1.pem")
    records = [
        record(key, GW, meter, seq, ms, [(IMPORT, kwh, "kWh"), (POWER, "1234", "W")])
        for seq, (meter, ms, kwh) in enumerate(CAPTURES, start=1)
    ]
    database = root / "collector.sqlite"

    async def go() -> None:
        store = await open_store(database)
        try:
            await enrol_gateway(store, GW, pem, ["em-1", "em-2"], T0 - DAY)
            outcomes = await Ingestor(store, clock_ms=lambda: T_END + DAY).ingest(
                [
                    message(GW, 1, [r.raw for r in records[:4]]),
                    message(GW, 2, [r.raw for r in records[4:]]),
                ]
            )
            assert all(o.ack is not None and o.ack.stored for o in outcomes)
        finally:
            await store.close()

    asyncio.run(go())
    return Site(root, config, database, key, pem, records)


def collector(*args: str) -> int:
    return collector_cli.main(list(args))


def export(site: Site, out: Path, *selection: str) -> Path:
    rc = collector("export", "--config", str(site.config), *selection, "--out", str(out))
    assert rc == 0
    return out


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_lines(path: Path, docs: list[dict]) -> Path:
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return path


def record_bytes(line: dict) -> bytearray:
    return bytearray(base64.b64decode(line["record"]))


def set_record_bytes(line: dict, raw: bytes) -> None:
    line["record"] = base64.b64encode(raw).decode()

"""Bills computed from register readings in a real SQLite file (VEE off: the register-difference
fallback of ``collector.rating.bill``), against hand-computed amounts, with the first version's
flat tariff form and account shorthand (both still load).

November 2026 in Europe/Amsterdam has no DST change (it ended on 25 October): the month is
2026-10-31T23:00Z .. 2026-11-30T23:00Z, 30 days.
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from decimal import Decimal
from pathlib import Path

import pytest

from collector.errors import ConfigError, RatingError
from collector.rating import bill_to_json, build_bill, load_accounts, load_tariffs, render_text
from collector.store import IngestWrite, ReadingRow, open_store
from meterlink.demo import RUNTIME_DLMS_METERS

from ._fixtures import T0, T_END

MIN = 60_000
HOUR = 60 * MIN
TARIFF = """
id = "flat-test"
currency = "EUR"
standing_charge_per_day = 0.61234
import_price_per_kwh = 0.27815
export_credit_per_kwh = 0.07
"""
ACCOUNTS = """
[[account]]
id = "acc-1"
name = "Test"
timezone = "Europe/Amsterdam"
tariff = "flat-test"
meters = ["em-sdm-01"]
"""


TARIFFS: dict = {}


def setup(tmp_path: Path, readings: list[tuple[str, int, str]], tariff: str = TARIFF):
    (tmp_path / "tariffs").mkdir()
    (tmp_path / "tariffs" / "t.toml").write_text(tariff)
    (tmp_path / "accounts.toml").write_text(ACCOUNTS)
    tariffs = load_tariffs(tmp_path / "tariffs")
    account = load_accounts(tmp_path / "accounts.toml", tariffs)["acc-1"]
    db = tmp_path / "c.sqlite"
    TARIFFS.clear()
    TARIFFS.update(tariffs)

    async def seed():
        store = await open_store(db)
        rows = IngestWrite(
            readings=[
                ReadingRow("em-sdm-01", obis, ms, value, "kWh", 0, 1, "gw-1", i + 1)
                for i, (obis, ms, value) in enumerate(readings)
            ]
        )
        async with store.ingest_transaction() as tx:
            await tx.write(rows)
        await store.close()

    asyncio.run(seed())
    return db, account


def bill_for(db: Path, account, now_ms: int, period: str = "2026-11"):
    async def go():
        store = await open_store(db)
        try:
            return await build_bill(store, account, period, now_ms, TARIFFS)
        finally:
            await store.close()

    return asyncio.run(go())


FULL_MONTH = [
    # import: 1000.00 ten minutes before the start, 1000.02 thirty minutes after:
    # at the start 1000.00 + 0.02 x 10/40 = 1000.005 -> 1000.01 (half-up; half-even: 1000.00)
    ("1-0:1.8.0", T0 - 10 * MIN, "1000.00"),
    ("1-0:1.8.0", T0 + 30 * MIN, "1000.02"),
    ("1-0:1.8.0", T_END, "1350.37"),  # exactly at the end
    ("1-0:1.8.0", T_END + HOUR, "1350.90"),
    # export (0.1 kWh resolution): 200.0 / 201.0 an hour either side of the start -> 200.5;
    # 260.0 an hour before the end, 260.8 three hours after -> 260.2
    ("1-0:2.8.0", T0 - HOUR, "200.0"),
    ("1-0:2.8.0", T0 + HOUR, "201.0"),
    ("1-0:2.8.0", T_END - HOUR, "260.0"),
    ("1-0:2.8.0", T_END + 3 * HOUR, "260.8"),
]


def lines_of(bill):
    (section,) = bill.sections
    return section.lines


def uses_of(bill):
    (section,) = bill.sections
    (meter,) = section.meters
    return {q.obis: q for q in meter.quantities}


def test_full_month_bill_matches_hand_computed_amounts(tmp_path: Path) -> None:
    db, account = setup(tmp_path, FULL_MONTH)
    bill = bill_for(db, account, now_ms=T_END + 10 * 24 * HOUR)
    standing, energy, export = lines_of(bill)
    # 30 days x 0.61234 = 18.3702 -> 18.37
    assert (standing.quantity, standing.amount) == (Decimal(30), Decimal("18.37"))
    # 1350.37 - 1000.01 = 350.36 kWh x 0.27815 = 97.452634 -> 97.45
    first, last = uses_of(bill)["1-0:1.8.0"].boundaries
    assert first.value == Decimal("1000.01")
    assert first.method == "interpolated"
    assert last.method == "exact"
    assert (energy.quantity, energy.amount) == (Decimal("350.36"), Decimal("97.45"))
    # 260.2 - 200.5 = 59.7 kWh x 0.07 = 4.179 -> -4.18
    assert (export.quantity, export.amount) == (Decimal("59.7"), Decimal("-4.18"))
    assert bill.total == Decimal("111.64")  # 18.37 + 97.45 - 4.18
    assert not bill.to_date
    assert (bill.start_ms, bill.end_ms) == (T0, T_END)
    doc = json.loads(bill_to_json(bill))
    assert doc["start"] == "2026-11-01T00:00:00+01:00" and doc["end"] == "2026-12-01T00:00:00+01:00"


def test_interpolation_is_explained_and_the_readings_listed(tmp_path: Path) -> None:
    db, account = setup(tmp_path, FULL_MONTH)
    bill = bill_for(db, account, now_ms=T_END + 10 * 24 * HOUR)
    doc = json.loads(bill_to_json(bill))
    assert doc["total"] == "111.64"
    start = doc["lines"][1]["readings"][0]
    assert start["value"] == "1000.01" and len(start["readings"]) == 2
    assert "1000.005" in start["explain"] and "-> 1000.01" in start["explain"]
    text = render_text(bill)
    assert "reading em-sdm-01 2026-10-31T22:50:00.000Z: 1000.00 kWh" in text
    assert "register difference" in text


def test_without_a_reading_after_the_end_the_bill_is_to_date(tmp_path: Path) -> None:
    readings = [
        ("1-0:1.8.0", T0 - 10 * MIN, "1000.00"),
        ("1-0:1.8.0", T0 + 30 * MIN, "1000.02"),
        ("1-0:1.8.0", T0 + 20 * 24 * HOUR, "1120.51"),
    ]
    db, account = setup(tmp_path, readings)
    now = T0 + 20 * 24 * HOUR + 5 * HOUR  # 21 November, local
    bill = bill_for(db, account, now_ms=now)
    standing, energy, _export = lines_of(bill)  # no export readings: a zero credit
    assert bill.to_date
    use = uses_of(bill)["1-0:1.8.0"]
    assert use.boundaries[1].method == "latest reading (to date)"
    assert "(to date)" in use.note
    assert energy.quantity == Decimal("120.50")  # 1120.51 - 1000.01
    assert energy.amount == Decimal("33.52")  # 120.50 x 0.27815 = 33.517075
    assert standing.quantity == Decimal(21)  # 1..21 November
    assert "TO DATE" in render_text(bill)


def test_money_rounds_half_up_once_per_line(tmp_path: Path) -> None:
    tariff = TARIFF.replace("0.61234", "0.0155")  # 30 x 0.0155 = 0.465
    db, account = setup(tmp_path, FULL_MONTH, tariff)
    bill = bill_for(db, account, now_ms=T_END + 24 * HOUR)
    assert lines_of(bill)[0].amount == Decimal("0.47")  # half-even would give 0.46
    assert bill.total == sum(line.amount for line in lines_of(bill))


def test_unknown_period_text_is_refused(tmp_path: Path) -> None:
    db, account = setup(tmp_path, FULL_MONTH)
    with pytest.raises(RatingError, match="YYYY-MM"):
        bill_for(db, account, now_ms=T_END, period="2026-13")


def test_account_with_unknown_tariff_names_file_line_and_key(tmp_path: Path) -> None:
    (tmp_path / "tariffs").mkdir()
    (tmp_path / "tariffs" / "t.toml").write_text(TARIFF)
    path = tmp_path / "accounts.toml"
    path.write_text(ACCOUNTS + ACCOUNTS.replace("acc-1", "acc-2").replace("flat-test", "nope"))
    with pytest.raises(ConfigError) as err:
        load_accounts(path, load_tariffs(tmp_path / "tariffs"))
    message = str(err.value)
    assert str(path) in message and "line 13" in message and "account[1].tariff" in message


def test_tariff_with_a_float_typo_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "tariffs").mkdir()
    (tmp_path / "tariffs" / "t.toml").write_text(TARIFF.replace("0.27815", '"0.27,815"'))
    with pytest.raises(ConfigError, match=r"line 5: key 'import_price_per_kwh'"):
        load_tariffs(tmp_path / "tariffs")


def test_demo_accounts_load_and_bill_every_meter_of_the_demo_fleet_once() -> None:
    config = Path(__file__).resolve().parents[2] / "config"
    tariffs = load_tariffs(config / "tariffs")
    accounts = load_accounts(config / "accounts" / "demo.toml", tariffs)
    meters = sorted(m for a in accounts.values() for m in a.meters)
    scenario = tomllib.loads((config / "scenarios" / "demo.toml").read_text())
    fleet = [u["meter"] for s in scenario["servers"] for u in s["units"]]
    fleet += [d["meter"] for d in scenario.get("dlms", [])]
    fleet += RUNTIME_DLMS_METERS  # added by the demo with their secrets
    assert meters == sorted(fleet)
    assert "em-dlms-01" in meters
    assert tariffs["flat-2026"].unit == "kWh"

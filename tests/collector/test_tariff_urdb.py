"""URDB import: the sample rates (tests/fixtures/urdb/, written for these tests after the
URDB field documentation) convert to TOML that loads, carries every price and schedule hour
exactly, lists what it cannot carry, and rates as the URDB rate reads by hand."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from collector.errors import ConfigError
from collector.rating.engine import rate
from collector.rating.model import UsageInterval
from collector.rating.tariff import load_tariff
from collector.rating.urdb import convert_urdb, load_urdb, to_toml

D = Decimal
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "urdb"
CHICAGO = ZoneInfo("America/Chicago")
SAMPLES = ["residential-tiered", "residential-tou", "commercial-demand"]


def imported(tmp_path: Path, name: str):
    result = convert_urdb(load_urdb(FIXTURES / f"{name}.json"))
    path = tmp_path / f"{name}.toml"
    path.write_text(to_toml(result, name), encoding="utf-8")
    return result, load_tariff(path)


def hourly(start: datetime, quantities: list[str]) -> list[UsageInterval]:
    first = start.astimezone(UTC)
    hour = timedelta(hours=1)
    return [UsageInterval(first + hour * i, first + hour * (i + 1), D(q), "kWh", "actual")
            for i, q in enumerate(quantities)]  # fmt: skip


@pytest.mark.parametrize("name", SAMPLES)
def test_round_trip_carries_every_price_and_schedule_hour(tmp_path: Path, name: str) -> None:
    raw = json.loads((FIXTURES / f"{name}.json").read_text(), parse_float=Decimal)
    _, tariff = imported(tmp_path, name)
    (version,) = tariff.versions
    assert version.effective_from == datetime.fromtimestamp(raw["startdate"], UTC).date()
    energy = next(c for c in version.components if c.kind in ("energy", "tier", "tou"))
    structure = raw["energyratestructure"]
    for p, tiers in enumerate(structure):
        for t, tier in enumerate(tiers):
            price = D(tier["rate"]) + D(tier.get("adj", 0))
            if energy.kind == "energy":
                assert energy.price == price
            else:
                assert energy.table.prices[p][t] == price
    if energy.kind == "tou":
        # every month x hour x weekday/weekend names the URDB period
        monday, saturday = date(2026, 1, 5), date(2026, 1, 10)
        for key, base in (("energyweekdayschedule", monday), ("energyweekendschedule", saturday)):
            for m in range(12):
                for h in range(24):
                    local = datetime(2026, m + 1, base.day, h, 30)
                    local = local.replace(day=_same_weekday(2026, m + 1, base.weekday()))
                    name_at = energy.schedule.name_at(local, frozenset())
                    assert name_at == f"p{raw[key][m][h] + 1}", (key, m, h)


def _same_weekday(year: int, month: int, weekday: int) -> int:
    d = date(year, month, 1)
    return 1 + (weekday - d.weekday()) % 7


def test_twice_the_same_toml(tmp_path: Path) -> None:
    for name in SAMPLES:
        first = to_toml(convert_urdb(load_urdb(FIXTURES / f"{name}.json")), name)
        second = to_toml(convert_urdb(load_urdb(FIXTURES / f"{name}.json")), name)
        assert first == second


def test_what_is_not_carried_is_listed(tmp_path: Path) -> None:
    dropped = {n: convert_urdb(load_urdb(FIXTURES / f"{n}.json")).dropped for n in SAMPLES}
    assert dropped["residential-tiered"] == [
        "fueladjustmentsmonthly: no place for it in the tariff format"
    ]
    assert dropped["residential-tou"] == [
        "energyratestructure[0][1].sell = 0.04: sell rates are not carried"
    ]
    assert (
        "demandratestructure[1]: 2 demand tiers, only the first is carried"
        in dropped["commercial-demand"]
    )
    assert any(line.startswith("coincidentratestructure") for line in dropped["commercial-demand"])


def test_residential_tiered_bill_by_hand(tmp_path: Path) -> None:
    _, tariff = imported(tmp_path, "residential-tiered")
    start, end = datetime(2026, 11, 1, tzinfo=CHICAGO), datetime(2026, 12, 1, tzinfo=CHICAGO)
    lines = rate(tariff, hourly(datetime(2026, 11, 2, tzinfo=CHICAGO), ["70"] * 10), start,
                 end, CHICAGO)  # fmt: skip
    got = [(x.component, x.quantity, x.unit_price, x.amount) for x in lines]
    # fixed 12.50 $/month x 30/30; 700 kWh: 500 x (0.0985 + 0.0042) = 51.35,
    # 200 x (0.1123 + 0.0042) = 23.30; minimum 20 $/month not reached; total 87.15
    assert got == [
        ("standing", D(30), D("12.5") / 30, D("12.50")),
        ("tier", D(500), D("0.1027"), D("51.35")),
        ("tier", D(200), D("0.1165"), D("23.30")),
    ]
    assert sum(x.amount for x in lines) == D("87.15")


def test_residential_tou_summer_weekday_by_hand(tmp_path: Path) -> None:
    _, tariff = imported(tmp_path, "residential-tou")
    la = ZoneInfo("America/Los_Angeles")
    start, end = datetime(2026, 7, 1, tzinfo=la), datetime(2026, 7, 2, tzinfo=la)
    lines = {x.label: x for x in rate(tariff, hourly(start, ["1"] * 24), start, end, la)}
    # Wednesday in July: 16-21 is p2 (5 h x 0.4905 = 2.4525 -> 2.45), the rest p1
    # (19 h x 0.2912 = 5.5328 -> 5.53); fixed 0.394 $/day -> 0.39
    assert lines["Energy, p2, tier 1 (0-300 kWh)"].amount == D("2.45")
    assert lines["Energy, p1, tier 1 (0-300 kWh)"].amount == D("5.53")
    assert lines["Fixed charge"].amount == D("0.39")


def test_commercial_demand_by_hand(tmp_path: Path) -> None:
    _, tariff = imported(tmp_path, "commercial-demand")
    ny = ZoneInfo("America/New_York")
    start, end = datetime(2026, 7, 1, tzinfo=ny), datetime(2026, 8, 1, tzinfo=ny)
    quarter = timedelta(minutes=15)
    first = datetime(2026, 7, 1, tzinfo=ny).astimezone(UTC)
    # 2.5 kWh a quarter (10 kW) all day, 10 kWh a quarter (40 kW) from 14:00 to 15:00 (on-peak)
    quantities = [D("10") if 56 <= i < 60 else D("2.5") for i in range(96)]
    usage = [UsageInterval(first + quarter * i, first + quarter * (i + 1), q, "kWh", "actual")
             for i, q in enumerate(quantities)]  # fmt: skip
    lines = rate(tariff, usage, start, end, ny)
    demand = {x.label: x for x in lines if x.component == "demand"}
    # flat demand in July: period m2 = 11.40 + 0.35 = 11.75 $/kW; the highest 15 minutes
    # 10 kWh x 4 = 40 kW: 40 x 11.75 = 470.00
    assert demand["Demand, m2"].quantity == 40 and demand["Demand, m2"].amount == D("470.00")
    # TOU demand d2 (summer 12-18 weekdays): 40 kW x 6.10 = 244.00
    assert demand["Demand, time of use, d2"].amount == D("244.00")
    # energy: 12-18 on-peak p3: 5 h x 10 + 40 = 90 kWh x 0.1419 = 12.771 -> 12.77
    energy = {x.period: x for x in lines if x.component == "tou"}
    assert energy["p3"].quantity == 90 and energy["p3"].amount == D("12.77")
    assert not [x for x in lines if x.component == "minimum"]  # well above 150


def test_not_a_urdb_rate(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}', encoding="utf-8")
    with pytest.raises(ConfigError, match="not a URDB rate"):
        load_urdb(path)
    path.write_text('{"items": [', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"x.json:1: not JSON"):
        load_urdb(path)


@pytest.mark.integration
def test_import_urdb_command(tmp_path: Path) -> None:
    out = tmp_path / "gs2.toml"
    done = subprocess.run(
        [sys.executable, "-m", "meterlink", "tariff", "import-urdb",
         str(FIXTURES / "commercial-demand.json"), "--out", str(out), "--id", "gs-2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "not carried: coincidentratestructure" in done.stderr
    assert load_tariff(out).id == "gs-2"
    bad = subprocess.run(
        [sys.executable, "-m", "meterlink", "tariff", "import-urdb", str(tmp_path / "none.json")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode == 1 and "none.json: cannot read URDB file" in bad.stderr


def test_older_rates_fixed_and_minimum_monthly_charges() -> None:
    rate_ = {
        "label": "539f6a23ec4f024411ec8bf9",
        "name": "Primary Service",
        "fixedmonthlycharge": 275,
        "minmonthlycharge": D("50.5"),
        "energyratestructure": [[{"rate": D("0.0811")}]],
        "energyweekdayschedule": [[0] * 24] * 12,
        "energyweekendschedule": [[0] * 24] * 12,
    }
    result = convert_urdb(rate_)
    assert result.dropped == []
    assert result.charges == [
        {"type": "standing", "label": "Fixed charge", "price": D(275), "per": "month"},
        {"type": "energy", "label": "Energy", "price": D("0.0811")},
        {"type": "minimum", "label": "Minimum charge top-up", "amount": D("50.5"), "per": "month"},
    ]

"""Best-tariff advice (``collector/rating/advise.py``, ``meterlink collector advise``): three
accounts with a year of hourly data (2026, Europe/Amsterdam) fed through the real ingest with
VEE, rated on every offered tariff; the annual costs are worked out by hand below.

The calendar of 2026 (used by the hand checks): 365 days, 8,760 hours (the DST days, 29 March
and 25 October, are Sundays and cancel out); 1 January is a Thursday, so 261 weekdays. There
are no public holidays in these tariffs.

Tariffs offered for electricity (kWh): ``flat``, ``tou``, ``tiered``, ``demand``; ``legacy`` is
the cheapest but says ``offered = false``, so it is never advised. Gas (m3): ``gas-a`` (on an
account, so it serves gas) and ``gas-b`` (``commodity = "gas"``); ``water-x`` (``commodity =
"water"``) is never offered to gas.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from collector import cli as collector_cli
from collector.rating.accounts import parse_period
from collector.rating.advise import (
    MonthUsage,
    advice_document,
    advise_account,
    offered_tariffs,
    rate_option,
)
from collector.rating.model import UsageInterval
from collector.rating.run import load_billing
from collector.rating.tariff import load_tariff
from collector.store import open_store
from meterlink.procs import Proc

from ._bills import GAS_VOLUME, IMPORT, Site, hourly

ZONE = ZoneInfo("Europe/Amsterdam")
HOUR = 3_600_000
START = int(datetime(2025, 12, 31, 23, tzinfo=UTC).timestamp()) * 1000  # 2026-01-01 00:00 CET
HOURS = 8760
FIRST = START - 2 * HOUR  # readings from 2 h before the year to 2 h after it
AS_OF = "2027-01-10T00:00:00Z"
AS_OF_MS = int(datetime(2027, 1, 10, tzinfo=UTC).timestamp()) * 1000

TARIFFS = {
    # 0.50/day + 0.25/kWh
    "flat": """
id = "flat"
name = "Flat"
currency = "EUR"
[[version]]
effective_from = 2025-01-01
[[version.charge]]
type = "standing"
price = 0.50
[[version.charge]]
type = "energy"
price = 0.25
""",
    # 0.50/day; peak (Mon-Fri 07:00-23:00) 0.30/kWh, offpeak 0.20/kWh
    "tou": """
id = "tou"
name = "Time of use"
currency = "EUR"
[[version]]
effective_from = 2025-01-01
[[version.charge]]
type = "standing"
price = 0.50
[[version.charge]]
type = "tou"
default = "offpeak"
schedule = [{ days = "weekday", hours = "07:00-23:00", period = "peak" }]
periods = { peak = 0.30, offpeak = 0.20 }
""",
    # 0.30/day; per month the first 500 kWh at 0.20, the rest at 0.35
    "tiered": """
id = "tiered"
name = "Tiered"
currency = "EUR"
[[version]]
effective_from = 2025-01-01
[[version.charge]]
type = "standing"
price = 0.30
[[version.charge]]
type = "tiers"
tiers = [{ upto = 500, price = 0.20 }, { price = 0.35 }]
""",
    # 1.00/day + 0.15/kWh + 20/kW of the month's highest hour (ratchet 80 %)
    "demand": """
id = "demand"
name = "Demand"
currency = "EUR"
[[version]]
effective_from = 2025-01-01
[[version.charge]]
type = "standing"
price = 1.00
[[version.charge]]
type = "energy"
price = 0.15
[[version.charge]]
type = "demand"
window = 60
price = 20
ratchet = 80
""",
    "legacy": """
id = "legacy"
name = "Legacy (closed)"
currency = "EUR"
offered = false
standing_charge_per_day = 0.01
import_price_per_kwh = 0.01
""",
    # gas: 0.40/day + 1.25/m3 (current) or 0.10/day + 1.40/m3
    "gas-a": """
id = "gas-a"
name = "Gas A"
currency = "EUR"
unit = "m3"
[[version]]
effective_from = 2025-01-01
[[version.charge]]
type = "standing"
price = 0.40
[[version.charge]]
type = "energy"
price = 1.25
""",
    "gas-b": """
id = "gas-b"
name = "Gas B"
currency = "EUR"
unit = "m3"
commodity = "gas"
[[version]]
effective_from = 2025-01-01
[[version.charge]]
type = "standing"
price = 0.10
[[version.charge]]
type = "energy"
price = 1.40
""",
    "water-x": """
id = "water-x"
name = "Water X"
currency = "EUR"
unit = "m3"
commodity = "water"
[[version]]
effective_from = 2025-01-01
[[version.charge]]
type = "energy"
price = 0.01
""",
}

ACCOUNTS = """
[[account]]
id = "acc-const"
name = "Constant 1 kW"
timezone = "Europe/Amsterdam"
tariff = "flat"
meters = ["m-const"]

[[account]]
id = "acc-night"
name = "Night user with gas"
timezone = "Europe/Amsterdam"
[[account.service_point]]
id = "night-e"
tariff = "tou"
meters = ["m-night"]
[[account.service_point]]
id = "night-g"
commodity = "gas"
tariff = "gas-a"
meters = ["g-night"]

[[account]]
id = "acc-day"
name = "Office hours 5 kW"
timezone = "Europe/Amsterdam"
tariff = "demand"
meters = ["m-day"]

[[account]]
id = "acc-empty"
name = "No readings"
timezone = "Europe/Amsterdam"
tariff = "flat"
meters = ["m-empty"]
"""

# the hole in acc-const's readings: Sunday 14 June 2026, no readings at 11:00, 12:00, 13:00
# local (09:00..11:00 UTC): VEE estimates the 4 hours between 10:00 and 14:00 (like-day: 1 kWh
# each, adding up to the register's known delta of 4 kWh), all off-peak.
HOLE = {int(datetime(2026, 6, 14, h, tzinfo=UTC).timestamp()) * 1000 for h in (9, 10, 11)}


def _local(hour_index: int) -> datetime:
    return datetime.fromtimestamp((FIRST + hour_index * HOUR) / 1000, UTC).astimezone(ZONE)


def _night(h: int) -> Decimal:
    """2 kWh in each local hour 23:00-07:00, nothing by day."""
    hour = _local(h).hour
    return Decimal(2) if hour >= 23 or hour < 7 else Decimal(0)


def _office(h: int) -> Decimal:
    """5 kWh in each local hour 09:00-17:00 Monday to Friday."""
    moment = _local(h)
    return Decimal(5) if moment.weekday() < 5 and 9 <= moment.hour < 17 else Decimal(0)


def _year(step: Callable[[int], Decimal], obis: Any = IMPORT, unit: str = "kWh") -> list:
    return hourly(obis, unit, FIRST, HOURS + 4, Decimal("1000.000"), step)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    site = Site(tmp_path_factory.mktemp("advise"), ACCOUNTS, TARIFFS)
    site.enrol(["m-const", "m-night", "g-night", "m-day", "m-empty"])
    now = START + (HOURS + 10) * HOUR
    const = [r for r in _year(lambda _h: Decimal(1)) if r[0] not in HOLE]
    site.feed("m-const", const, now)
    site.feed("m-night", _year(_night), now)
    site.feed("g-night", _year(lambda _h: Decimal("0.1"), GAS_VOLUME, "m3"), now)
    site.feed("m-day", _year(_office), now)
    return site


def advise(site: Site, account: str, **kw: Any) -> dict[str, Any]:
    billing = load_billing(site.config.billing.accounts, site.config.billing.tariffs)

    async def go() -> dict[str, Any]:
        store = await open_store(site.db)
        try:
            advice = await advise_account(
                store, billing.account(account), billing.tariffs, billing.accounts, AS_OF_MS, **kw
            )
        finally:
            await store.close()
        return advice_document(advice)

    return asyncio.run(go())


def costs(point: dict[str, Any]) -> dict[str, str]:
    return {o["tariff"]: o["cost"] for o in point["options"]}


def option(point: dict[str, Any], tariff: str) -> dict[str, Any]:
    return next(o for o in point["options"] if o["tariff"] == tariff)


def test_constant_load_annual_costs_by_hand_and_estimates_flagged(site: Site) -> None:
    doc = advise(site, "acc-const")
    assert doc["periods"] == [f"2026-{m:02d}" for m in range(1, 13)]  # the last complete year
    (point,) = doc["service_points"]
    assert point["usage"] == "8760.000"  # 1 kWh x 8,760 h
    # flat: 365 x 0.50 + 8760 x 0.25 = 182.50 + 2190.00
    # tou: 182.50 + peak 261 weekdays x 16 h x 0.30 (1252.80) + offpeak 4584 x 0.20 (916.80)
    # tiered: 365 x 0.30 = 109.50; each month 500 x 0.20 + (hours - 500) x 0.35 (every month
    #   has more than 500 hours): 12 x 100 + (8760 - 6000) x 0.35 = 1200 + 966
    # demand: 365 x 1.00 + 8760 x 0.15 + 12 months x 1 kW x 20 = 365 + 1314 + 240
    assert costs(point) == {
        "demand": "1919.00",
        "tiered": "2275.50",
        "tou": "2352.10",
        "flat": "2372.50",
    }
    assert [o["tariff"] for o in point["options"]] == ["demand", "tiered", "tou", "flat"]
    assert point["current_tariff"] == "flat" and option(point, "flat")["current"]
    assert option(point, "demand")["difference"] == "-453.50"
    assert option(point, "tou")["difference"] == "-20.40"
    assert point["best"] == "demand" and point["saving"] == "453.50"
    assert "legacy" not in costs(point)  # offered = false
    drivers = {o["tariff"]: o["drivers"]["text"] for o in point["options"]}
    # 4176 / 8760 = 47.67 %, 4584 / 8760 = 52.33 %
    assert drivers["tou"] == "peak 47.7 %, offpeak 52.3 %"
    assert drivers["demand"] == "max demand 1 kW"
    assert drivers["tiered"] == "tier 2 of 2 reached (12 of 12 months)"
    assert drivers["flat"] == "flat price"
    # the hole: 4 estimated intervals, stated and flagged; the advice is still made
    data = point["data"]
    assert data["intervals"] == {"actual": 8756, "estimated": 4}
    assert data["estimated_or_gap"] == 4 and data["flagged"] and doc["flagged"]
    assert data["missing_hours"] == "0"


def test_night_user_with_gas_annual_costs_by_hand(site: Site) -> None:
    doc = advise(site, "acc-night")
    electricity, gas = doc["service_points"]
    assert electricity["service_point"] == "night-e" and gas["service_point"] == "night-g"
    # 2 kWh in each local hour 23-07: 365 x 8 h - 1 (29 March) + 1 (25 October) = 2,920 h,
    # 5,840 kWh, all off-peak; per month at most 31 x 16 = 496 kWh (October: 498): tier 1 only
    assert electricity["usage"] == "5840.000"
    # flat: 182.50 + 5840 x 0.25 = 182.50 + 1460
    # tou: 182.50 + 5840 x 0.20 = 182.50 + 1168
    # tiered: 109.50 + 5840 x 0.20 (never past 500 kWh in a month) = 109.50 + 1168
    # demand: 365 + 5840 x 0.15 + 12 x 2 kW x 20 = 365 + 876 + 480
    assert costs(electricity) == {
        "tiered": "1277.50",
        "tou": "1350.50",
        "demand": "1721.00",
        "flat": "1642.50",
    } and [o["tariff"] for o in electricity["options"]] == ["tiered", "tou", "flat", "demand"]
    assert electricity["current_tariff"] == "tou"
    assert electricity["best"] == "tiered" and electricity["saving"] == "73.00"
    assert option(electricity, "flat")["difference"] == "292.00"
    drivers = {o["tariff"]: o["drivers"]["text"] for o in electricity["options"]}
    assert drivers["tou"] == "peak 0.0 %, offpeak 100.0 %"
    assert drivers["tiered"] == "tier 1 of 2 reached (12 of 12 months)"
    assert drivers["demand"] == "max demand 2 kW"
    assert not electricity["data"]["flagged"]
    # gas: 0.1 m3 an hour, 876 m3. Only gas tariffs are offered (not water-x, not electricity).
    # gas-a: 365 x 0.40 = 146.00 + 1.25 per m3, each month's line rounded once: 744 h -> 74.4
    #   m3 -> 93.00, but March (743 h: 74.3 m3) 92.875 -> 92.88 and October (745 h: 74.5 m3)
    #   93.125 -> 93.13 (half-up): 1095.00 + 0.01 = 1095.01, so 1241.01
    # gas-b: 365 x 0.10 = 36.50 + 876 x 1.40 = 1226.40 (every month exact): 1262.90
    assert costs(gas) == {"gas-a": "1241.01", "gas-b": "1262.90"}
    assert gas["current_tariff"] == "gas-a" and gas["best"] == "gas-a"
    assert option(gas, "gas-b")["difference"] == "21.89"
    months = dict((m["period"], m["cost"]) for m in option(gas, "gas-a")["months"])
    assert months["2026-03"] == str(Decimal("12.40") + Decimal("92.88"))  # 31 x 0.40 + line
    assert doc["current_total"] == "2591.51"  # 1350.50 + 1241.01
    assert doc["best_total"] == "2518.51"  # 1277.50 + 1241.01


def test_office_hours_annual_costs_by_hand(site: Site) -> None:
    doc = advise(site, "acc-day")
    (point,) = doc["service_points"]
    # 5 kWh in each local hour 09-17 on 261 weekdays: 261 x 8 x 5 = 10,440 kWh, all peak;
    # the smallest month (February, 20 weekdays) has 800 kWh, past the 500 kWh tier.
    assert point["usage"] == "10440.000"
    # flat: 182.50 + 10440 x 0.25 = 182.50 + 2610
    # tou: 182.50 + 10440 x 0.30 = 182.50 + 3132
    # tiered: 109.50 + 12 x 100 + (10440 - 6000) x 0.35 = 109.50 + 1200 + 1554
    # demand: 365 + 10440 x 0.15 + 12 x 5 kW x 20 = 365 + 1566 + 1200 (the ratchet, 80 % of
    #   5 kW, never exceeds the month's own 5 kW)
    assert costs(point) == {
        "flat": "2792.50",
        "tiered": "2863.50",
        "demand": "3131.00",
        "tou": "3314.50",
    }
    assert point["current_tariff"] == "demand" and point["best"] == "flat"
    assert point["saving"] == "338.50"
    assert option(point, "tou")["difference"] == "183.50"
    assert option(point, "tou")["drivers"]["text"] == "peak 100.0 %, offpeak 0.0 %"
    assert option(point, "demand")["drivers"]["max_demand_kw"] == "5.000"
    assert option(point, "demand")["by_component"] == {
        "standing": "365.00",
        "energy": "1566.00",
        "demand": "1200.00",
    }


def test_current_tariff_equals_the_twelve_bills_the_bill_run_issues(site: Site) -> None:
    """No approximation: the advice's cost of the current tariffs is the sum of the totals of
    the 12 monthly bills (issued one after the other, so demand ratchets see the previous
    bills), month by month."""
    for account in ("acc-night", "acc-day"):
        doc = advise(site, account)
        bills = {}
        for month in range(1, 13):
            bill, state = site.bill(account, f"2026-{month:02d}", AS_OF_MS, issue=True)
            assert state == "issued" and not bill["corrections"]
            bills[bill["period"]] = Decimal(bill["total"])
        assert Decimal(doc["current_total"]) == sum(bills.values())
        advised = {p: Decimal(0) for p in bills}
        for point in doc["service_points"]:
            for m in option(point, point["current_tariff"])["months"]:
                advised[m["period"]] += Decimal(m["cost"])
        assert advised == bills
    # after issuing, the advice is the same (the issued peaks before the window are none)
    assert advise(site, "acc-day")["current_total"] == "3131.00"


def test_a_tariff_change_in_the_window_is_rated_as_the_bills_rate_it(site: Site) -> None:
    """The current option follows the point's tariff history (flat, then tou from 1 July):
    each month equals that month's draft bill; tou alone is still offered as an option."""
    path = site.root / "accounts.toml"
    original = path.read_text()
    changed = original.replace(
        'tariff = "flat"\nmeters = ["m-const"]',
        "[[account.service_point]]\n"
        'tariffs = [{ tariff = "flat" }, { tariff = "tou", from = 2026-07-01 }]\n'
        'meters = ["m-const"]',
    )
    assert changed != original
    path.write_text(changed)
    try:
        (point,) = advise(site, "acc-const")["service_points"]
        current = option(point, "flat -> tou")
        assert current["current"] and [p["tariff"] for p in current["plan"]] == ["flat", "tou"]
        for month in current["months"]:
            bill, _state = site.bill("acc-const", month["period"], AS_OF_MS)
            assert month["cost"] == bill["total"], month["period"]
        # January, on flat: 31 days x 0.50 + 744 h x 1 kWh x 0.25
        assert Decimal(current["months"][0]["cost"]) == Decimal("15.50") + Decimal("186.00")
        assert option(point, "tou")["cost"] == "2352.10" and not option(point, "tou")["current"]
    finally:
        path.write_text(original)


def test_ratchet_follows_the_options_own_previous_months(tmp_path: Path) -> None:
    """Pure over the engine: a 10 kW month then a 2 kW month on an 80 % ratchet bills 8 kW
    in the second month (the option's own first month), as sequential bills would."""
    path = tmp_path / "demand.toml"
    path.write_text(TARIFFS["demand"])
    demand = load_tariff(path)

    class _Acc:
        cycle_day = 1
        timezone = ZONE

    months = []
    for label, kwh in (("2026-01", Decimal(10)), ("2026-02", Decimal(2))):
        period = parse_period(label, _Acc())  # type: ignore[arg-type]
        start = datetime.fromtimestamp(period.start_ms / 1000, UTC)
        usage = [UsageInterval(start, start + timedelta(hours=1), kwh, "kWh", "actual")]
        months.append(MonthUsage(period, period.start_ms, period.end_ms, usage, []))
    result = rate_option([(demand, months[0].start_ms, months[-1].end_ms)], months, ZONE)
    # January: 31 + 1.50 + 200 = 232.50; February: 28 + 0.30 + 8 kW x 20 = 188.30
    assert result.months == (("2026-01", Decimal("232.50")), ("2026-02", Decimal("188.30")))
    assert result.drivers.max_demand_kw == Decimal(10)


def test_offered_tariffs_per_commodity(site: Site) -> None:
    billing = load_billing(site.config.billing.accounts, site.config.billing.tariffs)
    ids = {
        c: [t.id for t in offered_tariffs(billing.tariffs, billing.accounts, c)]
        for c in ("electricity", "gas", "water")
    }
    assert ids == {
        "electricity": ["demand", "flat", "tiered", "tou"],
        "gas": ["gas-a", "gas-b"],
        "water": ["water-x"],
    }


def cli(capsys: pytest.CaptureFixture[str], *args: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    rc = collector_cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_advise_command_text_json_and_errors(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["advise", "--config", site.config_path, "--as-of", AS_OF]
    rc, out, err = cli(capsys, *base, "--account", "acc-const")
    assert rc == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("Best-tariff advice for acc-const (Constant 1 kW): 12 month(s)"
                               " 2026-01..2026-12")  # fmt: skip
    header = next(line for line in lines if "annual cost" in line)
    assert header.split() == ["tariff", "annual", "cost", "difference", "drivers"]
    rows = {line.replace("*", " ").split()[0]: line for line in lines if "EUR" in line and
            line.startswith("  ")}  # fmt: skip
    assert rows["demand"].split() == ["demand", "1919.00", "EUR", "-453.50", "max", "demand",
                                      "1", "kW"]  # fmt: skip
    assert rows["flat"].split() == ["*", "flat", "2372.50", "EUR", "0.00", "flat", "price"]
    assert "peak 47.7 %, offpeak 52.3 %" in rows["tou"]
    assert "  best: demand, saving 453.50 EUR over 12 month(s)" in lines
    assert any(line.startswith("  FLAGGED: data: 8760 intervals (8756 actual, 4 estimated")
               for line in lines)  # fmt: skip
    assert "estimated, gap or missing" in err
    rc, out, _ = cli(capsys, *base, "--account", "acc-night", "--format", "json", "--months", "3")
    doc = json.loads(out)
    assert rc == 0 and doc["periods"] == ["2026-10", "2026-11", "2026-12"]
    rc, out, _ = cli(capsys, *base, "--account", "acc-night", "--months", "1", "--to", "2026-02")
    assert rc == 0 and "cost, 1 month " in out and "2026-02 (Europe" in out
    # errors: exit 2 with the reason
    rc, _, err = cli(capsys, *base, "--account", "nope")
    assert rc == 2 and "no account 'nope'" in err
    rc, _, err = cli(capsys, *base, "--account", "acc-empty")
    assert rc == 2 and "acc-empty: no interval data (no readings of meters m-empty" in err
    rc, _, err = cli(capsys, *base, "--account", "acc-const", "--to", "2025-06")
    assert rc == 2 and "no interval data in 2024-07..2025-06" in err
    rc, _, err = cli(capsys, *base, "--account", "acc-const", "--to", "2027-01")
    assert rc == 2 and "not over" in err
    rc, _, err = cli(capsys, *base, "--account", "acc-const", "--months", "0")
    assert rc == 2 and "--months must be 1..120" in err


@pytest.mark.integration
def test_advise_as_a_process(site: Site, tmp_path: Path) -> None:
    args = ["collector", "advise", "--config", str(site.config_path), "--account", "acc-day",
            "--as-of", AS_OF, "--format", "json"]  # fmt: skip
    proc = Proc.python("meterlink", *args, name="advise", cwd=tmp_path)
    try:
        assert proc.popen.wait(timeout=60) == 0, proc.output
    finally:
        proc.stop()
    assert '"best": "flat"' in proc.output and '"current_total": "3131.00"' in proc.output


def test_advice_page_shows_the_same_table(site: Site) -> None:
    """The dashboard's page for an account (linked from /bills): the same costs, differences
    and drivers, over the real web app on a loopback port, the collector's clock at AS_OF."""
    import time

    from aiohttp import ClientSession, CookieJar
    from aiohttp.test_utils import TestServer

    from collector.config import with_clock
    from collector.fleet.state import Fleet
    from collector.web.app import make_app
    from collector.web.auth import Auth, _Token, _User, hash_password

    config = with_clock(site.config, f"{AS_OF}@{time.time():.3f}x1")

    async def go() -> tuple[str, str, int, str]:
        store = await open_store(site.db)
        users = [_User("viewer", "read-only", hash_password("pw"))]
        app = make_app(store, config, fleet=Fleet(), auth=Auth(users, list[_Token]()))
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
                login = {"username": "viewer", "password": "pw", "next": "/"}
                async with http.post(server.make_url("/login"), data=login) as r:
                    assert r.status == 200
                async with http.get(server.make_url("/bills")) as r:
                    bills = await r.text()
                async with http.get(server.make_url("/bills/advice/acc-night")) as r:
                    assert r.status == 200
                    page = await r.text()
                async with http.get(server.make_url("/bills/advice/acc-empty")) as r:
                    return bills, page, r.status, await r.text()
        finally:
            await server.close()
            await store.close()

    bills, page, status, error = asyncio.run(go())
    assert 'href="/bills/advice/acc-night"' in bills
    rows = re.findall(r'<tr data-tariff="([^"]+)".*?</tr>', page, re.S)
    assert rows == ["tiered", "tou", "flat", "demand", "gas-a", "gas-b"]
    row = re.search(r'<tr data-tariff="tiered".*?</tr>', page, re.S)
    assert row is not None
    cells = [re.sub(r"<[^>]+>", " ", c).split() for c in re.findall(r"<td.*?</td>", row[0], re.S)]
    drivers = ["tier", "1", "of", "2", "reached", "(12", "of", "12", "months)"]
    assert cells[1:] == [["1277.50", "EUR"], ["-73.00"], drivers]
    assert 'class="current"' in re.search(r'<tr data-tariff="tou".*?</tr>', page, re.S)[0]
    assert "+292.00" in page and "peak 0.0 %, offpeak 100.0 %" in page
    assert "Best: <strong>tiered</strong>, 73.00 EUR less over 12 month(s)." in page
    assert "12 billing period(s) 2026-01..2026-12" in page
    assert status == 422 and "no interval data" in error

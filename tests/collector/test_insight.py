"""Usage insight and alerts (issue 10) from a simulated month, on SQLite and PostgreSQL.

One site per backend (built once per module): account ``acc-1`` with electricity on a TOU
tariff (peak Mon-Fri 07:00-23:00, 0.30; offpeak 0.20 EUR/kWh) and water (2.00 EUR/m3) from
the water simulator's model with a leak of 12 l/h from 2026-11-20T12:00Z; account ``acc-2``
with a water meter of the same model without a leak. October and November 2026 read every
hour, signed records through the real ``Ingestor`` with VEE on, and the usage-alert hook
attached as ``collector run`` attaches it; the alert rules are set before the data arrives.

Expected figures are computed here independently: day totals from the register readings at
local midnights, TOU periods from the weekday and the local hour, costs from quantity x price
rounded to the cent, the nights from the leak's start."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

import collector.store.sqlite as sqlite_store
from collector.ingest import Ingestor
from collector.insight.document import usage_document
from collector.insight.hook import UsageAlerts, attach
from collector.insight.rules import RuleError, parse_rule
from collector.rating.run import load_billing
from collector.store import open_store
from collector.store.insight_sqlite import insight_of
from collector.vee import VeeEngine
from firmware_sim.model import MeterModel, ModelParams

from . import _bills
from ._bills import GW, HOUR, IMPORT, WATER_VOLUME, Site
from ._fixtures import T0, T_END, message, record
from ._stores import BACKENDS, redirect_to_postgres

ZONE = ZoneInfo("Europe/Amsterdam")
#: the SQLite opener, before the PostgreSQL site of this module redirects it (module scope)
OPEN_SQLITE = sqlite_store.open_sqlite_store
FIRST = 1_790_805_600_000  # 2026-10-01T00:00:00+02:00
LAST = T_END + 2 * HOUR  # readings up to 2026-12-01 02:00 local
NOW = T_END + 5 * 24 * HOUR  # the collector's clock while feeding
LEAK_FROM = datetime(2026, 11, 20, 12, tzinfo=UTC)
SPIKES = {  # extra kWh in single hours (local): the five most expensive hours, distinct
    datetime(2026, 11, 4, 18, tzinfo=ZONE): Decimal("5.1"),
    datetime(2026, 11, 12, 9, tzinfo=ZONE): Decimal("4.6"),
    datetime(2026, 11, 19, 20, tzinfo=ZONE): Decimal("4.2"),
    datetime(2026, 11, 25, 7, tzinfo=ZONE): Decimal("3.7"),
    datetime(2026, 11, 28, 3, tzinfo=ZONE): Decimal("6.0"),  # a Saturday night: offpeak
}
#: electricity readings not taken (VEE estimates the hours around them)
MISSING = {
    datetime(2026, 11, 10, 3, tzinfo=ZONE),
    datetime(2026, 11, 17, 10, tzinfo=ZONE),
    datetime(2026, 11, 17, 11, tzinfo=ZONE),
    datetime(2026, 11, 17, 12, tzinfo=ZONE),
}
PRICE = {"peak": Decimal("0.30"), "offpeak": Decimal("0.20")}
WATER_PRICE = Decimal("2.0")
CENT = Decimal("0.01")

ACCOUNTS = """
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
id = "sp-w"
commodity = "water"
tariff = "water-flat"
meters = ["wm-leak"]

[[account]]
id = "acc-2"
name = "Bakker, Kerkstraat 2"
timezone = "Europe/Amsterdam"

[[account.service_point]]
id = "sp-w2"
commodity = "water"
tariff = "water-flat"
meters = ["wm-ok"]
"""

RULES = [
    ("acc-1", {"kind": "night_flow", "service_point": "sp-w"}),
    ("acc-1", {"kind": "night_flow", "service_point": "sp-w", "nights": 3, "min_flow": "5"}),
    ("acc-2", {"kind": "night_flow", "service_point": "sp-w2"}),
    ("acc-1", {"kind": "daily_usage_above", "service_point": "sp-e", "threshold": "17.5"}),
]


def _utc(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp()) * 1000


def electricity() -> dict[int, Decimal]:
    """The register at every hour (ms -> kWh), missing readings left out."""
    out, value = {}, Decimal("1000.000")
    ms = FIRST
    while ms <= LAST:
        local = _utc(ms).astimezone(ZONE)
        if local not in MISSING:
            out[ms] = value
        h = (ms - FIRST) // HOUR
        step = Decimal(200 + (h * 7919) % 900) / 1000  # 0.200 .. 1.099 kWh
        value += step + SPIKES.get(local, Decimal(0))
        ms += HOUR
    return out


def water(meter: str, leak: bool) -> dict[int, Decimal]:
    """The water simulator's model read every hour as its DSMR port shows it (m3 = the
    model's kWh / 100, truncated to dm3)."""
    params = ModelParams(
        kind="water",
        initial_import_kwh=Decimal("12345.6"),
        leak_w=1200 if leak else 0,  # 12 l/h
        leak_from_ns=_ms(LEAK_FROM) * 1_000_000,
    )
    model = MeterModel(meter, 3, params, origin_ns=FIRST * 1_000_000)
    out = {}
    for ms in range(FIRST, LAST + 1, HOUR):
        mwh = model.energies_mwh(ms * 1_000_000)[0]
        out[ms] = (Decimal(mwh) / 100_000_000).quantize(Decimal("0.001"), ROUND_FLOOR)
    return out


class Fed:
    """The site and what was fed into it."""

    def __init__(self, site: Site, readings: dict[str, dict[int, Decimal]], rules: list) -> None:
        self.site = site
        self.readings = readings
        self.rules = rules  # (account, rule id, data)
        self.messages: dict[str, list] = {}  # meter -> the batches fed
        self.billing = load_billing(site.config.billing.accounts, site.config.billing.tariffs)

    def run(self, work: Any) -> Any:
        async def go() -> Any:
            store = await open_store(self.site.db)
            try:
                return await work(store)
            finally:
                await store.close()

        return asyncio.run(go())


def _feed(site: Site, meter: str, obis: Any, unit: str, values: dict[int, Decimal]) -> list:
    """Signed records in batches of 200 through an Ingestor with VEE and the alert hook."""
    raws = []
    for ms in sorted(values):
        site.seq += 1
        raws.append(record(site.key, GW, meter, site.seq, ms, [(obis, str(values[ms]), unit)]).raw)
    messages = []
    for i in range(0, len(raws), 200):
        site.batch += 1
        messages.append(message(GW, site.batch, raws[i : i + 200], received_ms=NOW))
    _ingest(site, messages)
    return messages


def _ingest(site: Site, messages: list) -> None:
    async def go() -> None:
        store = await open_store(site.db)
        try:
            ingestor = Ingestor(store, clock_ms=lambda: NOW, vee=VeeEngine(site.config.vee))
            attach(ingestor, site.config, store, lambda: NOW)
            assert len(ingestor.after_commit) == 1
            for msg in messages:
                outcomes = await ingestor.ingest([msg])
                assert all(o.ack is not None for o in outcomes)
        finally:
            await store.close()

    asyncio.run(go())


def _build(root: Path) -> Fed:
    site = Site(root, ACCOUNTS)
    site.enrol(["em-1", "wm-leak", "wm-ok"])
    billing = load_billing(site.config.billing.accounts, site.config.billing.tariffs)

    async def add_rules(store: Any) -> list:
        out = []
        for account_id, data in RULES:
            rule = parse_rule(billing.accounts[account_id], data)
            row = await insight_of(store).add_rule(
                account_id, rule.kind, rule.service_point, json.dumps(rule.params()), NOW
            )
            out.append((account_id, row.id, data))
        return out

    fed = Fed(site, {}, [])
    fed.rules = fed.run(add_rules)
    fed.readings = {
        "em-1": electricity(),
        "wm-leak": water("wm-leak", True),
        "wm-ok": water("wm-ok", False),
    }
    fed.messages["em-1"] = _feed(site, "em-1", IMPORT, "kWh", fed.readings["em-1"])
    for meter in ("wm-leak", "wm-ok"):
        fed.messages[meter] = _feed(site, meter, WATER_VOLUME, "m3", fed.readings[meter])
    return fed


@pytest.fixture(scope="module", params=BACKENDS)
def fed(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fed]:
    root = tmp_path_factory.mktemp(f"insight-{request.param}")
    with pytest.MonkeyPatch.context() as mp:
        if request.param == "postgresql":
            redirect_to_postgres(mp, request.getfixturevalue("postgres"), _bills)
        fed = _build(root)
        kind = fed.run(lambda store: asyncio.sleep(0, type(store).__name__))
        assert kind == ("PgStore" if request.param == "postgresql" else "SqliteStore")
        yield fed


def _document(fed: Fed, account: str = "acc-1", by: str = "day", **kw: Any) -> dict[str, Any]:
    first, end = kw.get("first", date(2026, 11, 1)), kw.get("end", date(2026, 12, 1))
    billing = fed.billing
    return fed.run(
        lambda store: usage_document(
            store, billing.accounts[account], billing.tariffs, first, end, "2026-11", by
        )
    )


def _intervals(fed: Fed, meter: str, obis: str, lo: int, hi: int) -> list[Any]:
    return fed.run(lambda store: store.vee.intervals(meter, obis, lo, hi))


def _point(doc: dict[str, Any], sp: str) -> dict[str, Any]:
    return next(s for s in doc["service_points"] if s["service_point"] == sp)


def _midnight_totals(readings: dict[int, Decimal], first: date, end: date) -> dict[str, Decimal]:
    out = {}
    day = first
    while day < end:
        a = _ms(datetime(day.year, day.month, day.day, tzinfo=ZONE))
        nxt = day + timedelta(days=1)
        b = _ms(datetime(nxt.year, nxt.month, nxt.day, tzinfo=ZONE))
        out[day.isoformat()] = readings[b] - readings[a]
        day = nxt
    return out


# usage ------------------------------------------------------------------------------------


def test_day_totals_equal_the_register_readings_at_local_midnights(fed: Fed) -> None:
    doc = _document(fed)
    for sp, meter in (("sp-e", "em-1"), ("sp-w", "wm-leak")):
        point = _point(doc, sp)
        expected = _midnight_totals(fed.readings[meter], date(2026, 11, 1), date(2026, 12, 1))
        got = {d["day"]: Decimal(d["total"]) for d in point["days"]}
        assert got == expected
        assert Decimal(point["total"]) == sum(expected.values())
        assert point["unit"] == ("kWh" if sp == "sp-e" else "m3")


def test_hour_rows_are_the_vee_intervals_and_add_up_to_the_days(fed: Fed) -> None:
    doc = _document(fed, by="hour")
    point = _point(doc, "sp-e")
    rows = _intervals(fed, "em-1", "1-0:1.8.0", T0, T_END)
    by_hour: dict[str, Decimal] = {}
    for r in rows:
        key = _utc(r.start_ms).astimezone(ZONE).replace(minute=0).isoformat()
        by_hour[key] = by_hour.get(key, Decimal(0)) + Decimal(r.value)
    assert {h["hour"]: Decimal(h["total"]) for h in point["hours"]} == by_hour
    days: dict[str, Decimal] = {}
    for h in point["hours"]:
        days[h["hour"][:10]] = days.get(h["hour"][:10], Decimal(0)) + Decimal(h["total"])
    assert days == {d["day"]: Decimal(d["total"]) for d in point["days"]}


def test_the_dst_day_has_25_hour_rows_with_the_repeated_hour_twice(fed: Fed) -> None:
    doc = _document(fed, by="hour", first=date(2026, 10, 25), end=date(2026, 10, 26))
    point = _point(doc, "sp-e")
    hours = [h["hour"] for h in point["hours"]]
    assert len(hours) == 25 and len(point["days"]) == 1
    assert hours[2:4] == ["2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00"]
    assert [h["start"] for h in point["hours"][2:4]] == [
        "2026-10-25T00:00:00.000Z", "2026-10-25T01:00:00.000Z",
    ]  # fmt: skip
    expected = _midnight_totals(fed.readings["em-1"], date(2026, 10, 25), date(2026, 10, 26))
    assert sum(Decimal(h["total"]) for h in point["hours"]) == expected["2026-10-25"]


def test_tou_split_sums_to_the_total_and_follows_weekday_hours(fed: Fed) -> None:
    point = _point(_document(fed), "sp-e")
    rows = _intervals(fed, "em-1", "1-0:1.8.0", T0, T_END)
    peak = Decimal(0)
    for r in rows:
        local = _utc(r.start_ms).astimezone(ZONE)
        if local.weekday() < 5 and 7 <= local.hour < 23:
            peak += Decimal(r.value)
    total = Decimal(point["total"])
    assert set(point["by_tou"]) == {"peak", "offpeak"}
    assert Decimal(point["by_tou"]["peak"]) == peak
    assert Decimal(point["by_tou"]["offpeak"]) == total - peak
    for d in point["days"]:
        assert sum(Decimal(v) for v in d["by_tou"].values()) == Decimal(d["total"])
    water = _point(_document(fed), "sp-w")
    assert water["by_tou"] == {"flat": water["total"]}  # a flat tariff has no TOU periods


def test_actual_and_estimated_split_matches_the_vee_qualities(fed: Fed) -> None:
    point = _point(_document(fed), "sp-e")
    rows = _intervals(fed, "em-1", "1-0:1.8.0", T0, T_END)
    by_quality: dict[str, Decimal] = {}
    for r in rows:
        by_quality[r.quality] = by_quality.get(r.quality, Decimal(0)) + Decimal(r.value or "0")
    assert any(q != "actual" for q in by_quality)  # the missing readings were estimated
    for quality in ("actual", "estimated", "edited", "gap"):
        assert Decimal(point["by_quality"][quality]) == by_quality.get(quality, Decimal(0))
    day17 = next(d for d in point["days"] if d["day"] == "2026-11-17")
    assert Decimal(day17["by_quality"]["actual"]) < Decimal(day17["total"])


def test_previous_period_compared_and_last_year_reported_absent(fed: Fed) -> None:
    point = _point(_document(fed), "sp-e")
    previous = point["comparison"]["previous"]
    assert (previous["from"], previous["to"]) == ("2026-10-02", "2026-11-01")
    october = _midnight_totals(fed.readings["em-1"], date(2026, 10, 2), date(2026, 11, 1))
    expected = sum(october.values())
    assert Decimal(previous["total"]) == expected
    assert Decimal(previous["change"]) == Decimal(point["total"]) - expected
    assert previous["hours"] == "721"  # 25 October has 25 hours
    last_year = point["comparison"]["last_year"]
    assert (last_year["from"], last_year["to"]) == ("2025-11-01", "2025-12-01")
    assert last_year["total"] is None and last_year["change"] is None  # absent, not zero
    assert last_year["intervals"] == 0


def test_a_partly_covered_previous_period_is_shown_but_not_compared(fed: Fed) -> None:
    """The data starts on 1 October: 2-4 October's previous period (30 September to 2
    October) is half covered; its total is shown, a change against it would mislead."""
    doc = _document(fed, first=date(2026, 10, 2), end=date(2026, 10, 4))
    previous = _point(doc, "sp-e")["comparison"]["previous"]
    assert (previous["from"], previous["to"]) == ("2026-09-30", "2026-10-02")
    assert previous["total"] is not None and Decimal(previous["hours_covered"]) <= 24
    assert previous["change"] is None and previous["change_percent"] is None
    assert "not compared" in previous["note"]


def test_top_five_hours_equal_an_independent_ranking(fed: Fed) -> None:
    doc = _document(fed)
    costs: dict[datetime, tuple[Decimal, Decimal]] = {}
    for meter, obis, price in (("em-1", "1-0:1.8.0", None), ("wm-leak", "8-0:1.0.0", WATER_PRICE)):
        for r in _intervals(fed, meter, obis, T0, T_END):
            local = _utc(r.start_ms).astimezone(ZONE)
            q = Decimal(r.value)
            if price is None:
                peak = local.weekday() < 5 and 7 <= local.hour < 23
                unit = PRICE["peak" if peak else "offpeak"]
            else:
                unit = price
            cost, qty = costs.get(local, (Decimal(0), Decimal(0)))
            costs[local] = (cost + (q * unit).quantize(CENT, ROUND_HALF_UP), qty + q)
    ranked = sorted(costs, key=lambda k: (-costs[k][0], -costs[k][1], k.astimezone(UTC)))[:5]
    assert [h["hour"] for h in doc["top_hours"]] == [k.isoformat() for k in ranked]
    assert [Decimal(h["cost"]) for h in doc["top_hours"]] == [costs[k][0] for k in ranked]
    assert {k for k in ranked} == set(SPIKES)
    assert "energy charges only" in doc["top_hours_cost_includes"]
    assert all(h["currency"] == "EUR" for h in doc["top_hours"])


# alerts -----------------------------------------------------------------------------------


def _alerts(fed: Fed, account: str) -> list[Any]:
    return fed.run(lambda store: insight_of(store).alerts(account, 0, 1000))


def test_the_leak_raises_one_night_flow_alert_per_rule_per_night(fed: Fed) -> None:
    first_night = (LEAK_FROM + timedelta(days=1)).date()  # 2026-11-21: leak since noon before
    nights = [first_night + timedelta(days=i) for i in range(10)]  # to 2026-11-30
    alerts = [a for a in _alerts(fed, "acc-1") if a.kind == "night_flow"]
    one_night, three_nights = fed.rules[0][1], fed.rules[1][1]
    days = [n.isoformat() for n in nights]
    assert sorted(a.day for a in alerts if a.rule_id == one_night) == days
    assert sorted(a.day for a in alerts if a.rule_id == three_nights) == days[2:]
    first = next(a for a in alerts if a.rule_id == one_night and a.day == "2026-11-21")
    assert "suggesting a leak" in first.message and first.unit == "l/h"
    assert Decimal(first.value) == 12  # exactly 12 l/h at dm3 resolution, hour by hour
    assert first.raised_ms == NOW


def test_a_water_meter_without_a_leak_raises_no_alert(fed: Fed) -> None:
    assert _alerts(fed, "acc-2") == []


def test_the_daily_threshold_alert_is_raised_on_the_days_above_it(fed: Fed) -> None:
    totals = _midnight_totals(fed.readings["em-1"], date(2026, 10, 1), date(2026, 12, 1))
    expected = sorted(day for day, total in totals.items() if total > Decimal("17.5"))
    assert expected and len(expected) < len(totals)
    alerts = [a for a in _alerts(fed, "acc-1") if a.kind == "daily_usage_above"]
    assert sorted(a.day for a in alerts) == expected
    assert all(Decimal(a.value) == totals[a.day] for a in alerts)


def test_redelivery_and_a_second_collector_raise_nothing_twice(fed: Fed) -> None:
    before = _alerts(fed, "acc-1")
    assert len(before) == 10 + 8 + len([a for a in before if a.kind == "daily_usage_above"])
    _ingest(fed.site, fed.messages["wm-leak"])  # the same batches again: duplicates
    rows = [("wm-leak", "8-0:1.0.0", ms) for ms in sorted(fed.readings["wm-leak"])]

    async def again(store: Any) -> tuple[int, int]:
        one = UsageAlerts(store, fed.billing, lambda: NOW + 1)
        two = UsageAlerts(store, fed.billing, lambda: NOW + 2)
        return await one.evaluate(rows), await two.evaluate(rows)

    assert fed.run(again) == (0, 0)  # every (rule, day) is raised already
    assert _alerts(fed, "acc-1") == before


def test_rules_are_refused_naming_the_field(fed: Fed) -> None:
    account = fed.billing.accounts["acc-1"]
    bad = [
        ({"kind": "nope", "service_point": "sp-e"}, "kind"),
        ({"kind": "daily_usage_above", "service_point": "sp-x", "threshold": "1"}, "service_point"),
        ({"kind": "daily_usage_above", "service_point": "sp-e"}, "threshold"),
        ({"kind": "daily_usage_above", "service_point": "sp-e", "threshold": 1.5}, "threshold"),
        ({"kind": "daily_usage_above", "service_point": "sp-e", "threshold": "1", "unit": "m3"},
         "unit"),
        ({"kind": "night_flow", "service_point": "sp-e"}, "service_point"),
        ({"kind": "night_flow", "service_point": "sp-w", "window": "25:00-05:00"}, "window"),
        ({"kind": "night_flow", "service_point": "sp-w", "nights": 0}, "nights"),
        ({"kind": "night_flow", "service_point": "sp-w", "colour": "red"}, "colour"),
    ]  # fmt: skip
    for data, field in bad:
        with pytest.raises(RuleError) as caught:
            parse_rule(account, data)
        assert str(caught.value).startswith(f"{field}:"), (data, str(caught.value))
    rule = parse_rule(account, {"kind": "daily_usage_above", "service_point": "sp-e",
                                "threshold": "17500", "unit": "Wh"})  # fmt: skip
    assert rule.unit == "Wh"


# CLI, API and page ------------------------------------------------------------------------


def test_cli_usage_and_alerts(fed: Fed, capsys: pytest.CaptureFixture[str]) -> None:
    from collector.cli import main

    config = str(fed.site.config_path)
    assert main(["usage", "--account", "acc-1", "--period", "2026-11", "--config", config,
                 "--format", "json"]) == 0  # fmt: skip
    doc = json.loads(capsys.readouterr().out)
    assert doc == json.loads(json.dumps(_document(fed)))
    assert main(["usage", "--account", "acc-1", "--period", "2026-11", "--config", config]) == 0
    text = capsys.readouterr().out
    assert "Most expensive hours (energy charges only" in text
    assert f"Service point sp-e (electricity): {doc['service_points'][0]['total']} kWh" in text
    assert main(["usage", "--account", "acc-1", "--from", "2026-11-31", "--to", "2026-12-01",
                 "--config", config]) == 2  # fmt: skip
    assert "from='2026-11-31'" in capsys.readouterr().err
    assert main(["alerts", "--account", "acc-1", "--check", "2026-11", "--config", config]) == 0
    text = capsys.readouterr().out
    assert "checked 2026-11: 0 new alert(s)" in text  # the hook raised them as data arrived
    assert text.count("suggesting a leak") == 18
    assert main(["alerts", "--account", "nobody", "--config", config]) == 2


def _server_run(fed: Fed, body: Any) -> None:
    from base64 import b64encode

    from aiohttp import ClientSession
    from aiohttp.test_utils import TestServer

    from collector.web.app import make_app
    from collector.web.auth import Auth, _User, hash_password

    async def go() -> None:
        store = await open_store(fed.site.db)
        users = [_User("op", "operator", hash_password("pw")),
                 _User("viewer", "read-only", hash_password("pw"))]  # fmt: skip
        app = make_app(store, fed.site.config, fleet=None, auth=Auth(users, []))
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        try:
            async with (
                ClientSession(
                    headers={"Authorization": f"Basic {b64encode(b'op:pw').decode()}"}
                ) as op,
                ClientSession(
                    headers={"Authorization": f"Basic {b64encode(b'viewer:pw').decode()}"}
                ) as viewer,
            ):
                await asyncio.wait_for(body(lambda p: str(server.make_url(p)), op, viewer), 60)
        finally:
            await server.close()
            await store.close()

    asyncio.run(go())


def test_api_usage_alerts_and_rules(fed: Fed) -> None:
    expected = json.loads(json.dumps(_document(fed)))

    async def body(url: Any, op: Any, viewer: Any) -> None:
        base = "/api/v1/accounts/acc-1"
        async with viewer.get(url(f"{base}/usage?period=2026-11")) as r:
            assert r.status == 200
            assert await r.json() == expected
        async with viewer.get(
            url("/api/accounts/acc-1/usage?from=2026-11-01&to=2026-11-03&by=hour")
        ) as r:
            doc = await r.json()
            assert r.status == 200 and len(_point(doc, "sp-e")["hours"]) == 48
        for query, name in (
            ("period=2026-11&by=week", "by="),
            ("from=2026-13-01&to=2026-12-01", "from="),
            ("from=2026-11-05&to=2026-11-01", "to="),
            ("period=11-2026", "period"),
        ):
            async with viewer.get(url(f"{base}/usage?{query}")) as r:
                assert r.status == 400 and name in (await r.json())["error"], query
        async with viewer.get(url("/api/v1/accounts/nobody/usage")) as r:
            assert r.status == 404
        async with viewer.get(url(f"{base}/alerts?limit=5")) as r:
            page = await r.json()
            assert len(page["items"]) == 5 and page["next"] is not None
        async with viewer.get(url(f"{base}/alerts?limit=1000")) as r:
            items = (await r.json())["items"]
        leak = [a for a in items if a["kind"] == "night_flow"]
        assert len(leak) == 18 and all("suggesting a leak" in a["message"] for a in leak)
        assert all(isinstance(a["value"], str) for a in items)
        async with viewer.get(url(f"{base}/alert-rules")) as r:
            rules = (await r.json())["items"]
            assert [x["kind"] for x in rules] == ["night_flow", "night_flow", "daily_usage_above"]
        rule = {
            "kind": "daily_usage_above",
            "service_point": "sp-w",
            "threshold": "400",
            "unit": "l",
        }
        async with viewer.post(url(f"{base}/alert-rules"), json=rule) as r:
            assert r.status == 403
        async with op.post(url(f"{base}/alert-rules"), json={**rule, "threshold": 0.4}) as r:
            assert r.status == 400 and (await r.json())["error"].startswith("threshold:")
        async with op.post(
            url(f"{base}/alert-rules"), json={**rule, "service_point": "sp-w2"}
        ) as r:
            assert r.status == 400 and (await r.json())["error"].startswith("service_point:")
        async with op.post(url(f"{base}/alert-rules"), data=b"{not json") as r:
            assert r.status == 400
        async with op.post(url(f"{base}/alert-rules"), json=rule) as r:
            assert r.status == 201
            made = await r.json()
            assert made["threshold"] == "400" and made["unit"] == "l" and made["id"] > 0
        async with op.delete(url(f"{base}/alert-rules/{made['id']}")) as r:
            assert r.status == 200
        async with op.delete(url(f"{base}/alert-rules/{made['id']}")) as r:
            assert r.status == 404
        async with viewer.get(url(f"{base}/alert-rules")) as r:
            assert len((await r.json())["items"]) == 3

    _server_run(fed, body)


def test_usage_page_shows_the_tables_top_hours_and_alerts(fed: Fed) -> None:
    async def body(url: Any, op: Any, viewer: Any) -> None:
        async with viewer.get(url("/usage/acc-1?period=2026-11")) as r:
            assert r.status == 200
            html = await r.text()
        assert 'id="top-hours"' in html and "energy charges only" in html
        assert html.count('data-day="2026-11-') == 60  # 30 days x 2 service points
        assert "suggesting a leak" in html and 'data-compare="last_year"' in html
        assert "<svg" in html
        async with viewer.get(url("/bills")) as r:
            assert 'href="/usage/acc-1"' in await r.text()
        async with viewer.get(url("/usage/nobody")) as r:
            assert r.status == 404

    _server_run(fed, body)


# end to end: the water simulator's leak through agent, broker and collector run ------------

E2E_START = datetime(2026, 11, 20, 22, tzinfo=UTC)  # 23:00 local, the evening before
E2E_UNTIL = datetime(2026, 11, 21, 5, 30, tzinfo=UTC)  # 06:30 local: the night is over
E2E_ACCOUNTS = """
[[account]]
id = "acc-leak"
name = "Leaking"
timezone = "Europe/Amsterdam"

[[account.service_point]]
id = "sp-leak"
commodity = "water"
tariff = "water-flat"
meters = ["w-leak"]

[[account]]
id = "acc-dry"
name = "Not leaking"
timezone = "Europe/Amsterdam"

[[account.service_point]]
id = "sp-dry"
commodity = "water"
tariff = "water-flat"
meters = ["w-dry"]
"""


@pytest.mark.integration
def test_a_simulated_leak_through_agent_and_collector_run_raises_one_alert(tmp_path: Path) -> None:
    """``sim run`` (two DSMR 5 ports with water, one leaking 12 l/h) -> ``agent run`` ->
    mosquitto -> ``collector run`` (VEE, [billing]): the rule set before the night raises
    one night_flow alert for the leaking meter as the data arrives, none for the other."""
    import time as _time

    from meterlink.procs import wait_for
    from protocols.clock import ClockSetting
    from tests.support.loopback import loopback, query

    clock = ClockSetting.accelerated(E2E_START, _time.time_ns() + 4 * 10**9, Decimal(2400))
    scenario = tmp_path / "site.toml"
    scenario.write_text(
        f'origin = "{(E2E_START - timedelta(hours=3)).isoformat()}"\n'
        '[[dsmr]]\npty_link = "ttyA"\nversion = "5"\nmeter = "pa"\nwater = true\n'
        f'leak_lph = "12"\nleak_from = "{E2E_START.isoformat()}"\nevery = 0.2\n\n'
        '[[dsmr]]\npty_link = "ttyB"\nversion = "5"\nmeter = "pb"\nwater = true\nevery = 0.2\n'
    )
    (tmp_path / "collector" / "tariffs").mkdir(parents=True)
    (tmp_path / "collector" / "tariffs" / "water-flat.toml").write_text(_bills.WATER)
    (tmp_path / "collector" / "accounts.toml").write_text(E2E_ACCOUNTS)
    with loopback(tmp_path) as lb:
        sim = lb.spawn("sim", "run", str(scenario), "--clock", str(clock), name="sim",
                       cwd=tmp_path, log_path=tmp_path / "sim.log")  # fmt: skip
        sim.wait_lines(lambda t: t.startswith("READY "), 2, timeout=60)
        collector_toml = lb.collector_config(
            "c-insight",
            '[billing]\naccounts = "accounts.toml"\ntariffs = "tariffs"\n\n'
            '[vee]\ntimezone = "Europe/Amsterdam"\ninterval = "1h"\nread_every = "15m"\n'
            'aligned = false\nclock_drift = "30m"\n'
            'rules = ["units", "limits", "monotonic", "negative", "gaps"]\n',
        )
        agent_toml = tmp_path / "agent" / "agent.toml"
        agent_toml.parent.mkdir()
        agent_toml.write_text(
            '[gateway]\nid = "gw-water"\nstate_dir = "state"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {lb.broker.port}\nbatch_max_records = 20\n\n'
            f'[[meters]]\nid = "w-leak"\ndriver = "dsmr-p1"\nserial = "{tmp_path}/ttyA"\n'
            'channel = 2\ninterval = "15m"\n\n'
            f'[[meters]]\nid = "w-dry"\ndriver = "dsmr-p1"\nserial = "{tmp_path}/ttyB"\n'
            'channel = 2\ninterval = "15m"\n'
        )
        lb.enrol(agent_toml, collector_toml, "gw-water", ["w-leak", "w-dry"])
        from collector.config import load_config

        config = load_config(collector_toml)
        billing = load_billing(config.billing.accounts, config.billing.tariffs)

        async def add_rules(store: Any) -> list[int]:
            ids = []
            for account_id, sp in (("acc-leak", "sp-leak"), ("acc-dry", "sp-dry")):
                rule = parse_rule(billing.accounts[account_id],
                                  {"kind": "night_flow", "service_point": sp})  # fmt: skip
                row = await insight_of(store).add_rule(
                    account_id, rule.kind, rule.service_point, json.dumps(rule.params()), 0
                )
                ids.append(row.id)
            return ids

        async def with_store() -> list[int]:
            store = await OPEN_SQLITE(config.collector.database)  # the collector's own file
            try:
                return await add_rules(store)
            finally:
                await store.close()

        leak_rule, _dry_rule = asyncio.run(with_store())
        lb.start("collector", "collector", "run", str(collector_toml), "--clock", str(clock))
        agent = lb.start("agent", "agent", "run", str(agent_toml), "--clock", str(clock),
                         "--until", E2E_UNTIL.isoformat(), "--progress-json", "60")  # fmt: skip
        assert agent.popen.wait(timeout=120) == 0, agent.output[-3000:]
        final = json.loads(next(li for li in agent.lines if li.startswith('{"final"')))
        db = lb.collector_db

        def stored() -> int:
            return query(db, "SELECT COUNT(*) FROM readings")[0][0]

        wait_for(lambda: stored() >= final["captured_readings"], timeout=30, what="all stored")
        alerts = query(db, "SELECT rule_id, account_id, day, kind, value FROM insight_alerts")
    assert [(r[0], r[1], r[2], r[3]) for r in alerts] == [
        (leak_rule, "acc-leak", "2026-11-21", "night_flow")
    ]
    assert Decimal(alerts[0][4]) >= 11, alerts  # l/h: the leak (dm3 truncation apportioned)
    print(f"leak e2e: {alerts}")

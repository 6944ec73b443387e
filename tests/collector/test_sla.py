"""The data-completeness SLA (collector/sla): settings, periods, the connectivity history,
and the evaluation with its cause attribution on constructed store data, on SQLite and on
PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from collector.config import load_config, with_clock
from collector.errors import ConfigError
from collector.sla import evaluate
from collector.sla.events import EventRecorder, offline_spans
from collector.sla.period import PeriodError, parse_period
from collector.sla.report import format_table
from collector.store.postgres import month_start_ms
from protocols.clock import utc_ms

from ._stores import BACKENDS, Backend, make_backend

H = 3_600_000
DAY0 = utc_ms(datetime(2026, 11, 2, tzinfo=UTC))  # the day evaluated
E = "1-0:1.8.0"

CONFIG = """\
[collector]
database = "c.sqlite"

[vee]
interval = "1h"

[sla]
default_class = "home"

[sla.class.home]
actual_pct = "99.5"
deadline = "4h"
commodity = "electricity"

[sla.class.gas]
actual_pct = "98"
on_time_pct = "95"
deadline = "1d"
commodity = "gas"
"""


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    return make_backend(request, tmp_path)


def _config(tmp_path: Path, text: str = CONFIG) -> Any:
    path = tmp_path / "collector.toml"
    path.write_text(text)
    return load_config(path)


async def _fill(store: Any) -> None:
    """gw-1: meters em-a (the troubled one) and em-b; gw-2: em-c. One day, 1 h intervals.

    em-a, hour by hour: 3 actual but 6 h late while gw-1 was offline; 10 estimated while
    em-b was read; 12 edited; 14 estimated with a rejected reading; 16 estimated, nothing
    known; 18 missing; 20 missing with a partial capture. Everything else actual, on time.
    """
    if hasattr(store, "ensure_partitions"):
        await store.ensure_partitions({month_start_ms(DAY0)})
    bindings = [("gw-1", "em-a"), ("gw-1", "em-b"), ("gw-2", "em-c")]
    intervals, readings, validations = [], [], []
    for gw, meter in bindings:
        for h in range(24):
            s, e = DAY0 + h * H, DAY0 + (h + 1) * H
            quality, created = "actual", e + 5 * 60_000
            if meter == "em-a":
                if h == 3:
                    created = e + 6 * H
                elif h in (10, 14, 16):
                    quality = "estimated"
                elif h == 12:
                    quality = "edited"
                elif h in (18, 20):
                    continue
            intervals.append((meter, E, s, e, "1.5", "kWh", quality, "", created, "vee", "", None))
        read_hours = range(25) if meter != "em-b" else [*range(10), 11]
        for h in read_hours:
            if meter == "em-a" and h in (11, 15, 17, 19, 21):
                continue  # estimated / missing spans: the meter was not read at their ends
            flags = 0
            readings.append((meter, E, DAY0 + h * H, str(1000 + h), "kWh", flags, 0, gw, h + 1))
    readings.append(("em-a", E, DAY0 + 20 * H + 1800_000, "1020.5", "kWh", 0x10, 0, "gw-1", 99))
    validations.append(("em-a", E, DAY0 + 14 * H, "limits", "error", "above max", DAY0))
    # an accepted error is no rejection
    validations.append(("em-c", E, DAY0 + 5 * H, "limits", "error", "above max", DAY0))
    # a superseded estimate replaced by the late actual row: arrival is the actual's
    intervals.append(("em-a", E, DAY0 + 3 * H, DAY0 + 4 * H, "1.4", "kWh", "estimated",
                      "linear", DAY0 + 5 * H, "vee", "", DAY0 + 10 * H))  # fmt: skip
    async with store._write() as db:
        for gw, meter in bindings:
            await db.execute(
                "INSERT INTO gateways (gateway_id, enrolled_ms) VALUES (?, ?)"
                " ON CONFLICT (gateway_id) DO NOTHING",
                (gw, DAY0 - H),
            )
            await db.execute(
                "INSERT INTO gateway_meters (gateway_id, meter_id, bound_ms) VALUES (?, ?, ?)",
                (gw, meter, DAY0 - H),
            )
        await db.executemany(
            "INSERT INTO intervals (meter_id, obis, start_ms, end_ms, value, unit, quality,"
            " method, created_ms, created_by, why, superseded_ms) VALUES"
            " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            intervals,
        )
        await db.executemany(
            "INSERT INTO readings (meter_id, obis, captured_ms, value, unit, flags,"
            " clock_source, gateway_id, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            readings,
        )
        await db.executemany(
            "INSERT INTO validations (meter_id, obis, captured_ms, rule, outcome, detail,"
            " detected_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            validations,
        )
        await db.execute(
            "INSERT INTO vee_audit (meter_id, obis, captured_ms, action, reason, who, at_ms)"
            " VALUES (?, ?, ?, 'accept', 'checked on site', 'op', ?)",
            ("em-c", E, DAY0 + 5 * H, DAY0 + 6 * H),
        )
        await db.executemany(
            "INSERT INTO sla_gateway_events (gateway_id, at_ms, state, reason, gateway_at_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            [
                ("gw-1", DAY0 - H, "online", "", DAY0 - H),
                ("gw-1", DAY0 + 3 * H + 1800_000, "offline", "connection lost", None),
                ("gw-1", DAY0 + 4 * H + 600_000, "online", "", DAY0 + 4 * H + 600_000),
            ],
        )


def _run(backend: Backend, tmp_path: Path, now_ms: int, **kw: Any) -> Any:
    config = _config(tmp_path)

    async def main() -> Any:
        store = await backend.open()
        try:
            await _fill(store)
            return await evaluate(store, config, parse_period("2026-11-02"), now_ms, **kw)
        finally:
            await store.close()

    return asyncio.run(main())


def test_breaches_are_listed_per_meter_day_with_each_interval_cause(
    backend: Backend, tmp_path: Path
) -> None:
    report = _run(backend, tmp_path, DAY0 + 3 * 24 * H)
    days = {(m.gateway_id, m.meter_id): m for m in report.meter_days}
    a = days[("gw-1", "em-a")].tally
    assert (a.expected, a.decided, a.actual, a.on_time, a.late) == (24, 24, 18, 17, 1)
    assert (a.estimated, a.missing, a.pending) == (4, 2, 0)
    assert dict(a.causes) == {
        "gateway offline": 1,  # hour 3: late while gw-1 was offline
        "meter not answering": 2,  # hour 10 (em-b was read), hour 20 (partial capture)
        "VEE rejection": 2,  # hour 12 (edited), hour 14 (error finding)
        "estimated": 1,  # hour 16
        "missing": 1,  # hour 18
    }
    kinds = [(b.meter_id, b.kind) for b in report.breaches]
    assert kinds == [("em-a", "actual"), ("em-a", "on-time")]
    doc = report.breaches[0].to_json()
    assert doc["ratio"] == "0.750000" and doc["target_pct"] == "99.5"
    assert doc["day"] == "2026-11-02" and doc["intervals"] == 6
    # the actual breach counts the intervals not actual; the on-time one also the late one
    assert "gateway offline" not in doc["causes"] and sum(doc["causes"].values()) == 6
    late = report.breaches[1].to_json()
    assert late["causes"]["gateway offline"] == 1 and late["intervals"] == 7
    assert late["cause"] == "meter not answering"  # 2, tied with VEE rejection: CAUSES order
    # em-b, em-c (an accepted error finding is not a rejection): complete and on time
    for key in (("gw-1", "em-b"), ("gw-2", "em-c")):
        t = days[key].tally
        assert (t.decided, t.actual, t.on_time, sum(t.causes.values())) == (24, 24, 24, 0)
    gws = {g.gateway_id: g.to_json() for g in report.gateway_days}
    assert gws["gw-1"]["meters_in_breach"] == 1 and gws["gw-1"]["breach"] is True
    assert gws["gw-2"]["meters_in_breach"] == 0 and gws["gw-2"]["breach"] is False
    (home, gas) = report.classes
    assert home.to_json()["actual_ratio"] == "0.916667"  # 66 of 72, rounded to 6 places
    assert gas.to_json()["meters"] == 0
    json.dumps(report.to_json())  # serialisable, values as strings
    text = format_table(report)
    assert "em-a" in text and "gateway offline 1" in text


def test_intervals_before_their_deadline_are_pending_not_breaches(
    backend: Backend, tmp_path: Path
) -> None:
    now = DAY0 + 19 * H  # hour 16 (ends 17:00, due 21:00) and hour 18 are not due yet
    report = _run(backend, tmp_path, now, meter="em-a")
    (a,) = report.meter_days
    assert a.tally.pending == 2 + 5  # hours 16, 18 and the five hours from 19:00
    assert a.tally.decided == 24 - 7
    assert "estimated" not in a.tally.causes and "missing" not in a.tally.causes


def test_a_gateway_filter_evaluates_only_its_meters(backend: Backend, tmp_path: Path) -> None:
    report = _run(backend, tmp_path, DAY0 + 3 * 24 * H, gateway="gw-2")
    assert [m.meter_id for m in report.meter_days] == ["em-c"]
    assert report.breaches == []


def test_offline_spans_merge_what_several_collectors_recorded(
    backend: Backend, tmp_path: Path
) -> None:
    async def main() -> list:
        store = await backend.open()
        try:
            recorder = EventRecorder(store, lambda wall: wall)
            status = SimpleNamespace
            recorder.note([
                status(gateway_id="gw-1", state="online", reason="", at_ms=1, received_ms=10),
                status(gateway_id="gw-1", state="online", reason="", at_ms=2, received_ms=20),
                status(gateway_id="gw-1", state="offline", reason="connection lost",
                       at_ms=None, received_ms=30),
                status(gateway_id="gw-1", state="online", reason="", at_ms=4, received_ms=90),
            ])  # fmt: skip
            assert await recorder.flush() == 3  # the repeated online is no change
            # a second collector heard the same outage a little later
            other = EventRecorder(store, lambda wall: wall + 5)
            other.note([status(gateway_id="gw-1", state="offline", reason="connection lost",
                               at_ms=None, received_ms=30)])  # fmt: skip
            assert await other.flush() == 1
            other.note([status(gateway_id="gw-1", state="online", reason="", at_ms=5,
                               received_ms=91)])  # fmt: skip
            assert await other.flush() == 1
            return [
                await offline_spans(store, "gw-1", 0, 1000, 1000),
                await offline_spans(store, "gw-1", 50, 1000, 1000),
            ]
        finally:
            await store.close()

    whole, later = asyncio.run(main())
    assert [(s.start_ms, s.end_ms, s.reason) for s in whole] == [(30, 90, "connection lost")]
    assert [(s.start_ms, s.end_ms) for s in later] == [(50, 90)]


def test_periods_are_months_days_or_ranges() -> None:
    assert parse_period("2026-11").days()[-1] == date(2026, 11, 30)
    assert len(parse_period("2026-02").days()) == 28
    assert parse_period("2026-11-05").days() == [date(2026, 11, 5)]
    assert len(parse_period("2026-11-01..2026-11-07").days()) == 7
    for bad in ("2026-13", "2026-11-31", "2026-11-07..2026-11-01", "last week", ""):
        with pytest.raises(PeriodError):
            parse_period(bad)


def test_meters_get_their_class_by_list_commodity_or_default(tmp_path: Path) -> None:
    config = _config(tmp_path, CONFIG + '\n[sla.class.vip]\nmeters = ["em-x"]\n'
                     'actual_pct = "100"\n')  # fmt: skip
    sla = config.sla
    assert sla.class_of("em-x", "gas", "").name == "vip"
    assert sla.class_of("em-y", "gas", "").name == "gas"
    assert sla.class_of("em-y", "electricity", "").name == "home"
    assert sla.class_of("em-y", "water", "").name == "home"  # the default class
    plain = _config(tmp_path, '[collector]\ndatabase = "c.sqlite"\n').sla
    cls = plain.class_of("em-y", None, "")
    assert (cls.name, str(cls.actual_pct), cls.deadline_ms) == ("default", "99.5", 4 * H)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[sla.class.a]\nactual_pct = "101"\n', "line 12: key 'sla.class.a.actual_pct': must"),
        ('[sla.class.a]\ncommodity = "steam"\n', "key 'sla.class.a.commodity': unknown commod"),
        ('[sla.class.a]\ndeadline = "soon"\n', "key 'sla.class.a.deadline': not a duration"),
        ('[sla.class.a]\nobis = ["1-0:x"]\n', "key 'sla.class.a.obis': not an OBIS code"),
        ('[sla.class.a]\nmeters = ["em-1"]\n[sla.class.b]\nmeters = ["em-1"]\n',
         "key 'sla.class.b.meters': meter 'em-1' is already in class 'a'"),
        ('[sla.class.a]\nwhatever = 1\n', "key 'sla.class.a.whatever': unknown key"),
    ],
)  # fmt: skip
def test_a_bad_sla_table_is_refused_naming_file_line_and_key(
    tmp_path: Path, extra: str, message: str
) -> None:
    base = '[collector]\ndatabase = "c.sqlite"\n\n[sla]\ntimezone = "UTC"\n\n\n\n\n\n'
    with pytest.raises(ConfigError) as info:
        _config(tmp_path, base + extra)
    assert "collector.toml" in str(info.value) and message in str(info.value)


def test_an_unknown_default_class_or_time_zone_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("key 'sla.default_class': no [sla.class.x]")):
        _config(tmp_path, '[collector]\n[sla]\ndefault_class = "x"\n')
    with pytest.raises(ConfigError, match=re.escape("key 'sla.timezone': unknown time zone")):
        _config(tmp_path, '[collector]\n[sla]\ntimezone = "Mars/Olympus"\n')


def test_api_page_and_metrics_show_the_breaches(backend: Backend, tmp_path: Path) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from collector.fleet.metrics import FleetMetrics
    from collector.web.app import make_app
    from collector.web.auth import Auth, _Token, new_token

    token, sha = new_token()
    config = _config(tmp_path)
    # the collector's clock stands at DAY0 + 3 days (all of the day is past its deadline)
    start = datetime(2026, 11, 5, tzinfo=UTC).isoformat()
    config = with_clock(config, f"{start}@{10**10}x1")
    auth = Auth([], [_Token("t", "read-only", bytes.fromhex(sha))])
    headers = {"Authorization": f"Bearer {token}"}

    async def main() -> tuple:
        store = await backend.open()
        try:
            await _fill(store)
            app = make_app(store, config, fleet=None, auth=auth, metrics=FleetMetrics(None))
            async with TestClient(TestServer(app)) as client:
                r = await client.get("/api/sla?period=2026-11-02&limit=1", headers=headers)
                summary = await r.json()
                r = await client.get(
                    f"/api/v1/sla/breaches?period=2026-11-02&after={summary['breaches']['next']}",
                    headers=headers,
                )
                rest = await r.json()
                bad = [
                    (await client.get(f"/api/sla?{q}", headers=headers)).status
                    for q in ("", "period=2026-13", "period=2026-11&limit=0",
                              "period=2026-11&cause=aliens", "period=2026-11&meter=nope")
                ]  # fmt: skip
                page = await (await client.get("/sla?period=2026-11-02", headers=headers)).text()
                metrics = await (await client.get("/metrics")).text()
                return summary, rest, bad, page, metrics
        finally:
            await store.close()

    summary, rest, bad, page, metrics = asyncio.run(main())
    assert summary["breach_count"] == 2
    assert [b["kind"] for b in summary["breaches"]["items"]] == ["actual"]
    assert [b["kind"] for b in rest["items"]] == ["on-time"] and rest["next"] is None
    assert bad == [400, 400, 400, 400, 404]
    assert 'id="sla-breaches"' in page and "em-a" in page and 'href="/sla"' in page
    # the gauges: the last 24 h of the clock (Nov 4): nothing stored, every meter silent
    assert 'meterlink_sla_meters_in_breach{class="home"} 3.0' in metrics
    assert 'meterlink_sla_on_time_ratio{class="home"} 0.0' in metrics
    # 3 meters x 20 h (the last 4 h are pending: their deadline has not passed)
    assert 'meterlink_sla_breach_intervals{cause="missing",class="home"} 60.0' in metrics
    assert 'meterlink_sla_actual_ratio{class="gas"}' not in metrics  # no meter, no ratio


def test_a_stop_and_a_start_in_one_millisecond_keep_their_order(
    backend: Backend, tmp_path: Path
) -> None:
    async def main() -> tuple[list, list]:
        store = await backend.open()
        try:
            recorder = EventRecorder(store, lambda wall: wall)
            status = SimpleNamespace
            recorder.note([
                status(gateway_id="gw-1", state="online", reason="", at_ms=1, received_ms=10),
                status(gateway_id="gw-1", state="offline", reason="shutdown", at_ms=2,
                       received_ms=50),
                status(gateway_id="gw-1", state="online", reason="", at_ms=3, received_ms=50),
            ])  # fmt: skip
            await recorder.flush()
            rows = await store._rows(
                "SELECT at_ms, state FROM sla_gateway_events ORDER BY at_ms", ()
            )
            return rows, await offline_spans(store, "gw-1", 0, 1000, 1000)
        finally:
            await store.close()

    rows, spans = asyncio.run(main())
    assert [tuple(r) for r in rows] == [(10, "online"), (50, "offline"), (51, "online")]
    assert [(s.start_ms, s.end_ms) for s in spans] == [(50, 51)]

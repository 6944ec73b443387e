"""The collector's HTTP API end to end: simulated meters, a real agent, real mosquitto, the
real collector serving [http]; requests over loopback with urllib.

One fleet is shared by the tests of this module (it takes ~10 s to bring up); the tests that
stop processes run last and say so in their names.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from collector.web.auth import hash_password, new_token
from meterlink.procs import free_port, wait_for
from tests.support.fleet import Fleet

pytestmark = pytest.mark.integration

READ_TOKEN, READ_TOKEN_SHA = new_token()
OP_TOKEN, OP_TOKEN_SHA = new_token()


def write_users(path: Path) -> Path:
    path.write_text(
        "[[user]]\n"
        'name = "alice"\n'
        'role = "operator"\n'
        f'password = "{hash_password("alice-pw")}"\n\n'
        "[[user]]\n"
        'name = "rob"\n'
        'role = "read-only"\n'
        f'password = "{hash_password("rob-pw")}"\n\n'
        "[[token]]\n"
        'name = "grafana"\n'
        'role = "read-only"\n'
        f'sha256 = "{READ_TOKEN_SHA}"\n\n'
        "[[token]]\n"
        'name = "ops-script"\n'
        'role = "operator"\n'
        f'sha256 = "{OP_TOKEN_SHA}"\n'
    )
    os.chmod(path, 0o600)
    return path


class Http:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def call(
        self,
        path: str,
        *,
        token: str | None = None,
        basic: tuple[str, str] | None = None,
        method: str = "GET",
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        if basic is not None:
            pair = base64.b64encode(f"{basic[0]}:{basic[1]}".encode()).decode()
            request.add_header("Authorization", f"Basic {pair}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        opener = urllib.request.build_opener(_NoRedirect)
        try:
            with opener.open(request, timeout=10) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def json(self, path: str, token: str = READ_TOKEN) -> dict:
        status, _headers, body = self.call(path, token=token)
        assert status == 200, f"GET {path}: {status} {body[:300]!r}"
        return json.loads(body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None  # the tests look at the 303 itself


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Fleet, Http]]:
    root = tmp_path_factory.mktemp("api")
    fleet = Fleet(root).setup()
    try:
        port = free_port()
        users = write_users(root / "collector" / "users.toml")
        with fleet.collector_config.open("a") as f:
            f.write(
                f'\n[http]\nport = {port}\nusers = "{users.name}"\n\n'
                '[fleet]\noffline_after = "1h"\nflush_interval = "1s"\n'
            )
        agent_metrics = free_port()
        with fleet.agent_config.open("a") as f:
            f.write(f"\n[metrics]\nport = {agent_metrics}\n")
        fleet.start_collector()
        fleet.start_agent()
        http = Http(port)
        http.agent_metrics = agent_metrics  # type: ignore[attr-defined]
        # records of every meter have arrived and been acked
        wait_for(
            lambda: all(
                m["captures"] >= 3
                for m in http.json("/api/meters?limit=1000")["items"]
            ),
            timeout=60,
        )  # fmt: skip
        yield fleet, http
    finally:
        fleet.close()


def test_api_needs_a_login(system: tuple[Fleet, Http]) -> None:
    _fleet, http = system
    for path in ("/api/fleet", "/api/gateways", "/api/meters", "/api/bills", "/api/vee/flags"):
        status, headers, body = http.call(path)
        assert status == 401, path
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert json.loads(body) == {"error": "login required"}
    assert http.call("/api/gateways", token="mlk_not-a-token")[0] == 401
    assert http.call("/api/gateways", basic=("alice", "wrong"))[0] == 401
    assert http.call("/api/gateways", basic=("nobody", "alice-pw"))[0] == 401
    # a page (not /api) sends the browser to the login form instead
    status, headers, _ = http.call("/gateways")
    assert status == 303 and headers["Location"].startswith("/login?next=")


def test_read_only_may_read_but_not_write(system: tuple[Fleet, Http]) -> None:
    _fleet, http = system
    assert http.call("/api/gateways", basic=("rob", "rob-pw"))[0] == 200
    for who in ({"token": READ_TOKEN}, {"basic": ("rob", "rob-pw")}):
        status, _h, body = http.call("/api/fleet/flush", method="POST", data=b"", **who)
        assert status == 403, body
        assert "operator" in json.loads(body)["error"]
    assert http.call("/api/fleet/flush", method="POST", data=b"")[0] == 401
    status, _h, body = http.call("/api/fleet/flush", method="POST", data=b"", token=OP_TOKEN)
    assert (status, json.loads(body)) == (200, {"flushed": True})
    who = json.loads(http.call("/api/whoami", token=OP_TOKEN)[2])
    assert who == {"name": "ops-script", "role": "operator", "via": "token"}


def test_dashboard_login_gives_a_session_cookie(system: tuple[Fleet, Http]) -> None:
    _fleet, http = system
    form = urllib.parse.urlencode(
        {"username": "alice", "password": "alice-pw", "next": "/api/whoami"}
    ).encode()
    status, headers, _ = http.call("/login", method="POST", data=form)
    assert status == 303 and headers["Location"] == "/api/whoami"
    cookie = headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in headers["Set-Cookie"] and "SameSite=Strict" in headers["Set-Cookie"]
    status, _h, body = http.call("/api/whoami", headers={"Cookie": cookie})
    assert json.loads(body) == {"name": "alice", "role": "operator", "via": "session"}
    # a write from another site with the operator's cookie is refused; from this site it works
    evil = {"Cookie": cookie, "Origin": "http://evil.example"}
    assert http.call("/api/fleet/flush", method="POST", data=b"", headers=evil)[0] == 403
    own = {"Cookie": cookie, "Origin": http.base}
    assert http.call("/api/fleet/flush", method="POST", data=b"", headers=own)[0] == 200
    # a tampered cookie is no login; a wrong password goes back to the form
    forged = cookie[:-3] + ("AAA" if not cookie.endswith("AAA") else "BBB")
    assert http.call("/api/whoami", headers={"Cookie": forged})[0] == 401
    bad = urllib.parse.urlencode({"username": "alice", "password": "x", "next": "/"}).encode()
    status, headers, _ = http.call("/login", method="POST", data=bad)
    assert status == 303 and headers["Location"].startswith("/login?failed=1")
    # after login, never to another site
    away = urllib.parse.urlencode(
        {"username": "alice", "password": "alice-pw", "next": "//evil.example/"}
    ).encode()
    assert http.call("/login", method="POST", data=away)[1]["Location"] == "/"


def test_gateway_and_meter_state(system: tuple[Fleet, Http]) -> None:
    fleet, http = system
    page = http.json("/api/gateways")
    assert page["next"] is None
    (gw,) = page["items"]
    assert gw["gateway_id"] == fleet.gateway
    assert gw["state"] == "online" and gw["status"] == "online"
    assert gw["agent_version"]
    assert gw["records"] > 0 and gw["batches"] > 0
    assert gw["sequence_gaps"] == 0 and gw["missing_records"] == 0
    assert gw["rejected_total"] == 0
    assert gw["meters"] == len(fleet.meters)
    assert gw["clock_offset_ms"] is not None
    detail = http.json(f"/api/gateways/{fleet.gateway}")
    assert sorted(detail["meter_ids"]) == sorted(m["id"] for m in fleet.meters)
    meter_id = fleet.meters[0]["id"]
    meter = http.json(f"/api/meters/{meter_id}")
    assert meter["gateway_id"] == fleet.gateway
    assert meter["read_success_rate"] == "1.0000"
    assert meter["last_error"] is None
    assert meter["stale"] is False
    stored = fleet.query(
        "SELECT obis, value, unit FROM readings WHERE meter_id = ? AND captured_ms = ?",
        meter_id,
        meter["last_good_ms"],
    )
    assert sorted([r["obis"], r["value"], r["unit"]] for r in meter["last_good"]) == sorted(
        list(r) for r in stored
    )
    assert http.call("/api/meters/no-such-meter", token=READ_TOKEN)[0] == 404
    assert http.call("/api/gateways/no-such-gw", token=READ_TOKEN)[0] == 404
    overview = http.json("/api/fleet")
    assert overview["gateways_online"] == 1 and overview["offline"] == []
    assert overview["meters"] == len(fleet.meters)


def test_pagination_walks_every_item_once(system: tuple[Fleet, Http]) -> None:
    fleet, http = system
    ids, after, pages = [], "", 0
    while True:
        page = http.json(f"/api/meters?limit=1&after={urllib.parse.quote(after)}")
        pages += 1
        ids += [m["meter_id"] for m in page["items"]]
        if page["next"] is None:
            break
        after = page["next"]
    assert ids == sorted(m["id"] for m in fleet.meters) and pages == len(ids)
    # readings: pages of 7 give exactly the stored rows of the range, in order
    meter_id = fleet.meters[0]["id"]
    rows = fleet.query(
        "SELECT captured_ms, obis, value FROM readings WHERE meter_id = ?"
        " ORDER BY captured_ms, obis",
        meter_id,
    )
    start, end = rows[1][0], rows[-1][0]  # [from, to): the last capture is left out
    want = [r for r in rows if start <= r[0] < end]
    got, after = [], None
    while True:
        query = f"from={start}&to={end}&limit=7" + (f"&after={after}" if after else "")
        page = http.json(f"/api/meters/{meter_id}/readings?{query}")
        got += [(r["captured_ms"], r["obis"], r["value"]) for r in page["items"]]
        if page["next"] is None:
            break
        after = urllib.parse.quote(page["next"])
    assert got == want and len(want) > 7
    # ISO 8601 bounds name the same instants
    iso = "2026-11-01T00:00:00Z"
    assert http.json(f"/api/meters/{meter_id}/readings?from={iso}&limit=1")["items"]


def test_bad_query_parameters_are_named(system: tuple[Fleet, Http]) -> None:
    fleet, http = system
    meter_id = fleet.meters[0]["id"]
    for path, word in (
        ("/api/meters?limit=0", "limit"),
        ("/api/meters?limit=abc", "limit"),
        ("/api/gateways?state=sleepy", "state"),
        ("/api/meters?stale=maybe", "stale"),
        (f"/api/meters/{meter_id}/readings?from=yesterday", "from"),
        (f"/api/meters/{meter_id}/readings?from=10&to=5", "from"),
        (f"/api/meters/{meter_id}/readings?after=nonsense", "after"),
        ("/api/vee/flags?outcome=fatal", "outcome"),
        ("/api/bills?after=x", "after"),
    ):
        status, _h, body = http.call(path, token=READ_TOKEN)
        assert status == 400, path
        assert json.loads(body)["error"].startswith(word), (path, body)


def test_openapi_describes_every_api_route(system: tuple[Fleet, Http]) -> None:
    _fleet, http = system
    status, _h, body = http.call("/api/openapi.json")  # no login needed
    assert status == 200
    doc = json.loads(body)
    assert doc["openapi"].startswith("3.")
    mine = {
        "/api/whoami", "/api/fleet", "/api/fleet/flush", "/api/gateways",
        "/api/gateways/{gateway_id}", "/api/meters", "/api/meters/{meter_id}",
        "/api/meters/{meter_id}/readings", "/api/vee/flags", "/api/bills",
        "/api/bills/{number}", "/api/openapi.json", "/metrics",
    }  # fmt: skip
    assert mine <= set(doc["paths"])
    for path in mine - {"/api/openapi.json", "/metrics"}:
        for method in doc["paths"][path]:
            url = path.replace("{", "x").replace("}", "")
            data = b"" if method == "post" else None
            assert http.call(url, method=method.upper(), data=data)[0] == 401, (method, path)


def test_metrics_content(system: tuple[Fleet, Http]) -> None:
    fleet, http = system
    status, headers, body = http.call("/metrics")  # open by default
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    values = prometheus_values(text)
    assert float(values["meterlink_ingest_records_total"]) > 0
    assert float(values["meterlink_ingest_readings_total"]) > 0
    assert values['meterlink_gateways{state="online"}'] == "1.0"
    assert values['meterlink_gateways{state="offline"}'] == "0.0"
    assert values["meterlink_meters"] == f"{len(fleet.meters)}.0"
    assert "meterlink_gateway_backlog_records" in values
    assert "# TYPE meterlink_ingest_rejected_total counter" in text
    assert "# TYPE meterlink_ingest_duplicates_total counter" in text
    assert "# TYPE meterlink_vee_findings gauge" in text
    assert fleet.gateway not in text  # no per-gateway series


def prometheus_values(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = value
    return values


def test_agent_metrics_port(system: tuple[Fleet, Http]) -> None:
    fleet, http = system
    url = f"http://127.0.0.1:{http.agent_metrics}/metrics"  # type: ignore[attr-defined]

    def scrape() -> dict[str, str]:
        with urllib.request.urlopen(url, timeout=10) as response:
            return prometheus_values(response.read().decode())

    # acks arrive continuously: wait until both latencies have been observed
    values = wait_for(
        lambda: (
            (v := scrape()).get('meterlink_agent_latency_seconds_count{kind="ack"}', "0.0") != "0.0"
            and v
        ),
        timeout=30,
    )
    assert isinstance(values, dict)
    for m in fleet.meters:
        assert float(values[f'meterlink_agent_reads_total{{meter="{m["id"]}"}}']) >= 3
        assert values[f'meterlink_agent_read_failures_total{{meter="{m["id"]}"}}'] == "0.0"
    assert float(values['meterlink_agent_latency_seconds_count{kind="publish"}']) > 0
    assert float(values["meterlink_agent_acked_records_total"]) > 0
    assert "meterlink_agent_buffer_records" in values
    assert values["meterlink_agent_connected"] == "1.0"


def test_zz_state_survives_a_restart_then_the_gateway_goes_offline(
    system: tuple[Fleet, Http],
) -> None:
    fleet, http = system
    assert fleet.collector is not None and fleet.agent is not None
    fleet.collector.stop()
    # what the stopped collector wrote is what the next one starts with
    stored = json.loads(
        fleet.query("SELECT doc FROM fleet_gateways WHERE gateway_id = ?", fleet.gateway)[0][0]
    )
    fleet.start_collector()
    wait_for(lambda: http.call("/api/whoami", token=READ_TOKEN)[0] == 200, timeout=20)
    gw = http.json(f"/api/gateways/{fleet.gateway}")
    assert gw["records"] >= stored["records"] > 0
    assert gw["batches"] >= stored["batches"] > 0
    # the agent stops cleanly: its offline status shows at once, with its reason
    fleet.agent.stop()
    wait_for(lambda: http.json(f"/api/gateways/{fleet.gateway}")["state"] == "offline", 20)
    overview = http.json("/api/fleet")
    assert overview["gateways_offline"] == 1
    assert [g["gateway_id"] for g in overview["offline"]] == [fleet.gateway]
    assert overview["offline"][0]["offline_reason"]

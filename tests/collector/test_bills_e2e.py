"""End to end, three commodities to one convergent bill: ``meterlink sim run`` (a Modbus RTU
electricity meter on an RS-485 pty, a DSMR 5 P1 port with gas and water on M-Bus) ->
``agent run`` (modbus-rtu, dsmr-p1 channels 1 and 2) -> mosquitto -> ``collector run`` with
VEE -> ``collector bill`` (a process): one bill with an electricity, a gas and a water
section, each rated from the VEE intervals the collector derived."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from meterlink.procs import wait_for
from protocols.clock import ClockSetting
from tests.support.loopback import loopback, query

from ._bills import TARIFFS

START = datetime(2026, 10, 31, 23, tzinfo=UTC)  # 1 November 00:00 Europe/Amsterdam
SPEED = 2400  # 40 virtual minutes a real second
WINDOW = timedelta(hours=10)  # virtual time polled: 15 real seconds

ACCOUNTS = """
[[account]]
id = "acc-e2e"
name = "Three commodities"
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
meters = ["p1-gas"]

[[account.service_point]]
id = "sp-w"
commodity = "water"
tariff = "water-flat"
meters = ["p1-water"]
"""


def _interval_sum(db: Path, meter: str, obis: str, start_ms: int, end_ms: int) -> Decimal:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute(
            "SELECT value FROM intervals WHERE meter_id = ? AND obis = ? AND start_ms >= ?"
            " AND start_ms < ? AND superseded_ms IS NULL",
            (meter, obis, start_ms, end_ms),
        ).fetchall()
    finally:
        con.close()
    return sum((Decimal(v) for (v,) in rows if v is not None), Decimal(0))


@pytest.mark.integration
def test_simulated_electricity_gas_and_water_end_in_one_convergent_bill(tmp_path: Path) -> None:
    clock = ClockSetting.accelerated(START, time.time_ns() + 4 * 10**9, Decimal(SPEED))
    until = START + WINDOW
    scenario = tmp_path / "site.toml"
    scenario.write_text(
        f'origin = "{(START - timedelta(hours=3)).isoformat()}"\n'
        '[[rtu]]\npty_link = "ttyRS485"\nbaud = 38400\nparity = "E"\n'
        '[[rtu.units]]\nunit = 1\nprofile = "eastron_sdm630"\nmeter = "em-1"\n\n'
        '[[dsmr]]\npty_link = "ttyP1"\nversion = "5"\nmeter = "p1-e"\ngas = true\nwater = true\n'
        "every = 0.2\n"
    )
    (tmp_path / "collector" / "tariffs").mkdir(parents=True)
    for name, text in TARIFFS.items():
        (tmp_path / "collector" / "tariffs" / f"{name}.toml").write_text(text)
    (tmp_path / "collector" / "accounts.toml").write_text(ACCOUNTS)
    with loopback(tmp_path) as lb:
        sim = lb.spawn("sim", "run", str(scenario), "--clock", str(clock), name="sim",
                       cwd=tmp_path, log_path=tmp_path / "sim.log")  # fmt: skip
        sim.wait_lines(lambda t: t.startswith("READY "), 2, timeout=60)
        collector_toml = lb.collector_config(
            "c-bills",
            '[billing]\naccounts = "accounts.toml"\ntariffs = "tariffs"\n\n'
            # as in the demo: at this clock speed reads land minutes after their slots
            '[vee]\ntimezone = "Europe/Amsterdam"\ninterval = "1h"\nread_every = "15m"\n'
            'aligned = false\nclock_drift = "30m"\n'
            'rules = ["units", "limits", "monotonic", "negative", "gaps"]\n',
        )
        agent_toml = tmp_path / "agent" / "agent.toml"
        agent_toml.parent.mkdir()
        agent_toml.write_text(
            '[gateway]\nid = "gw-bills"\nstate_dir = "state"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {lb.broker.port}\nbatch_max_records = 20\n\n'
            f'[[meters]]\nid = "em-1"\ndriver = "modbus-rtu"\nport = "{tmp_path}/ttyRS485"\n'
            'baud = 38400\nparity = "E"\nunit = 1\nprofile = "eastron_sdm630"\n'
            'interval = "15m"\ntimeout = "300ms"\nretries = 1\n\n'
            f'[[meters]]\nid = "p1-gas"\ndriver = "dsmr-p1"\nserial = "{tmp_path}/ttyP1"\n'
            'channel = 1\ninterval = "15m"\n\n'
            f'[[meters]]\nid = "p1-water"\ndriver = "dsmr-p1"\nserial = "{tmp_path}/ttyP1"\n'
            'channel = 2\ninterval = "15m"\n'
        )
        lb.enrol(agent_toml, collector_toml, "gw-bills", ["em-1", "p1-gas", "p1-water"])
        lb.start("collector", "collector", "run", str(collector_toml), "--clock", str(clock))
        agent = lb.start("agent", "agent", "run", str(agent_toml), "--clock", str(clock),
                         "--until", until.isoformat(), "--progress-json", "60")  # fmt: skip
        assert agent.popen.wait(timeout=120) == 0, agent.output[-3000:]
        final = json.loads(next(li for li in agent.lines if li.startswith('{"final"')))
        db = lb.collector_db

        def stored() -> int:
            return query(db, "SELECT COUNT(*) FROM readings")[0][0]

        wait_for(lambda: stored() >= final["captured_readings"], timeout=30, what="all stored")
        bill = lb.spawn(
            "collector", "bill", "--account", "acc-e2e", "--period", "2026-11",
            "--config", str(collector_toml), "--as-of", until.isoformat(), "--format", "json",
            name="bill", cwd=tmp_path,
        )  # fmt: skip
        assert bill.popen.wait(timeout=120) == 0, bill.output
        bill.stop()
    doc = json.loads(bill.output)
    assert [s["commodity"] for s in doc["sections"]] == ["electricity", "gas", "water"]
    assert doc["to_date"] is True and doc["number"] is None
    for section, meter, obis, unit in (
        (doc["sections"][0], "em-1", "1-0:1.8.0", "kWh"),
        (doc["sections"][1], "p1-gas", "7-0:3.0.0", "m3"),
        (doc["sections"][2], "p1-water", "8-0:1.0.0", "m3"),
    ):
        (use,) = [q for q in section["meters"][0]["quantities"] if q["obis"] == obis]
        assert use["source"] == "vee" and use["unit"] == unit
        assert Decimal(use["total"]) > 0, (meter, use)
        assert sum(use["intervals"].values()) > 0
        # the usage lines price exactly what VEE derived for the section's range
        start = int(datetime.fromisoformat(section["start"].replace("Z", "+00:00")).timestamp())
        end = int(datetime.fromisoformat(section["end"].replace("Z", "+00:00")).timestamp())
        derived = _interval_sum(db, meter, obis, start * 1000, end * 1000)
        priced = sum(
            Decimal(li["quantity"])
            for li in section["lines"]
            if li["component"] in ("energy", "tou")
        )
        assert priced == derived == Decimal(use["total"]), (meter, priced, derived)
        assert any(li["component"] == "standing" for li in section["lines"])
    assert Decimal(doc["total"]) == sum(Decimal(li["amount"]) for li in doc["lines"])
    print(
        "bills e2e: "
        + "; ".join(
            f"{s['commodity']} {s['meters'][0]['quantities'][0]['total']} "
            f"{s['unit']} -> {s['subtotal']} EUR"
            for s in doc["sections"]
        )
        + f"; total {doc['total']} EUR"
    )

"""End to end on ptys: ``meterlink sim run`` (an RS-485 bus of five Modbus RTU meters of two
profiles, a DSMR 5 P1 port with gas on M-Bus, an IEC 62056-21 meter) -> ``agent run`` ->
mosquitto -> ``collector run``. Every reading the agent captured is stored exactly once;
one meter on the bus is unplugged (the simulator's ``fault silent``) while the four others
keep their cycle."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from meterlink.procs import wait_for
from protocols.clock import ClockSetting
from protocols.record import ClockSource
from tests.support.loopback import loopback, meterlink_proc, query

START = datetime(2026, 11, 2, tzinfo=UTC)
START_MS = int(START.timestamp()) * 1000
SPEED = 30  # a 1-minute slot every 2 real seconds
RTU = {1: "eastron_sdm630", 2: "carlo_gavazzi_em24_e1", 3: "eastron_sdm630",
       4: "carlo_gavazzi_em24_e1", 5: "eastron_sdm630"}  # fmt: skip
WINDOW_MIN = 8  # virtual minutes polled
INTERVAL_MS = 60_000


@pytest.mark.integration
def test_serial_fleet_end_to_end_stored_once_and_an_unplugged_meter_costs_only_itself(
    tmp_path: Path,
) -> None:
    clock = ClockSetting.accelerated(START, time.time_ns() + 4 * 10**9, Decimal(SPEED))
    until = START_MS + WINDOW_MIN * INTERVAL_MS
    units = "".join(
        f'[[rtu.units]]\nunit = {u}\nprofile = "{p}"\nmeter = "rtu-{u}"\n' for u, p in RTU.items()
    )
    scenario = tmp_path / "serial.toml"
    scenario.write_text(
        f'origin = "{START.isoformat()}"\n'
        '[[rtu]]\npty_link = "ttyRS485"\nbaud = 38400\nparity = "E"\n' + units + "\n"
        '[[dsmr]]\npty_link = "ttyP1"\nversion = "5"\nmeter = "p1-e"\ngas = true\n'
        "every = 0.5\n\n"
        '[[iec62056]]\npty_link = "ttyOPT"\nmeter = "iec-1"\naddress = "42"\nbaud = 9600\n'
    )
    with loopback(tmp_path) as lb:
        sim = lb.spawn(
            "sim", "run", str(scenario), "--clock", str(clock), name="sim",
            log_path=tmp_path / "sim.log", stdin_pipe=True,
        )  # fmt: skip
        sim.wait_lines(lambda t: t.startswith("READY "), 3, timeout=60)
        collector_toml = lb.collector_config("c-serial")
        agent_toml = tmp_path / "agent" / "agent.toml"
        agent_toml.parent.mkdir()
        meters = "".join(
            f'[[meters]]\nid = "rtu-{u}"\ndriver = "modbus-rtu"\nport = "{tmp_path}/ttyRS485"\n'
            f'baud = 38400\nparity = "E"\nunit = {u}\nprofile = "{p}"\ninterval = "1m"\n'
            'timeout = "300ms"\nretries = 1\n\n'
            for u, p in RTU.items()
        )
        meters += (
            f'[[meters]]\nid = "p1-e"\ndriver = "dsmr-p1"\nserial = "{tmp_path}/ttyP1"\n'
            'interval = "1m"\n\n'
            f'[[meters]]\nid = "p1-e-gas"\ndriver = "dsmr-p1"\nserial = "{tmp_path}/ttyP1"\n'
            'channel = 1\ninterval = "1m"\n\n'
            f'[[meters]]\nid = "iec-1"\ndriver = "iec62056"\nserial = "{tmp_path}/ttyOPT"\n'
            'address = "42"\ninterval = "1m"\ntimeout = "2s"\n'
        )
        agent_toml.write_text(
            '[gateway]\nid = "gw-serial"\nstate_dir = "state"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {lb.broker.port}\nbatch_max_records = 20\n\n'
            + meters
        )
        ids = [f"rtu-{u}" for u in RTU] + ["p1-e", "p1-e-gas", "iec-1"]
        lb.enrol(agent_toml, collector_toml, "gw-serial", ids)
        until_text = datetime.fromtimestamp(until / 1000, UTC).isoformat()
        lb.start("collector", "collector", "run", str(collector_toml), "--clock", str(clock))
        agent = lb.start("agent", "agent", "run", str(agent_toml), "--clock", str(clock),
                         "--until", until_text, "--progress-json", "60")  # fmt: skip

        def stored() -> list[tuple]:
            return query(
                lb.collector_db,
                "SELECT meter_id, obis, captured_ms, value, unit, clock_source FROM readings",
            )

        def captures(meter: str) -> set[int]:
            return {r[2] for r in stored() if r[0] == meter}

        # unplug rtu-3 once it has been read three times
        wait_for(lambda: len(captures("rtu-3")) >= 3, timeout=90, what="3 captures of rtu-3")
        sim.send_line("rtu-3 fault silent")
        sim.wait_line(lambda t: t.startswith("OK") and "silent" in t, timeout=10)
        unplugged_at = max(captures("rtu-3"))
        assert agent.popen.wait(timeout=120) == 0, agent.output[-3000:]
        final = json.loads(next(li for li in agent.lines if li.startswith('{"final"')))
        wait_for(lambda: len(stored()) >= final["captured_readings"], timeout=30, what="all stored")
        status = meterlink_proc("agent", "status", str(agent_toml), "--json", name="status",
                                cwd=tmp_path)  # fmt: skip
        assert status.popen.wait(timeout=60) == 0, status.output
        summary = json.loads(status.output[status.output.index("{") :])
        text = meterlink_proc("agent", "status", str(agent_toml), name="status-text", cwd=tmp_path)
        assert text.popen.wait(timeout=60) == 0, text.output
    rows = stored()
    # exactly once: every reading the agent captured is stored, none twice
    keys = [(r[0], r[1], r[2]) for r in rows]
    assert len(keys) == len(set(keys)) == final["captured_readings"]
    assert final["acked_records"] == final["captured_records"]
    by_meter = {m: sorted(captures(m)) for m in ids}
    for meter in ids:
        assert by_meter[meter], f"no readings of {meter}"
    # the four meters left on the bus keep their cycle: one capture per slot, no gap, the
    # same number as each other; the unplugged one stops at its fault
    healthy = [f"rtu-{u}" for u in RTU if u != 3]
    counts = {m: len(by_meter[m]) for m in healthy}
    assert len(set(counts.values())) == 1, counts
    for meter in healthy:
        steps = [b - a for a, b in zip(by_meter[meter], by_meter[meter][1:], strict=False)]
        assert all(s < 1.5 * INTERVAL_MS for s in steps), (meter, steps)
    assert max(by_meter["rtu-3"]) == unplugged_at
    assert len(by_meter["rtu-3"]) < counts["rtu-1"]
    stats = {m["meter_id"]: m for m in summary["meters"]}
    for meter in healthy:
        assert stats[meter]["skipped_slots"] == 0 and stats[meter]["read_errors"] == 0
    assert stats["rtu-3"]["read_errors"] >= 1 and "no answer" in stats["rtu-3"]["last_error"]
    # both profiles' quantities, in their units
    units = {(r[0], r[1]): r[4] for r in rows}
    assert units[("rtu-1", "1-0:32.7.0")] == "V" and units[("rtu-2", "1-0:14.7.0")] == "Hz"
    # DSMR: electricity at the telegram's time stamps, gas at its own 5-minute stamps (METER)
    assert all(ms % 1000 == 0 for ms in by_meter["p1-e"])
    assert all(ms % 300_000 == 0 for ms in by_meter["p1-e-gas"])
    assert {r[1] for r in rows if r[0] == "p1-e-gas"} == {"7-0:3.0.0"}
    assert {r[5] for r in rows if r[0] in ("p1-e", "p1-e-gas")} == {int(ClockSource.METER)}
    assert units[("iec-1", "1-0:1.8.0")] == "kWh"
    buses = {b["name"]: b for b in summary["agent"]["buses"]}
    rtu_bus = next(b for name, b in buses.items() if "ttyRS485" in name)
    # the text form: broker, buses with cycle against period and utilisation
    assert "agent: not running (last state " in text.output and f":{lb.broker.port}" in text.output
    assert "oldest unacknowledged reading: none" in text.output
    bus_line = next(li for li in text.output.splitlines() if li.startswith("  modbus-rtu:/"))
    assert "5 meter(s), cycle " in bus_line and "keeps its period" in bus_line
    assert "utilisation " in bus_line and "silent " in bus_line
    assert "rtu-3: " in text.output and "last error" in text.output
    assert rtu_bus["silent"] >= 1 and 0 < rtu_bus["utilisation"] < 1
    print(
        f"serial e2e: {len(rows)} readings stored once; captures per meter "
        f"{ {m: len(v) for m, v in by_meter.items()} }; RTU bus cycle "
        f"{rtu_bus['last_cycle_s']}s (max {rtu_bus['max_cycle_s']}s) of {rtu_bus['period_s']}s,"
        f" utilisation {rtu_bus['utilisation']:.1%}"
    )

"""The whole agent as a process: simulated Modbus meters -> agent -> mosquitto -> head-end."""

from __future__ import annotations

import json
import signal
import time
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from agent.cli import main as agent_main
from agent.keys import load_key
from protocols.obis import Obis
from protocols.record import ClockSource, Quality, decode_record
from tests.agent._headend import FakeHeadEnd
from tests.support.procs import Mosquitto, Proc, wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
SPEED = 900  # 15 virtual minutes per real second
INTERVAL_MS = 15 * 60 * 1000


def start_simulator(clock: str) -> tuple[Proc, list[dict[str, str]]]:
    sim = Proc.python(
        "firmware_sim",
        "run",
        str(REPO / "config/scenarios/demo.toml"),
        "--clock",
        clock,
        cwd=REPO,
        name="firmware_sim",
    )
    servers = []
    try:
        for _ in range(2):
            line = sim.wait_line(
                lambda text: (
                    text.startswith("READY modbus") and text not in [s["line"] for s in servers]
                )
            )
            fields = dict(part.split("=", 1) for part in line.split()[3:])
            servers.append({"line": line, "address": line.split()[2], **fields})
    except BaseException:
        sim.stop()
        raise
    return sim, servers


def write_config(tmp_path: Path, broker_port: int, servers: list[dict[str, str]]) -> Path:
    lines = [
        "[gateway]",
        'id = "gw-it-01"',
        'state_dir = "state"',
        "",
        "[mqtt]",
        f"port = {broker_port}",
        "batch_max_records = 50",
        'ack_timeout = "5s"',
        "",
    ]
    for server in servers:
        host, port = server["address"].rsplit(":", 1)
        for unit, meter in zip(
            server["units"].split(","), server["meters"].split(","), strict=True
        ):
            lines += [
                "[[meters]]",
                f'id = "{meter}"',
                f'host = "{host}"',
                f"port = {port}",
                f"unit = {unit}",
                f'profile = "{server["profile"]}"',
                'interval = "15m"',
                'timeout = "500ms"',
                "retries = 1",
                "",
            ]
    sdm = next(s for s in servers if s["profile"] == "eastron_sdm630")
    host, port = sdm["address"].rsplit(":", 1)
    # a unit nobody answers for: its errors are counted, the other meters go on
    lines += [
        "[[meters]]",
        'id = "em-ghost"',
        f'host = "{host}"',
        f"port = {port}",
        "unit = 9",
        'profile = "eastron_sdm630"',
        'interval = "15m"',
        'timeout = "200ms"',
        "retries = 0",
        "",
    ]
    path = tmp_path / "agent.toml"
    path.write_text("\n".join(lines))
    return path


def test_agent_polls_simulated_meters_and_delivers_signed_records(
    tmp_path: Path, mosquitto: Mosquitto, capsys
) -> None:
    clock = f"2026-06-01T06:00:00Z@{time.time():.3f}x{SPEED}"
    sim, servers = start_simulator(clock)
    agent = headend = None
    try:
        config = write_config(tmp_path, mosquitto.port, servers)
        assert agent_main(["keys", "init", "--config", str(config)]) == 0
        key = load_key(tmp_path / "state" / "keys")
        headend = FakeHeadEnd(mosquitto.port, key.public)
        agent = Proc.python(
            "agent",
            "run",
            str(config),
            "--clock",
            clock,
            "--progress-json",
            "--progress-every",
            "1",
            cwd=REPO,
            name="agent",
        )
        agent.wait_line(lambda text: text.startswith("READY agent gateway=gw-it-01"))
        meters = [m for s in servers for m in s["meters"].split(",")]

        def per_meter() -> dict[str, list]:
            out: dict[str, list] = defaultdict(list)
            for seq in sorted(headend.seqs()):
                rec = decode_record(headend.stored[seq]).record
                out[rec.meter_id].append(rec)
            return out

        wait_for(
            lambda: all(len(per_meter()[m]) >= 3 for m in meters),
            60,
            "three captures of every meter at the head-end",
        )
        assert agent.kill(signal.SIGTERM) == 0
        final = [json.loads(t) for t in agent.lines if t.startswith('{"final"')]
        assert final and final[0]["captured_records"] >= 18
    finally:
        if agent is not None:
            agent.stop()
        if headend is not None:
            headend.close()
        sim.stop()

    records = per_meter()
    assert "em-ghost" not in records
    for meter in meters:
        recs = records[meter]
        assert recs[0].flags & Quality.RESTARTED
        assert not any(r.flags & Quality.RESTARTED for r in recs[1:])
        for rec in recs:
            assert rec.clock_source is ClockSource.GATEWAY
            # aligned to the virtual 15-minute slots (plus the poll's own latency)
            assert rec.captured_ms % INTERVAL_MS < 120_000, rec.captured_ms
            values = {v.obis: v for v in rec.values}
            energy = values[Obis.parse("1-0:1.8.0")]
            assert isinstance(energy.value, Decimal) and energy.unit == "kWh"
            assert energy.value > 0
        slots = [r.captured_ms // INTERVAL_MS for r in recs]
        assert slots == sorted(set(slots))  # one capture per slot, none repeated
    sdm01 = [r for r in records["em-sdm-01"]]
    imports = [{v.obis: v.value for v in r.values}[Obis.parse("1-0:1.8.0")] for r in sdm01]
    assert imports[0] >= Decimal("12345.67") and imports == sorted(imports)
    # every seq the agent assigned reached the head-end once at least, none missing
    assert headend.seqs() == set(range(1, max(headend.seqs()) + 1))

    capsys.readouterr()
    assert agent_main(["status", str(config), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    stats = {m["meter_id"]: m for m in status["meters"]}
    assert stats["em-ghost"]["read_errors"] >= 1 and stats["em-ghost"]["records"] == 0
    assert (
        "em-ghost" in stats["em-ghost"]["last_error"]
        and "unit 9" in stats["em-ghost"]["last_error"]
    )
    for meter in meters:
        assert stats[meter]["records"] >= 3 and stats[meter]["read_errors"] == 0

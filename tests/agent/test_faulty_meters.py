"""Misbehaving meters (firmware_sim fault front) read by the agent's Modbus TCP driver.

One simulated gateway serves good units and one unit per fault kind on the SAME connection,
so a fault that desynchronised the byte stream would show up as a good meter getting the
wrong values. The server's clock is frozen: every good answer is known exactly.
"""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import pytest

from agent.drivers.modbus_tcp import MeterReadError, ModbusTcpConnection, ModbusTcpMeter
from firmware_sim.cli import resolve_profile
from firmware_sim.faults import FaultSpecError, parse_fault, parse_unit_fault
from firmware_sim.modbus_server import ModbusSimServer, registers_for
from firmware_sim.model import MeterModel, ModelParams
from protocols.clock import ClockSetting
from protocols.modbus import mbap

START_NS = 1_780_315_200 * 10**9  # 2026-06-01T12:00:00Z
TIMEOUT = 0.2
RETRIES = 1
FAULTS = {
    2: "garbage",
    3: "slow:0.5,0.02",  # late, then in time, in turn
    4: "wrong-unit",  # answers with unit 5's registers and unit id
    5: "silent",
    6: "mid-frame",
    7: "exception:4",
}
GOOD = (1, 8)


def _models() -> dict[int, MeterModel]:
    return {
        unit: MeterModel(
            f"em-{unit}",
            unit,
            ModelParams(initial_import_kwh=Decimal(1000 * unit)),
            origin_ns=START_NS,
        )
        for unit in range(1, 9)
    }


def _expected(profile, model: MeterModel, virtual_ns: int) -> set:
    values = set()
    for request in profile.plan():
        regs = registers_for(profile, model, request.address, request.count, virtual_ns)
        for obis, value in profile.decode_response(request, regs).items():
            values.add((str(obis), value))
    return values


async def _rounds(rounds: int) -> tuple[dict, dict, dict, dict]:
    profile = resolve_profile("eastron_sdm630")
    models = _models()
    clock = ClockSetting(START_NS, 0, Decimal(1))
    faults = {unit: parse_fault(text) for unit, text in FAULTS.items()}
    results: dict[int, list] = {unit: [] for unit in models}
    requests: dict[int, list[int]] = {unit: [] for unit in models}
    seconds: dict[int, list[float]] = {unit: [] for unit in models}
    async with ModbusSimServer(
        profile, models, clock, now_ns=lambda: 0, faults=faults, seed=1
    ) as server:
        front = server._front
        assert front is not None
        conn = ModbusTcpConnection("127.0.0.1", server.port)
        meters = {
            unit: ModbusTcpMeter(f"em-{unit}", unit, profile, conn, TIMEOUT, RETRIES)
            for unit in models
        }
        try:
            for _ in range(rounds):
                for unit, meter in meters.items():
                    before = front.requests.get(unit, 0)
                    started = time.monotonic()
                    try:
                        outcome = await meter.read()
                        results[unit].append(outcome)
                    except MeterReadError as exc:
                        results[unit].append(exc)
                    seconds[unit].append(time.monotonic() - started)
                    requests[unit].append(front.requests.get(unit, 0) - before)
        finally:
            await conn.close()
    expected = {unit: _expected(profile, model, START_NS) for unit, model in models.items()}
    return results, requests, seconds, expected


def test_faulty_units_are_rejected_and_never_desynchronise_the_good_ones() -> None:
    rounds = 4
    results, requests, seconds, expected = asyncio.run(_rounds(rounds))
    for unit, times in seconds.items():
        print(f"unit {unit} {FAULTS.get(unit, 'good')}: {[f'{t:.3f}' for t in times]} s/cycle")
    plan_size = len(resolve_profile("eastron_sdm630").plan())

    # good meters on the same connection: every cycle, exactly their own values
    for unit in GOOD:
        for outcome in results[unit]:
            assert not isinstance(outcome, Exception), outcome
            assert not outcome.errors
            got = {(str(v.obis), v.value) for v in outcome.values}
            assert got == expected[unit]

    def texts(unit: int) -> list[str]:
        out = []
        for outcome in results[unit]:
            out.append(
                str(outcome) if isinstance(outcome, Exception) else "; ".join(outcome.errors)
            )
        return out

    for unit in (2, 4, 5, 6, 7):  # never a value
        assert all(isinstance(o, MeterReadError) for o in results[unit]), (unit, results[unit])
        for text in texts(unit):
            assert text.startswith(f"meter em-{unit}: read input 0x")
            assert f"unit {unit} at 127.0.0.1:" in text
    for text in texts(2):
        assert any(
            reason in text
            for reason in ("malformed answer", "no answer within", "answer stopped after")
        ), text
    assert any("protocol id 19778" in t for t in texts(2))
    assert any("transaction id" in t for t in texts(2))
    assert any("byte count" in t for t in texts(2))
    for text in texts(4):
        assert "answer from unit 5 to a request for unit 4" in text
    for text in texts(5):
        assert f"no answer within {TIMEOUT:g}s ({RETRIES + 1} attempts)" in text
    for text in texts(6):
        assert "connection closed after" in text or "answer stopped after" in text
    for text in texts(7):
        assert "exception response 4 (server device failure)" in text

    # the slow meter: values only from answers in time, and then its own
    slow_values = [o for o in results[3] if not isinstance(o, Exception)]
    for outcome in slow_values:
        got = {(str(v.obis), v.value) for v in outcome.values}
        assert got <= expected[3]
    print(f"slow meter: {len(slow_values)} of {rounds} cycles with values")

    # a meter giving no usable answer costs its bus retries+1 requests per cycle, not
    # retries+1 per block of its plan; an exception response costs one per block (it answers)
    for unit in (2, 4, 5, 6):
        assert all(n == RETRIES + 1 for n in requests[unit]), (unit, requests[unit])
    assert all(n <= plan_size * (RETRIES + 1) for n in requests[7])


def test_wrong_unit_values_are_never_taken() -> None:
    """An answer from unit 5 to a request for unit 4 is a FrameError before any decoding."""
    header = mbap.Header(7, 0, 7, 5)
    pdu = bytes([4, 4, 0, 1, 0, 2])
    with pytest.raises(mbap.FrameError, match="answer from unit 5 to a request for unit 4"):
        mbap.check_answer(header, pdu, 7, 4, 4, 2)
    assert mbap.check_answer(mbap.Header(7, 0, 7, 4), pdu, 7, 4, 4, 2) == [1, 2]
    with pytest.raises(mbap.FrameError, match="transaction id 7, expected 8"):
        mbap.check_answer(mbap.Header(7, 0, 7, 4), pdu, 8, 4, 4, 2)
    with pytest.raises(mbap.FrameError, match="protocol id"):
        mbap.parse_header(bytes([0, 1, 0x4D, 0x42, 0, 7, 4]))
    with pytest.raises(mbap.FrameError, match="length"):
        mbap.parse_header(bytes([0, 1, 0, 0, 0xFF, 0xFF, 4]))


def test_fault_settings_parse_and_bad_ones_name_the_problem() -> None:
    assert str(parse_fault("slow:0.8,0.2")) == "slow:0.8,0.2"
    assert parse_fault("exception:11").code == 11
    assert parse_fault("wrong-unit").other_unit is None
    assert parse_unit_fault("3:wrong-unit:2") == (3, parse_fault("wrong-unit:2"))
    for bad, reason in (
        ("3:bogus", "unknown fault 'bogus'"),
        ("3:slow", "needs an argument"),
        ("3:slow:x", "expected seconds"),
        ("3:silent:1", "takes no argument"),
        ("0:silent", "must be 1..247"),
        ("3:exception:300", "must be 1..255"),
        ("garbage", "expected UNIT:KIND"),
    ):
        with pytest.raises(FaultSpecError, match=reason):
            parse_unit_fault(bad)


# --- the whole agent as a process, faulty units among good ones --------------------------

SPEED = 300  # a 15-minute slot every 3 real seconds
INTERVAL_MS = 15 * 60 * 1000
# meter -> (server, unit, fault, first kWh); the SDM630 gateway carries every fault kind
FLEET = {
    "fm-good-1": (0, 1, None, 1000),
    "fm-garbage": (0, 2, "garbage", 2000),
    "fm-slow": (0, 3, "slow:0.3,0.02", 3000),
    "fm-wrong-unit": (0, 4, "wrong-unit", 4000),
    "fm-silent": (0, 5, "silent", 5000),
    "fm-mid-frame": (0, 6, "mid-frame", 6000),
    "fm-exception": (0, 7, "exception:4", 7000),
    "fm-good-8": (0, 8, None, 8000),
    "fm-em24-1": (1, 1, None, 9100),  # another connection
    "fm-em24-2": (1, 2, None, 9200),
}
REASONS = {
    "fm-garbage": ("malformed answer", "no answer within", "answer stopped after"),
    "fm-wrong-unit": ("answer from unit 5 to a request for unit 4",),
    "fm-silent": ("no answer within 0.2s (2 attempts)",),
    "fm-mid-frame": ("connection closed after", "answer stopped after"),
    "fm-exception": ("exception response 4 (server device failure)",),
}


def _scenario(path: Path) -> None:
    lines = ['origin = "2026-06-01T06:00:00Z"']
    for server, profile in enumerate(("eastron_sdm630", "carlo_gavazzi_em24_e1")):
        lines += ["[[servers]]", "port = 0", f'profile = "{profile}"']
        for meter, (srv, unit, fault, kwh) in FLEET.items():
            if srv != server:
                continue
            lines += ["[[servers.units]]", f"unit = {unit}", f'meter = "{meter}"']
            lines += [f'initial_import_kwh = "{kwh}"', "pv_peak_w = 0"]
            if fault:
                lines.append(f'fault = "{fault}"')
    path.write_text("\n".join(lines) + "\n")


def _agent_config(path: Path, broker_port: int, addresses: list[str]) -> None:
    lines = ["[gateway]", 'id = "gw-faulty"', 'state_dir = "state"', "[mqtt]"]
    lines += [f"port = {broker_port}", 'ack_timeout = "5s"']
    for meter, (server, unit, _fault, _kwh) in FLEET.items():
        host, port = addresses[server].rsplit(":", 1)
        profile = ("eastron_sdm630", "carlo_gavazzi_em24_e1")[server]
        lines += ["[[meters]]", f'id = "{meter}"', f'host = "{host}"', f"port = {port}"]
        lines += [f"unit = {unit}", f'profile = "{profile}"', 'interval = "15m"']
        lines += ['timeout = "200ms"', "retries = 1"]
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.integration
def test_agent_with_faulty_meters_among_good_ones(tmp_path: Path, mosquitto, capsys) -> None:
    import json
    import signal
    from collections import defaultdict

    from agent.cli import main as agent_main
    from agent.keys import load_key
    from protocols.obis import Obis
    from protocols.record import decode_record
    from tests.agent._headend import FakeHeadEnd
    from tests.support.procs import Proc, wait_for

    repo = Path(__file__).resolve().parents[2]
    clock = f"2026-06-01T06:00:00Z@{time.time():.3f}x{SPEED}"
    _scenario(tmp_path / "scenario.toml")
    sim = Proc.python(
        "firmware_sim", "run", str(tmp_path / "scenario.toml"), "--clock", clock,
        cwd=repo, name="firmware_sim",
    )  # fmt: skip
    agent = headend = None
    try:
        ready: list[str] = []
        for _ in range(2):
            ready.append(sim.wait_line(lambda t: t.startswith("READY modbus") and t not in ready))
        ready.sort(key=lambda line: "eastron" not in line)
        assert "faults=2:garbage,3:slow:0.3,0.02,4:wrong-unit" in ready[0]
        config = tmp_path / "agent.toml"
        _agent_config(config, mosquitto.port, [line.split()[2] for line in ready])
        assert agent_main(["keys", "init", "--config", str(config)]) == 0
        headend = FakeHeadEnd(mosquitto.port, load_key(tmp_path / "state" / "keys").public)
        agent = Proc.python(
            "agent", "run", str(config), "--clock", clock, "--progress-json",
            cwd=repo, name="agent",
        )  # fmt: skip
        agent.wait_line(lambda t: t.startswith("READY agent gateway=gw-faulty"))

        def per_meter() -> dict[str, list]:
            out: dict[str, list] = defaultdict(list)
            for seq in sorted(headend.seqs()):
                rec = decode_record(headend.stored[seq]).record
                out[rec.meter_id].append(rec)
            return out

        good = ["fm-good-1", "fm-good-8", "fm-em24-1", "fm-em24-2"]
        wait_for(lambda: all(len(per_meter()[m]) >= 3 for m in good), 60, "3 captures each")
        assert agent.kill(signal.SIGTERM) == 0
        final = [json.loads(t) for t in agent.lines if t.startswith('{"final"')]
        assert final and final[0]["read_errors"] > 0
    finally:
        if agent is not None:
            agent.stop()
        if headend is not None:
            headend.close()
        sim.stop()

    records = per_meter()
    energy = Obis.parse("1-0:1.8.0")
    for meter in ("fm-garbage", "fm-wrong-unit", "fm-silent", "fm-mid-frame", "fm-exception"):
        assert meter not in records, (meter, records[meter][:1])
    for meter, recs in records.items():
        first_kwh = FLEET[meter][3]
        for rec in recs:  # every value is this meter's own: its registers start at first_kwh
            value = {v.obis: v.value for v in rec.values}[energy]
            assert first_kwh <= value < first_kwh + 100, (meter, value)
    for meter in good:  # one capture per slot, no slot missed between the first and the last
        slots = [r.captured_ms // INTERVAL_MS for r in records[meter]]
        assert slots == list(range(slots[0], slots[0] + len(slots))), (meter, slots)

    capsys.readouterr()
    assert agent_main(["status", str(config), "--json"]) == 0
    stats = {m["meter_id"]: m for m in json.loads(capsys.readouterr().out)["meters"]}
    for meter in good:
        assert stats[meter]["read_errors"] == 0 and stats[meter]["skipped_slots"] == 0
    for meter, reasons in REASONS.items():
        unit = FLEET[meter][1]
        s = stats[meter]
        assert s["records"] == 0 and s["read_errors"] >= 3, s
        text = s["last_error"]
        assert text.startswith(f"meter {meter}: read input 0x") and f"unit {unit} at " in text
        assert any(reason in text for reason in reasons), text
    print(
        "per meter (records, read errors): "
        + ", ".join(f"{m} {s['records']}/{s['read_errors']}" for m, s in stats.items())
    )

"""The Modbus TCP simulator, read with a real pymodbus client and decoded with protocols.modbus."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from firmware_sim.cli import resolve_profile
from firmware_sim.modbus_server import ModbusSimServer
from firmware_sim.model import MeterModel, ModelParams
from protocols.clock import ClockSetting
from protocols.obis import Obis

REPO = Path(__file__).resolve().parents[2]
START_NS = 1_780_315_200 * 10**9  # 2026-06-01T12:00:00Z


class FrozenClock:
    """Real time that only moves when the test says so."""

    def __init__(self) -> None:
        self.now = 1_700_000_000 * 10**9

    def __call__(self) -> int:
        return self.now


def _models() -> dict[int, MeterModel]:
    return {
        1: MeterModel("em-a", 3, ModelParams(pv_peak_w=5000), origin_ns=START_NS),
        2: MeterModel("em-b", 3, ModelParams(), origin_ns=START_NS),
    }


async def _read_all(profile_name: str, function: str = "input") -> tuple[dict, dict]:
    profile = resolve_profile(profile_name)
    real = FrozenClock()
    clock = ClockSetting(START_NS, real.now, Decimal(60))
    real.now += 3_600 * 10**9 // 60  # one virtual hour later
    models = _models()
    virtual = clock.virtual_ns(real.now)
    got: dict[int, dict[Obis, Decimal]] = {}
    async with ModbusSimServer(profile, models, clock, now_ns=real) as server:
        client = AsyncModbusTcpClient("127.0.0.1", port=server.port)
        await client.connect()
        try:
            for unit in models:
                got[unit] = {}
                for request in profile.plan():
                    read = (
                        client.read_input_registers
                        if function == "input"
                        else client.read_holding_registers
                    )
                    response = await read(request.address, count=request.count, device_id=unit)
                    assert not response.isError(), response
                    got[unit].update(profile.decode_response(request, response.registers))
        finally:
            client.close()
    expected = {unit: model.values_at(virtual) for unit, model in models.items()}
    return got, expected


def test_sdm630_values_match_the_model() -> None:
    got, expected = asyncio.run(_read_all("eastron_sdm630"))
    for unit in (1, 2):
        for obis, value in got[unit].items():
            want = expected[unit][obis]
            # float32 keeps about 7 significant digits
            assert abs(value - want) <= abs(want) * Decimal("1e-6") + Decimal("1e-6"), obis
    assert got[1][Obis.parse("1-0:16.7.0")] < 0  # PV exports at noon
    assert got[2][Obis.parse("1-0:16.7.0")] > 0


def test_em24_scaled_integers_match_the_model() -> None:
    got, expected = asyncio.run(_read_all("carlo_gavazzi_em24_e1", function="holding"))
    energy = Obis.parse("1-0:1.8.0")
    for unit in (1, 2):
        # energy is truncated to the register's 0.1 kWh, never rounded up
        assert got[unit][energy] == expected[unit][energy].quantize(Decimal("0.1"), "ROUND_FLOOR")
        for obis, value in got[unit].items():
            assert abs(value - expected[unit][obis]) < Decimal("0.1"), obis  # one step


async def _exceptions() -> list[int]:
    profile = resolve_profile("eastron_sdm630")
    clock = ClockSetting(START_NS, 0, Decimal(1))
    async with ModbusSimServer(profile, _models(), clock, now_ns=lambda: 0) as server:
        client = AsyncModbusTcpClient("127.0.0.1", port=server.port)
        await client.connect()
        try:
            codes = []
            for call in (
                client.read_input_registers(0, count=2, device_id=9),  # unknown unit
                client.read_holding_registers(0, count=2, device_id=1),  # not this meter's FC
                client.read_input_registers(0x0100, count=2, device_id=1),  # past the map
                client.write_register(0, 1, device_id=1),  # read-only
            ):
                response = await call
                assert response.isError()
                codes.append(response.exception_code)
            hole = await client.read_input_registers(0x0012, count=4, device_id=1)
            assert hole.registers == [0, 0, 0, 0]  # unmapped = "zero"
        finally:
            client.close()
    return codes


def test_exception_responses() -> None:
    assert asyncio.run(_exceptions()) == [0x0B, 0x01, 0x02, 0x02]


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "firmware_sim", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def _stop(proc: subprocess.Popen[str], sig: int) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sim_run_prints_ready_lines_and_exits_0_on_signal(sig: int) -> None:
    proc = _start(["run", "config/scenarios/demo.toml"])
    try:
        lines = [proc.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
        assert all(line.startswith("READY modbus 127.0.0.1:") for line in lines), lines
        assert "profile=eastron_sdm630 units=1,2,3 meters=em-sdm-01,em-sdm-02,em-sdm-03" in lines[0]
        assert "profile=carlo_gavazzi_em24_e1" in lines[1]
        port = int(lines[0].split()[2].rsplit(":", 1)[1])

        async def read() -> list[int]:
            client = AsyncModbusTcpClient("127.0.0.1", port=port)
            await client.connect()
            try:
                return (await client.read_input_registers(0x48, count=2, device_id=1)).registers
            finally:
                client.close()

        assert asyncio.run(read()) != [0, 0]
    finally:
        code = _stop(proc, sig)
    assert code == 0, proc.stderr.read()  # type: ignore[union-attr]


def test_sim_modbus_with_clock_setting() -> None:
    proc = _start(
        [
            "modbus",
            "--port",
            "0",
            "--profile",
            "carlo_gavazzi_em24_e1",
            "--units",
            "1,2",
            "--clock",
            "2026-06-01T00:00:00Z@1700000000x60",
            "--meter-prefix",
            "t",
        ]
    )
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("READY modbus 127.0.0.1:"), line
        port = line.split()[2].rsplit(":", 1)[1]
        assert f"meters=t-{port}-1,t-{port}-2" in line
    finally:
        assert _stop(proc, signal.SIGTERM) == 0


def test_unknown_profile_exits_2() -> None:
    proc = _start(["modbus", "--port", "0", "--profile", "nope"])
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "unknown profile 'nope'" in err


PROFILE = ("--profile", "eastron_sdm630")


@pytest.mark.parametrize("fault", [[], ["--fault", "1:silent"]])
def test_port_in_use_is_a_clear_error_with_exit_2(fault: list[str]) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "firmware_sim", "modbus", "--port", str(port), *PROFILE, *fault],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
    assert done.returncode == 2
    assert f"sim: error: cannot listen on 127.0.0.1:{port}: already in use" in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_scenario_fault_settings_are_checked(tmp_path: Path) -> None:
    from firmware_sim.cli import ScenarioError, load_scenario

    text = (
        '[[servers]]\nport = 0\nprofile = "eastron_sdm630"\n'
        '[[servers.units]]\nunit = 1\nmeter = "a"\n'
        '[[servers.units]]\nunit = 2\nmeter = "b"\nfault = "FAULT"\n'
    )
    path = tmp_path / "s.toml"
    path.write_text(text.replace("FAULT", "slow:0.8,0.2"))
    _clock, (spec,) = load_scenario(path, None, 0)
    assert {u: str(f) for u, f in spec.faults.items()} == {2: "slow:0.8,0.2"}
    path.write_text(text.replace("FAULT", "noisy"))
    with pytest.raises(ScenarioError, match=r"servers\[0\].units\[1\].fault: unknown fault"):
        load_scenario(path, None, 0)

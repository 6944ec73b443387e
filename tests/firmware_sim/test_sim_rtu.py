"""The Modbus RTU bus simulator on a pty: read through the device node with pyserial and
framed/checked by ``protocols.modbus.rtu``, and by pymodbus' own serial client (an
independent master); its faults; ``sim modbus --rtu`` and ``sim run`` with the serial
scenario as processes, with the control channel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import serial
from pymodbus.client import AsyncModbusTcpClient, ModbusSerialClient

from firmware_sim.cli import resolve_profile
from firmware_sim.modbus_server import ModbusSimServer, registers_for
from firmware_sim.model import MeterModel, ModelParams
from firmware_sim.serial.faults import FaultState, LineFault
from firmware_sim.serial.rtu import RtuBus, RtuUnit
from meterlink.procs import Proc
from protocols.clock import ClockSetting
from protocols.modbus.rtu import (
    BadFrame,
    ExceptionAnswer,
    Frame,
    FrameReader,
    RtuError,
    SerialLine,
    check_answer,
    read_request,
    with_crc,
)

REPO = Path(__file__).resolve().parents[2]
START_NS = 1_780_315_200 * 10**9  # 2026-06-01T12:00:00Z
# a clock standing at START (its anchor far in the future): registers do not move under us
FROZEN = ClockSetting(START_NS, 4_000_000_000 * 10**9, Decimal(0))
SDM, EM24 = "eastron_sdm630", "carlo_gavazzi_em24_e1"


def _models() -> dict[int, MeterModel]:
    return {
        1: MeterModel("rtu-a", 3, ModelParams(pv_peak_w=5000), origin_ns=START_NS - 86_400 * 10**9),
        2: MeterModel("rtu-b", 3, origin_ns=START_NS - 86_400 * 10**9),
        7: MeterModel("rtu-c", 3, ModelParams(kind="commercial"), origin_ns=START_NS),
    }


def _bus(link: Path, faults: dict[int, LineFault] | None = None, baud: int = 9600) -> RtuBus:
    profiles = {1: SDM, 2: SDM, 7: EM24}
    units = [
        RtuUnit(u, resolve_profile(profiles[u]), m, FaultState((faults or {}).get(u, LineFault())))
        for u, m in _models().items()
    ]
    return RtuBus(link, units, FROZEN, line=SerialLine(baud), seed=1)


def _with_bus(bus: RtuBus, work: Callable[[], Any]) -> Any:
    async def main() -> Any:
        await bus.start()
        try:
            return await asyncio.wait_for(asyncio.to_thread(work), 60)
        finally:
            await bus.stop()

    return asyncio.run(main())


def _port(link: Path, timeout: float = 2.0) -> serial.Serial:
    # 8N1: a pty carries no parity, and this kernel refuses PARENB on a pty in some
    # tcsetattr sequences (EINVAL; see agent/serial_port.py): the bytes are the same.
    return serial.Serial(str(link), baudrate=9600, timeout=timeout)


def _transact(port: serial.Serial, request: bytes, size: int) -> bytes:
    """Write a request, read ``size`` bytes (fewer if the line stays quiet for the timeout)."""
    port.write(request)
    return port.read(size)


def _expected(unit: int, address: int, count: int) -> list[int]:
    profile = resolve_profile({1: SDM, 2: SDM, 7: EM24}[unit])
    return registers_for(profile, _models()[unit], address, count, START_NS)


def test_units_answer_framed_and_crc_checked_with_the_profiles_registers(tmp_path: Path) -> None:
    link = tmp_path / "rs485"
    bus = _bus(link)

    def work() -> dict[tuple[int, int], list[int]]:
        got = {}
        with _port(link) as port:
            for unit in (1, 2, 7):
                for address, count in ((0, 40), (40, 40)):
                    frame = _transact(port, read_request(unit, 4, address, count), 5 + 2 * count)
                    got[(unit, address)] = check_answer(frame, unit, 4, count)
        return got

    got = _with_bus(bus, work)
    for (unit, address), registers in got.items():
        assert registers == _expected(unit, address, 40)
    assert _expected(1, 0, 40) != _expected(2, 0, 40)  # each unit is its own meter
    assert bus.counts["answers"] == 6 and bus.units[7].requests == 2


def test_pymodbus_serial_client_reads_the_same_registers_as_the_tcp_simulator(
    tmp_path: Path,
) -> None:
    """Same model, same clock: the RTU bus and the Modbus TCP simulator show identical
    registers, each read by pymodbus (its serial client, its TCP client)."""
    link = tmp_path / "rs485"
    bus = _bus(link)

    def serial_reads() -> dict[int, list[int]]:
        client = ModbusSerialClient(str(link), baudrate=9600, parity="N", timeout=2, retries=0)
        assert client.connect()
        try:
            out = {}
            for unit in (1, 7):
                answer = client.read_input_registers(0, count=80, device_id=unit)
                assert not answer.isError(), answer
                out[unit] = list(answer.registers)
            holding = client.read_holding_registers(0, count=10, device_id=7)  # EM24: FC03 too
            assert list(holding.registers) == out[7][:10]
            refused = client.read_holding_registers(0, count=10, device_id=1)  # SDM630: FC04
            assert refused.isError() and refused.exception_code == 1
            return out
        finally:
            client.close()

    async def main() -> tuple[dict[int, list[int]], dict[int, list[int]]]:
        models = _models()
        over_tcp: dict[int, list[int]] = {}
        for unit, name in ((1, SDM), (7, EM24)):
            async with ModbusSimServer(resolve_profile(name), {unit: models[unit]}, FROZEN) as srv:
                client = AsyncModbusTcpClient("127.0.0.1", port=srv.port)
                await client.connect()
                answer = await client.read_input_registers(0, count=80, device_id=unit)
                client.close()
                over_tcp[unit] = list(answer.registers)
        await bus.start()
        try:
            over_rtu = await asyncio.wait_for(asyncio.to_thread(serial_reads), 60)
        finally:
            await bus.stop()
        return over_rtu, over_tcp

    over_rtu, over_tcp = asyncio.run(main())
    assert over_rtu == over_tcp
    assert any(over_rtu[1]) and any(over_rtu[7])


def test_exceptions_broadcast_and_absent_units(tmp_path: Path) -> None:
    """Writes and unknown functions answer exceptions; broadcast and units not on the bus
    get no answer (the next answer on the line is the next unit's)."""
    link = tmp_path / "rs485"
    bus = _bus(link)

    def work() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with _port(link) as port:
            write = with_crc(bytes([1, 6, 0, 0, 0, 1]))
            out["write"] = _transact(port, write, 5)
            out["past"] = _transact(port, read_request(1, 4, 78, 10), 5)
            out["count"] = _transact(port, with_crc(bytes([1, 4, 0, 0, 0, 0])), 5)
            port.write(with_crc(bytes([0, 4, 0, 0, 0, 2])))  # broadcast
            port.write(read_request(9, 4, 0, 2))  # nobody is unit 9
            out["next"] = _transact(port, read_request(2, 4, 0, 2), 9)
        return out

    out = _with_bus(bus, work)
    with pytest.raises(ExceptionAnswer) as write:
        check_answer(out["write"], 1, 6, 1)
    assert write.value.code == 2
    with pytest.raises(ExceptionAnswer) as past:
        check_answer(out["past"], 1, 4, 10)
    assert past.value.code == 2
    with pytest.raises(ExceptionAnswer) as count:
        check_answer(out["count"], 1, 4, 0)
    assert count.value.code == 3
    assert check_answer(out["next"], 2, 4, 2) == _expected(2, 0, 2)
    assert bus.counts["broadcasts"] == 1 and bus.counts["not-ours"] == 1


def _events(raw: bytes) -> list[Frame | BadFrame]:
    reader = FrameReader()
    reader.receive_data(raw)
    out: list[Frame | BadFrame] = []
    while isinstance(event := reader.next_event(), (Frame, BadFrame)):
        out.append(event)
    tail = reader.silence()
    return out + ([tail] if tail is not None else [])


def test_faults_per_unit(tmp_path: Path) -> None:
    link = tmp_path / "rs485"
    faults = {
        1: LineFault("corrupt"),
        2: LineFault("wrong-unit"),
        7: LineFault("exception", 6),
    }
    bus = _bus(link, faults)

    def work() -> dict[str, bytes]:
        with _port(link, timeout=0.5) as port:
            out = {
                "corrupt": _transact(port, read_request(1, 4, 0, 4), 13),
                "wrong": _transact(port, read_request(2, 4, 0, 4), 13),
                "exception": _transact(port, read_request(7, 4, 0, 4), 5),
            }
            bus.units[1].faults.set(LineFault("truncated"))
            out["truncated"] = _transact(port, read_request(1, 4, 0, 4), 13)  # times out short
            bus.units[1].faults.set(LineFault("silent"))
            bus.units[2].faults.set(LineFault("garbage"))
            port.write(read_request(1, 4, 0, 4))  # silent: nothing comes
            out["after-silent"] = _transact(port, read_request(7, 3, 0, 2), 5)
            out["garbage"] = _transact(port, read_request(2, 4, 0, 4), 64)
        return out

    out = _with_bus(bus, work)
    with pytest.raises(RtuError, match="CRC"):
        check_answer(out["corrupt"], 1, 4, 4)
    (crc,) = _events(out["corrupt"])
    assert isinstance(crc, BadFrame) and crc.reason == "crc"
    with pytest.raises(RtuError, match="answer from unit 7 to a request for unit 2"):
        check_answer(out["wrong"], 2, 4, 4)
    assert check_answer(out["wrong"], 7, 4, 4) == _expected(7, 0, 4)  # unit 7's registers
    with pytest.raises(ExceptionAnswer) as exc:
        check_answer(out["exception"], 7, 4, 4)
    assert exc.value.code == 6
    assert 0 < len(out["truncated"]) < 13
    (short,) = _events(out["truncated"])
    assert isinstance(short, BadFrame) and short.reason == "truncated"
    # the silent unit sent nothing: the first answer on the line is unit 7's exception to FC03
    assert out["after-silent"][0] == 7 and len(out["after-silent"]) == 5
    assert not any(isinstance(e, Frame) for e in _events(out["garbage"]))
    assert bus.units[1].faults.applied == 3


def test_late_fault_and_the_answer_side_silence(tmp_path: Path) -> None:
    """An answer never comes before the request's and its own time on the wire plus the
    3.5-character silence (computed from the baud rate); a late unit adds its delay. Lower
    bounds only."""
    link = tmp_path / "rs485"
    line = SerialLine(1200)
    bus = _bus(link, {2: LineFault("late", 250)}, baud=1200)

    def work() -> tuple[float, float, bytes]:
        with _port(link) as port:
            begin = time.monotonic()
            good = _transact(port, read_request(1, 4, 0, 10), 25)
            normal = time.monotonic() - begin
            begin = time.monotonic()
            late = _transact(port, read_request(2, 4, 0, 2), 9)
            return normal, time.monotonic() - begin, good + late

    normal, late, frames = _with_bus(bus, work)
    assert normal >= line.t3_5 + line.frame_time(8 + 25)
    assert late >= 0.25 + line.t3_5 + line.frame_time(8 + 9)
    assert check_answer(frames[25:], 2, 4, 2) == _expected(2, 0, 2)


@pytest.mark.integration
def test_sim_modbus_rtu_process_and_the_control_channel(tmp_path: Path) -> None:
    """``sim modbus --rtu``: READY line; ``fault 3 silent`` unplugs unit 3 while 1 answers;
    ``fault 3 none`` plugs it back; a meter can be named by its id."""
    link = tmp_path / "bus0"
    sim = Proc.python(
        "meterlink", "sim", "modbus", "--rtu", str(link), "--profile", SDM, "--units", "1,3",
        "--meter-prefix", "m", "--fault", "1:late:10", cwd=REPO, name="sim", stdin_pipe=True,
    )  # fmt: skip
    try:
        ready = sim.wait_line(lambda text: text.startswith("READY rtu"))
        words = ready.split()
        assert words[2] == f"pty:{link}"
        assert words[3:6] == [f"profile={SDM}", "units=1,3", "meters=m-bus0-1,m-bus0-3"]
        assert words[6].startswith("device=/dev/pts/") and "faults=1:late:10" in words
        with _port(link, timeout=0.5) as port:
            assert len(check_answer(_transact(port, read_request(3, 4, 0, 2), 9), 3, 4, 2)) == 2
            sim.send_line("fault 3 silent")
            sim.wait_line(lambda text: text == "OK fault silent")
            port.write(read_request(3, 4, 0, 2))
            answer = _transact(port, read_request(1, 4, 0, 2), 9)
            assert check_answer(answer, 1, 4, 2)  # the first answer is unit 1's
            sim.send_line("m-bus0-3 fault none")
            sim.wait_line(lambda text: text == "OK fault none")
            assert check_answer(_transact(port, read_request(3, 4, 0, 2), 9), 3, 4, 2)
            sim.send_line("fault 9 silent")
            sim.wait_line(lambda text: text.startswith("ERROR fault: unit '9'"))
    finally:
        assert sim.stop() == 0, sim.output
    assert not link.exists()  # the link goes with the simulator


@pytest.mark.integration
def test_scenario_with_all_three_serial_simulators(tmp_path: Path) -> None:
    """config/scenarios/serial.toml: an RS-485 bus with 5 meters of two profiles, a DSMR 5
    port with gas, an IEC 62056-21 meter; each read through its pty."""
    from protocols import iec62056_21 as iec
    from protocols.dsmr import NEED_DATA, TelegramReader, TelegramReceived, meter_readings

    sim = Proc.python(
        "meterlink", "sim", "run", str(REPO / "config/scenarios/serial.toml"),
        "--pty-dir", str(tmp_path), cwd=REPO, name="sim", stdin_pipe=True,
    )  # fmt: skip
    try:
        lines = sim.wait_lines(lambda text: text.startswith("READY "), 3)
        kinds = {line.split()[1]: line for line in lines}
        assert set(kinds) == {"rtu", "iec62056", "dsmr"}
        assert "units=1,2,3,4,5" in kinds["rtu"]
        assert f"profile={SDM},{SDM},{SDM},{EM24},{EM24}" in kinds["rtu"]
        assert "meters=p1-e-01,p1-e-01-gas" in kinds["dsmr"] and "version=5" in kinds["dsmr"]
        with _port(tmp_path / "rs485-0") as port:
            for unit in range(1, 6):
                frame = _transact(port, read_request(unit, 4, 0, 80), 165)
                assert any(check_answer(frame, unit, 4, 80))
            # one meter of the bus unplugged, by its id, while the others answer
            sim.send_line("rtu-sdm-03 fault silent")
            sim.wait_line(lambda text: text == "OK fault silent")
            port.write(read_request(3, 4, 0, 2))
            assert check_answer(_transact(port, read_request(4, 4, 0, 2), 9), 4, 4, 2)
            sim.send_line("fault 3 none")  # several devices: a bare command names nobody
            sim.wait_line(lambda text: text.startswith("ERROR name the meter first"))
            sim.send_line(f"{tmp_path / 'rs485-0'} fault 3 none")  # the bus, by its link
            sim.wait_line(lambda text: text == "OK fault none")
            assert check_answer(_transact(port, read_request(3, 4, 0, 2), 9), 3, 4, 2)
        with _port(tmp_path / "p1-0", timeout=5) as port:
            reader = TelegramReader()
            telegram = None
            while telegram is None:
                reader.receive_data(port.read(port.in_waiting or 1))
                while (got := reader.next_event()) is not NEED_DATA:
                    if isinstance(got, TelegramReceived):
                        telegram = got.telegram
            meters = meter_readings(telegram)
            assert [m.kind for m in meters] == ["electricity", "gas"]
            assert [m.equipment_id for m in meters] == ["p1-e-01", "p1-e-01-gas"]
        with _port(tmp_path / "optical-0", timeout=5) as port:  # 7E1 on a real line
            readout = iec.ModeCReadout(address="12345678")
            port.write(readout.start())
            block = None
            while block is None:
                readout.receive_data(port.read(port.in_waiting or 1))
                event = readout.next_event()
                if isinstance(event, iec.Identified):
                    assert event.identification.ident == "iec-01"
                    port.write(event.reply)
                    port.baudrate = event.baud
                elif isinstance(event, iec.DataReceived):
                    block = event.block
            values = {str(r.obis): r.value for r in iec.readings(block.datasets).values}
            assert values["1-0:1.8.0"] >= Decimal("20480.5")
    finally:
        assert sim.stop() == 0, sim.output


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[[rtu]]\npty_link = "a"\n[[rtu.units]]\nunit = 1\n', "no profile"),
        ('[[rtu]]\npty_link = "a"\nprofile = "x"\n[[rtu.units]]\n', "unknown profile 'x'"),
        (f'[[rtu]]\npty_link = "a"\nprofile = "{SDM}"\n', "no [[rtu.units]]"),
        (f'[[rtu]]\npty_link = "a"\nprofile = "{SDM}"\nspeed = 1\n', "unknown keys speed"),
        (f'[[rtu]]\npty_link = "a"\nprofile = "{SDM}"\n[[rtu.units]]\nfault = "late"\n',
         "rtu[0].units[0].fault: fault 'late' needs an argument"),
        (f'[[rtu]]\npty_link = "a"\nprofile = "{SDM}"\nbaud = 1234\n[[rtu.units]]\n',
         "baud 1234"),
        ('[[iec62056]]\npty_link = "a"\naddress = "no!"\n', "device address 'no!'"),
        ('[[iec62056]]\npty_link = "a"\nfault = "garbage"\n', "unknown fault 'garbage' here"),
        ('[[dsmr]]\npty_link = "a"\nversion = "6"\n', "version '6'"),
        ('[[dsmr]]\npty_link = "a"\n[[iec62056]]\npty_link = "a"\n', "pty_link"),
        ("[[dsmr]]\n", "dsmr[0].pty_link: required"),
    ],
)  # fmt: skip
def test_serial_scenario_errors_name_the_table_and_key(
    tmp_path: Path, table: str, message: str
) -> None:
    from firmware_sim.cli import ScenarioError, load_scenario, load_serial_scenario

    path = tmp_path / "s.toml"
    path.write_text(table)
    clock, servers = load_scenario(path, None, 0)  # serial tables alone are a scenario
    assert servers == []
    with pytest.raises((ScenarioError, ValueError), match=message.replace("[", r"\[")) as exc:
        load_serial_scenario(path, clock, 0, tmp_path)
    assert str(path) in str(exc.value)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_line_noise_is_dropped_and_the_next_request_answered(tmp_path: Path, seed: int) -> None:
    """Random bytes on the bus (never a whole valid request): no answer and no crash; after
    the 3.5-character silence that ends them the next request is answered."""
    import random

    link = tmp_path / "rs485"
    bus = _bus(link)
    noise = random.Random(seed).randbytes(200)

    def work() -> bytes:
        with _port(link) as port:
            port.write(noise)
            port.flush()
            # the silence a master must leave after a frame (3.5 characters) is protocol,
            # not synchronisation: the slaves drop what they could not frame at its end
            time.sleep(20 * bus.serial.t3_5)
            return _transact(port, read_request(2, 4, 0, 2), 9)

    answer = _with_bus(bus, work)
    assert check_answer(answer, 2, 4, 2) == _expected(2, 0, 2)
    assert bus.counts["bad"] >= 1


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["modbus", "--profile", SDM], "--port is required (or --rtu PTY-LINK"),
        (["modbus", "--profile", SDM, "--port", "0", "--rtu", "x"], "TCP or RTU, not both"),
        (["modbus", "--profile", SDM, "--rtu", "x", "--baud", "1000"], "baud 1000"),
        (["modbus", "--profile", SDM, "--rtu", "x", "--fault", "4:silent"], "unit 4 is not"),
        (["modbus", "--profile", SDM, "--rtu", "x", "--fault", "1:slow:1"], "unknown fault"),
        (["modbus", "--profile", SDM, "--rtu", "/nonexistent/x"], "cannot make the pty link"),
        (["dsmr", "--pty-link", "FILE"], "a file is there"),
        (["dsmr", "--pty-link", "x", "--every", "0"], "--every 0: must be > 0"),
        (["iec62056", "--pty-link", "x", "--address", "a!"], "device address 'a!'"),
        (["iec62056", "--pty-link", "x", "--baud", "38400"], "baud 38400"),
    ],
)
def test_serial_command_line_errors_exit_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    from firmware_sim.cli import main

    (tmp_path / "FILE").write_text("not a pty")
    argv = [str(tmp_path / a) if a in ("x", "FILE") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("sim: error: ") and message in err and err.count("\n") == 1

"""The IEC 62056-21 mode C simulator on a pty, read through the device node with pyserial and
the codec's readout state machine (``protocols.iec62056_21.ModeCReadout``): a whole exchange,
device addresses on a shared line, faults, and ``sim iec62056`` as a process with its
control channel."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import ROUND_FLOOR, Decimal
from pathlib import Path
from typing import Any

import pytest
import serial

from firmware_sim.model import MeterModel, ModelParams
from firmware_sim.serial.faults import FaultState, LineFault
from firmware_sim.serial.iec62056 import IecLine, IecMeter
from firmware_sim.serial.tariffs import TariffSplit
from meterlink.procs import Proc
from protocols import iec62056_21 as iec
from protocols.clock import ClockSetting
from protocols.obis import Obis

REPO = Path(__file__).resolve().parents[2]
START_NS = 1_780_315_200 * 10**9  # 2026-06-01T12:00:00Z
FROZEN = ClockSetting(START_NS, 4_000_000_000 * 10**9, Decimal(0))


def _meter(meter_id: str, address: str = "", **kw: Any) -> IecMeter:
    model = MeterModel(meter_id, 5, ModelParams(pv_peak_w=3000), origin_ns=START_NS - 10**14)
    return IecMeter(model, address, **kw)


def _with_line(line: IecLine, work: Callable[[], Any]) -> Any:
    async def main() -> Any:
        await line.start()
        try:
            return await asyncio.wait_for(asyncio.to_thread(work), 60)
        finally:
            await line.stop()

    return asyncio.run(main())


def _port(link: Path, timeout: float = 3.0) -> serial.Serial:
    # 300 baud 7E1 on a real line; a pty carries neither baud nor parity and this kernel
    # refuses 7-bit/parity settings on a pty (see agent/serial_port.py): 8N1, same bytes.
    return serial.Serial(str(link), baudrate=300, timeout=timeout)


def _readout(port: serial.Serial, address: str = "") -> tuple[iec.Identified, iec.DataReceived]:
    """A whole mode C readout through the codec's state machine."""
    readout = iec.ModeCReadout(address=address, max_baud=9600)
    port.write(readout.start())
    identified = None
    while True:
        chunk = port.read(port.in_waiting or 1)
        if not chunk:
            raise TimeoutError(f"readout stalled in state {readout.state.value}")
        readout.receive_data(chunk)
        while (event := readout.next_event()) is not iec.NEED_DATA:
            if isinstance(event, iec.Identified):
                identified = event
                port.write(event.reply)
                port.baudrate = event.baud  # the switch the ACK asked for
            elif isinstance(event, iec.DataReceived):
                assert identified is not None
                return identified, event


def test_mode_c_readout_through_the_codec_state_machine(tmp_path: Path) -> None:
    link = tmp_path / "optical"
    meter = _meter("iec-a", baud=4800, clock_offset_ms=-90_000)
    line = IecLine(link, [meter], FROZEN)

    def work() -> tuple[iec.Identified, iec.DataReceived]:
        with _port(link) as port:
            return _readout(port)

    identified, data = _with_line(line, work)
    ident = identified.identification
    assert (ident.manufacturer, ident.baud_char, ident.ident) == ("MLk", "4", "iec-a")
    assert ident.protocol_mode == "C" and ident.short_reaction
    assert identified.reply == iec.ack_option("0", "4", "0") and identified.baud == 4800
    values = {r.obis: r for r in iec.readings(data.block.datasets).values}
    assert not iec.readings(data.block.datasets).problems
    imp, _exp, _ri, _re = meter.model.energies_mwh(START_NS)
    assert values[Obis.parse("1-0:1.8.0")].value == Decimal(imp).scaleb(-6).quantize(
        Decimal("0.001"), ROUND_FLOOR
    )
    assert values[Obis.parse("1-0:1.8.0")].unit == "kWh"
    t1, t2, _e1, _e2 = TariffSplit(meter.model).split_mwh(START_NS)
    assert t1 + t2 == imp
    assert values[Obis.parse("1-0:1.8.1")].value == Decimal(t1 // 1000).scaleb(-3)
    expected = meter.model.values_at(START_NS)
    for code, unit in (("1-0:32.7.0", "V"), ("1-0:14.7.0", "Hz")):
        assert values[Obis.parse(code)].value == expected[Obis.parse(code)]
        assert values[Obis.parse(code)].unit == unit
    assert values[Obis.parse("1-0:1.7.0")].value * 1000 == expected[Obis.parse("1-0:1.7.0")]
    sets = {ds.address: ds.value for ds in data.block.datasets}
    clock = datetime.fromtimestamp(START_NS // 10**9 - 90, UTC)  # 90 s slow
    assert (sets["0.9.1"], sets["0.9.2"]) == (f"{clock:%H%M%S}", f"{clock:%y%m%d}")
    assert meter.readouts == 1 and line.baud == 300  # back at the sign-on after the data


def test_device_addresses_pick_one_meter_of_a_shared_line(tmp_path: Path) -> None:
    """``/?ADDRESS!`` is answered by that meter only; an unknown address by nobody (the next
    answer on the line belongs to the next sign-on); ``/?!`` by the line's first meter."""
    link = tmp_path / "bus"
    meters = [_meter("iec-1", "1001"), _meter("iec-2", "1002")]
    line = IecLine(link, meters, FROZEN)

    def work() -> dict[str, str]:
        with _port(link) as port:
            out = {address: _readout(port, address)[0].identification.ident
                   for address in ("1002", "1001", "")}  # fmt: skip
            port.write(iec.sign_on("9999"))  # nobody: no answer
            out["after-unknown"] = _readout(port, "1002")[0].identification.ident
            return out

    assert _with_line(line, work) == {
        "1002": "iec-2", "1001": "iec-1", "": "iec-1", "after-unknown": "iec-2",
    }  # fmt: skip


def test_unsupported_option_and_break_return_to_the_sign_on(tmp_path: Path) -> None:
    link = tmp_path / "optical"
    meter = _meter("iec-b")
    line = IecLine(link, [meter], FROZEN)

    def work() -> bytes:
        with _port(link) as port:
            port.write(iec.sign_on())
            assert port.readline() == meter.identification()
            port.write(iec.ack_option("0", "5", "1"))  # programming mode: not offered
            port.write(iec.sign_on())
            assert port.readline() == meter.identification()
            port.write(iec.break_message())
            return _readout(port)[1].raw

    raw = _with_line(line, work)
    assert iec.parse_data_block(raw).datasets and meter.readouts == 1


def test_faults_silent_corrupt_truncated_late(tmp_path: Path) -> None:
    link = tmp_path / "optical"
    meter = _meter("iec-f")
    meter.faults = FaultState(LineFault("corrupt"))
    line = IecLine(link, [meter], FROZEN)

    def work() -> dict[str, Any]:
        out: dict[str, Any] = {}
        with _port(link, timeout=1.0) as port:
            with pytest.raises(iec.Iec62056Error, match="BCC"):
                _readout(port)
            meter.faults.set(LineFault("truncated"))
            with pytest.raises(TimeoutError, match="awaiting data"):
                _readout(port)
            meter.faults.set(LineFault("silent"), count=1)
            with pytest.raises(TimeoutError, match="awaiting identification"):
                _readout(port)
            meter.faults.set(LineFault("late", 300), count=1)
            begin = time.monotonic()
            port.write(iec.sign_on())
            out["late-ident"] = port.readline()
            out["late-s"] = time.monotonic() - begin
            out["good"] = _readout(port)[1].block  # faults used up: a good readout
        return out

    out = _with_line(line, work)
    assert out["late-ident"] == meter.identification() and out["late-s"] >= 0.3
    assert out["good"].datasets
    assert meter.faults.applied == 4 and meter.faults.fault.kind == "none"


@pytest.mark.integration
def test_sim_iec62056_process_and_control_channel(tmp_path: Path) -> None:
    link = tmp_path / "optical"
    sim = Proc.python(
        "meterlink", "sim", "iec62056", "--pty-link", str(link), "--address", "42",
        "--meter-id", "iec-p", "--baud", "19200", cwd=REPO, name="sim", stdin_pipe=True,
    )  # fmt: skip
    try:
        ready = sim.wait_line(lambda text: text.startswith("READY iec62056"))
        words = ready.split()
        assert words[2:6] == [f"pty:{link}", "meters=iec-p", "addresses=42", "baud=19200"]
        with _port(link) as port:
            identified, _data = _readout(port, "42")
            assert identified.baud == 9600  # our max_baud caps the offer of 19200
            sim.send_line("fault corrupt 1")
            sim.wait_line(lambda text: text == "OK fault corrupt x1")
            with pytest.raises(iec.Iec62056Error, match="BCC"):
                _readout(port, "42")
            sim.send_line("clock-offset 3600")
            sim.wait_line(lambda text: text.startswith("OK clock-offset 3600"))
            _identified, data = _readout(port, "42")  # the fault was for one readout
            stamp = {ds.address: ds.value for ds in data.block.datasets}["0.9.1"]
            hour = (datetime.now(UTC).hour + 1) % 24
            assert int(stamp[:2]) in (hour, (hour + 1) % 24)  # an hour fast
    finally:
        assert sim.stop() == 0, sim.output

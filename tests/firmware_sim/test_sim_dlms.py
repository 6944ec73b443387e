"""The DLMS simulator, read by a third-party client (dlms-cosem 21.3.2's DlmsClient over its
own blocking TCP transport) and by raw frames; the ``sim dlms`` command as a process."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from dlms_cosem import cosem, enumerations
from dlms_cosem.clients.dlms_client import DataResultError, DlmsClient
from dlms_cosem.exceptions import DlmsClientException
from dlms_cosem.time import datetime_from_bytes

from firmware_sim.dlms import DLMS_OBJECTS, DlmsMeterState, DlmsSimServer, register_integer
from firmware_sim.model import MeterModel
from meterlink.procs import Proc
from protocols.clock import ClockSetting
from protocols.dlms.apdu import parse_get_request
from protocols.dlms.axdr import Data, Tag, decode_data
from protocols.dlms.cosem import CosemDateTime
from protocols.dlms.wrapper import WrapperReader, encode_frame
from protocols.obis import Obis

REPO = Path(__file__).resolve().parents[2]
START_NS = 1_780_315_200 * 10**9  # 2026-06-01T12:00:00Z
OFFSET_MS = 300_000  # the meter's clock is 5 minutes fast


class FrozenClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000 * 10**9

    def __call__(self) -> int:
        return self.now


def _state(real: FrozenClock) -> DlmsMeterState:
    clock = ClockSetting(START_NS, real.now, Decimal(60))
    real.now += 60 * 10**9  # one virtual hour later
    model = MeterModel("dlms-a", 7, origin_ns=START_NS)
    return DlmsMeterState(model, clock, OFFSET_MS, deviation=-120, wall_ns=real)


def _attr(interface: enumerations.CosemInterface, obis: str, attribute: int) -> Any:
    o = Obis.parse(obis)
    return cosem.CosemAttribute(interface, cosem.Obis(*o.to_bytes()), attribute)


async def _with_client(
    server: DlmsSimServer, work: Callable[[DlmsClient], Any], client_address: int = 16
) -> Any:
    def run() -> Any:
        client = DlmsClient.with_tcp_transport(
            "127.0.0.1", server.port, client_address, 1, timeout=5
        )
        client.connect()
        try:
            return work(client)
        finally:
            client.disconnect()

    return await asyncio.wait_for(asyncio.to_thread(run), 30)


def test_third_party_client_reads_clock_registers_and_serial() -> None:
    real = FrozenClock()
    state = _state(real)
    virtual = state.virtual_ns()
    expected = state.model.values_at(virtual)

    def work(client: DlmsClient) -> dict[str, Any]:
        client.associate()
        got: dict[str, Any] = {
            "clock": client.get(_attr(enumerations.CosemInterface.CLOCK, "0-0:1.0.0", 2)),
            "serial": client.get(_attr(enumerations.CosemInterface.DATA, "0-0:96.1.0", 2)),
        }
        for obis in DLMS_OBJECTS:
            got[f"{obis}/2"] = client.get(_attr(enumerations.CosemInterface.REGISTER, str(obis), 2))
            got[f"{obis}/3"] = client.get(_attr(enumerations.CosemInterface.REGISTER, str(obis), 3))
        with pytest.raises(DataResultError, match="OBJECT_UNDEFINED"):
            client.get(_attr(enumerations.CosemInterface.REGISTER, "1-0:99.8.0", 2))
        # the association survives an error: the next GET is answered
        got["again"] = client.get(_attr(enumerations.CosemInterface.DATA, "0-0:96.1.0", 2))
        client.release_association()
        return got

    async def main() -> dict[str, Any]:
        async with DlmsSimServer(state) as server:
            return await _with_client(server, work)

    got = asyncio.run(main())
    raw_clock = decode_data(got["clock"])[0].octets
    stamp = CosemDateTime.from_bytes(raw_clock)
    assert stamp.to_unix_ms() == virtual // 10**6 + OFFSET_MS
    assert stamp.deviation == -120 and stamp.status == 0
    theirs, _status = datetime_from_bytes(raw_clock)  # dlms-cosem agrees on the instant
    assert int(theirs.timestamp() * 1000) == virtual // 10**6 + OFFSET_MS
    assert decode_data(got["serial"])[0] == Data.octet_string(b"dlms-a")
    assert got["again"] == got["serial"]
    for obis, spec in DLMS_OBJECTS.items():
        value = decode_data(got[f"{obis}/2"])[0]
        assert value == Data(spec.tag, register_integer(spec, expected[obis]))
        scaler_unit = decode_data(got[f"{obis}/3"])[0]
        assert scaler_unit == Data.structure(
            Data(Tag.INTEGER, spec.scaler), Data(Tag.ENUM, spec.unit_code)
        )
    # energy is truncated to whole Wh, never rounded up
    energy = Obis.parse("1-0:1.8.0")
    wh = decode_data(got[f"{energy}/2"])[0].integer
    assert Decimal(wh) <= expected[energy] * 1000 < Decimal(wh + 1)
    assert state.associations == 1 and state.gets == 2 + 2 * len(DLMS_OBJECTS) + 2


def test_association_refused_for_a_non_public_client() -> None:
    state = _state(FrozenClock())

    def work(client: DlmsClient) -> None:
        with pytest.raises(DlmsClientException, match="AUTHENTICATION_REQUIRED"):
            client.associate()

    async def main() -> None:
        async with DlmsSimServer(state) as server:
            await _with_client(server, work, client_address=1)

    asyncio.run(main())
    assert state.rejected == 1 and state.associations == 0


def _exchange(sock: socket.socket, frames: WrapperReader, apdu: bytes, dest: int = 1) -> bytes:
    sock.sendall(encode_frame(16, dest, apdu))
    while True:
        got = frames.feed(sock.recv(4096))
        if got:
            return got[0].apdu


def test_raw_frames_get_before_association_and_garbage() -> None:
    """GET without an association: exception-response; a frame for another logical device
    is discarded; a broken wrapper closes that connection only."""
    state = _state(FrozenClock())
    get_clock = bytes.fromhex("c001c100080000010000ff0200")
    assert parse_get_request(get_clock).attribute == 2

    def work(port: int) -> tuple[bytes, bytes, bytes]:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            frames = WrapperReader()
            refused = _exchange(sock, frames, get_clock)
            sock.sendall(encode_frame(16, 5, get_clock))  # not our wPort: no answer
            unknown = _exchange(sock, frames, b"\xc3\x01\xc1")  # ACTION: not supported
            sock.sendall(b"\x00\x07garbage!")
            closed = sock.recv(10)
        return refused, unknown, closed

    async def main() -> tuple[bytes, bytes, bytes]:
        async with DlmsSimServer(state) as server:
            result = await asyncio.wait_for(asyncio.to_thread(work, server.port), 30)

            def serial(client: DlmsClient) -> bytes:
                client.associate()
                return client.get(_attr(enumerations.CosemInterface.DATA, "0-0:96.1.0", 2))

            assert decode_data(await _with_client(server, serial))[0].octets == b"dlms-a"
            return result

    refused, unknown, closed = asyncio.run(main())
    assert refused == bytes.fromhex("d80101")
    assert unknown == bytes.fromhex("d80202")
    assert closed == b""


def test_sim_dlms_command_prints_ready_and_exits_0_on_sigterm() -> None:
    sim = Proc.python(
        "meterlink", "sim", "dlms", "--port", "0", "--meter-id", "dl-1", cwd=REPO, name="sim"
    )
    try:
        line = sim.wait_line(lambda text: text.startswith("READY dlms"))
        words = line.split()
        assert words[3:] == ["transport=wrapper", "auth=none", "meters=dl-1"]
        host, _, port = words[2].rpartition(":")
        assert host == "127.0.0.1" and int(port) > 0
    finally:
        sim.kill(signal.SIGTERM)
    assert sim.popen.returncode == 0, sim.output


def test_scenario_dlms_tables(tmp_path: Path) -> None:
    from firmware_sim.cli import ScenarioError, load_dlms_scenario, load_scenario

    path = tmp_path / "dlms.toml"
    path.write_text(
        'origin = "2026-06-01T00:00:00Z"\n'
        '[[dlms]]\nmeter = "d-1"\nport = 0\nclock_offset_s = "-90.5"\ndeviation = -60\n'
        "pv_peak_w = 3000\n"
        '[[dlms]]\nmeter = "d-2"\nserver_address = 17\n'
    )
    clock, modbus = load_scenario(path, None, 0)  # no [[servers]]: fine with [[dlms]]
    assert modbus == []
    first, second = load_dlms_scenario(path, clock, 0)
    assert first.meter.model.meter_id == "d-1" and first.meter.clock_offset_ms == -90_500
    assert first.meter.deviation == -60 and first.meter.model.params.pv_peak_w == 3000
    assert second.server_address == 17 and second.meter.clock_offset_ms == 0
    path.write_text('[[dlms]]\nmeter = "d-1"\nunit = 3\n')
    with pytest.raises(ScenarioError, match=r"dlms\[0\]: unknown keys unit"):
        load_dlms_scenario(path, clock, 0)


def test_sim_run_serves_dlms_meters_of_a_scenario(tmp_path: Path) -> None:
    path = tmp_path / "dlms.toml"
    path.write_text('[[dlms]]\nmeter = "d-1"\n[[dlms]]\nmeter = "d-2"\n')
    sim = Proc.python("meterlink", "sim", "run", str(path), cwd=REPO, name="sim")
    try:
        lines = sim.wait_lines(lambda text: text.startswith("READY dlms"), 2)
    finally:
        sim.kill(signal.SIGTERM)
    assert sorted(line.split()[-1] for line in lines) == ["meters=d-1", "meters=d-2"]
    assert sim.popen.returncode == 0, sim.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--pty-link", "/tmp/never"], "--pty-link: a serial pty needs transport hdlc"),
        (["--mode-e"], "--mode-e: the mode E start is for a serial pty (pty_link)"),
        (["--auth", "lls"], "--auth lls needs a password"),
        (["--physical-address", "20000", "--transport", "hdlc"], "--physical-address 20000"),
    ],
)
def test_sim_dlms_flag_errors_name_the_flag_as_typed(args: list[str], message: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "meterlink", "sim", "dlms", "--port", "0", *args],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 2
    assert f"sim: error: {message}" in result.stderr

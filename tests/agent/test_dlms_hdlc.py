"""The dlms driver over HDLC: against ``sim dlms --transport hdlc`` as a process on a TCP
port and on a serial pty (with and without the IEC 62056-21 mode E opening); segmentation
with a small information field; per-meter errors (wrong physical or logical address, a
silent line, a missing device); the serial port module; and one end-to-end fleet run:
``sim run`` with a wrapper meter and an HDLC meter on a pty (mode E) -> agent -> mosquitto
-> collector, every reading stored exactly once."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from agent.config import DlmsSettings, load_config
from agent.drivers.dlms import DlmsMeter
from agent.drivers.dlms.hdlc import HdlcTransport
from agent.drivers.dlms.session import DlmsSession
from agent.drivers.modbus_tcp import MeterReadError
from agent.serial_port import SerialPort
from firmware_sim.dlms import (
    DLMS_OBJECTS,
    DlmsMeterState,
    DlmsSimOptions,
    DlmsSimServer,
    register_integer,
)
from firmware_sim.model import MeterModel
from meterlink.procs import Proc, wait_for
from protocols.clock import ClockSetting
from protocols.dlms.hdlc import FrameKind, FrameReader, LinkState, ServerLink
from protocols.obis import Obis, quantity_for
from protocols.record import ClockSource
from protocols.units import convert, unit_by_code
from tests.support.loopback import loopback, meterlink_proc, query

START = datetime(2026, 11, 1, tzinfo=UTC)
START_MS = int(START.timestamp()) * 1000
# a clock that stands at START until its anchor in 2096: values and meter clock are fixed
STANDING = ClockSetting.accelerated(START, 4_000_000_000 * 10**9, Decimal(1))
OBJECTS = (Obis.parse("1-0:1.8.0"), Obis.parse("1-0:16.7.0"), Obis.parse("1-0:32.7.0"))


def _sim(*extra: str) -> Proc:
    return meterlink_proc(
        "sim", "dlms", "--transport", "hdlc", "--meter-id", "dl-h", "--seed", "7",
        "--clock", str(STANDING), *extra, name="sim",
    )  # fmt: skip


def _expected(obis: Obis) -> tuple[Decimal, str]:
    """What the agent must report: the simulator's integer, scaled exactly."""
    model = MeterModel("dl-h", 7, origin_ns=START_MS * 10**6)
    spec = DLMS_OBJECTS[obis]
    raw = register_integer(spec, model.values_at(START_MS * 10**6)[obis])
    quantity = quantity_for(obis)
    assert quantity is not None
    value = Decimal(raw).scaleb(spec.scaler)
    return convert(value, unit_by_code(spec.unit_code).symbol, quantity.unit), quantity.unit


def _settings(**kw: object) -> DlmsSettings:
    return DlmsSettings(transport="hdlc", objects=OBJECTS, clock_limit_ns=10**15, **kw)  # type: ignore[arg-type]


def _meter(
    meter_id: str, settings: DlmsSettings, host: str = "", port: int = 0, **kw: object
) -> DlmsMeter:
    """A driver whose gateway clock stands at START, like the simulator's."""
    return DlmsMeter(meter_id, settings, host, port, gateway_ms=lambda: START_MS, **kw)  # type: ignore[arg-type]


def _read(meter: DlmsMeter) -> dict[Obis, tuple[Decimal, str]]:
    outcome = asyncio.run(meter.read())
    assert outcome.errors == []
    assert outcome.meter_ms == START_MS
    return {v.obis: (v.value, v.unit) for v in outcome.values}


@pytest.fixture
def tcp_sim() -> Iterator[tuple[str, int]]:
    sim = _sim("--port", "0")
    try:
        line = sim.wait_line(lambda text: text.startswith("READY dlms"))
        host, _, port = line.split()[2].rpartition(":")
        yield host, int(port)
    finally:
        sim.stop()


@pytest.mark.integration
def test_driver_reads_exact_values_over_hdlc_on_tcp(tcp_sim: tuple[str, int]) -> None:
    host, port = tcp_sim
    meter = _meter("dl-h", _settings(), host, port, timeout=5, retries=0)
    assert meter.description == f"{host}:{port} (hdlc 16->1/17)"
    got = _read(meter)
    assert got == {obis: _expected(obis) for obis in OBJECTS}
    assert _read(meter) == got  # a second cycle: a new link, the same values
    assert meter.associations == 2


@pytest.mark.integration
@pytest.mark.parametrize("mode_e", [False, True], ids=["plain", "mode-e"])
def test_driver_reads_over_hdlc_on_a_serial_pty(tmp_path: Path, mode_e: bool) -> None:
    link = tmp_path / "ttyMeter"
    sim = _sim("--pty-link", str(link), *(["--mode-e"] if mode_e else []))
    try:
        line = sim.wait_line(lambda text: text.startswith("READY dlms"))
        assert line.split()[2] == f"pty:{link}"
        assert ("mode_e=yes" in line.split()) is mode_e
        settings = _settings(serial=str(link), baud=9600, mode_e=mode_e)
        meter = _meter("dl-h", settings, timeout=5, retries=0)
        assert meter.description == f"{link} (hdlc 16->1/17)"
        expected = {obis: _expected(obis) for obis in OBJECTS}
        assert _read(meter) == expected
        assert _read(meter) == expected  # DISC ended the first link; mode E starts again
    finally:
        sim.stop()


def test_segmented_requests_and_answers_with_a_small_information_field(tmp_path: Path) -> None:
    """The client proposes 32-byte information fields: the AARQ and the answers travel in
    several I-frames each, acknowledged with RR; the link ends with DISC -> UA."""
    clock = ClockSetting.accelerated(START, 4_000_000_000 * 10**9, Decimal(1))
    state = DlmsMeterState(MeterModel("dl-s", 7, origin_ns=START_MS * 10**6), clock, 0, 0)
    link = tmp_path / "tty"
    options = DlmsSimOptions(transport="hdlc", pty_link=link)

    async def main() -> tuple[bytes, int]:
        server = DlmsSimServer(state, options=options)
        await server.start()
        endpoint = server._hdlc.endpoint  # type: ignore[union-attr]
        try:
            transport = HdlcTransport(_settings(serial=str(link)), "", 0, 5.0, max_info=32)
            session = DlmsSession(transport, _settings(serial=str(link)), "dl-s")
            await transport.open()
            assert transport.link.params.max_info_tx == 32
            await session.open()
            raw = (await session.get(8, Obis.parse("0-0:1.0.0"), 2)).octets
            await session.close()
            assert transport.link.state is LinkState.DISCONNECTED
            return raw, endpoint.frames_in
        finally:
            await server.stop()

    raw, frames_in = asyncio.run(main())
    assert len(raw) == 12  # a COSEM date-time
    assert state.associations == 1
    assert frames_in > 6  # SNRM, several AARQ segments, RRs, GET, DISC


def test_frames_the_transport_sends_are_the_standards(tmp_path: Path) -> None:
    """Through a bare pty (the test plays the meter): SNRM first, then the meter is silent:
    the error names the device, the addresses and what was missing."""
    master, slave = os.openpty()
    link = tmp_path / "silent"
    os.symlink(os.ttyname(slave), link)
    try:
        meter = _meter("dl-3", _settings(serial=str(link)), timeout=0.3, retries=0)
        with pytest.raises(MeterReadError) as exc:
            asyncio.run(meter.read())
        sent = os.read(master, 4096)
    finally:
        os.close(master)
        os.close(slave)
    assert str(exc.value) == (
        f"meter dl-3: dlms at {link} (hdlc 16->1/17): no UA to SNRM within 0.3s (1 attempt)"
    )
    (snrm,) = FrameReader().feed(sent)
    assert snrm.kind is FrameKind.SNRM and str(snrm.destination) == "1/17"
    assert snrm.info == b""  # the default parameters are not sent


def test_a_meter_that_goes_silent_after_the_ua_is_a_timeout_naming_the_exchange(
    tmp_path: Path,
) -> None:
    """The test plays the meter on a bare pty: UA to the SNRM, then nothing; the driver
    gives up on the AARQ, still sends a DISC (to free the meter), and says what it missed."""
    master, slave = os.openpty()
    link = tmp_path / "mute"
    os.symlink(os.ttyname(slave), link)

    async def main() -> str:
        loop = asyncio.get_running_loop()
        os.set_blocking(master, False)
        frames, server = FrameReader(), ServerLink(1, 17)

        def meter_side() -> None:
            for frame in frames.feed(os.read(master, 4096)):
                seen.append(frame.kind)
                if frame.kind is FrameKind.SNRM:
                    os.write(master, b"".join(server.receive(frame).send))

        loop.add_reader(master, meter_side)
        try:
            meter = _meter("dl-m", _settings(serial=str(link)), timeout=0.3, retries=0)
            with pytest.raises(MeterReadError) as exc:
                await meter.read()
            return str(exc.value)
        finally:
            loop.remove_reader(master)

    seen: list[FrameKind] = []
    try:
        text = asyncio.run(main())
    finally:
        os.close(master)
        os.close(slave)
    # the read gave up on the AARQ and still ended the link with a DISC
    assert seen == [FrameKind.SNRM, FrameKind.I, FrameKind.DISC]
    assert (
        text
        == f"meter dl-m: dlms at {link} (hdlc 16->1/17): AARQ: no answer within 0.3s (1 attempt)"
    )


def test_mode_e_on_a_silent_line_names_the_sign_on(tmp_path: Path) -> None:
    master, slave = os.openpty()
    link = tmp_path / "optical"
    os.symlink(os.ttyname(slave), link)
    try:
        settings = _settings(serial=str(link), mode_e=True)
        meter = _meter("dl-4", settings, timeout=0.2, retries=0)
        with pytest.raises(MeterReadError, match=r"mode E sign-on: no identification within"):
            asyncio.run(meter.read())
        sent = os.read(master, 100)
        # the sign-on, then a DISC in case a stale HDLC link holds the meter; no more
        assert sent.startswith(b"/?!\r\n")
        (disc,) = FrameReader().feed(sent[5:])
        assert disc.kind is FrameKind.DISC
    finally:
        os.close(master)
        os.close(slave)


def test_mode_e_recovers_a_meter_left_in_hdlc_by_an_interrupted_session(tmp_path: Path) -> None:
    """A session ended without DISC (the agent was killed) leaves the meter in HDLC: the
    sign-on goes unanswered, the driver ends the stale link with a DISC at the HDLC rate and
    signs on again, well before the meter's 120 s inactivity time-out."""
    clock = ClockSetting.accelerated(START, 4_000_000_000 * 10**9, Decimal(1))
    state = DlmsMeterState(MeterModel("dl-h", 7, origin_ns=START_MS * 10**6), clock, 0, 0)
    link = tmp_path / "optical"
    options = DlmsSimOptions(transport="hdlc", pty_link=link, mode_e=True)
    settings = _settings(serial=str(link), mode_e=True, baud=4800)

    async def main() -> dict[Obis, tuple[Decimal, str]]:
        async with DlmsSimServer(state, options=options) as server:
            interrupted = HdlcTransport(settings, "", 0, 5.0)
            await interrupted.open()  # mode E, SNRM/UA: the link is up
            # the meter offers 9600 (its "5"), the configured 4800 is lower: "ACK 2 4 2"
            assert interrupted.mode_e_baud == 4800
            assert server._hdlc.opening.baud == 4800  # type: ignore[union-attr]
            stream = interrupted._stream
            assert stream is not None
            await stream.close()  # gone without DISC
            meter = _meter("dl-h", settings, timeout=1, retries=0)
            outcome = await meter.read()
            assert outcome.errors == []
            return {v.obis: (v.value, v.unit) for v in outcome.values}

    assert asyncio.run(main()) == {obis: _expected(obis) for obis in OBJECTS}


def test_mode_e_meter_without_hdlc_is_refused(tmp_path: Path) -> None:
    """A meter answering a mode C identification (no \\2): a clear error, not a hang."""
    master, slave = os.openpty()
    link = tmp_path / "modec"
    os.symlink(os.ttyname(slave), link)

    async def main() -> str:
        loop = asyncio.get_running_loop()
        os.set_blocking(master, False)
        answered = asyncio.Event()

        def meter_side() -> None:
            data = os.read(master, 100)
            if data.endswith(b"!\r\n"):
                os.write(master, b"/ABC5METER\r\n")
                answered.set()

        loop.add_reader(master, meter_side)
        try:
            meter = _meter("dl-5", _settings(serial=str(link), mode_e=True), timeout=2,
                              retries=0)  # fmt: skip
            with pytest.raises(MeterReadError) as exc:
                await meter.read()
            assert answered.is_set()
            return str(exc.value)
        finally:
            loop.remove_reader(master)

    try:
        text = asyncio.run(main())
    finally:
        os.close(master)
        os.close(slave)
    assert "does not offer HDLC" in text and "/ABC5METER" in text


@pytest.mark.integration
def test_wrong_addresses_are_per_meter_errors(tcp_sim: tuple[str, int]) -> None:
    host, port = tcp_sim
    wrong_physical = _meter(
        "dl-p", _settings(physical_address=18), host, port, timeout=0.3, retries=0
    )
    with pytest.raises(MeterReadError) as exc:
        asyncio.run(wrong_physical.read())
    assert str(exc.value) == (
        f"meter dl-p: dlms at {host}:{port} (hdlc 16->1/18): no UA to SNRM within 0.3s (1 attempt)"
    )
    wrong_logical = _meter("dl-l", _settings(server_address=5), host, port, timeout=2, retries=0)
    with pytest.raises(MeterReadError, match=r"SNRM: hdlc: the meter answered DM"):
        asyncio.run(wrong_logical.read())
    # the meter itself is fine: the right address still reads
    good = _meter("dl-h", _settings(), host, port, timeout=5, retries=0)
    assert _read(good) == {obis: _expected(obis) for obis in OBJECTS}


def test_a_missing_serial_device_is_a_per_meter_error(tmp_path: Path) -> None:
    meter = _meter("dl-6", _settings(serial=str(tmp_path / "ttyUSB9")), timeout=1, retries=0)
    with pytest.raises(MeterReadError, match=r"meter dl-6: .*cannot open serial port .*ttyUSB9"):
        asyncio.run(meter.read())


def test_serial_port_changes_setting_while_open_and_reads_with_timeout(tmp_path: Path) -> None:
    master, slave = os.openpty()
    link = tmp_path / "line"
    os.symlink(os.ttyname(slave), link)

    async def main() -> None:
        port = SerialPort(str(link), 300, 7, "E", 1)
        await port.open()
        try:
            assert port.setting == "300 7E1"
            await port.write(b"/?!\r\n")
            await port.drain()
            assert os.read(master, 100) == b"/?!\r\n"
            port.configure(baud=9600, bytesize=8, parity="N")
            assert port.setting == "9600 8N1" and not port.pty_fallback
            with pytest.raises(TimeoutError):
                await port.read(0.05)
            os.write(master, b"line one\r\nrest")
            assert await port.read_until(b"\r\n", 2) == b"line one\r\n"
            assert await port.read(2) == b"rest"
        finally:
            await port.close()
            await port.close()  # twice is fine
        assert not port.is_open

    try:
        asyncio.run(main())
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.integration
def test_end_to_end_fleet_wrapper_and_hdlc_pty_readings_stored_exactly_once(
    tmp_path: Path,
) -> None:
    """sim run with two DLMS meters, one on the TCP wrapper and one with HDLC on a serial
    pty (mode E) -> agent run -> mosquitto -> collector: readings of both arrive with the
    meter's clock, exact, and each (meter, quantity, time) is stored once."""
    speed = 3600
    clock = ClockSetting.accelerated(START, time.time_ns() + 2 * 10**9, Decimal(speed))
    link = tmp_path / "ttyDLMS0"
    scenario = tmp_path / "fleet.toml"
    scenario.write_text(
        f'origin = "{START.isoformat()}"\n'
        '[[dlms]]\nmeter = "dl-w"\nport = 0\n'
        '[[dlms]]\nmeter = "dl-h"\ntransport = "hdlc"\npty_link = "ttyDLMS0"\nmode_e = true\n'
    )
    with loopback(tmp_path) as lb:
        sim = lb.spawn(
            "sim", "run", str(scenario), "--clock", str(clock), name="sim",
            log_path=tmp_path / "sim.log",
        )  # fmt: skip
        ready = sim.wait_lines(lambda t: t.startswith("READY dlms"), 2)
        wrapper = next(line.split()[2] for line in ready if "transport=wrapper" in line)
        assert any(line.split()[2] == f"pty:{link}" for line in ready)
        host, _, port = wrapper.rpartition(":")
        collector_toml = lb.collector_config("c-hdlc")
        agent_toml = tmp_path / "agent" / "agent.toml"
        agent_toml.parent.mkdir()
        common = (
            'objects = ["1-0:1.8.0", "1-0:16.7.0", "1-0:32.7.0"]\n'
            'interval = "15m"\ntimeout = "2s"\nretries = 1\nclock_limit = "10m"\n'
        )
        agent_toml.write_text(
            '[gateway]\nid = "gw-hdlc"\nstate_dir = "state"\n\n'
            f'[mqtt]\nhost = "127.0.0.1"\nport = {lb.broker.port}\nbatch_max_records = 5\n\n'
            f'[[meters]]\nid = "dl-w"\ndriver = "dlms"\nhost = "{host}"\nport = {port}\n'
            + common
            + '\n[[meters]]\nid = "dl-h"\ndriver = "dlms"\ntransport = "hdlc"\n'
            f'serial = "{link}"\nbaud = 9600\nmode_e = true\n' + common
        )
        serial_meter = load_config(agent_toml).meters[1]
        assert serial_meter.dlms is not None and serial_meter.dlms.serial == str(link)
        lb.enrol(agent_toml, collector_toml, "gw-hdlc", ["dl-w", "dl-h"])
        lb.start("collector", "collector", "run", str(collector_toml), "--clock", str(clock))
        lb.start("agent", "agent", "run", str(agent_toml), "--clock", str(clock))

        def stored() -> list[tuple]:
            return query(
                lb.collector_db,
                "SELECT meter_id, obis, captured_ms, value, unit, clock_source FROM readings"
                " ORDER BY meter_id, captured_ms, obis",
            )

        def captures(meter: str) -> int:
            return len({r[2] for r in stored() if r[0] == meter})

        wait_for(
            lambda: captures("dl-w") >= 3 and captures("dl-h") >= 3,
            timeout=90,
            what="3 captures of each DLMS meter",
        )
    rows = stored()
    keys = [(r[0], r[1], r[2]) for r in rows]
    assert len(keys) == len(set(keys))  # each reading stored once
    quantities = ["1-0:1.8.0", "1-0:16.7.0", "1-0:32.7.0"]
    for meter_id in ("dl-w", "dl-h"):
        model = MeterModel(meter_id, 0, origin_ns=START_MS * 10**6)
        mine = [r for r in rows if r[0] == meter_id]
        for ms in sorted({r[2] for r in mine}):  # every capture complete
            assert sorted(r[1] for r in mine if r[2] == ms) == quantities
        for _meter_id, obis, ms, value, unit, source in mine:
            assert source == int(ClockSource.METER)
            assert (obis, unit) in (("1-0:1.8.0", "kWh"), ("1-0:16.7.0", "W"), ("1-0:32.7.0", "V"))
            if obis == "1-0:1.8.0":
                energy = Decimal(value)
                assert energy == energy.quantize(Decimal("0.001"))  # whole Wh, exact
                floor = model.values_at(ms * 10**6)[Obis.parse(obis)]
                # read at or after the instant the meter's clock showed
                assert energy >= floor.quantize(Decimal("0.001"), "ROUND_FLOOR")
    assert not link.exists()  # the simulator removed its link on SIGTERM

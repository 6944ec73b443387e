"""The simulated DLMS meter over HDLC, read by an independent client: dlms-cosem 21.3.2's
own DlmsClient with its SerialHdlcTransport (over TCP through pyserial's ``socket://`` URL,
and over the serial pty); raw frames for addressing, DM, the inactivity time-out and the
mode E opening; ``sim dlms --transport hdlc --pty-link`` as a process."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import socket
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import serial
from dlms_cosem import cosem, enumerations
from dlms_cosem.clients.dlms_client import DlmsClient
from dlms_cosem.clients.hdlc_transport import SerialHdlcTransport
from dlms_cosem.cosem.capture_object import CaptureObject as DcCaptureObject
from dlms_cosem.cosem.selective_access import RangeDescriptor as DcRangeDescriptor

from firmware_sim.dlms import (
    DLMS_OBJECTS,
    DlmsMeterState,
    DlmsSimOptions,
    DlmsSimServer,
    register_integer,
)
from firmware_sim.dlms.hdlc import ModeEOpening
from firmware_sim.model import MeterModel
from meterlink.procs import Proc
from protocols.clock import ClockSetting
from protocols.dlms.axdr import Data, decode_data
from protocols.dlms.hdlc import (
    FrameKind,
    FrameReader,
    HdlcAddress,
    HdlcFrame,
    decode_parameters,
    encode_frame,
)
from protocols.obis import Obis

REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
START_NS = int(START.timestamp()) * 10**9
CLIENT = HdlcAddress(16)
SERVER = HdlcAddress(1, 17)


def _state() -> DlmsMeterState:
    # a clock standing at START (its anchor far in the future): values do not move under us
    clock = ClockSetting.accelerated(START, 4_000_000_000 * 10**9, Decimal(1))
    model = MeterModel("dlms-h", 5, origin_ns=START_NS - 2 * 86_400 * 10**9)
    return DlmsMeterState(model, clock, 0, deviation=-60)


def _register(obis: str, attribute: int = 2) -> cosem.CosemAttribute:
    o = Obis.parse(obis)
    return cosem.CosemAttribute(
        enumerations.CosemInterface.REGISTER, cosem.Obis(*o.to_bytes()), attribute
    )


def _client(url: str, physical: int = 17) -> DlmsClient:
    """dlms-cosem's HDLC client on pyserial's port for ``url`` (a device or socket://)."""
    port = serial.serial_for_url(url, baudrate=9600, timeout=5)
    transport = SerialHdlcTransport(
        client_logical_address=16,
        server_logical_address=1,
        serial_port=url,
        server_physical_address=physical,
        serial=port,
        timeout=5,
    )
    return DlmsClient(client_logical_address=16, server_logical_address=1, io_interface=transport)


def _read_with_dlms_cosem(
    state: DlmsMeterState, options: DlmsSimOptions, work: Callable[[DlmsClient], Any]
) -> Any:
    async def main() -> Any:
        async with DlmsSimServer(state, options=options) as server:
            url = str(options.pty_link) if options.pty_link else f"socket://127.0.0.1:{server.port}"

            def run() -> Any:
                client = _client(url)
                client.connect()
                try:
                    client.associate()
                    result = work(client)
                    client.release_association()
                    return result
                finally:
                    client.disconnect()
                    client.io_interface._serial.close()  # type: ignore[attr-defined]

            return await asyncio.wait_for(asyncio.to_thread(run), 60)

    return asyncio.run(main())


def _expected_integer(state: DlmsMeterState, obis: str) -> int:
    o = Obis.parse(obis)
    return register_integer(DLMS_OBJECTS[o], state.model.values_at(START_NS)[o])


def test_dlms_cosem_hdlc_client_reads_registers_and_a_segmented_profile_over_tcp() -> None:
    state = _state()
    clock_column = DcCaptureObject(
        cosem.CosemAttribute(enumerations.CosemInterface.CLOCK, cosem.Obis(0, 0, 1, 0, 0), 2)
    )
    profile = cosem.CosemAttribute(
        enumerations.CosemInterface.PROFILE_GENERIC, cosem.Obis(1, 0, 99, 1, 0), 2
    )

    def work(client: DlmsClient) -> dict[str, bytes]:
        return {
            "1.8.0": client.get(_register("1-0:1.8.0")),
            "32.7.0": client.get(_register("1-0:32.7.0")),
            "profile": client.get(
                profile,
                access_descriptor=DcRangeDescriptor(
                    clock_column,
                    datetime(2026, 6, 1, 6, 0, tzinfo=UTC),
                    datetime(2026, 6, 1, 9, 0, tzinfo=UTC),
                ),
            ),
        }

    got = _read_with_dlms_cosem(state, DlmsSimOptions(transport="hdlc"), work)
    spec = DLMS_OBJECTS[Obis.parse("1-0:1.8.0")]
    assert decode_data(got["1.8.0"])[0] == Data(spec.tag, _expected_integer(state, "1-0:1.8.0"))
    assert decode_data(got["32.7.0"])[0].integer == _expected_integer(state, "1-0:32.7.0")
    rows, end = decode_data(got["profile"])
    assert end == len(got["profile"]) > 128 * 2  # came in several HDLC segments
    assert len(rows.items) == 13  # 06:00 .. 09:00 every 15 minutes
    assert state.associations == 1


def test_dlms_cosem_hdlc_client_reads_over_the_serial_pty(tmp_path: Path) -> None:
    state = _state()
    link = tmp_path / "meter-tty"
    options = DlmsSimOptions(transport="hdlc", pty_link=link)
    got = _read_with_dlms_cosem(state, options, lambda c: c.get(_register("1-0:1.8.0")))
    assert decode_data(got)[0].integer == _expected_integer(state, "1-0:1.8.0")
    assert not link.exists()  # the link goes with the server


# --- raw frames over TCP ----------------------------------------------------------------------


class RawLink:
    """A TCP connection speaking frames (the test's own, for what a client must not do)."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.frames = FrameReader()

    def send(self, frame: HdlcFrame) -> None:
        self.sock.sendall(encode_frame(frame))

    def receive(self) -> HdlcFrame:
        while True:
            got = self.frames.feed(self.sock.recv(4096))
            if got:
                assert len(got) == 1
                return got[0]

    def silent(self, timeout: float = 0.5) -> bool:
        """Nothing comes within ``timeout`` (a frame nobody should answer)."""
        self.sock.settimeout(timeout)
        try:
            self.sock.recv(4096)  # an answer, or b"" for a closed connection: not silent
        except TimeoutError:
            return True
        finally:
            self.sock.settimeout(10)
        return False

    def close(self) -> None:
        self.sock.close()


def _raw(options: DlmsSimOptions, work: Callable[[int], Any], **server_kw: Any) -> Any:
    async def main() -> Any:
        async with DlmsSimServer(_state(), options=options, **server_kw) as server:
            return await asyncio.wait_for(asyncio.to_thread(work, server.port), 30)

    return asyncio.run(main())


def test_addressing_dm_for_another_logical_device_silence_for_another_physical() -> None:
    def work(port: int) -> dict[str, Any]:
        link = RawLink(port)
        try:
            link.send(HdlcFrame(FrameKind.SNRM, HdlcAddress(9, 17), CLIENT))
            dm = link.receive()
            link.send(HdlcFrame(FrameKind.SNRM, HdlcAddress(1, 18), CLIENT))
            quiet = link.silent()
            link.send(HdlcFrame(FrameKind.I, SERVER, CLIENT, b"\xe6\xe6\x00\xc0", ns=0))
            not_connected = link.receive()
            link.send(HdlcFrame(FrameKind.SNRM, SERVER, CLIENT))
            ua = link.receive()
            link.send(HdlcFrame(FrameKind.DISC, SERVER, CLIENT))
            disc_ua = link.receive()
            return {"dm": dm, "quiet": quiet, "ndm": not_connected, "ua": ua, "disc": disc_ua}
        finally:
            link.close()

    got = _raw(DlmsSimOptions(transport="hdlc"), work)
    assert got["dm"].kind is FrameKind.DM and got["dm"].source == HdlcAddress(9, 17)
    assert got["quiet"]
    assert got["ndm"].kind is FrameKind.DM
    assert got["ua"].kind is FrameKind.UA and got["ua"].destination == CLIENT
    assert decode_parameters(got["ua"].info).max_info_rx == 128
    assert got["disc"].kind is FrameKind.UA


def test_an_idle_link_times_out_and_the_connection_closes() -> None:
    def work(port: int) -> bytes:
        link = RawLink(port)
        try:
            link.send(HdlcFrame(FrameKind.SNRM, SERVER, CLIENT))
            assert link.receive().kind is FrameKind.UA
            return link.sock.recv(10)  # EOF once the inactivity time-out has passed
        finally:
            link.close()

    assert _raw(DlmsSimOptions(transport="hdlc"), work, idle_timeout=0.3) == b""


# --- the pty: mode E opening and the process -------------------------------------------------


def _pty_exchange(fd: int, data: bytes, until: bytes, timeout: float = 10.0) -> bytes:
    """Write ``data`` to the pty, read until ``until`` has come (or fail after timeout)."""
    if data:
        os.write(fd, data)
    got = b""
    while until not in got:
        ready, _, _ = select.select([fd], [], [], timeout)
        assert ready, f"nothing from the meter after {got!r}"
        got += os.read(fd, 4096)
    return got


def test_mode_e_opening_then_hdlc_then_back_to_sign_on(tmp_path: Path) -> None:
    link = tmp_path / "optical"
    options = DlmsSimOptions(transport="hdlc", pty_link=link, mode_e=True)

    def work() -> dict[str, bytes]:
        fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
        try:
            ident = _pty_exchange(fd, b"/?!\r\n", b"\r\n")
            ua = _pty_exchange(
                fd,
                b"\x06252\r\n" + encode_frame(HdlcFrame(FrameKind.SNRM, SERVER, CLIENT)),
                b"\x7e",
            )
            while ua.count(b"\x7e") < 2:
                ua += _pty_exchange(fd, b"", b"\x7e")
            disc = _pty_exchange(
                fd, encode_frame(HdlcFrame(FrameKind.DISC, SERVER, CLIENT)), b"\x7e"
            )
            while disc.count(b"\x7e") < 2:
                disc += _pty_exchange(fd, b"", b"\x7e")
            again = _pty_exchange(fd, b"/?!\r\n", b"\r\n")  # the line is back at the sign-on
            return {"ident": ident, "ua": ua, "disc": disc, "again": again}
        finally:
            os.close(fd)

    async def main() -> dict[str, bytes]:
        async with DlmsSimServer(_state(), options=options):
            return await asyncio.wait_for(asyncio.to_thread(work), 30)

    got = asyncio.run(main())
    assert got["ident"] == b"/MLK5\\2dlms-h\r\n"
    (ua,) = FrameReader().feed(got["ua"])
    assert ua.kind is FrameKind.UA
    (disc,) = FrameReader().feed(got["disc"])
    assert disc.kind is FrameKind.UA
    assert got["again"] == got["ident"]


def test_mode_e_opening_ignores_noise_and_other_options() -> None:
    opening = ModeEOpening("m-1")
    assert opening.feed(b"\x00\xff junk\r\n") == (b"", None)
    answer, rest = opening.feed(b"/?!\r\n")
    assert answer == b"/MLK5\\2m-1\r\n" and rest is None
    assert opening.feed(b"\x06050\r\n") == (b"", None)  # mode C readout asked: not served
    opening.feed(b"/?!\r\n")
    answer, rest = opening.feed(b"\x06242\r\n\x7e\xa0")
    assert rest == b"\x7e\xa0" and opening.baud == 4800


@pytest.mark.integration
def test_sim_dlms_hdlc_on_a_pty_as_a_process(tmp_path: Path) -> None:
    link = tmp_path / "ttyDLMS"
    sim = Proc.python(
        "meterlink", "sim", "dlms", "--transport", "hdlc", "--pty-link", str(link),
        "--meter-id", "dl-pty", "--physical-address", "33", cwd=REPO, name="sim",
    )  # fmt: skip
    try:
        line = sim.wait_line(lambda text: text.startswith("READY dlms"))
        words = line.split()
        assert words[2] == f"pty:{link}"
        assert "transport=hdlc" in words and "server=1/33" in words and "meters=dl-pty" in words
        assert link.is_symlink() and os.readlink(link).startswith("/dev/pts/")

        client = _client(str(link), physical=33)
        client.connect()
        try:
            client.associate()
            value = client.get(_register("1-0:1.8.0"))
            client.release_association()
        finally:
            client.disconnect()
            client.io_interface._serial.close()  # type: ignore[attr-defined]
        assert decode_data(value)[0].integer >= 0
    finally:
        sim.kill(signal.SIGTERM)
    assert sim.popen.returncode == 0, sim.output
    assert not link.exists()


@pytest.mark.integration
def test_sim_dlms_needs_a_port_or_a_pty_link() -> None:
    sim = Proc.python("meterlink", "sim", "dlms", "--transport", "hdlc", cwd=REPO, name="sim")
    try:
        sim.popen.wait(timeout=30)
    finally:
        sim.stop()
    assert sim.popen.returncode == 2
    assert "--port is required" in sim.output


def test_a_pty_link_over_a_file_is_refused(tmp_path: Path) -> None:
    link = tmp_path / "taken"
    link.write_text("not a link")
    options = DlmsSimOptions(transport="hdlc", pty_link=link)

    async def main() -> None:
        server = DlmsSimServer(_state(), options=options)
        with pytest.raises(OSError, match="a file is there"):
            await server.start()
        await server.stop()

    asyncio.run(main())
    assert link.read_text() == "not a link"

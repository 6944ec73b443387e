"""HDLC (IEC 62056-46) as an APDU transport: over TCP (a meter behind a terminal server)
or a serial port (RS-485, optical probe; pyserial through ``agent.serial_port``).

``open``: the byte stream (TCP connect, or the serial port at ``baud`` 8N1; with
``mode_e`` first the IEC 62056-21 mode E opening at 300 baud 7E1: sign-on, the meter's
identification must carry the HDLC escape ``\\2``, option select ``ACK 2 Z 2``, then the
line switches to the lower of the meter's and the configured baud rate, 8N1), then
SNRM -> UA. ``request``: the APDU in I-frames (segmented to the negotiated information
length), the answer reassembled (RR for each further segment). ``close``: DISC -> UA (or
DM), best effort, then the stream is closed. The frames and the link state machine are
sans-IO in ``protocols.dlms.hdlc``; this module only moves bytes and keeps time.

Time-outs count silence: each frame for this client starts the time-out again, so a long
segmented answer at 9600 baud is not cut off, and a silent meter fails after ``timeout``.
Errors are ``ConnectionError``/``TimeoutError`` with the exchange named (``SNRM``,
``GET 1-0:1.8.0 attribute 2``, ``mode E sign-on``); frames for other stations on the bus
are ignored; noise on the line is dropped by the frame reader.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from agent.config import DlmsSettings
from agent.serial_port import SerialPort
from protocols import iec62056_21
from protocols.dlms.hdlc import (
    ClientLink,
    FrameReader,
    HdlcAddress,
    HdlcLinkError,
    HdlcParameters,
    LinkState,
    LinkStep,
)
from protocols.errors import DecodeError

__all__ = ["MODE_E_TIMEOUT_S", "HdlcTransport"]

log = logging.getLogger("agent.dlms")

MODE_E_TIMEOUT_S = 2.0  # identification after the sign-on (IEC 62056-21: 1.5 s at most)
MAX_INFO = 128  # proposed information field length, both directions (the default)
MAX_APDU = 0xFFFF


class _Stream(Protocol):
    async def write(self, data: bytes) -> None: ...

    async def read(self, timeout: float) -> bytes: ...

    async def close(self) -> None: ...


class _TcpStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        try:
            await self.writer.drain()
        except OSError as exc:
            raise ConnectionError(f"connection error: {exc.strerror or exc}") from None

    async def read(self, timeout: float) -> bytes:
        async with asyncio.timeout(timeout):
            try:
                chunk = await self.reader.read(4096)
            except OSError as exc:
                raise ConnectionError(f"connection error: {exc.strerror or exc}") from None
        if not chunk:
            raise ConnectionError("connection closed by the peer")
        return chunk

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class HdlcTransport:
    """One HDLC link to one logical device (``server_address``/``physical_address``)."""

    def __init__(
        self,
        settings: DlmsSettings,
        host: str,
        port: int,
        timeout: float,
        max_info: int = MAX_INFO,
    ) -> None:
        self.settings = settings
        self.host = host
        self.port = port
        self.timeout = timeout
        self.max_apdu = MAX_APDU
        self.server = HdlcAddress(settings.server_address, settings.physical_address)
        self.proposal = HdlcParameters(max_info, max_info, 1, 1)
        self.link = ClientLink(settings.client_address, self.server, self.proposal, MAX_APDU)
        self.frames = FrameReader()
        self._stream: _Stream | None = None
        self._serial: SerialPort | None = None
        where = settings.serial or f"{host}:{port}"
        self.description = (
            f"{where} (hdlc {settings.client_address}->"
            f"{settings.server_address}/{settings.physical_address})"
        )
        self.mode_e_baud: int | None = None  # the baud rate mode E switched to

    async def open(self) -> None:
        if self.settings.serial:
            await self._open_serial()
        else:
            await self._open_tcp()
        try:
            await self._exchange(self.link.connect(), "SNRM", "UA", lambda s: s.event)
        except TimeoutError:
            raise TimeoutError(f"no UA to SNRM within {self.timeout:g}s{self._noise()}") from None

    async def _open_tcp(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError:
            raise ConnectionError(f"cannot connect to {self.host}:{self.port}: timed out") from None
        except OSError as exc:
            raise ConnectionError(
                f"cannot connect to {self.host}:{self.port}: {exc.strerror or exc}"
            ) from None
        self._stream = _TcpStream(reader, writer)

    async def _open_serial(self) -> None:
        if self.settings.mode_e:
            port = SerialPort(self.settings.serial, 300, 7, "E", 1)
        else:
            port = SerialPort(self.settings.serial, self.settings.baud, 8, "N", 1)
        await port.open()
        self._serial = port
        self._stream = port
        if self.settings.mode_e:
            await self._mode_e(port)

    async def _mode_e(self, port: SerialPort) -> None:
        """IEC 62056-21 mode E: sign-on, identification with ``\\2``, ``ACK 2 Z 2``."""
        wait = MODE_E_TIMEOUT_S + self.timeout
        try:
            line = await self._sign_on(port, wait)
        except TimeoutError:
            # A meter left in HDLC by an interrupted session (no DISC) ignores the sign-on
            # until its inactivity time-out: end that link at the HDLC rate, then again.
            if not await self._release_stale_link(port):
                raise TimeoutError(f"mode E sign-on: no identification within {wait:g}s") from None
            try:
                line = await self._sign_on(port, wait)
            except TimeoutError:
                raise TimeoutError(
                    f"mode E sign-on: no identification within {wait:g}s (after a DISC "
                    "ended a link left open)"
                ) from None
        start = line.rfind(b"/")  # noise before the identification is dropped
        try:
            ident = iec62056_21.parse_identification(line[max(start, 0) :])
        except DecodeError as exc:
            raise ConnectionError(f"mode E sign-on: {exc}") from None
        if not ident.mode_e:
            raise ConnectionError(
                f"mode E sign-on: the meter does not offer HDLC (no \\2 in its "
                f"identification {line.strip()!r})"
            )
        # the meter's highest rate, or the configured one when lower (a long or noisy line)
        limit = min(ident.baud, self.settings.baud)
        rates = iec62056_21.BAUD_RATES
        char = max((c for c, r in rates.items() if r <= limit), key=rates.__getitem__, default="0")
        baud = rates[char]
        await port.write(
            iec62056_21.ack_option(iec62056_21.PROTOCOL_HDLC, char, iec62056_21.MODE_HDLC)
        )
        await port.drain()  # the ACK must leave at 300 baud before the switch
        port.configure(baud=baud, bytesize=8, parity="N", stopbits=1)
        self.mode_e_baud = baud
        log.debug("dlms %s: mode E: %s, HDLC at %d baud", self.description, ident.ident, baud)

    async def _sign_on(self, port: SerialPort, wait: float) -> bytes:
        port.configure(baud=300, bytesize=7, parity="E", stopbits=1)
        port.discard_input()
        await port.write(iec62056_21.sign_on())
        return await port.read_until(b"\r\n", wait)

    async def _release_stale_link(self, port: SerialPort) -> bool:
        """DISC at the configured HDLC rate; True if the meter answered (UA or DM)."""
        port.configure(baud=self.settings.baud, bytesize=8, parity="N", stopbits=1)
        port.discard_input()
        stale = ClientLink(self.settings.client_address, self.server, self.proposal, MAX_APDU)
        stale.state = LinkState.IDLE  # as the interrupted session left it
        await port.write(stale.disconnect())
        reader = FrameReader()
        try:
            async with asyncio.timeout(self.timeout):
                while stale.state is LinkState.AWAITING_DISCONNECT:
                    for frame in reader.feed(await port.read(self.timeout)):
                        with contextlib.suppress(HdlcLinkError):
                            stale.receive(frame)
        except TimeoutError:
            return False
        log.info("dlms %s: mode E: ended an HDLC link left open", self.description)
        return True

    async def request(self, apdu: bytes, what: str) -> bytes:
        if self._stream is None or self.link.state is not LinkState.IDLE:
            raise ConnectionError(f"{what}: hdlc link not open")
        try:
            frames = self.link.request(apdu)
        except HdlcLinkError as exc:
            raise ConnectionError(f"{what}: {exc}") from None
        answer = await self._exchange(b"".join(frames), what, "answer", lambda s: s.apdu)
        assert isinstance(answer, bytes)
        return answer

    async def _exchange(
        self, data: bytes, what: str, expected: str, done: Callable[[LinkStep], object]
    ) -> object:
        """Send ``data``, then feed frames to the link until ``done(step)`` is truthy."""
        assert self._stream is not None
        stream = self._stream
        try:
            await stream.write(data)
            while True:
                try:
                    chunk = await stream.read(self.timeout)
                except TimeoutError:
                    raise TimeoutError(
                        f"{what}: no {expected} within {self.timeout:g}s" + self._noise()
                    ) from None
                for frame in self.frames.feed(chunk):
                    step = self.link.receive(frame)
                    if step.send:
                        await stream.write(b"".join(step.send))
                    result = done(step)
                    if result:
                        return result
        except HdlcLinkError as exc:
            raise ConnectionError(f"{what}: {exc}") from None
        except ConnectionError as exc:
            raise ConnectionError(f"{what}: {exc}") from None

    def _noise(self) -> str:
        if not self.frames.dropped:
            return ""
        reason = self.frames.errors[-1] if self.frames.errors else "no frame"
        return f" ({self.frames.dropped} bytes of noise dropped: {reason})"

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is None:
            return
        try:
            # also after a failed exchange: a DISC frees the meter for other clients now,
            # not after its inactivity time-out (a late answer just ends the wait)
            if self.link.state not in (LinkState.DISCONNECTED, LinkState.AWAITING_UA):
                self._stream = stream
                with contextlib.suppress(TimeoutError, ConnectionError):
                    await self._exchange(self.link.disconnect(), "DISC", "UA", lambda s: s.event)
        finally:
            self._stream = None
            await stream.close()

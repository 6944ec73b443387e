"""The simulated meter's HDLC side (IEC 62056-46): on a TCP port or on a serial pty.

One byte stream is one :class:`HdlcEndpoint`: frames are cut from the stream
(``protocols.dlms.hdlc.FrameReader``: garbage dropped, resynchronised on the next flag),
go through the server link machine (NDM -> SNRM/UA -> NRM, I-frames with N(S)/N(R), RR,
segmentation both ways, DISC -> UA, DM for another logical device, silence for another
physical device), and whole APDUs go to the association (``ServerSession.answer``). A link
idle for ``idle_timeout`` seconds (the HDLC setup object's inactivity time-out, 120 s)
falls back to NDM; on TCP the connection is closed.

On a pty with ``mode_e`` the line first expects the IEC 62056-21 mode E opening at 300
baud 7E1: the sign-on ``/?!`` (or ``/?ADDRESS!``) is answered with the identification
``/MLK5\\2<meter id>`` (baud character 5 = 9600, ``\\2`` = HDLC escape), the client's
option select ``ACK 2 Z 2`` switches the line to HDLC. After a DISC (answered UA, or DM
when no link is up) or the inactivity time-out the line waits for a sign-on again. Baud
rate and parity are not enforced on a pty (the bytes are the same at any setting), so the
switch is only logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from protocols import iec62056_21
from protocols.dlms.hdlc import FrameReader, HdlcParameters, LinkState, ServerLink
from protocols.errors import DecodeError

from ..pty import PtyLine
from .objects import DlmsMeterState
from .options import DlmsSimOptions
from .session import SERVER_MAX_RECEIVE_PDU, ServerSession
from .tcp import TcpListener

__all__ = [
    "IDLE_TIMEOUT_S",
    "MODE_E_MANUFACTURER",
    "HdlcEndpoint",
    "HdlcPtyServer",
    "HdlcTcpServer",
    "ModeEOpening",
]

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 120.0
MAX_INFO = 128  # the simulator's HDLC information field limit (both directions)
MODE_E_MANUFACTURER = "MLK"
MODE_E_BAUD_CHAR = "5"  # 9600 baud


class HdlcEndpoint:
    """The meter's side of one HDLC byte stream: bytes in, bytes to send out."""

    def __init__(self, meter: DlmsMeterState, options: DlmsSimOptions) -> None:
        self.meter = meter
        self.options = options
        self.reader = FrameReader()
        self.link = ServerLink(
            options.server_address,
            options.physical_address,
            HdlcParameters(MAX_INFO, MAX_INFO, 1, 1),
            max_apdu=SERVER_MAX_RECEIVE_PDU,
        )
        self.session = ServerSession(meter, options)
        self.frames_in = 0
        self.connected = False
        self.disconnects = 0  # DISC received (answered UA, or DM when not connected)

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        dropped = self.reader.dropped
        frames = self.reader.feed(data)
        if self.reader.dropped > dropped:
            self.meter.errors += 1
            log.info(
                "dlms %s: hdlc: %d bytes dropped (%s)",
                self.meter.model.meter_id,
                self.reader.dropped - dropped,
                self.reader.errors[-1] if self.reader.errors else "no frame",
            )
        for frame in frames:
            self.frames_in += 1
            step = self.link.receive(frame)
            if step.event == "connected":
                self.session = ServerSession(self.meter, self.options)  # a new link
                self.connected = True
            elif step.event in ("disconnected", "rejected"):
                self.connected = False
                self.disconnects += step.event == "disconnected"
            out.extend(step.send)
            if step.apdu is not None:
                reply = self.session.answer(frame.source.upper, step.apdu)
                out.extend(self.link.reply(reply) if reply else self.link.acknowledge())
        return out

    def reset(self) -> None:
        """Inactivity time-out: the link falls back to NDM, the association ends."""
        self.link.reset()
        self.reader = FrameReader()
        self.connected = False

    @property
    def idle(self) -> bool:
        return self.link.state is LinkState.DISCONNECTED


class ModeEOpening:
    """IEC 62056-21 mode E, the meter's side: sign-on -> identification, option select
    ``ACK 2 Z 2`` -> HDLC. ``feed`` returns (answer bytes, bytes after the switch or None
    while the opening is not done). The messages are ``protocols.iec62056_21``'s."""

    MAX_LINE = 64

    def __init__(self, meter_id: str) -> None:
        # the identification: at most 16 printable characters (IEC 62056-21), no "/" or "!"
        clean = "".join(c if " " <= c <= "~" and c not in "/!" else "-" for c in meter_id)
        self.ident = clean[:16]
        self._buffer = bytearray()
        self.awaiting_ack = False
        self.baud = 300

    def identification(self) -> bytes:
        return iec62056_21.identification(
            MODE_E_MANUFACTURER, MODE_E_BAUD_CHAR, self.ident, mode_e=True
        )

    def reset(self) -> None:
        self._buffer.clear()
        self.awaiting_ack = False
        self.baud = 300

    def feed(self, data: bytes) -> tuple[bytes, bytes | None]:
        self._buffer += data
        answer = b""
        while True:
            end = self._buffer.find(b"\r\n")
            if end < 0:
                if len(self._buffer) > self.MAX_LINE:  # noise: keep the tail only
                    del self._buffer[: -self.MAX_LINE]
                return answer, None
            line = bytes(self._buffer[: end + 2])
            del self._buffer[: end + 2]
            with contextlib.suppress(DecodeError):  # noise before the message is dropped
                iec62056_21.parse_sign_on(line[max(line.rfind(b"/?"), 0) :])
                self.awaiting_ack = True
                answer += self.identification()
                continue
            option = None
            if self.awaiting_ack:
                with contextlib.suppress(DecodeError):
                    option = iec62056_21.parse_ack_option(line[max(line.rfind(b"\x06"), 0) :])
            self.awaiting_ack = False  # anything else: wait for a new sign-on
            if option is not None and (option.protocol, option.mode) == ("2", "2"):
                self.baud = option.baud
                rest = bytes(self._buffer)
                self._buffer.clear()
                return answer, rest


class HdlcTcpServer:
    """HDLC over TCP (meters behind a terminal server): one link per connection."""

    def __init__(
        self,
        meter: DlmsMeterState,
        host: str,
        port: int,
        options: DlmsSimOptions,
        idle_timeout: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.meter = meter
        self.options = options
        self.listener = TcpListener(
            host, port, idle_timeout, lambda: HdlcEndpoint(self.meter, self.options).feed
        )

    @property
    def host(self) -> str:
        return self.listener.host

    @property
    def port(self) -> int:
        return self.listener.port

    async def start(self) -> None:
        await self.listener.start()

    async def stop(self) -> None:
        await self.listener.stop()


class HdlcPtyServer:
    """HDLC on a serial pty, with the mode E opening first when ``options.mode_e``."""

    def __init__(
        self,
        meter: DlmsMeterState,
        options: DlmsSimOptions,
        idle_timeout: float = IDLE_TIMEOUT_S,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if options.pty_link is None:
            raise ValueError("HdlcPtyServer needs options.pty_link")
        self.meter = meter
        self.options = options
        self.idle_timeout = idle_timeout
        self.line = PtyLine(options.pty_link)
        self.endpoint = HdlcEndpoint(meter, options)
        self.opening = ModeEOpening(meter.model.meter_id) if options.mode_e else None
        self.in_hdlc = not options.mode_e
        self._out: asyncio.Queue[bytes] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._last = 0.0
        self._clock = clock

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        clock = self._clock or loop.time
        self._clock = clock
        self._last = clock()
        self.line.open()
        self.line.start_reading(self._on_data)
        self._tasks = [
            asyncio.create_task(self._writer(), name="pty-writer"),
            asyncio.create_task(self._watchdog(), name="pty-idle"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self.line.close()

    def _on_data(self, chunk: bytes) -> None:
        assert self._clock is not None
        self._last = self._clock()
        if not self.in_hdlc:
            assert self.opening is not None
            answer, rest = self.opening.feed(chunk)
            if answer:
                self._out.put_nowait(answer)
            if rest is None:
                return
            log.info(
                "dlms %s: mode E: HDLC at %d baud (not enforced on a pty)",
                self.meter.model.meter_id,
                self.opening.baud,
            )
            self.in_hdlc = True
            self.endpoint.reset()
            chunk = rest
        disconnects = self.endpoint.disconnects
        for frame in self.endpoint.feed(chunk):
            self._out.put_nowait(frame)
        if self.endpoint.disconnects != disconnects:  # DISC: the line is back at the sign-on
            self._back_to_sign_on()

    def _back_to_sign_on(self) -> None:
        if self.opening is not None:
            self.opening.reset()
            self.in_hdlc = False

    async def _writer(self) -> None:
        while True:
            data = await self._out.get()
            await self.line.write(data)

    async def _watchdog(self) -> None:
        assert self._clock is not None
        while True:
            left = self._last + self.idle_timeout - self._clock()
            if left > 0:
                await asyncio.sleep(left)
                continue
            if not self.endpoint.idle or (self.opening is not None and self.in_hdlc):
                log.info("dlms %s: hdlc inactivity time-out", self.meter.model.meter_id)
                self.endpoint.reset()
                self._back_to_sign_on()
            self._last = self._clock()

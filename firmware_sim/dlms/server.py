"""The simulated DLMS meter's listeners: one per meter, chosen by ``options.transport``
and ``options.pty_link``: the TCP wrapper (IEC 62056-47, here), HDLC on a TCP port or HDLC
on a serial pty (``hdlc``).

A frame for another wPort is discarded (IEC 62056-47); a broken wrapper stream closes
that connection only; a connection idle for 120 s is closed.
"""

from __future__ import annotations

import logging

from protocols.dlms import DlmsDecodeError
from protocols.dlms.wrapper import WrapperReader, encode_frame

from .hdlc import HdlcPtyServer, HdlcTcpServer
from .objects import DlmsMeterState
from .options import DlmsSimOptions
from .security import security_for
from .session import SERVER_MAX_RECEIVE_PDU, ServerSession
from .tcp import ChunkHandler, TcpListener

__all__ = ["IDLE_TIMEOUT_S", "DlmsSimServer"]

log = logging.getLogger(__name__)

IDLE_TIMEOUT_S = 120.0  # inactivity time-out of the TCP-UDP setup object


class DlmsSimServer:
    """One simulated DLMS meter: a TCP wrapper server, an HDLC-over-TCP server or HDLC on
    a serial pty (``options.pty_link``; host and port are then not used)."""

    def __init__(
        self,
        meter: DlmsMeterState,
        host: str = "127.0.0.1",
        port: int = 0,
        options: DlmsSimOptions | None = None,
        idle_timeout: float = IDLE_TIMEOUT_S,
    ) -> None:
        self.meter = meter
        self.host = host
        self._port = port
        self.options = options or DlmsSimOptions()
        self.idle_timeout = idle_timeout
        self._listener: TcpListener | None = None
        self._hdlc: HdlcTcpServer | HdlcPtyServer | None = None

    @property
    def server_address(self) -> int:
        return self.options.server_address

    @property
    def port(self) -> int:
        if isinstance(self._hdlc, HdlcTcpServer):
            return self._hdlc.port
        if self._listener is None:
            return self._port
        return self._listener.port

    async def start(self) -> None:
        # an unusable HLS keys file stops the meter here, before READY (KeyFileError)
        security_for(self.meter, self.options)
        if self.options.transport == "hdlc":
            if self.options.pty_link is not None:
                self._hdlc = HdlcPtyServer(self.meter, self.options, self.idle_timeout)
            else:
                self._hdlc = HdlcTcpServer(
                    self.meter, self.host, self._port, self.options, self.idle_timeout
                )
            await self._hdlc.start()
            return
        listener = TcpListener(self.host, self._port, self.idle_timeout, self._connection)
        await listener.start()
        self._listener = listener

    async def stop(self) -> None:
        if self._hdlc is not None:
            await self._hdlc.stop()
            self._hdlc = None
        if self._listener is not None:
            await self._listener.stop()
            self._listener = None

    async def __aenter__(self) -> DlmsSimServer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def ready_line(self) -> str:
        opts = self.options
        where = f"pty:{opts.pty_link}" if opts.pty_link is not None else f"{self.host}:{self.port}"
        extra = ""
        if opts.transport == "hdlc":
            extra = f" server={opts.server_address}/{opts.physical_address}"
            if isinstance(self._hdlc, HdlcPtyServer):
                extra += f" device={self._hdlc.line.device}"
            if opts.mode_e:
                extra += " mode_e=yes"
        return (
            f"READY dlms {where} transport={opts.transport}{extra} "
            f"auth={opts.auth} meters={self.meter.model.meter_id}"
        )

    def _connection(self) -> ChunkHandler:
        """A wrapper connection's handler: its own association and frame reader."""
        session = ServerSession(self.meter, self.options)
        frames = WrapperReader(max_apdu=SERVER_MAX_RECEIVE_PDU)

        def handle(chunk: bytes) -> list[bytes] | None:
            try:
                received = frames.feed(chunk)
            except DlmsDecodeError as exc:
                self.meter.errors += 1
                log.info("dlms %s: closing: %s", self.meter.model.meter_id, exc)
                return None
            out = []
            for frame in received:
                if frame.destination != self.server_address:
                    continue  # for another logical device: discarded
                reply = session.answer(frame.source, frame.apdu)
                if reply is not None:
                    out.append(encode_frame(frame.destination, frame.source, reply))
            return out

        return handle

"""APDU transports: one request APDU out, its whole answer APDU back.

A transport owns the byte stream and its framing; the session above it sees only APDUs.
The TCP wrapper (IEC 62056-47) is here; HDLC (IEC 62056-46, over TCP or a serial port) is
in ``hdlc``. Errors are ``ConnectionError``/``TimeoutError`` with a text that names what
was being done; after one of them the transport is not reused (the stream may be out of
step), the caller closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Protocol

from protocols.dlms import DlmsDecodeError
from protocols.dlms.wrapper import WrapperReader, encode_frame

__all__ = ["ApduTransport", "WrapperTransport"]


class ApduTransport(Protocol):
    #: for messages: "host:port (wPort 16->1)", "/dev/ttyUSB0 hdlc 16->1/17"
    description: str
    #: the largest APDU the client accepts (its max receive PDU size in the AARQ)
    max_apdu: int

    async def open(self) -> None: ...

    async def request(self, apdu: bytes, what: str) -> bytes:
        """Send ``apdu``; return the answer APDU. ``what`` names the exchange in errors."""
        ...

    async def close(self) -> None: ...


class WrapperTransport:
    """The TCP wrapper: 8-byte header (version, source and destination wPort, length)."""

    def __init__(
        self, host: str, port: int, client: int, server: int, timeout: float, max_apdu: int = 0xFFFF
    ) -> None:
        self.host = host
        self.port = port
        self.client = client
        self.server = server
        self.timeout = timeout
        self.max_apdu = max_apdu
        self.frames = WrapperReader()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.description = f"{host}:{port} (wPort {client}->{server})"

    async def open(self) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        except TimeoutError:
            raise ConnectionError(f"cannot connect to {self.description}: timed out") from None
        except OSError as exc:
            raise ConnectionError(
                f"cannot connect to {self.description}: {exc.strerror or exc}"
            ) from None

    async def request(self, apdu: bytes, what: str) -> bytes:
        if self.reader is None or self.writer is None:
            raise ConnectionError(f"{what}: not connected")
        self.writer.write(encode_frame(self.client, self.server, apdu))
        try:
            async with asyncio.timeout(self.timeout):
                await self.writer.drain()
                while True:
                    chunk = await self.reader.read(4096)
                    if not chunk:
                        raise ConnectionError(f"{what}: connection closed without an answer")
                    frames = self.frames.feed(chunk)
                    if frames:
                        break
        except TimeoutError:
            raise TimeoutError(f"{what}: no answer within {self.timeout:g}s") from None
        except DlmsDecodeError as exc:
            raise ConnectionError(f"{what}: malformed wrapper frame: {exc}") from None
        except OSError as exc:
            raise ConnectionError(f"{what}: connection error: {exc.strerror or exc}") from None
        frame = frames[0]
        if len(frames) > 1 or (frame.source, frame.destination) != (self.server, self.client):
            raise ConnectionError(
                f"{what}: unexpected frame {frame.source}->{frame.destination} "
                f"({len(frames)} frame(s))"
            )
        return frame.apdu

    async def close(self) -> None:
        if self.writer is None:
            return
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
        self.writer = self.reader = None

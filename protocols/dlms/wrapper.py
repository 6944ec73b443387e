"""The DLMS/COSEM wrapper of IEC 62056-47 (TCP and UDP transport).

Every APDU travels in one frame::

    version (2 bytes, 0x0001) | source wPort (2) | destination wPort (2) | length (2) | APDU

The wPorts are the client and server logical addresses (the public client is 16, the
management logical device 1). A stream is cut into frames by :class:`WrapperReader`, whose
buffer is bounded: a frame announcing more than ``max_apdu`` bytes is refused before its
body is read, so a hostile peer cannot make the reader hold more than one frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import DlmsDecodeError, DlmsEncodeError

__all__ = [
    "HEADER_SIZE",
    "MAX_APDU",
    "WRAPPER_VERSION",
    "WrapperFrame",
    "WrapperReader",
    "decode_header",
    "encode_frame",
]

WRAPPER_VERSION = 1
HEADER_SIZE = 8
MAX_APDU = 0xFFFF  # the length field is 16 bits


@dataclass(frozen=True, slots=True)
class WrapperFrame:
    source: int  # wPort of the sender
    destination: int  # wPort of the receiver
    apdu: bytes


def encode_frame(source: int, destination: int, apdu: bytes) -> bytes:
    for name, port in (("source", source), ("destination", destination)):
        if not 0 <= port <= 0xFFFF:
            raise DlmsEncodeError(f"wrapper {name} wPort must be 0..65535, got {port}")
    if len(apdu) > MAX_APDU:
        raise DlmsEncodeError(f"wrapper: APDU of {len(apdu)} bytes exceeds {MAX_APDU}")
    return (
        WRAPPER_VERSION.to_bytes(2, "big")
        + source.to_bytes(2, "big")
        + destination.to_bytes(2, "big")
        + len(apdu).to_bytes(2, "big")
        + apdu
    )


def decode_header(header: bytes, max_apdu: int = MAX_APDU) -> tuple[int, int, int]:
    """(source, destination, length) of an 8-byte wrapper header."""
    if len(header) != HEADER_SIZE:
        raise DlmsDecodeError(f"wrapper header: need {HEADER_SIZE} bytes, got {len(header)}")
    version = int.from_bytes(header[0:2], "big")
    if version != WRAPPER_VERSION:
        raise DlmsDecodeError(f"wrapper header: version {version}, expected {WRAPPER_VERSION}")
    source = int.from_bytes(header[2:4], "big")
    destination = int.from_bytes(header[4:6], "big")
    length = int.from_bytes(header[6:8], "big")
    if length == 0:
        raise DlmsDecodeError("wrapper header: empty APDU (length 0)")
    if length > max_apdu:
        raise DlmsDecodeError(f"wrapper header: APDU length {length} exceeds limit {max_apdu}")
    return source, destination, length


class WrapperReader:
    """Feed stream bytes in, take whole frames out. After a DlmsDecodeError the stream is
    out of step: the caller must close the connection (the reader refuses more input)."""

    def __init__(self, max_apdu: int = MAX_APDU) -> None:
        self.max_apdu = max_apdu
        self._buffer = bytearray()
        self._broken: str | None = None

    @property
    def pending(self) -> int:
        """Bytes held that do not yet make a whole frame."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[WrapperFrame]:
        if self._broken is not None:
            raise DlmsDecodeError(f"wrapper stream already broken: {self._broken}")
        self._buffer += data
        frames: list[WrapperFrame] = []
        while len(self._buffer) >= HEADER_SIZE:
            try:
                source, destination, length = decode_header(
                    bytes(self._buffer[:HEADER_SIZE]), self.max_apdu
                )
            except DlmsDecodeError as exc:
                self._broken = str(exc)
                self._buffer.clear()
                raise
            end = HEADER_SIZE + length
            if len(self._buffer) < end:
                break
            frames.append(WrapperFrame(source, destination, bytes(self._buffer[HEADER_SIZE:end])))
            del self._buffer[:end]
        return frames

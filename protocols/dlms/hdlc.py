"""HDLC for DLMS/COSEM (IEC 62056-46, frame format type 3), sans-IO, both directions.

A frame on the wire::

    7E | format (2: 0xA000 | segmentation 0x0800 | 11-bit length) | destination address
       | source address | control | [HCS (2) | information] | FCS (2) | 7E

The length counts the bytes between the flags. Addresses are 1, 2 or 4 bytes, 7 bits per
byte, the low bit of the last byte set: a client address is one byte; a server address is
its upper (logical device) part, optionally followed by its lower (physical device) part.
HCS and FCS are the CRC-16 of ISO/IEC 13239 (CRC-16/X.25), sent low byte first. DLMS HDLC
does no byte stuffing: a frame ends where its length says, so :class:`FrameReader` cuts a
stream by the length field, never by the next 0x7E (which may be data).

The information field of an I-frame (and UI) starts, in the first segment of an APDU, with
the LLC header: ``E6 E6 00`` client -> server, ``E6 E7 00`` server -> client. SNRM and UA
carry the parameter negotiation (:class:`HdlcParameters`; defaults 128 bytes, window 1).

On top of the frames, two small state machines (no I/O, no clocks): :class:`ClientLink`
(SNRM/UA, I-frames with N(S)/N(R), segmentation of long requests, reassembly of segmented
answers with RR, DISC) and :class:`ServerLink` (NDM -> NRM on SNRM, RR/I-frames, DISC ->
UA, DM to a frame for an unknown logical device). Decoders raise only
:class:`~protocols.dlms.DlmsDecodeError` (:class:`HdlcLinkError` for a peer that breaks the
link protocol); a message names the field and offset.

dlms-cosem 21.3.2 has HDLC frames and a client connection, but it reports a corrupt frame
as "need more data", finds frames by scanning for the next flag, cannot parse a UA without
an information field nor a 4-byte address, and keeps segmentation in its serial transport;
so the codec and both link machines are here (its frames are cross-checked in the tests).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from enum import Enum

from . import DlmsDecodeError, DlmsEncodeError

__all__ = [
    "DEFAULT_MAX_INFO",
    "DEFAULT_WINDOW",
    "FLAG",
    "LLC_REQUEST",
    "LLC_RESPONSE",
    "ClientLink",
    "FrameKind",
    "FrameReader",
    "HdlcAddress",
    "HdlcFrame",
    "HdlcLinkError",
    "HdlcParameters",
    "LinkState",
    "LinkStep",
    "ServerLink",
    "crc16",
    "decode_address",
    "decode_frame",
    "decode_parameters",
    "encode_frame",
    "encode_parameters",
    "segment",
]

FLAG = 0x7E
FORMAT_TYPE_3 = 0xA000
SEGMENTED = 0x0800
MAX_FRAME_LENGTH = 0x07FF  # the 11-bit length field
LLC_REQUEST = b"\xe6\xe6\x00"
LLC_RESPONSE = b"\xe6\xe7\x00"
DEFAULT_MAX_INFO = 128
DEFAULT_WINDOW = 1
MAX_WINDOW = 7
SEQUENCE_MODULUS = 8


class HdlcLinkError(DlmsDecodeError):
    """The peer broke the HDLC link protocol (a frame out of place or out of sequence, a
    refused link, an APDU too long); the link is unusable until it is set up again."""


# --- CRC-16/X.25 (the HDLC FCS of ISO/IEC 13239) ------------------------------------------


def _crc_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/X.25: reflected polynomial 0x1021, initial 0xFFFF, final XOR 0xFFFF (on the
    wire low byte first). ``crc16(b"123456789") == 0x906E``."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc ^ 0xFFFF


def _check(data: bytes | bytearray | memoryview) -> bytes:
    return crc16(data).to_bytes(2, "little")


# --- addresses -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HdlcAddress:
    """An HDLC address: ``upper`` (a client's address, or a server's logical device) and,
    for a server, ``lower`` (the physical device; None: not sent). ``size`` forces the
    encoded length (1, 2 or 4 bytes; 0: the shortest that fits); it is kept from a decoded
    frame so that an answer uses the form the peer chose, and is not part of equality."""

    upper: int
    lower: int | None = None
    size: int = field(default=0, compare=False)

    def to_bytes(self) -> bytes:
        size = self.size or self._shortest()
        if size == 1:
            if self.lower is not None or not 0 <= self.upper <= 0x7F:
                raise DlmsEncodeError(f"hdlc address {self}: does not fit in 1 byte")
            return bytes([self.upper << 1 | 1])
        if size == 2:
            lower = self.lower
            if lower is None or not (0 <= self.upper <= 0x7F and 0 <= lower <= 0x7F):
                raise DlmsEncodeError(f"hdlc address {self}: does not fit in 2 bytes")
            return bytes([self.upper << 1, lower << 1 | 1])
        if size == 4:
            lower = self.lower
            if lower is None or not (0 <= self.upper <= 0x3FFF and 0 <= lower <= 0x3FFF):
                raise DlmsEncodeError(f"hdlc address {self}: does not fit in 4 bytes")
            return bytes(
                [
                    (self.upper >> 7) << 1,
                    (self.upper & 0x7F) << 1,
                    (lower >> 7) << 1,
                    (lower & 0x7F) << 1 | 1,
                ]
            )
        raise DlmsEncodeError(f"hdlc address {self}: size must be 1, 2 or 4")

    def _shortest(self) -> int:
        if self.lower is None:
            return 1
        return 2 if self.upper <= 0x7F and self.lower <= 0x7F else 4

    def __str__(self) -> str:
        return str(self.upper) if self.lower is None else f"{self.upper}/{self.lower}"


def decode_address(data: bytes, offset: int, what: str = "address") -> tuple[HdlcAddress, int]:
    """The address starting at ``data[offset]`` and the offset after it."""
    end = offset
    while True:
        if end >= len(data):
            raise DlmsDecodeError(f"hdlc {what} at offset {offset}: no end bit within the frame")
        if data[end] & 1:
            break
        end += 1
        if end - offset >= 4:
            raise DlmsDecodeError(f"hdlc {what} at offset {offset}: longer than 4 bytes")
    raw = data[offset : end + 1]
    if len(raw) == 1:
        return HdlcAddress(raw[0] >> 1, None, 1), end + 1
    if len(raw) == 2:
        return HdlcAddress(raw[0] >> 1, raw[1] >> 1, 2), end + 1
    if len(raw) == 4:
        upper = (raw[0] >> 1) << 7 | raw[1] >> 1
        lower = (raw[2] >> 1) << 7 | raw[3] >> 1
        return HdlcAddress(upper, lower, 4), end + 1
    raise DlmsDecodeError(f"hdlc {what} at offset {offset}: 3 bytes (must be 1, 2 or 4)")


# --- control field and frames ---------------------------------------------------------------


class FrameKind(Enum):
    """The frame types DLMS uses; the value is the control byte without P/F, N(S), N(R)."""

    I = 0x00  # noqa: E741 (the standard's name)
    RR = 0x01
    RNR = 0x05
    SNRM = 0x83
    DISC = 0x43
    UA = 0x63
    DM = 0x0F
    FRMR = 0x87
    UI = 0x03


_UNNUMBERED = {k.value: k for k in (FrameKind.SNRM, FrameKind.DISC, FrameKind.UA,
                                    FrameKind.DM, FrameKind.FRMR, FrameKind.UI)}  # fmt: skip
POLL_FINAL = 0x10


@dataclass(frozen=True, slots=True)
class HdlcFrame:
    kind: FrameKind
    destination: HdlcAddress
    source: HdlcAddress
    info: bytes = b""
    poll_final: bool = True
    ns: int = 0  # N(S): I-frames
    nr: int = 0  # N(R): I-frames, RR, RNR
    segmented: bool = False  # the segmentation bit of the format field

    def control(self) -> int:
        pf = POLL_FINAL if self.poll_final else 0
        if self.kind is FrameKind.I:
            return (self.nr & 7) << 5 | pf | (self.ns & 7) << 1
        if self.kind in (FrameKind.RR, FrameKind.RNR):
            return (self.nr & 7) << 5 | pf | self.kind.value
        return self.kind.value | pf

    def __repr__(self) -> str:  # short: frames are logged
        seq = ""
        if self.kind is FrameKind.I:
            seq = f" ns={self.ns} nr={self.nr}"
        elif self.kind in (FrameKind.RR, FrameKind.RNR):
            seq = f" nr={self.nr}"
        seg = " segmented" if self.segmented else ""
        pf = " P/F" if self.poll_final else ""
        return (
            f"<HDLC {self.kind.name} {self.source}->{self.destination}{seq}{pf}{seg} "
            f"info={len(self.info)}B>"
        )


def encode_frame(frame: HdlcFrame) -> bytes:
    """The frame with both flags."""
    for name, value in (("N(S)", frame.ns), ("N(R)", frame.nr)):
        if not 0 <= value < SEQUENCE_MODULUS:
            raise DlmsEncodeError(f"hdlc {name} {value}: must be 0..7")
    header_rest = frame.destination.to_bytes() + frame.source.to_bytes() + bytes([frame.control()])
    has_info = bool(frame.info) or frame.kind in (FrameKind.I, FrameKind.UI)
    length = 2 + len(header_rest) + 2 + (2 + len(frame.info) if has_info else 0)
    if length > MAX_FRAME_LENGTH:
        raise DlmsEncodeError(f"hdlc frame of {length} bytes exceeds {MAX_FRAME_LENGTH}")
    fmt = FORMAT_TYPE_3 | (SEGMENTED if frame.segmented else 0) | length
    header = fmt.to_bytes(2, "big") + header_rest
    body = header + (_check(header) + frame.info if has_info else b"")
    return bytes([FLAG]) + body + _check(body) + bytes([FLAG])


def decode_frame(raw: bytes) -> HdlcFrame:
    """One whole frame, flags included (``7E ... 7E``)."""
    if len(raw) < 9 or raw[0] != FLAG or raw[-1] != FLAG:
        raise DlmsDecodeError(
            f"hdlc frame: must be at least 9 bytes between 7E flags, got {raw[:16].hex()}"
        )
    body = raw[1:-1]
    fmt = int.from_bytes(body[0:2], "big")
    if fmt & 0xF000 != FORMAT_TYPE_3:
        raise DlmsDecodeError(f"hdlc frame format at offset 1: type {fmt >> 12:X}, expected A")
    length = fmt & MAX_FRAME_LENGTH
    if length != len(body):
        raise DlmsDecodeError(
            f"hdlc frame format at offset 1: length {length}, but {len(body)} bytes between flags"
        )
    destination, at = decode_address(body, 2, "destination address")
    source, at = decode_address(body, at, "source address")
    if at >= len(body) - 2:
        raise DlmsDecodeError(f"hdlc control field at offset {at + 1}: missing")
    control = body[at]
    at += 1
    if _check(body[:-2]) != body[-2:]:
        raise DlmsDecodeError(f"hdlc FCS at offset {len(body) - 1}: does not match the frame")
    info = b""
    if len(body) > at + 2:  # an information field: HCS, information, FCS
        if len(body) < at + 4:
            raise DlmsDecodeError(f"hdlc HCS at offset {at + 1}: truncated")
        if _check(body[:at]) != body[at : at + 2]:
            raise DlmsDecodeError(f"hdlc HCS at offset {at + 1}: does not match the header")
        info = bytes(body[at + 2 : -2])
    kind, ns, nr = _control(control, at)
    if info and kind not in (FrameKind.I, FrameKind.UI, FrameKind.SNRM, FrameKind.UA,
                             FrameKind.FRMR, FrameKind.DM):  # fmt: skip
        raise DlmsDecodeError(f"hdlc {kind.name} frame: has an information field")
    return HdlcFrame(
        kind,
        destination,
        source,
        info,
        bool(control & POLL_FINAL),
        ns,
        nr,
        bool(fmt & SEGMENTED),
    )


def _control(control: int, at: int) -> tuple[FrameKind, int, int]:
    if not control & 1:
        return FrameKind.I, control >> 1 & 7, control >> 5
    if control & 3 == 1:
        kind = {0x01: FrameKind.RR, 0x05: FrameKind.RNR}.get(control & 0x0F)
        if kind is None:
            raise DlmsDecodeError(f"hdlc control field at offset {at}: {control:02X} (REJ/SREJ)")
        return kind, 0, control >> 5
    kind = _UNNUMBERED.get(control & ~POLL_FINAL & 0xFF)
    if kind is None:
        raise DlmsDecodeError(f"hdlc control field at offset {at}: unknown {control:02X}")
    return kind, 0, 0


# --- parameter negotiation (SNRM / UA information field) ------------------------------------

PARAM_FORMAT = 0x81
PARAM_GROUP = 0x80
PARAM_MAX_INFO_TX = 0x05
PARAM_MAX_INFO_RX = 0x06
PARAM_WINDOW_TX = 0x07
PARAM_WINDOW_RX = 0x08


@dataclass(frozen=True, slots=True)
class HdlcParameters:
    """Seen from the sender of the SNRM or UA: what it will transmit and can receive."""

    max_info_tx: int = DEFAULT_MAX_INFO
    max_info_rx: int = DEFAULT_MAX_INFO
    window_tx: int = DEFAULT_WINDOW
    window_rx: int = DEFAULT_WINDOW

    def answer(self, proposal: HdlcParameters) -> HdlcParameters:
        """A server's UA values for a client's SNRM ``proposal`` (this: the server's
        capabilities): never more than either side can do."""
        return HdlcParameters(
            max_info_tx=min(self.max_info_tx, proposal.max_info_rx),
            max_info_rx=min(self.max_info_rx, proposal.max_info_tx),
            window_tx=min(self.window_tx, proposal.window_rx),
            window_rx=min(self.window_rx, proposal.window_tx),
        )


def encode_parameters(params: HdlcParameters) -> bytes:
    """``81 80 LL`` then (id, length, value) for the four parameters."""
    out = bytearray()
    for ident, value, size in (
        (PARAM_MAX_INFO_TX, params.max_info_tx, 2 if params.max_info_tx > 0xFF else 1),
        (PARAM_MAX_INFO_RX, params.max_info_rx, 2 if params.max_info_rx > 0xFF else 1),
        (PARAM_WINDOW_TX, params.window_tx, 4),
        (PARAM_WINDOW_RX, params.window_rx, 4),
    ):
        limit = MAX_WINDOW if ident in (PARAM_WINDOW_TX, PARAM_WINDOW_RX) else 2030
        if not 1 <= value <= limit:
            raise DlmsEncodeError(f"hdlc parameter {ident:02X}: {value} outside 1..{limit}")
        out += bytes([ident, size]) + value.to_bytes(size, "big")
    return bytes([PARAM_FORMAT, PARAM_GROUP, len(out)]) + out


def decode_parameters(info: bytes) -> HdlcParameters:
    """The parameters of an SNRM or UA information field; missing ones take the defaults
    (an empty field: all defaults)."""
    if not info:
        return HdlcParameters()
    if len(info) < 3 or info[0] != PARAM_FORMAT or info[1] != PARAM_GROUP:
        raise DlmsDecodeError(f"hdlc parameters at offset 0: expected 81 80, got {info[:2].hex()}")
    if info[2] != len(info) - 3:
        raise DlmsDecodeError(
            f"hdlc parameters at offset 2: group length {info[2]}, but {len(info) - 3} bytes"
        )
    values = {
        PARAM_MAX_INFO_TX: DEFAULT_MAX_INFO,
        PARAM_MAX_INFO_RX: DEFAULT_MAX_INFO,
        PARAM_WINDOW_TX: DEFAULT_WINDOW,
        PARAM_WINDOW_RX: DEFAULT_WINDOW,
    }
    at = 3
    while at < len(info):
        if at + 2 > len(info):
            raise DlmsDecodeError(f"hdlc parameters at offset {at}: truncated")
        ident, size = info[at], info[at + 1]
        if not 1 <= size <= 4 or at + 2 + size > len(info):
            raise DlmsDecodeError(f"hdlc parameter {ident:02X} at offset {at}: length {size}")
        value = int.from_bytes(info[at + 2 : at + 2 + size], "big")
        if ident in values:
            limit = MAX_WINDOW if ident in (PARAM_WINDOW_TX, PARAM_WINDOW_RX) else 2030
            if not 1 <= value <= limit:
                raise DlmsDecodeError(
                    f"hdlc parameter {ident:02X} at offset {at}: {value} outside 1..{limit}"
                )
            values[ident] = value
        at += 2 + size  # unknown parameters are skipped
    return HdlcParameters(
        values[PARAM_MAX_INFO_TX],
        values[PARAM_MAX_INFO_RX],
        values[PARAM_WINDOW_TX],
        values[PARAM_WINDOW_RX],
    )


def segment(payload: bytes, max_info: int) -> list[bytes]:
    """``payload`` (LLC header included) cut into information fields of at most
    ``max_info`` bytes; every one but the last goes out with the segmentation bit."""
    if max_info < 1:
        raise DlmsEncodeError(f"hdlc max information length {max_info}: must be >= 1")
    return [payload[i : i + max_info] for i in range(0, len(payload), max_info)] or [b""]


# --- stream reader ---------------------------------------------------------------------------


class FrameReader:
    """Feed stream bytes in, take whole frames out. Bytes before a flag are dropped; a
    frame that does not check (format, length, HCS, FCS, closing flag) is dropped from its
    opening flag on and the reader resynchronises on the next flag. The buffer never holds
    more than one maximal frame (2,049 bytes); ``dropped`` counts the bytes discarded and
    ``errors`` keeps the last few reasons (for a log line)."""

    def __init__(self, max_length: int = MAX_FRAME_LENGTH) -> None:
        self.max_length = max_length
        self._buffer = bytearray()
        self.dropped = 0
        self.errors: list[str] = []
        # The search for a whole frame behind a false start is incremental, so that a
        # stream fed byte by byte costs linear time (it was quadratic: every feed decoded
        # every later candidate again, 10 s of CPU for 5 KB of crafted noise). Positions
        # are absolute (``_base`` is the stream offset of ``_buffer[0]``); each flag is
        # looked at once (``_scanned``), each candidate frame decoded once, when its last
        # byte has arrived (``_candidates``: a heap of (end, start)).
        self._base = 0
        self._scanned = 0
        self._candidates: list[tuple[int, int]] = []

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[HdlcFrame]:
        frames: list[HdlcFrame] = []
        self._buffer += data
        while True:
            frame = self._next()
            if frame is None:
                return frames
            frames.append(frame)

    def _cut(self, count: int) -> None:
        del self._buffer[:count]
        self._base += count

    def _drop(self, count: int, reason: str | None) -> None:
        self._cut(count)
        self.dropped += count
        if reason is not None:
            self.errors = [*self.errors[-4:], reason]

    def _next(self) -> HdlcFrame | None:
        buf = self._buffer
        while True:
            start = buf.find(FLAG)
            if start < 0:
                self._drop(len(buf), None)
                return None
            if start:
                self._drop(start, None)
            # skip repeated flags: the last one opens the frame
            while len(buf) > 1 and buf[1] == FLAG:
                self._cut(1)
            if len(buf) < 3:
                return None
            fmt = buf[1] << 8 | buf[2]
            length = fmt & MAX_FRAME_LENGTH
            if fmt & 0xF000 != FORMAT_TYPE_3 or not 7 <= length <= self.max_length:
                self._drop(1, f"hdlc frame format {fmt:04X} at a flag: not a frame start")
                continue
            if len(buf) < length + 2:
                if self._header_checks(length):
                    # a genuine frame with an information field (its header check sequence
                    # holds): wait for all of it, even if its information holds bytes that
                    # look like a whole frame (they are data, not a frame of the link)
                    return None
                # maybe a false start (noise that looks like a frame header): a whole
                # frame at a later flag wins, else wait for more bytes
                later = self._later_frame()
                if later < 0:
                    return None
                self._drop(later, f"hdlc frame of length {length} at a flag: cut short")
                continue
            raw = bytes(buf[: length + 2])
            if raw[-1] != FLAG:
                self._drop(1, f"hdlc frame of length {length}: no closing flag")
                continue
            try:
                frame = decode_frame(raw)
            except DlmsDecodeError as exc:
                self._drop(1, str(exc))
                continue
            # the closing flag may open the next frame: keep it
            self._cut(length + 1)
            return frame

    def _header_checks(self, length: int) -> bool:
        """Whether the frame starting the buffer has an information field and its HCS,
        already received, matches the header (noise passes with probability 2^-16)."""
        body = bytes(self._buffer[1 : 1 + min(length, 16)])  # format, addresses, control, HCS
        try:
            _, at = decode_address(body, 2)
            _, at = decode_address(body, at)
        except DlmsDecodeError:
            return False  # not received yet, or not a frame
        at += 1  # the control field
        if length <= at + 2 or len(body) < at + 2:
            return False  # no information field (a short frame), or no HCS yet
        return _check(body[:at]) == body[at : at + 2]

    def _later_frame(self) -> int:
        """The offset of the first flag after the start that opens a whole, valid frame
        already in the buffer; -1 if there is none. Incremental: a flag is looked at once,
        a candidate decoded once (the bytes it spans never change)."""
        buf, base = self._buffer, self._base
        size = len(buf)
        at = buf.find(FLAG, max(self._scanned - base, 1))
        while at > 0 and at + 2 < size:
            fmt = buf[at + 1] << 8 | buf[at + 2]
            if fmt & 0xF000 == FORMAT_TYPE_3:
                end = at + (fmt & MAX_FRAME_LENGTH) + 1
                heapq.heappush(self._candidates, (base + end, base + at))
            at = buf.find(FLAG, at + 1)
        # a flag whose format field has not arrived is looked at next time
        self._scanned = base + (at if at > 0 else size)
        ready = []
        while self._candidates and self._candidates[0][0] < base + size:
            end, start = heapq.heappop(self._candidates)
            if start > base:  # else: at or before the current start, gone
                ready.append((start - base, end - base))
        ready.sort()
        for i, (start, end) in enumerate(ready):
            if buf[end] != FLAG:
                continue
            try:
                decode_frame(bytes(buf[start : end + 1]))
            except DlmsDecodeError:
                continue
            for later in ready[i + 1 :]:  # not decoded yet: keep for the next search
                heapq.heappush(self._candidates, (base + later[1], base + later[0]))
            return start
        return -1


# --- link state machines ------------------------------------------------------------------


class LinkState(Enum):
    """Named for what the station waits on."""

    DISCONNECTED = "disconnected"  # NDM
    AWAITING_UA = "awaiting UA"  # client: SNRM sent
    IDLE = "idle"  # NRM, nothing outstanding
    AWAITING_RR = "awaiting RR"  # a window of request segments sent, more to send
    AWAITING_RESPONSE = "awaiting response"  # client: whole request sent
    AWAITING_DISCONNECT = "awaiting disconnect"  # client: DISC sent
    RECEIVING = "receiving"  # server: a segmented request under way
    SENDING = "sending"  # server: answer segments left to send
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class LinkStep:
    """What one received frame leads to: bytes to send, and maybe a whole APDU (LLC
    stripped) or an event ("connected", "disconnected")."""

    send: tuple[bytes, ...] = ()
    apdu: bytes | None = None
    event: str = ""


class _Link:
    def __init__(self, max_apdu: int) -> None:
        self.max_apdu = max_apdu
        self.state = LinkState.DISCONNECTED
        self.params = HdlcParameters()  # from this station's point of view
        self.vs = 0  # V(S): the next N(S) to send
        self.vr = 0  # V(R): the next N(S) expected
        self._out: list[bytes] = []  # information fields left to send
        self._in = bytearray()

    def _reset_sequence(self) -> None:
        self.vs = self.vr = 0
        self._out.clear()
        self._in.clear()

    def _fail(self, message: str) -> HdlcLinkError:
        self.state = LinkState.ERROR
        return HdlcLinkError(message)

    def _addresses(self) -> tuple[HdlcAddress, HdlcAddress]:
        """(destination, source) of the frames this station sends on the link."""
        raise NotImplementedError

    def _frame(
        self,
        kind: FrameKind,
        info: bytes = b"",
        *,
        ns: int = 0,
        nr: int = 0,
        poll_final: bool = True,
        segmented: bool = False,
    ) -> HdlcFrame:
        destination, source = self._addresses()
        return HdlcFrame(kind, destination, source, info, poll_final, ns, nr, segmented)

    def _window(self) -> tuple[bytes, ...]:
        """The next window of I-frames from ``_out`` (P/F on the last one)."""
        frames = []
        count = min(self.params.window_tx, len(self._out))
        for i in range(count):
            info = self._out.pop(0)
            frames.append(
                encode_frame(
                    self._frame(
                        FrameKind.I,
                        info,
                        ns=self.vs,
                        nr=self.vr,
                        poll_final=i == count - 1,
                        segmented=bool(self._out),
                    )
                )
            )
            self.vs = (self.vs + 1) % SEQUENCE_MODULUS
        return tuple(frames)

    def _take_segment(self, frame: HdlcFrame, llc: bytes) -> bytes | None:
        """Add an I-frame's information to the APDU being reassembled; the whole APDU
        (LLC stripped) when this was the last segment."""
        if frame.ns != self.vr:
            raise self._fail(f"hdlc I-frame N(S)={frame.ns}, expected {self.vr}")
        if len(frame.info) > self.params.max_info_rx:
            raise self._fail(
                f"hdlc I-frame information of {len(frame.info)} bytes exceeds the negotiated "
                f"{self.params.max_info_rx}"
            )
        self.vr = (self.vr + 1) % SEQUENCE_MODULUS
        self._in += frame.info
        if len(self._in) > self.max_apdu + len(llc):
            raise self._fail(f"hdlc APDU longer than {self.max_apdu} bytes")
        if frame.segmented:
            return None
        whole = bytes(self._in)
        self._in.clear()
        if not whole.startswith(llc):
            raise self._fail(f"hdlc LLC header: expected {llc.hex()}, got {whole[:3].hex()}")
        return whole[len(llc) :]


class ClientLink(_Link):
    """The client (primary station) of one HDLC link to one server address."""

    def __init__(
        self,
        client: int,
        server: HdlcAddress,
        proposal: HdlcParameters | None = None,
        max_apdu: int = 0xFFFF,
    ) -> None:
        super().__init__(max_apdu)
        self.client = HdlcAddress(client, None, 1)
        self.server = server
        self.proposal = proposal or HdlcParameters()

    def _addresses(self) -> tuple[HdlcAddress, HdlcAddress]:
        return self.server, self.client

    def _expect(self, *states: LinkState) -> None:
        if self.state not in states:
            raise self._fail(f"hdlc client: not possible in state {self.state.value}")

    def connect(self) -> bytes:
        """The SNRM proposing ``proposal`` (the default values are not sent)."""
        self._expect(LinkState.DISCONNECTED, LinkState.ERROR)
        self._reset_sequence()
        self.state = LinkState.AWAITING_UA
        info = b"" if self.proposal == HdlcParameters() else encode_parameters(self.proposal)
        return encode_frame(self._frame(FrameKind.SNRM, info))

    def disconnect(self) -> bytes:
        self.state = LinkState.AWAITING_DISCONNECT
        return encode_frame(self._frame(FrameKind.DISC))

    def request(self, apdu: bytes) -> tuple[bytes, ...]:
        """The first window of I-frames carrying ``apdu``."""
        self._expect(LinkState.IDLE)
        self._out = segment(LLC_REQUEST + apdu, self.params.max_info_tx)
        self._in.clear()
        frames = self._window()
        self.state = LinkState.AWAITING_RR if self._out else LinkState.AWAITING_RESPONSE
        return frames

    def receive(self, frame: HdlcFrame) -> LinkStep:
        """Handle one frame from the stream; frames for other stations are ignored."""
        if frame.destination.upper != self.client.upper or frame.source != self.server:
            return LinkStep()
        kind = frame.kind
        if kind is FrameKind.DM and self.state is LinkState.AWAITING_DISCONNECT:
            self.state = LinkState.DISCONNECTED
            return LinkStep(event="disconnected")
        if kind is FrameKind.DM:
            raise self._fail("hdlc: the meter answered DM (disconnected mode): link refused")
        if kind is FrameKind.FRMR:
            raise self._fail(f"hdlc: the meter rejected a frame (FRMR {frame.info.hex()})")
        if self.state is LinkState.AWAITING_UA:
            if kind is not FrameKind.UA:
                raise self._fail(f"hdlc: {kind.name} in answer to SNRM, expected UA")
            offered = decode_parameters(frame.info)
            # the server's transmit side is our receive side
            self.params = HdlcParameters(
                max_info_tx=min(offered.max_info_rx, self.proposal.max_info_tx),
                max_info_rx=offered.max_info_tx,
                window_tx=min(offered.window_rx, self.proposal.window_tx),
                window_rx=offered.window_tx,
            )
            self.state = LinkState.IDLE
            return LinkStep(event="connected")
        if self.state is LinkState.AWAITING_DISCONNECT:
            if kind is not FrameKind.UA:
                raise self._fail(f"hdlc: {kind.name} in answer to DISC, expected UA or DM")
            self.state = LinkState.DISCONNECTED
            return LinkStep(event="disconnected")
        if self.state is LinkState.AWAITING_RR:
            if kind is not FrameKind.RR:
                raise self._fail(f"hdlc: {kind.name} while sending segments, expected RR")
            if frame.nr != self.vs:
                raise self._fail(f"hdlc RR N(R)={frame.nr}, expected {self.vs}")
            frames = self._window()
            if not self._out:
                self.state = LinkState.AWAITING_RESPONSE
            return LinkStep(send=frames)
        if self.state is LinkState.AWAITING_RESPONSE:
            if kind is FrameKind.RR:  # the server acknowledges without data: poll again
                return LinkStep()
            if kind is not FrameKind.I:
                raise self._fail(f"hdlc: {kind.name} in answer to an I-frame")
            if frame.nr != self.vs:
                raise self._fail(f"hdlc I-frame N(R)={frame.nr}, expected {self.vs}")
            apdu = self._take_segment(frame, LLC_RESPONSE)
            if apdu is not None:
                self.state = LinkState.IDLE
                return LinkStep(apdu=apdu)
            if frame.poll_final:  # end of the server's window: ask for the next one
                return LinkStep(send=(encode_frame(self._frame(FrameKind.RR, nr=self.vr)),))
            return LinkStep()
        raise self._fail(f"hdlc: unexpected {kind.name} in state {self.state.value}")


class ServerLink(_Link):
    """The server (secondary station) of a physical device with one logical device.

    Frames for another physical device (``lower``) are ignored (a multi-drop bus); frames
    for the right physical device but another logical device get DM. A frame's source
    address is the client; the answer goes back with the destination address in the form
    the client used.
    """

    def __init__(
        self,
        upper: int,
        lower: int | None,
        capabilities: HdlcParameters | None = None,
        max_apdu: int = 1024,
    ) -> None:
        super().__init__(max_apdu)
        self.upper = upper
        self.lower = lower
        self.capabilities = capabilities or HdlcParameters()
        self.client: HdlcAddress | None = None
        self.own = HdlcAddress(upper, lower)

    def _addresses(self) -> tuple[HdlcAddress, HdlcAddress]:
        assert self.client is not None
        return self.client, self.own

    def reset(self) -> None:
        """Back to NDM (inactivity time-out, connection closed)."""
        self.state = LinkState.DISCONNECTED
        self.client = None
        self._reset_sequence()

    @staticmethod
    def _to(frame: HdlcFrame, kind: FrameKind, info: bytes = b"") -> bytes:
        """An unnumbered answer to ``frame``, whatever the link's state."""
        return encode_frame(HdlcFrame(kind, frame.source, frame.destination, info))

    def receive(self, frame: HdlcFrame) -> LinkStep:
        """Handle one frame; the step's ``apdu`` is a whole request to answer with
        :meth:`reply`."""
        dest = frame.destination
        if frame.source.lower is not None:
            return LinkStep()  # not from a client: another server's answer on the bus
        if dest.lower is not None and self.lower is not None and dest.lower != self.lower:
            return LinkStep()  # another physical device on the bus
        if dest.upper != self.upper:  # this physical device, no such logical device
            return LinkStep(send=(self._to(frame, FrameKind.DM),) if frame.poll_final else ())
        if (
            self.client is not None
            and frame.source != self.client
            and (frame.kind is not FrameKind.SNRM)
        ):
            return LinkStep(send=(self._to(frame, FrameKind.DM),))  # not this link's client
        kind = frame.kind
        if kind is FrameKind.SNRM:
            try:
                proposal = decode_parameters(frame.info)
            except DlmsDecodeError:
                return LinkStep(
                    send=(self._to(frame, FrameKind.FRMR, bytes([frame.control(), 0, 1])),)
                )
            self.client = frame.source
            self.own = frame.destination
            self._reset_sequence()
            answer = self.capabilities.answer(proposal)
            self.params = answer
            self.state = LinkState.IDLE
            return LinkStep(send=(self._to(frame, FrameKind.UA, encode_parameters(answer)),),
                            event="connected")  # fmt: skip
        if kind is FrameKind.DISC:
            if self.state is LinkState.DISCONNECTED:
                return LinkStep(send=(self._to(frame, FrameKind.DM),), event="disconnected")
            # dlms-cosem 21.3.2 cannot parse a UA without an information field: answer
            # with the link's parameters, which a client may ignore
            step = LinkStep(
                send=(self._to(frame, FrameKind.UA, encode_parameters(self.params)),),
                event="disconnected",
            )
            self.reset()
            return step
        if self.state is LinkState.DISCONNECTED:
            if not frame.poll_final:
                return LinkStep()
            return LinkStep(send=(self._to(frame, FrameKind.DM),))
        if kind is FrameKind.I:
            if self.state is LinkState.SENDING:
                self._out.clear()  # the client gave up on the rest of the answer
                self.state = LinkState.IDLE
            if frame.ns != self.vr:  # out of sequence (a repeat): acknowledge what we have
                rr = self._frame(FrameKind.RR, nr=self.vr)
                return LinkStep(send=(encode_frame(rr),) if frame.poll_final else ())
            try:
                apdu = self._take_segment(frame, LLC_REQUEST)
            except HdlcLinkError:
                info = bytes([frame.control(), self.vs << 1 | self.vr << 5, 0x04])
                self.reset()
                return LinkStep(send=(self._to(frame, FrameKind.FRMR, info),), event="rejected")
            if apdu is None:
                self.state = LinkState.RECEIVING
                rr = self._frame(FrameKind.RR, nr=self.vr)
                return LinkStep(send=(encode_frame(rr),) if frame.poll_final else ())
            self.state = LinkState.IDLE
            return LinkStep(apdu=apdu)
        if kind is FrameKind.RR:
            if self.state is LinkState.SENDING and self._out:
                frames = self._window()
                if not self._out:
                    self.state = LinkState.IDLE
                return LinkStep(send=frames)
            rr = self._frame(FrameKind.RR, nr=self.vr)  # nothing to send: acknowledge
            return LinkStep(send=(encode_frame(rr),) if frame.poll_final else ())
        if kind is FrameKind.UI:
            return LinkStep()
        # UA, DM, FRMR, RNR from a client: not meaningful here
        return LinkStep(send=(self._to(frame, FrameKind.FRMR, bytes([frame.control(), 0, 1])),))

    def acknowledge(self) -> tuple[bytes, ...]:
        """An RR closing the client's poll when a request gets no answer APDU."""
        if self.state is not LinkState.IDLE or self.client is None:
            return ()
        return (encode_frame(self._frame(FrameKind.RR, nr=self.vr)),)

    def reply(self, apdu: bytes) -> tuple[bytes, ...]:
        """The first window of I-frames answering the request just received."""
        if self.state is not LinkState.IDLE or self.client is None:
            return ()  # the link went away meanwhile
        self._out = segment(LLC_RESPONSE + apdu, self.params.max_info_tx)
        frames = self._window()
        self.state = LinkState.SENDING if self._out else LinkState.IDLE
        return frames
